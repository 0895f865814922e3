//! JSON as Python's `json.dump(..., indent=2)` writes it, for the state
//! files (which genv 1.4.3 reads and writes too) and for every listing's
//! `--format json`, local or remote, so that all escape text alike.

use crate::error::{Error, Result};

/// `value` with a two-space indent and DEL and non-ASCII characters
/// escaped, so both implementations write the same bytes.
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    to_json_sized(value, 0)
}

/// [`to_json`] into a buffer of `capacity` bytes to begin with: a state
/// file rewritten is about the size it was read, and growing a buffer of
/// megabytes by doubling copies it again and again.
pub(crate) fn to_json_sized<T: serde::Serialize + ?Sized>(
    value: &T,
    capacity: usize,
) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(capacity);
    serde_json::to_writer_pretty(&mut bytes, value).map_err(|e| Error::Serialize(e.to_string()))?;
    // serde_json leaves DEL and non-ASCII characters as they are; Python
    // escapes both. They only occur inside strings.
    if bytes.is_ascii() && !bytes.contains(&0x7f) {
        return Ok(bytes);
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_ascii() && c != '\x7f' {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    Ok(out.into_bytes())
}

/// `value` as [`to_json`] writes it, and a newline, appended to `out`.
pub(crate) fn push<T: serde::Serialize + ?Sized>(out: &mut String, value: &T) -> Result<()> {
    let bytes = to_json(value)?;
    // Escaped as above, the bytes are ASCII.
    out.push_str(&String::from_utf8_lossy(&bytes));
    out.push('\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_python() {
        let value = serde_json::json!({"name": "café ☕ 𝄞", "q": "\"\\\n"});
        let text = String::from_utf8(to_json(&value).unwrap()).unwrap();
        assert!(
            text.contains(r#""caf\u00e9 \u2615 \ud834\udd1e""#),
            "{text}"
        );
        assert!(text.contains(r#""\"\\\n""#), "{text}");
        let text = String::from_utf8(to_json(&serde_json::json!("a\u{7f}b")).unwrap()).unwrap();
        assert_eq!(text, r#""a\u007fb""#);
    }

    #[test]
    fn serialization_errors_are_errors() {
        // A map with non-string keys has no JSON form.
        let mut map = std::collections::HashMap::new();
        map.insert((1, 2), 3);
        assert!(to_json(&map).is_err());
        let mut out = String::from("kept");
        assert!(push(&mut out, &map).is_err());
        assert_eq!(out, "kept");
    }
}
