//! What genv prints for people and for scripts: every listing (`genv envs`,
//! `devices`, `devices locks`, `devices queue`, `llm ps` and `genv remote`'s
//! tables) as genv 1.4.3's padded table, its CSV, or JSON, through
//! [`print`]; and the Python-identical JSON encoder ([`json`]) that the
//! state files use too.

pub(crate) mod json;
pub(crate) mod table;

use clap::ValueEnum;

pub(crate) use table::{Column, Table, column};

use crate::error::Result;

/// How a listing is printed: genv 1.4.3's CSV and padded table, and JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    Csv,
    #[default]
    Tui,
    /// Not in genv 1.4.3: the rows as JSON, for scripts.
    Json,
}

/// How a listing is printed: its format and, in the table and its CSV,
/// whether the line of titles and the totals line (`genv remote`'s) come
/// with the rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub format: Format,
    pub header: bool,
    pub summary: bool,
}

impl Layout {
    /// `format`, with the line of titles unless `no_header`, and no totals.
    pub(crate) fn new(format: Format, no_header: bool) -> Self {
        Layout {
            format,
            header: !no_header,
            summary: false,
        }
    }
}

/// Something genv lists: the columns and rows of its table, and the
/// document its `--format json` prints.
pub(crate) trait Listing {
    /// The table's columns, with genv 1.4.3's widths.
    const COLUMNS: &'static [Column];

    /// The rows, a cell per column in order.
    fn rows(&self, table: &mut Table<'_>);

    /// What `--format json` prints.
    fn json(&self) -> impl serde::Serialize;

    /// The totals line printed after the rows and an empty line, if any.
    fn summary(&self) -> Option<String> {
        None
    }
}

/// `listing` laid out as `layout` says, appended to `out`; nothing is
/// appended when its JSON cannot be written.
pub(crate) fn print<L: Listing>(listing: &L, layout: Layout, out: &mut String) -> Result<()> {
    if layout.format == Format::Json {
        return json::push(out, &listing.json());
    }
    let mut table = Table::new(out, L::COLUMNS, layout.format == Format::Csv);
    if layout.header {
        table.header();
    }
    listing.rows(&mut table);
    if layout.summary
        && let Some(summary) = listing.summary()
    {
        out.push('\n');
        out.push_str(&summary);
        out.push('\n');
    }
    Ok(())
}
