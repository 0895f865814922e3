//! The state as `genv daemon` last read or wrote it, kept parsed between
//! requests: in the daemon's folder only root writes, every writer holds
//! the daemon's lock, and every write puts a new file in place, so a file
//! whose identity (device, inode, size, modification time) is the one
//! recorded holds the bytes that were parsed. Only the daemon keeps it
//! (`file::locked_down`); any other process parses as before.

use std::sync::{Arc, Mutex};

use rustix::fs::AtFlags;

use super::{Devices, Dir, Envs, Hardware};

/// What identifies a version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Key {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, i64),
}

impl Key {
    /// The file `name` as it is now; `None` when it is not there.
    pub(super) fn of(dir: &Dir, name: &str) -> Option<Key> {
        let stat = rustix::fs::statat(dir.fd(), name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        Some(Key {
            dev: stat.st_dev,
            ino: stat.st_ino,
            size: stat.st_size,
            mtime: (stat.st_mtime, stat.st_mtime_nsec as i64),
        })
    }

    pub(super) fn size(&self) -> usize {
        usize::try_from(self.size).unwrap_or(0)
    }
}

pub(super) struct Entry<T> {
    key: Key,
    value: Arc<T>,
}

#[derive(Default)]
pub(super) struct Cache {
    envs: Option<Entry<Envs>>,
    devices: Option<Entry<Devices>>,
    hardware: Option<Entry<Hardware>>,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache {
    envs: None,
    devices: None,
    hardware: None,
});

/// A parsed state file, kept under its key.
pub(super) trait Cached: Sized {
    fn slot(cache: &mut Cache) -> &mut Option<Entry<Self>>;
}

impl Cached for Envs {
    fn slot(cache: &mut Cache) -> &mut Option<Entry<Self>> {
        &mut cache.envs
    }
}

impl Cached for Devices {
    fn slot(cache: &mut Cache) -> &mut Option<Entry<Self>> {
        &mut cache.devices
    }
}

impl Cached for Hardware {
    fn slot(cache: &mut Cache) -> &mut Option<Entry<Self>> {
        &mut cache.hardware
    }
}

/// What was parsed from `key`'s version of the file, when it is the one
/// kept.
pub(super) fn get<T: Cached>(key: Key) -> Option<Arc<T>> {
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    T::slot(&mut cache)
        .as_ref()
        .filter(|entry| entry.key == key)
        .map(|entry| entry.value.clone())
}

/// Keeps `value` as what `key`'s version of the file holds.
pub(super) fn put<T: Cached>(key: Key, value: Arc<T>) {
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    *T::slot(&mut cache) = Some(Entry { key, value });
}
