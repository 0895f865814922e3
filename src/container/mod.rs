//! The container toolkit: containers as environments.
//!
//! - `genv-docker` ([`docker`]): `docker run` with genv's options turned
//!   into `--runtime=genv` and `GENV_*` variables for the container.
//! - `genv-container-runtime` ([`runtime`]): an OCI runtime that adds genv
//!   to the bundle's configuration on `create` (and to the process on
//!   `exec`), then hands every command to the real runtime.
//! - `genv-container-runtime-hook` ([`hook`]): the `prestart` hook that
//!   activates, configures and attaches the container's environment, and
//!   the `poststop` hook that releases it.
//!
//! All three are the `genv` executable run under those names. The caller's
//! state folder reaches the runtime and its hooks in the bundle
//! ([`state_folder`]), since engines hand runtimes none of the caller's
//! variables.

pub(crate) mod docker;
pub(crate) mod hook;
mod inject;
pub(crate) mod runtime;
pub(crate) mod spec;
pub(crate) mod state_folder;

pub(crate) use hook::PROGRAM as HOOK_PROGRAM;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where the `nvidia-smi` shim is mounted inside a container, first on its
/// `PATH` (as genv 1.4.3 does).
pub(crate) const SHIMS_IN_CONTAINER: &str = "/opt/genv/shims";

/// The state folder inside a container, genv 1.4.3's default: a tmpfs of
/// the container's own, into which the hook mounts the attached devices'
/// lock files (`devices/<index>.lock`) and the memory cap's ledger.
pub(crate) const STATE_IN_CONTAINER: &str = "/var/tmp/genv";

/// Where the memory cap library is mounted inside a container.
pub(crate) const MEMCAP_IN_CONTAINER: &str = "/opt/genv/lib/libgenv_memcap.so";

/// The statically linked genv installed next to `genv`, mounted into
/// containers (whatever their C library) as `nvidia-smi` and `genv`.
pub(crate) const STATIC_GENV: &str = "genv-static";

/// The genv to mount into a container: `genv-static` next to the running
/// executable, else the running executable when it is itself statically
/// linked; an error when neither is, since a dynamically linked genv runs
/// only in images with the host's C library.
pub(crate) fn static_genv() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    let beside = exe.with_file_name(STATIC_GENV);
    if beside.is_file() && is_static(&beside) {
        return Ok(beside);
    }
    if is_static(&exe) {
        return Ok(exe);
    }
    Err(Error::hinted(
        format!(
            "no statically linked genv to mount into the container: {} is missing, and {} is linked dynamically (it would not run in images without its C library)",
            beside.display(),
            exe.display()
        ),
        "install one with scripts/build-static --release (see README, Containers), or run the container with --no-shims",
    ))
}

/// Whether an executable is statically linked: an ELF file without a
/// program interpreter (`PT_INTERP`).
pub(crate) fn is_static(path: &Path) -> bool {
    use std::io::Read;
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(64 * 1024).read_to_end(&mut bytes));
    if read.is_err() {
        return false;
    }
    let u16_at = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // 64-bit little-endian ELF only (the targets genv is built for).
    if bytes.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return false;
    }
    let (Some(offset), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..usize::from(count)).all(|i| {
        let at = offset as usize + i * usize::from(size);
        u32_at(at).is_some_and(|kind| kind != PT_INTERP)
    })
}

/// A variable of an OCI process environment (`NAME=value` entries); the
/// last one wins, as runtimes apply them.
pub(crate) fn env_get<'a>(env: &'a [String], name: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find_map(|entry| entry.strip_prefix(name)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamically_linked_executable_is_not_static() {
        // The test binary has a program interpreter.
        assert!(!is_static(Path::new("/proc/self/exe")));
        assert!(!is_static(Path::new("/nonexistent")));
    }
}
