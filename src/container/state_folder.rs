//! The host's state folder for a container. Engines hand a runtime none of
//! the caller's variables (Docker's daemon never does, podman passes only
//! its own), so `genv-docker` names the caller's state folder in the
//! bundle, as the annotation [`ANNOTATION`], and the runtime hands it to
//! its hooks.
//!
//! The runtime and its hooks run as root, and the annotation is written by
//! whoever ran the engine: the folder is taken only as an absolute path
//! without `.` or `..`, every step of it a real folder (no link anywhere),
//! the folder and every folder above it owned by root or by the bundle's
//! owner, and none above it writable by other users unless sticky (as
//! `/tmp`), so that no other user can put another folder or a link in its
//! place afterwards. Each step is opened relative to the one before,
//! without following links.

use std::path::{Path, PathBuf};

use super::spec::Spec;
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::escape::terminal;

/// The bundle's annotation that names the caller's state folder.
pub(crate) const ANNOTATION: &str = "io.genv.tmpdir";

/// The state folder the bundle at `bundle` names, checked; `None` when it
/// names none (the runtime's own `GENV_TMPDIR`, or the default, counts).
pub(crate) fn from_bundle(spec: &Spec, bundle: &Path) -> Result<Option<PathBuf>> {
    let Some(value) = spec.annotations().as_ref().and_then(|a| a.get(ANNOTATION)) else {
        return Ok(None);
    };
    let owner = rustix::fs::lstat(bundle.join("config.json"))
        .ok()
        .map(|stat| stat.st_uid);
    check(value, owner).map(Some)
}

/// `value` as a state folder that root may act on: see the module's
/// comment. The owners allowed are root, this process's user and
/// `bundle_owner`. A runtime that is not root in the machine's own user
/// namespace (a rootless engine) can do nothing its user cannot: it takes
/// any real folder without links on the way.
pub(crate) fn check(value: &str, bundle_owner: Option<u32>) -> Result<PathBuf> {
    let refuse = |why: String| {
        Error::hinted(
            format!(
                "the container's state folder ({ANNOTATION}={}) {why}: not using it",
                terminal(value)
            ),
            "genv-docker names the caller's state folder (GENV_TMPDIR, else /var/tmp/genv); with Docker or rootful podman it must be a real folder of root's (as /var/tmp/genv should be: sudo install -d -m 0777 /var/tmp/genv), in folders that only root can change",
        )
    };
    if !value.starts_with('/') {
        return Err(refuse("is not an absolute path".into()));
    }
    let parts: Vec<&str> = value.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(refuse("has '.' or '..' in it".into()));
    }
    let euid = rustix::process::geteuid().as_raw();
    let strict = euid == 0 && in_initial_user_namespace();
    let mut allowed = vec![0, euid];
    allowed.extend(bundle_owner);
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir = rustix::fs::open("/", flags | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| refuse(format!("cannot be opened: /: {e}")))?;
    let mut path = PathBuf::from("/");
    for (at, part) in parts.iter().enumerate() {
        // The folder above must be one no other user can change.
        let above =
            rustix::fs::fstat(&dir).map_err(|e| refuse(format!("{}: {e}", path.display())))?;
        if strict {
            if !allowed.contains(&above.st_uid) {
                return Err(refuse(format!(
                    "lies in {}, which belongs to uid {}",
                    path.display(),
                    above.st_uid
                )));
            }
            let sticky = above.st_mode & 0o1000 != 0;
            if above.st_mode & 0o022 != 0 && !sticky {
                return Err(refuse(format!(
                    "lies in {}, which other users can write",
                    path.display()
                )));
            }
        }
        path.push(part);
        let next = match rustix::fs::openat(&dir, *part, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Err(refuse("does not exist".into())),
            Err(e) => return Err(refuse(format!("cannot be opened: {}: {e}", path.display()))),
        };
        let stat =
            rustix::fs::fstat(&next).map_err(|e| refuse(format!("{}: {e}", path.display())))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => {}
            FileType::Symlink => {
                return Err(refuse(format!(
                    "goes through a symbolic link, {}",
                    path.display()
                )));
            }
            _ => {
                return Err(refuse(format!(
                    "goes through {}, not a folder",
                    path.display()
                )));
            }
        }
        if strict && at + 1 == parts.len() && !allowed.contains(&stat.st_uid) {
            return Err(refuse(format!("belongs to uid {}", stat.st_uid)));
        }
        dir = next;
    }
    Ok(path)
}

/// Whether this process is in the machine's own user namespace, where
/// root is root (a rootless engine runs its runtime in one of its own).
/// Unreadable counts as yes: the checks then apply.
fn in_initial_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").map_or(true, |map| {
        map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_paths_without_dots() {
        for value in ["genv", "", "/tmp/../etc", "/tmp/./x"] {
            assert!(check(value, None).is_err(), "{value}");
        }
        assert_eq!(check("/", None).unwrap(), Path::new("/"));
        // `//` and a final `/` are the same folder.
        assert_eq!(check("//tmp/", None).unwrap(), Path::new("/tmp"));
    }
}
