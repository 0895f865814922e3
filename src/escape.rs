//! Text from the shared state shown on a terminal. Any local user can put
//! anything in a name or a username; shown raw, an escape sequence would
//! drive the reader's terminal, a newline would forge a table row and a
//! right-to-left override would disguise a name. Such characters are shown
//! as Rust escapes (`\n`, `\u{1b}`, `\u{202e}`), everything else as it is.

use std::borrow::Cow;

/// Whether a character must not reach a terminal raw: C0 and C1 controls,
/// DEL, and the Unicode format characters that reorder or hide text.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}'   // zero-width spaces and marks, LRM, RLM
            | '\u{2028}'..='\u{202e}' // line and paragraph separators, embeddings, overrides
            | '\u{2060}'..='\u{2069}' // word joiner, invisible operators, isolates
            | '\u{feff}'              // zero-width no-break space
        )
}

/// `text` safe for a terminal: unchanged (borrowed) unless it holds an
/// unsafe character.
pub(crate) fn terminal(text: &str) -> Cow<'_, str> {
    // Printable ASCII (nearly every name) needs no decoding to be safe.
    if text.bytes().all(|b| (b' '..b'\x7f').contains(&b)) || !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` as one CSV field of genv's unquoted CSV: safe for a terminal,
/// and with commas escaped too, so that every line keeps exactly its
/// number of fields (the JupyterLab extension splits on commas).
pub(crate) fn csv_field(text: &str) -> Cow<'_, str> {
    let safe = terminal(text);
    if !safe.contains(',') {
        return safe;
    }
    Cow::Owned(safe.replace(',', "\\u{2c}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(terminal("Norwegian Wood ☕"), Cow::Borrowed(_)));
    }

    #[test]
    fn controls_and_overrides_are_escaped() {
        assert_eq!(terminal("a\nb"), "a\\nb");
        assert_eq!(terminal("\u{1b}[2J"), "\\u{1b}[2J");
        assert_eq!(terminal("x\0y"), "x\\u{0}y");
        assert_eq!(terminal("evil\u{202e}gpj.exe"), "evil\\u{202e}gpj.exe");
        assert_eq!(terminal("\u{9b}31m"), "\\u{9b}31m");
    }

    #[test]
    fn csv_fields_keep_their_count() {
        assert_eq!(csv_field("a,b"), "a\\u{2c}b");
        assert_eq!(csv_field("a\r\nb"), "a\\r\\nb");
    }
}
