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
    eprintln!("{}", error.to_string().trim_end_matches('\n'));
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
        Some(list) => Attached::Devices(parse_visible_devices(&list)),
        None => attached_from_state(eid).unwrap_or(Attached::Unknown),
    }
}

/// The devices `CUDA_VISIBLE_DEVICES` lists; CUDA stops at `-1`.
pub fn parse_visible_devices(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .take_while(|item| !item.is_empty() && !item.starts_with('-'))
        .map(str::to_owned)
        .collect()
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

/// Arguments as text, or `None` when one is not UTF-8 (then the shims pass
/// everything through untouched).
pub fn utf8_args(args: &[OsString]) -> Option<Vec<String>> {
    args.iter().map(|a| a.to_str().map(str::to_owned)).collect()
}

pub fn os_args(args: &[String]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_devices() {
        assert_eq!(parse_visible_devices("0,1"), ["0", "1"]);
        assert_eq!(parse_visible_devices(" 2 , 3"), ["2", "3"]);
        assert!(parse_visible_devices("-1").is_empty());
        assert!(parse_visible_devices("").is_empty());
        assert_eq!(parse_visible_devices("1,-1,2"), ["1"]);
        assert_eq!(parse_visible_devices("GPU-abc"), ["GPU-abc"]);
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
