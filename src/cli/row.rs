//! One line of a table, written in place. The tables of `genv envs` and
//! `genv devices` print a row per environment or attachment, 10,000 on a
//! big machine: each cell is escaped (borrowed unless it must change) and
//! padded straight into the output, with no string built per cell.

use crate::escape;

pub struct Row<'a> {
    out: &'a mut String,
    csv: bool,
    first: bool,
}

impl<'a> Row<'a> {
    /// A row of genv's unquoted CSV when `csv`, else of its aligned table.
    pub fn new(out: &'a mut String, csv: bool) -> Self {
        Row {
            out,
            csv,
            first: true,
        }
    }

    /// A cell of state text, shown as data (see [`escape`]), padded to
    /// `width` characters as `{:<width}` would in the aligned table.
    pub fn cell(&mut self, text: &str, width: usize) -> &mut Self {
        if self.csv {
            if !self.first {
                self.out.push(',');
            }
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
        self.first = false;
        self
    }

    /// A cell of numbers joined by `sep` (not state text: nothing to escape).
    pub fn numbers<N: std::fmt::Display>(&mut self, numbers: &[N], sep: char) -> &mut Self {
        use std::fmt::Write;
        if self.csv && !self.first {
            self.out.push(',');
        }
        for (i, n) in numbers.iter().enumerate() {
            if i > 0 {
                self.out.push(sep);
            }
            let _ = write!(self.out, "{n}");
        }
        self.first = false;
        self
    }

    /// A number padded to `width` in the aligned table.
    pub fn number<N: std::fmt::Display>(&mut self, n: N, width: usize) -> &mut Self {
        let start = self.out.len();
        self.numbers(&[n], ' ');
        if !self.csv {
            let written = self.out.len() - start;
            self.pad(width.saturating_sub(written));
        }
        self
    }

    pub fn end(&mut self) {
        self.out.push('\n');
    }

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

    #[test]
    fn pads_like_format_and_escapes() {
        let mut out = String::new();
        Row::new(&mut out, false)
            .cell("e1", 8)
            .cell("é\u{1b}", 4)
            .number(3, 3)
            .cell("longer than its width", 4)
            .numbers(&[1, 2], ' ')
            .end();
        assert_eq!(
            out,
            format!(
                "{:<8}{:<4}{:<3}{}{}\n",
                "e1", "é\\u{1b}", 3, "longer than its width", "1 2"
            )
        );
    }

    #[test]
    fn csv_keeps_its_fields() {
        let mut out = String::new();
        Row::new(&mut out, true)
            .number(0, 8)
            .cell("a,b", 8)
            .cell("", 8)
            .numbers(&[7, 8], ' ')
            .end();
        assert_eq!(out, "0,a\\u{2c}b,,7 8\n");
    }
}
