//! Loading a state file that every local user can damage, losing as little
//! as possible: entries that do not parse are set aside one by one (the
//! others stay), and a torn file (genv 1.4.3 rewrites in place, so a killed
//! writer leaves a prefix) is rebuilt from its complete entries plus the
//! last good copy we wrote. The careful path runs only when the fast parse
//! of the whole file fails.

use serde::Serialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::Value;

use super::cursor::Cursor;
use super::file::{self, Dir};
use crate::error::Result;
use crate::messages;

/// A state file made of a list of entries under one key.
pub(super) trait Entries: Serialize + DeserializeOwned + Default {
    /// The key of the list: `{"envs": [...]}`.
    const KEY: &'static str;

    /// Every entry of a whole document that parses (older layouts too),
    /// and those that do not, as they were. An error when the document is
    /// not of this kind at all.
    fn from_value(value: Value) -> Result<(Self, Vec<Value>), String>;

    /// Adds the entries of `older` that are missing here.
    fn fill_from(&mut self, older: Self);

    fn len(&self) -> usize;

    /// Whether a document that parsed still needs the careful path (for
    /// values the types accept but the program must not).
    fn needs_review(&self) -> bool {
        false
    }

    /// A parser for the plain layout that is faster than serde's, where
    /// there is one: `None` leaves the document to serde.
    fn parse_fast(_text: &str) -> Option<Self> {
        None
    }

    /// The file's bytes, as [`file::to_json_sized`] writes them.
    fn to_json_sized(&self, capacity: usize) -> Result<Vec<u8>> {
        crate::output::json::to_json_sized(self, capacity)
    }
}

/// The whole document, when it is valid UTF-8 and parses: checked once
/// for UTF-8 (a word at a time), not string by string as `from_slice`
/// does, which was an eighth of reading a big `envs.json`; by the type's
/// own parser when it takes the document, else by serde.
fn parse_whole<T: Entries>(bytes: &[u8]) -> Option<T> {
    let text = std::str::from_utf8(bytes).ok()?;
    T::parse_fast(text).or_else(|| serde_json::from_str(text).ok())
}

/// What a loaded file holds, and the bytes it held (the file is rewritten
/// only when the new bytes differ).
pub(super) type Loaded<T> = (T, Option<Vec<u8>>);

/// Reads and parses state file `name`. Entries that do not parse are saved
/// beside it and the file is rewritten without them; a torn file is
/// rebuilt from what can be read of it and its last good copy. Each with
/// one warning. `Ok(None)` when there is no file.
pub(super) fn load<T: Entries>(
    dir: &Dir,
    name: &str,
    keep_good: bool,
) -> Result<Option<Loaded<T>>> {
    let (bytes, version) = match dir.read_or_set_aside(name)? {
        file::Read::Bytes(bytes, version) => (bytes, version),
        file::Read::Missing => return Ok(None),
        // Moved aside with a warning: the last good copy stands in for it
        // (written back at commit), so that a link or a huge file planted
        // in its place costs nobody their entries.
        file::Read::SetAside => {
            return Ok(read_good::<T>(dir, name)
                .filter(|_| keep_good)
                .map(|value| (value, Some(Vec::new()))));
        }
    };
    if let Some(value) = parse_whole::<T>(&bytes)
        && !value.needs_review()
    {
        // Written in place by genv 1.4.3 since our last write: this is
        // now the last good version.
        if keep_good && dir.good_is_stale(name, version) {
            dir.keep_good(name, &bytes, Some(version));
        }
        return Ok(Some((value, Some(bytes))));
    }
    let document = serde_json::from_slice::<Value>(&bytes).map_err(|e| e.to_string());
    let (value, rejected, damage) = match document.and_then(T::from_value) {
        // An older layout, converted: empty original bytes, so that it is
        // written back in the current layout (and is still known to exist:
        // the driver need not be asked for devices).
        Ok((value, rejected)) if rejected.is_empty() => return Ok(Some((value, Some(Vec::new())))),
        Ok((value, rejected)) => (value, rejected, None),
        Err(reason) => {
            let (mut value, rejected) = items(&bytes, T::KEY)
                .and_then(|items| T::from_value(list(T::KEY, items)).ok())
                .unwrap_or_default();
            let good = read_good::<T>(dir, name);
            let from = match (value.len(), &good) {
                (0, Some(_)) => "the last good copy",
                (_, Some(_)) => "what could be read of it and the last good copy",
                (_, None) => "what could be read of it",
            };
            if let Some(good) = good {
                value.fill_from(good);
            }
            (value, rejected, Some((reason, from)))
        }
    };
    let path = file::shown(&dir.join(name));
    let rejected_at = if rejected.is_empty() {
        None
    } else {
        Some(dir.save_beside(
            name,
            "rejected",
            &crate::output::json::to_json(&rejected)?,
            version,
        )?)
    };
    match damage {
        Some((reason, from)) => {
            // Renamed, not copied: it keeps its owner and mode. Every
            // reader holds the global lock, so none sees the file missing
            // before the repaired one takes its place below.
            let aside = dir.rename_aside(name)?.unwrap_or_default();
            let kept = match value.len() {
                0 => "nothing could be recovered".to_owned(),
                1 => format!("recovered 1 entry from {from}"),
                n => format!("recovered {n} entries from {from}"),
            };
            let also = rejected_at
                .map(|p| format!("; unreadable entries saved in {}", file::shown(&p)))
                .unwrap_or_default();
            messages::warn(format_args!(
                "{path} was damaged ({}); {kept}; the damaged file is saved as {}{also}",
                crate::escape::terminal(&reason),
                file::shown(&aside),
            ));
        }
        None => {
            let count = rejected.len();
            messages::warn(format_args!(
                "{count} {} of {path} could not be read and {} set aside in {}; the others are kept",
                if count == 1 { "entry" } else { "entries" },
                if count == 1 { "was" } else { "were" },
                file::shown(&rejected_at.unwrap_or_default()),
            ));
        }
    }
    // Repaired now, under the lock, so that the next command neither
    // warns again nor loses what was recovered should this one fail.
    let repaired = value.to_json_sized(0)?;
    dir.write_atomic(name, &repaired, keep_good)?;
    Ok(Some((value, Some(repaired))))
}

/// The last good copy of `name`, as far as it can be read. It lies in the
/// shared folder too, so it is only a hint: read as carefully as the file.
fn read_good<T: Entries>(dir: &Dir, name: &str) -> Option<T> {
    let bytes = dir.peek(&file::good_name(name))?;
    if let Some(value) = parse_whole::<T>(&bytes)
        && !value.needs_review()
    {
        return Some(value);
    }
    let document = match serde_json::from_slice::<Value>(&bytes) {
        Ok(document) => document,
        Err(_) => list(T::KEY, items(&bytes, T::KEY)?),
    };
    T::from_value(document).ok().map(|(value, _)| value)
}

fn list(key: &str, items: Vec<Value>) -> Value {
    let mut root = serde_json::Map::new();
    root.insert(key.to_owned(), Value::Array(items));
    Value::Object(root)
}

/// The complete items of the list under `key` in a JSON document that may
/// be cut short: `{"envs": [{...}, {...}, {..` gives the first two.
pub(super) fn items(bytes: &[u8], key: &str) -> Option<Vec<Value>> {
    let mut p = Cursor::new(bytes);
    p.expect(b'{')?;
    loop {
        let found: String = p.value()?;
        p.expect(b':')?;
        if found == key {
            break;
        }
        p.value::<IgnoredAny>()?;
        p.expect(b',')?;
    }
    p.expect(b'[')?;
    let mut items = Vec::new();
    if p.peek() == Some(b']') {
        return Some(items);
    }
    while let Some(item) = p.value::<Value>() {
        items.push(item);
        if p.expect(b',').is_none() {
            break;
        }
    }
    Some(items)
}

impl Cursor<'_> {
    /// One complete JSON value. A number at the very end may have been cut
    /// short, so a value must be followed by something.
    fn value<T: DeserializeOwned>(&mut self) -> Option<T> {
        self.skip_space();
        let rest = self.bytes.get(self.pos..)?;
        let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<T>();
        let value = stream.next()?.ok()?;
        let end = self.pos + stream.byte_offset();
        if end >= self.bytes.len() {
            return None;
        }
        self.pos = end;
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn complete_items_of_a_torn_list() {
        let text = br#"{"envs": [{"eid": "a"}, {"eid": "b", "x": [1, 2]}, {"eid": "c", "ui"#;
        assert_eq!(
            items(text, "envs"),
            Some(vec![json!({"eid": "a"}), json!({"eid": "b", "x": [1, 2]})])
        );
    }

    #[test]
    fn items_after_other_keys_and_of_empty_lists() {
        assert_eq!(
            items(br#"{"other": {"x": [1]}, "devices": [1, 2"#, "devices"),
            Some(vec![json!(1)])
        );
        assert_eq!(items(b"{\n  \"envs\": []\n}", "envs"), Some(vec![]));
        assert_eq!(items(b"", "envs"), None);
        assert_eq!(items(br#"{"env"#, "envs"), None);
        assert_eq!(items(br#"["envs"]"#, "envs"), None);
    }
}
