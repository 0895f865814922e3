//! The shims: `nvidia-smi` and `docker` are links to the `genv` executable,
//! put first on `PATH` in an activated environment. Run under one of those
//! names, genv narrows what the real program shows or gets to the
//! environment's GPUs, then runs the real program found further on `PATH`.
//! `GENV_BYPASS=1` runs the real program untouched. The entry
//! (`main` in `lib.rs`) chooses them by `argv[0]`; `os::exec` finds
//! and runs the real program.

pub(crate) mod docker;
pub(crate) mod nvidia_smi;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::env_vars::{self as ev, get};
use crate::error::{Error, Result};
use crate::state::{LoadOptions, StateDir};

/// The programs genv stands in for.
pub(crate) const PROGRAMS: [&str; 2] = [nvidia_smi::PROGRAM, docker::PROGRAM];

/// The active environment's identifier, when in one.
pub(crate) fn environment_id() -> Option<String> {
    get(ev::GENV_ENVIRONMENT_ID).filter(|eid| !eid.is_empty())
}

/// `GENV_BYPASS` set to a non-zero number.
pub(crate) fn bypass() -> bool {
    get(ev::GENV_BYPASS)
        .and_then(|v| v.trim().parse::<i64>().ok())
        .is_some_and(|v| v != 0)
}

/// Which GPUs the environment may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attached {
    /// Nothing tells (no `CUDA_VISIBLE_DEVICES`, no state): no filter.
    Unknown,
    /// These GPUs (indices, or UUIDs as `CUDA_VISIBLE_DEVICES` may list);
    /// empty when detached.
    Devices(Vec<String>),
}

/// The environment's GPUs: `CUDA_VISIBLE_DEVICES` when set (activation
/// keeps it current), otherwise the attachments in the state folder.
pub(crate) fn attached(dir: &StateDir, eid: &str) -> Attached {
    attached_and_pids(dir, eid).0
}

/// [`attached`], and the pids `envs.json` lists for the environment when
/// the state was read for its GPUs (one read serves both).
pub(crate) fn attached_and_pids(dir: &StateDir, eid: &str) -> (Attached, Option<Vec<i64>>) {
    match get(ev::CUDA_VISIBLE_DEVICES) {
        Some(value) => (
            Attached::Devices(
                crate::cuda::visible_devices(&value)
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            ),
            None,
        ),
        None => match attached_from_state(dir, eid) {
            Some((attached, pids)) => (attached, Some(pids)),
            None => (Attached::Unknown, None),
        },
    }
}

fn attached_from_state(dir: &StateDir, eid: &str) -> Option<(Attached, Vec<i64>)> {
    if !dir.path("devices.json").is_file() {
        return None;
    }
    let mut transaction = dir.transaction(LoadOptions::default()).ok()?;
    let (envs, devices) = transaction.envs_and_devices().ok()?;
    let indices = devices.indices_of(eid);
    let pids = envs
        .get(eid)
        .map(|env| env.pids.clone())
        .unwrap_or_default();
    Some((
        Attached::Devices(indices.into_iter().map(|i| i.to_string()).collect()),
        pids,
    ))
}

/// Creates (or repairs) `dir` with links named `nvidia-smi` and `docker` to
/// the running genv executable, for activation to put first on `PATH`.
pub(crate) fn ensure_shims_dir(dir: &Path) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for name in PROGRAMS {
        let link = dir.join(name);
        if std::fs::read_link(&link).is_ok_and(|target| target == exe) {
            continue;
        }
        // A new link renamed over the old one, so a shell running the shim
        // meanwhile never finds it missing.
        let temporary = dir.join(format!(".{name}.{}", std::process::id()));
        let _ = std::fs::remove_file(&temporary);
        std::os::unix::fs::symlink(&exe, &temporary).map_err(|e| Error::io(&temporary, e))?;
        std::fs::rename(&temporary, &link).map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            Error::io(&link, e)
        })?;
    }
    Ok(dir.to_path_buf())
}

/// A shim's arguments as text for its rules, with the way back to the bytes
/// given. An argument that is not UTF-8 (a file name, a container's
/// command) is read with U+FFFD where its bytes are not text, and passed on
/// as given when the rules leave it as it is.
pub(crate) struct Args {
    given: Vec<OsString>,
    text: Vec<String>,
}

impl Args {
    pub(crate) fn new(given: Vec<OsString>) -> Self {
        let text = given
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        Args { given, text }
    }

    pub(crate) fn text(&self) -> &[String] {
        &self.text
    }

    /// The arguments to run the real program with, from `planned` (made
    /// from [`Args::text`]): each one that is an argument as read comes back
    /// as it was given. An argument the rules changed that still holds
    /// bytes that were not text cannot be given back: an error.
    pub(crate) fn given(&self, planned: &[String]) -> Result<Vec<OsString>> {
        let mut taken = vec![false; self.given.len()];
        planned
            .iter()
            .map(|arg| {
                let unread = |i: usize| self.given[i].to_str().is_none() && self.text[i] == *arg;
                let found = (0..self.given.len())
                    .find(|&i| unread(i) && !taken[i])
                    .or_else(|| (0..self.given.len()).find(|&i| unread(i)));
                if let Some(i) = found {
                    taken[i] = true;
                    return Ok(self.given[i].clone());
                }
                let changed = arg.contains('\u{FFFD}') && !self.text.iter().any(|t| t == arg);
                if let (true, Some(bytes)) = (changed, self.first_not_text()) {
                    return Err(Error::hinted(
                        format!("argument '{bytes}' is not valid UTF-8"),
                        format!(
                            "pass it as text, or set {}=1 to run the real program untouched",
                            ev::GENV_BYPASS
                        ),
                    ));
                }
                Ok(OsString::from(arg))
            })
            .collect()
    }

    /// The first argument that is not UTF-8, its bytes escaped.
    fn first_not_text(&self) -> Option<String> {
        self.given
            .iter()
            .find(|g| g.to_str().is_none())
            .map(|g| g.as_encoded_bytes().escape_ascii().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_come_back_as_given() {
        use std::os::unix::ffi::OsStringExt;
        let a = OsString::from_vec(b"/data/\xff".to_vec());
        let b = OsString::from_vec(b"/data/\xfe".to_vec());
        let args = Args::new(vec![a.clone(), "-q".into(), b.clone()]);
        // Both read as "/data/\u{FFFD}"; each comes back in its place.
        let planned: Vec<String> = ["--id=0", &args.text()[0], "-q", &args.text()[2]]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(
            args.given(&planned).unwrap(),
            [OsString::from("--id=0"), a, "-q".into(), b]
        );
        let changed = vec![format!("--id={}", args.text()[0])];
        assert!(args.given(&changed).is_err());
    }

    #[test]
    fn shims_dir_links_to_the_running_executable() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("shims");
        let exe = std::env::current_exe().unwrap();
        assert_eq!(ensure_shims_dir(&dir).unwrap(), dir);
        // A stale link is replaced; a second call changes nothing.
        std::fs::remove_file(dir.join("docker")).unwrap();
        std::os::unix::fs::symlink("/nowhere", dir.join("docker")).unwrap();
        ensure_shims_dir(&dir).unwrap();
        for name in PROGRAMS {
            assert_eq!(std::fs::read_link(dir.join(name)).unwrap(), exe);
        }
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["docker", "nvidia-smi"]);
    }
}
