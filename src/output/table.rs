//! genv 1.4.3's tables, written in place: the padded text table (`tui`)
//! and its unquoted CSV. `genv envs` prints a row per environment, 10,000
//! on a big machine: each cell is escaped (borrowed unless it must change)
//! and padded straight into the output, with no string built per cell.

use crate::escape;

/// A column of a table: its title, and its width in the padded table
/// (`{:<width}`); the last column is not padded (width 0).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Column {
    pub title: &'static str,
    pub width: usize,
}

/// A column titled `title`, `width` characters wide in the padded table.
pub(crate) const fn column(title: &'static str, width: usize) -> Column {
    Column { title, width }
}

/// A table being written into `out`, in CSV or padded.
pub(crate) struct Table<'o> {
    out: &'o mut String,
    columns: &'static [Column],
    csv: bool,
}

impl<'o> Table<'o> {
    /// A table of `columns`, genv's unquoted CSV when `csv`, else padded.
    pub(crate) fn new(out: &'o mut String, columns: &'static [Column], csv: bool) -> Self {
        Table { out, columns, csv }
    }

    /// The line of column titles.
    pub(crate) fn header(&mut self) {
        let columns = self.columns;
        let mut row = self.row();
        for column in columns {
            row.cell(column.title);
        }
        row.end();
    }

    /// The next row; its cells fill the columns in order.
    pub(crate) fn row(&mut self) -> Row<'_> {
        Row {
            out: &mut *self.out,
            columns: self.columns.iter(),
            csv: self.csv,
            first: true,
        }
    }
}

/// One line of a table, written in place.
pub(crate) struct Row<'t> {
    out: &'t mut String,
    /// The columns the next cells fill.
    columns: std::slice::Iter<'static, Column>,
    csv: bool,
    first: bool,
}

impl Row<'_> {
    /// A cell of state text, shown as data (see [`escape`]): in the
    /// padded table padded to its column's width as `{:<width}` would.
    pub(crate) fn cell(&mut self, text: &str) -> &mut Self {
        let width = self.start_cell();
        // Printable ASCII (nearly every cell) is shown as it is, one
        // character a byte, and has no comma to escape in CSV.
        if text
            .bytes()
            .all(|b| (b' '..b'\x7f').contains(&b) && (b != b',' || !self.csv))
        {
            self.out.push_str(text);
            if !self.csv {
                self.pad(width.saturating_sub(text.len()));
            }
        } else if self.csv {
            self.out.push_str(&escape::csv_field(text));
        } else {
            let shown = escape::terminal(text);
            self.out.push_str(&shown);
            let chars = if shown.is_ascii() {
                shown.len()
            } else {
                shown.chars().count()
            };
            self.pad(width.saturating_sub(chars));
        }
        self
    }

    /// A cell of numbers joined by `sep` (not state text: nothing to
    /// escape), padded like [`Row::cell`].
    pub(crate) fn numbers<N: itoa::Integer + Copy>(
        &mut self,
        numbers: &[N],
        sep: char,
    ) -> &mut Self {
        let width = self.start_cell();
        let start = self.out.len();
        let mut digits = itoa::Buffer::new();
        for (i, &n) in numbers.iter().enumerate() {
            if i > 0 {
                self.out.push(sep);
            }
            self.out.push_str(digits.format(n));
        }
        if !self.csv && width > 0 {
            // Digits and separators: as many characters as bytes.
            let written = self.out.len() - start;
            self.pad(width.saturating_sub(written));
        }
        self
    }

    /// A cell of one number.
    pub(crate) fn number<N: itoa::Integer + Copy>(&mut self, n: N) -> &mut Self {
        self.numbers(&[n], ' ')
    }

    /// Ends the line.
    pub(crate) fn end(&mut self) {
        self.out.push('\n');
    }

    /// The width of the cell about to be written, after the separator
    /// before it in CSV.
    #[inline]
    fn start_cell(&mut self) -> usize {
        if self.csv && !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.columns.next().map_or(0, |c| c.width)
    }

    #[inline]
    fn pad(&mut self, n: usize) {
        const SPACES: &str = "                                ";
        let mut n = n;
        while n > 0 {
            let step = n.min(SPACES.len());
            self.out.push_str(&SPACES[..step]);
            n -= step;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: &[Column] = &[
        column("ID", 8),
        column("NAME", 4),
        column("N", 3),
        column("LONG", 4),
        column("PIDS", 0),
    ];

    #[test]
    fn pads_like_format_and_escapes() {
        let mut out = String::new();
        let mut table = Table::new(&mut out, COLUMNS, false);
        table.header();
        table
            .row()
            .cell("e1,")
            .cell("é\u{1b}")
            .number(3)
            .cell("longer than its width")
            .numbers(&[1, 2], ' ')
            .end();
        assert_eq!(
            out,
            format!(
                "{:<8}{:<4}{:<3}{:<4}{}\n{:<8}{:<4}{:<3}{}{}\n",
                "ID",
                "NAME",
                "N",
                "LONG",
                "PIDS",
                "e1,",
                "é\\u{1b}",
                3,
                "longer than its width",
                "1 2"
            )
        );
    }

    #[test]
    fn csv_keeps_its_fields() {
        let mut out = String::new();
        let mut table = Table::new(&mut out, COLUMNS, true);
        table.header();
        table
            .row()
            .number(0)
            .cell("a,b")
            .cell("")
            .numbers(&[7, 8], ' ')
            .end();
        assert_eq!(out, "ID,NAME,N,LONG,PIDS\n0,a\\u{2c}b,,7 8\n");
    }
}
