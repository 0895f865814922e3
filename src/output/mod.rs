//! What genv prints for people and for scripts: the output formats.

use clap::ValueEnum;

/// How a listing is printed: genv 1.4.3's CSV and padded table, and JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    Csv,
    #[default]
    Tui,
    /// Not in genv 1.4.3: the rows as JSON, for scripts.
    Json,
}
