//! The shims: `nvidia-smi` and `docker` are links to the `genv` executable,
//! put first on `PATH` in an activated environment. Run under one of those
//! names, genv narrows what the real program shows or gets to the
//! environment's GPUs, then runs the real program found further on `PATH`.
//! `GENV_BYPASS=1` runs the real program untouched.

pub mod docker;
pub mod nvidia_smi;

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::env_vars::{self as ev, get};
use crate::error::{Error, Result};
use crate::state::{LoadOptions, StateDir};

/// The programs genv stands in for.
pub const PROGRAMS: [&str; 2] = [nvidia_smi::PROGRAM, docker::PROGRAM];

/// How many shims may run one another before we call it a loop (a copy of
/// genv, not a link, installed as the "real" program).
const MAX_DEPTH: u32 = 8;

/// Runs the shim that `argv[0]` names, or `None` when genv runs as itself.
pub fn dispatch() -> Option<i32> {
    let mut args = std::env::args_os();
    let arg0 = args.next()?;
    let name = Path::new(&arg0).file_name()?.to_str()?.to_owned();
    let rest: Vec<OsString> = args.collect();
    match name.as_str() {
        nvidia_smi::PROGRAM => Some(nvidia_smi::run(rest)),
        docker::PROGRAM => Some(docker::run(rest)),
        crate::container::DOCKER_PROGRAM => Some(crate::container::docker::main(rest)),
        crate::container::RUNTIME_PROGRAM => Some(crate::container::runtime::main(rest)),
        crate::container::HOOK_PROGRAM => Some(crate::container::hook::main(rest)),
        _ => None,
    }
}

/// `GENV_BYPASS` set to a non-zero number.
pub fn bypass() -> bool {
    get(ev::GENV_BYPASS)
        .and_then(|v| v.trim().parse::<i64>().ok())
        .is_some_and(|v| v != 0)
}

/// The active environment's identifier, when in one.
pub fn environment_id() -> Option<String> {
    get(ev::GENV_ENVIRONMENT_ID).filter(|eid| !eid.is_empty())
}

/// The real `program`: the first one on `PATH` that is not genv itself
/// (compared by device and inode, so links and hard links to genv, and the
/// shims folder, are all skipped).
pub fn find_real(program: &str) -> Result<PathBuf> {
    let me = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| (m.dev(), m.ino()))
        .ok();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        if dir.as_os_str().is_empty() {
            continue;
        }
        let candidate = dir.join(program);
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if !meta.is_file() || meta.mode() & 0o111 == 0 {
            continue;
        }
        if Some((meta.dev(), meta.ino())) == me {
            continue;
        }
        return Ok(candidate);
    }
    Err(Error::msg(format!(
        "genv's {program} shim could not find the real {program} on PATH (other than the shim itself); install {program} or fix PATH"
    )))
}

/// Replaces this process with `program` run with `args`; returns only on
/// failure, with the exit code to use.
pub fn exec(program: &Path, args: &[OsString]) -> i32 {
    let error = match next_depth() {
        Ok(depth) => Command::new(program)
            .args(args)
            .env(ev::GENV_SHIM_DEPTH, depth.to_string())
            .exec(),
        Err(e) => return fail(&e),
    };
    let name = program.display();
    eprintln!("genv: could not run {name}: {error}");
    if error.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// The depth to give to the real program, refusing a loop of shims.
pub fn next_depth() -> Result<u32> {
    let depth = get(ev::GENV_SHIM_DEPTH)
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0);
    if depth >= MAX_DEPTH {
        return Err(Error::msg(format!(
            "genv shims call one another in a loop ({} levels); a copy of genv is installed as the real program on PATH — remove it, or set {}=1",
            depth,
            ev::GENV_BYPASS
        )));
    }
    Ok(depth + 1)
}

/// Prints an error as genv does and returns exit code 1.
pub fn fail(error: &Error) -> i32 {
    if error.is_reference_message() {
        eprintln!("{}", error.to_string().trim_end_matches('\n'));
    } else {
        crate::messages::error(error, error.hint());
    }
    1
}

/// Which GPUs the environment may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attached {
    /// Nothing tells (no `CUDA_VISIBLE_DEVICES`, no state): no filter.
    Unknown,
    /// These GPUs (indices, or UUIDs as `CUDA_VISIBLE_DEVICES` may list);
    /// empty when detached.
    Devices(Vec<String>),
}

/// The environment's GPUs: `CUDA_VISIBLE_DEVICES` when set (activation
/// keeps it current), otherwise the attachments in the state folder.
pub fn attached(eid: &str) -> Attached {
    match get(ev::CUDA_VISIBLE_DEVICES) {
        Some(value) => Attached::Devices(
            crate::cuda::visible_devices(&value)
                .iter()
                .map(ToString::to_string)
                .collect(),
        ),
        None => attached_from_state(eid).unwrap_or(Attached::Unknown),
    }
}

fn attached_from_state(eid: &str) -> Option<Attached> {
    let dir = StateDir::from_env();
    if !dir.path("devices.json").is_file() {
        return None;
    }
    let mut transaction = dir.transaction(LoadOptions::default()).ok()?;
    let devices = transaction.devices().ok()?;
    let indices = devices.indices_of(eid);
    Some(Attached::Devices(
        indices.into_iter().map(|i| i.to_string()).collect(),
    ))
}

/// Creates (or repairs) `dir` with links named `nvidia-smi` and `docker` to
/// the running genv executable, for activation to put first on `PATH`.
pub fn ensure_shims_dir(dir: &Path) -> Result<PathBuf> {
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
pub struct Args {
    given: Vec<OsString>,
    text: Vec<String>,
}

impl Args {
    pub fn new(given: Vec<OsString>) -> Self {
        let text = given
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        Args { given, text }
    }

    pub fn text(&self) -> &[String] {
        &self.text
    }

    /// The arguments to run the real program with, from `planned` (made
    /// from [`Args::text`]): each one that is an argument as read comes back
    /// as it was given. An argument the rules changed that still holds
    /// bytes that were not text cannot be given back: an error.
    pub fn given(&self, planned: &[String]) -> Result<Vec<OsString>> {
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
