//! Reading and writing one state file safely: never through a symbolic
//! link, never truncated in place, and a damaged file moved aside.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};

pub const FILE_MODE: u32 = 0o666;

/// Opens an existing file for reading, refusing links and anything that is
/// not a regular file. `Ok(None)` when there is no file.
pub fn open_read(path: &Path) -> Result<Option<File>> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => return Err(Error::SymbolicLink(path.to_owned())),
        Err(e) => return Err(Error::io(path, e.into())),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| Error::io(path, e.into()))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(Error::BadStateFile {
            path: path.to_owned(),
            reason: "not a regular file; remove it".into(),
        });
    }
    Ok(Some(File::from(fd)))
}

/// The whole content of a state file, or `None` when it does not exist.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>> {
    let Some(mut file) = open_read(path)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    Ok(Some(bytes))
}

/// Replaces `path` with `bytes` atomically: a new file (`O_EXCL`, mode 0666
/// whatever the umask) beside it, renamed over the old one. Callers hold the
/// global lock, so one temporary name per file is enough; a leftover from a
/// killed writer, or a link planted there, is removed, never written through.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let fd = match create_exclusive(&tmp) {
        Err(Errno::EXIST) => {
            rustix::fs::unlink(&tmp).map_err(|e| Error::io(&tmp, e.into()))?;
            create_exclusive(&tmp)
        }
        other => other,
    }
    .map_err(|e| Error::io(&tmp, e.into()))?;
    let result = write_all(fd, bytes).and_then(|()| rustix::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = rustix::fs::unlink(&tmp);
        return Err(Error::io(path, e.into()));
    }
    Ok(())
}

fn create_exclusive(path: &Path) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::open(path, flags, Mode::from_raw_mode(FILE_MODE))?;
    // The umask may have taken bits away; other users (and genv 1.4.3,
    // which rewrites in place) need to write this file too.
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(FILE_MODE))?;
    Ok(fd)
}

fn write_all(fd: OwnedFd, bytes: &[u8]) -> rustix::io::Result<()> {
    let mut file = File::from(fd);
    file.write_all(bytes)
        .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Moves a damaged file aside as `<name>.corrupt-<time>` and says so once.
pub fn quarantine(path: &Path, reason: &str) -> Result<PathBuf> {
    let stamp = chrono::Local::now().format("%Y%m%dT%H%M%S%.3f");
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let aside = path.with_file_name(format!("{name}.corrupt-{stamp}"));
    rustix::fs::rename(path, &aside).map_err(|e| Error::io(path, e.into()))?;
    eprintln!(
        "warning: {} could not be read ({reason}); moved it aside to {} and started afresh",
        path.display(),
        aside.display()
    );
    Ok(aside)
}

/// JSON as Python's `json.dump(..., indent=2)` writes it: two-space indent
/// and non-ASCII characters escaped, so both implementations write the same
/// bytes.
pub fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    if bytes.is_ascii() {
        return bytes;
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out.into_bytes()
}

pub fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_python() {
        let value = serde_json::json!({"name": "café ☕ 𝄞", "q": "\"\\\n"});
        let text = String::from_utf8(to_json(&value)).unwrap();
        assert!(
            text.contains(r#""caf\u00e9 \u2615 \ud834\udd1e""#),
            "{text}"
        );
        assert!(text.contains(r#""\"\\\n""#), "{text}");
    }
}
