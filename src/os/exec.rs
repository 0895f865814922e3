//! Running the real program behind genv: the shims' `nvidia-smi` and
//! `docker`, the container engine behind `genv-docker`, the OCI runtime
//! behind `genv-container-runtime`. The real one is found further on
//! `PATH` than genv itself, and every run carries a depth
//! (`GENV_SHIM_DEPTH`) so that a copy of genv installed as the "real"
//! program ends in an error, not a loop.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::env_vars::{self as ev, get};
use crate::error::{Error, Result};

/// How many of genv's programs may run one another before we call it a
/// loop.
const MAX_DEPTH: u32 = 8;

/// The real `program`: the first one on `PATH` that is not genv itself
/// (compared by device and inode, so links and hard links to genv, and the
/// shims folder, are all skipped).
pub(crate) fn find_real(program: &str) -> Result<PathBuf> {
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
    Err(Error::RealNotFound {
        program: program.to_owned(),
    })
}

/// `program` with `args`, one level deeper than this process; an error
/// when genv's programs already run one another in a loop.
pub(crate) fn command(program: &Path, args: &[OsString]) -> Result<Command> {
    let depth = get(ev::GENV_SHIM_DEPTH)
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0);
    if depth >= MAX_DEPTH {
        return Err(Error::ShimLoop { depth });
    }
    let mut command = Command::new(program);
    command
        .args(args)
        .env(ev::GENV_SHIM_DEPTH, (depth + 1).to_string());
    Ok(command)
}

/// Replaces this process with `program` run with `args`; returns only on
/// failure, with the error.
pub(crate) fn exec(program: &Path, args: &[OsString]) -> Error {
    match command(program, args) {
        Ok(mut command) => Error::Exec {
            program: program.to_owned(),
            source: command.exec(),
        },
        Err(e) => e,
    }
}
