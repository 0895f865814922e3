//! The devices an environment holds, as `genv lock` must know them: from
//! the state, or an error when the state cannot be read. Never "nothing
//! attached" because a file was damaged: loading sets a damaged file
//! aside and recovers what it can, which for `genv lock` would mean a
//! command run without its locks.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::Request;
use crate::error::{Error, Result};
use crate::memory;
use crate::os::procs::FileId;
use crate::state::{DEVICES_FILE, Dir, ENVS_FILE, LoadOptions, StateDir, file};

/// The requests for the devices environment `eid` is attached to, with the
/// capacity of each (the attachment's, else the environment's); `None`
/// when the state does not know the environment. An error when the state
/// cannot be read: `envs.json` or `devices.json` is not a readable regular
/// file, is not a state file (not JSON, or not an object with its list)
/// and has no good copy, or was damaged and what was recovered lacks the
/// environment or its devices.
pub(crate) fn attached_requests(dir: &StateDir, eid: &str) -> Result<Option<Vec<Request>>> {
    let mut tx = dir.transaction(LoadOptions::default())?;
    let root = dir.root_dir()?;
    // Looked at before the transaction loads them, under the same lock.
    let envs = Inspected::of(root, ENVS_FILE, "envs")?;
    let devices = Inspected::of(root, DEVICES_FILE, "devices")?;
    let Some(env) = tx.envs()?.get(eid).cloned() else {
        if envs.damaged_after(root) {
            return Err(unreadable(
                root,
                ENVS_FILE,
                "damaged, and what was recovered lacks the environment",
            ));
        }
        return Ok(None);
    };
    let recorded = tx.devices()?.clone();
    let devices_damaged = devices.damaged_after(root);
    // The locks do not depend on the cleanup being written.
    let _ = tx.commit();
    let capacity = |m: Option<&str>| m.and_then(|m| memory::to_bytes(m).ok());
    let requests: Vec<Request> = recorded
        .devices
        .iter()
        .filter_map(|device| {
            let attachment = device.attachments.iter().find(|a| a.eid == eid)?;
            let bytes = capacity(attachment.gpu_memory.as_deref())
                .or_else(|| capacity(env.config.gpu_memory.as_deref()));
            Some(Request::for_capacity(
                device.index,
                bytes,
                device.total_bytes(),
            ))
        })
        .collect();
    if devices_damaged && requests.is_empty() {
        return Err(unreadable(
            root,
            DEVICES_FILE,
            "damaged, and what was recovered lacks the environment's devices",
        ));
    }
    Ok(Some(requests))
}

/// A state file as it was before loading.
struct Inspected {
    name: &'static str,
    /// Not a state file, but with a good copy to recover from.
    damaged: bool,
    /// The file that was there, to tell whether loading replaced it (which
    /// it does only to set damage aside).
    file: Option<FileId>,
}

impl Inspected {
    /// An error when the file cannot be trusted at all: not a readable
    /// regular file (set aside on loading without a look at its good
    /// copy), or not a state file with no good copy either. A missing file
    /// is no damage: nothing was recorded yet.
    fn of(root: &Dir, name: &'static str, key: &'static str) -> Result<Self> {
        let file = file_id(root, name);
        let mut inspected = Inspected {
            name,
            damaged: false,
            file,
        };
        if file.is_none() {
            return Ok(inspected);
        }
        let Some(bytes) = root.peek(name) else {
            return Err(unreadable(
                root,
                name,
                "not a readable regular file of one link within genv's 64 MiB limit",
            ));
        };
        if !is_state_file(&bytes, key) {
            match root.peek(&file::good_name(name)) {
                Some(good) if is_state_file(&good, key) => inspected.damaged = true,
                _ => {
                    return Err(unreadable(
                        root,
                        name,
                        "not a state file, and has no good copy",
                    ));
                }
            }
        }
        Ok(inspected)
    }

    /// Whether the file was damaged: seen so before loading, or set aside
    /// (replaced or gone) by loading.
    fn damaged_after(&self, root: &Dir) -> bool {
        self.damaged || file_id(root, self.name) != self.file
    }
}

fn file_id(root: &Dir, name: &str) -> Option<FileId> {
    let stat = rustix::fs::statat(root.fd(), name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).ok()?;
    Some(FileId {
        major: rustix::fs::major(stat.st_dev),
        minor: rustix::fs::minor(stat.st_dev),
        inode: stat.st_ino,
    })
}

fn unreadable(root: &Dir, name: &str, why: &str) -> Error {
    Error::new(format!("{} is {why}", root.join(name).display()))
}

/// Whether `bytes` are a state file's document: a JSON object whose `key`
/// holds a list (or, in an older layout, an object). The entries are not
/// looked at; an entry that does not parse is set aside on loading, which
/// [`Inspected::damaged_after`] sees.
fn is_state_file(bytes: &[u8], key: &'static str) -> bool {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    Document { key }
        .deserialize(&mut deserializer)
        .unwrap_or(false)
        && deserializer.end().is_ok()
}

/// An object, with `key` holding a list or an object.
struct Document {
    key: &'static str,
}

impl<'de> DeserializeSeed<'de> for Document {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Document {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an object with \"{}\"", self.key)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if name == self.key {
                map.next_value::<Listing>()?;
                found = true;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// A list or an object, contents ignored.
struct Listing;

impl<'de> Deserialize<'de> for Listing {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ListingVisitor)
    }
}

struct ListingVisitor;

impl<'de> Visitor<'de> for ListingVisitor {
    type Value = Listing;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list or an object")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Listing, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Listing)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Listing, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Listing)
    }
}

#[cfg(test)]
mod tests {
    use super::is_state_file;

    #[test]
    fn a_state_file_is_an_object_with_its_list() {
        for good in [
            r#"{"devices": []}"#,
            r#"{"devices": [{"index": 0}], "other": 1}"#,
            r#"{"devices": {"0": {}}}"#,
        ] {
            assert!(is_state_file(good.as_bytes(), "devices"), "{good}");
        }
        for bad in [
            "",
            "garbage",
            "{}",
            "[]",
            "null",
            r#"{"devices": 5}"#,
            r#"{"envs": []}"#,
            r#"{"devices": []} trailing"#,
            r#"{"devices": [1, 2"#,
        ] {
            assert!(!is_state_file(bad.as_bytes(), "devices"), "{bad}");
        }
    }
}
