//! The environment a shell (or process) is in: what activation sets and
//! how the shell verbs find it.

use std::path::PathBuf;

use crate::env_vars::{self as ev, get};
use crate::error::{Error, Result};
use crate::shell::Action;
use crate::state::{Config, Transaction};

/// The configuration folder, as genv 1.4.3's `genv.sdk.home()` finds it:
/// `.genv` in the working directory, else in `$HOME`.
pub(crate) fn home() -> Option<PathBuf> {
    // In the daemon: the client looked, in its own folders.
    if let Some(found) = crate::caller::dotgenv() {
        return found.map(|_| PathBuf::from(".genv"));
    }
    let cwd = std::env::current_dir().ok();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    [cwd, home]
        .into_iter()
        .flatten()
        .map(|dir| dir.join(".genv"))
        .find(|p| p.is_dir())
}

/// The current environment's identifier, if any.
pub(crate) fn eid() -> Option<String> {
    get(ev::GENV_ENVIRONMENT_ID).filter(|e| !e.is_empty())
}

pub(crate) fn require_eid() -> Result<String> {
    eid().ok_or_else(crate::error::reference::not_active)
}

/// The folder of `nvidia-smi` and `docker` links to this executable that
/// activation puts first on `PATH`. Per user (never in the shared state
/// folder, where another user could replace the links).
pub(crate) fn shims_dir() -> Result<PathBuf> {
    let base = get("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            get("HOME")
                .filter(|d| !d.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .ok_or_else(|| {
            Error::new("cannot place the shims folder: neither XDG_CACHE_HOME nor HOME is set")
        })?;
    let dir = base.join("genv").join("shims");
    if crate::caller::remote() {
        // In the daemon: the client made it, as itself; root never
        // writes under a user's home.
        return Ok(dir);
    }
    crate::shim::ensure_shims_dir(&dir)
}

/// The longest environment name genv accepts and exports. Every variable
/// of a shell goes to every program it starts: a name of a megabyte (which
/// another user can write into the shared state) would make every later
/// command of that shell fail with "Argument list too long".
pub(crate) const MAX_NAME_BYTES: usize = 256;

/// Checks an environment name a user gives on the command line.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    match name_problem(name) {
        None => Ok(()),
        Some(problem) => Err(Error::hinted(
            format!("invalid environment name: {problem}"),
            format!("use a name of at most {MAX_NAME_BYTES} bytes without NUL characters"),
        )),
    }
}

fn name_problem(name: &str) -> Option<String> {
    if name.len() > MAX_NAME_BYTES {
        Some(format!("it is {} bytes long", name.len()))
    } else if name.contains('\0') {
        Some("it contains a NUL character".to_owned())
    } else {
        None
    }
}

/// The variables that carry an environment's configuration. Values come
/// from the shared state, where any local user may have written anything:
/// one that the command line would refuse is not exported (a warning says
/// so) rather than put into the shell.
pub(crate) fn config_actions(config: &Config) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut field = |name: &'static str, value: Option<String>, problem: Option<String>| {
        actions.push(match (value, problem) {
            (Some(_), Some(problem)) => {
                crate::messages::warn(format_args!(
                    "not setting {name}: the environment's value is invalid ({problem})"
                ));
                Action::Unset(name)
            }
            (Some(value), None) => Action::Set(name, value),
            (None, _) => Action::Unset(name),
        })
    };
    let name_problem = config.name.as_deref().and_then(name_problem);
    field(
        ev::GENV_ENVIRONMENT_NAME,
        config.name.as_deref().map(str::to_owned),
        name_problem,
    );
    let memory_problem = config.gpu_memory.as_deref().and_then(|m| {
        crate::memory::validate(m).err().map(|_| {
            format!(
                "'{}' is not an amount of memory",
                crate::escape::terminal(&m.chars().take(64).collect::<String>())
            )
        })
    });
    let capped = config.gpu_memory.is_some() && memory_problem.is_none();
    field(
        ev::GENV_GPU_MEMORY,
        config.gpu_memory.as_deref().map(str::to_owned),
        memory_problem,
    );
    let gpus_problem = config
        .gpus
        .filter(|&g| g < 0)
        .map(|g| format!("{g} is not a number of GPUs"));
    field(
        ev::GENV_GPUS,
        config.gpus.map(|g| g.to_string()),
        gpus_problem,
    );
    actions.extend(preload_action(capped));
    actions
}

/// The memory cap library in `LD_PRELOAD` while the environment has a
/// capacity, and out of it again once the capacity is cleared (only then:
/// environments without a capacity leave `LD_PRELOAD` alone).
fn preload_action(capped: bool) -> Option<Action> {
    if !capped {
        return crate::memcap::preloaded().map(|_| Action::Preload(None));
    }
    match crate::memcap::library() {
        Some(library) => {
            let library = library.to_string_lossy().into_owned();
            if crate::memcap::preloadable(&library) {
                return Some(Action::Preload(Some(library)));
            }
            crate::messages::warn_hint(
                format_args!(
                    "the GPU memory capacity is not enforced: LD_PRELOAD cannot hold {} (a space or colon in the path)",
                    crate::escape::terminal(&library)
                ),
                "install genv in a folder whose path has neither",
            );
        }
        None => crate::messages::warn_hint(
            format_args!(
                "the GPU memory capacity is not enforced: {} is not installed next to genv",
                crate::memcap::LIBRARY
            ),
            "install it next to the genv binary; meanwhile enforcement (genv enforce) is the backstop",
        ),
    }
    crate::memcap::preloaded().map(|_| Action::Preload(None))
}

/// The devices attached to an environment, as the state says; none when
/// the devices cannot be known (no driver and no `devices.json`).
pub(crate) fn attached(tx: &mut Transaction<'_>, eid: &str) -> Vec<u32> {
    tx.devices().map(|d| d.indices_of(eid)).unwrap_or_default()
}

/// `CUDA_VISIBLE_DEVICES` for the attached devices, `-1` for none.
pub(crate) fn devices_action(indices: &[u32]) -> Action {
    let value = if indices.is_empty() {
        "-1".to_owned()
    } else {
        indices
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    Action::Set(ev::CUDA_VISIBLE_DEVICES, value)
}

/// The configuration kept in a `.genv` folder: files `name`, `gpu-memory`
/// and `gpus`, as genv 1.4.3 saves them.
///
/// A `.genv` folder may sit in a working folder others can write to, so
/// each entry is read only when it is a regular file reached without a
/// link and no larger than [`MAX_CONFIG_ENTRY`]; anything else (a FIFO
/// that would block, a link to `/dev/zero`) is refused with one line.
pub(crate) fn load_config(dir: &std::path::Path) -> Result<Config> {
    if let Some(Some(found)) = crate::caller::dotgenv() {
        return found.map_err(Error::new);
    }
    let folder = config_folder(dir, false)?;
    let field = |name: &str| read_config_entry(&folder, dir, name);
    let gpu_memory = field("gpu-memory")?
        .map(|m| crate::memory::validate(&m))
        .transpose()?;
    let gpus = match field("gpus")? {
        Some(text) => Some(text.parse::<u32>().map_err(|_| {
            Error::new(format!(
                "{}: '{text}' is not a number of GPUs",
                dir.join("gpus").display()
            ))
        })?),
        None => None,
    };
    Ok(Config {
        name: field("name")?.map(Into::into),
        gpu_memory: gpu_memory.map(Into::into),
        gpus: gpus.map(i64::from),
    })
}

/// The largest `.genv` entry genv reads: a name, a memory amount or a
/// count are a few bytes.
pub(crate) const MAX_CONFIG_ENTRY: u64 = 4096;

/// `.genv` itself, opened once; for saving, not through a link.
fn config_folder(dir: &std::path::Path, save: bool) -> Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    if save {
        flags |= OFlags::NOFOLLOW;
    }
    rustix::fs::open(dir, flags, Mode::empty()).map_err(|e| match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR if save => Error::new(format!(
            "{} is not a folder of its own (a symbolic link?): genv saves the configuration only into a real folder",
            crate::state::file::shown(dir)
        )),
        e => Error::io(dir, e.into()),
    })
}

fn read_config_entry(
    folder: &std::os::fd::OwnedFd,
    dir: &std::path::Path,
    name: &str,
) -> Result<Option<String>> {
    use rustix::fs::{FileType, Mode, OFlags};
    use rustix::io::Errno;
    let path = dir.join(name);
    let refuse = |what: &str| {
        Error::new(format!(
            "{} is {what}; genv reads only a regular file there (remove it)",
            crate::state::file::shown(&path)
        ))
    };
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(folder, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => return Err(refuse("a symbolic link")),
        Err(Errno::NXIO) => return Err(refuse("a socket")),
        Err(e) => return Err(Error::io(&path, e.into())),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| Error::io(&path, e.into()))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(refuse("not a regular file"));
    }
    let limit = MAX_CONFIG_ENTRY as usize;
    let mut bytes = vec![0u8; limit + 1];
    let mut filled = 0;
    loop {
        match rustix::io::read(&fd, &mut bytes[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                if filled > limit {
                    return Err(Error::new(format!(
                        "{} is larger than 4 KiB, genv's limit for a .genv entry (remove it)",
                        crate::state::file::shown(&path)
                    )));
                }
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(Error::io(&path, e.into())),
        }
    }
    bytes.truncate(filled);
    Ok(Some(String::from_utf8_lossy(&bytes).trim().to_owned()))
}

/// Saves the configuration into `.genv`: each entry a new file put in
/// place by rename, so that whatever was there (a link to one of the
/// user's files, planted in a shared working folder) is replaced, never
/// written through.
pub(crate) fn save_config(dir: &std::path::Path, config: &Config) -> Result<()> {
    // In the daemon: the client saves it, as itself, after the answer.
    if crate::caller::save(config) {
        return Ok(());
    }
    use rustix::fs::{AtFlags, Mode, OFlags};
    use rustix::io::Errno;
    let folder = config_folder(dir, true)?;
    let fields = [
        ("name", config.name.as_deref().map(str::to_owned)),
        (
            "gpu-memory",
            config.gpu_memory.as_deref().map(str::to_owned),
        ),
        ("gpus", config.gpus.map(|g| g.to_string())),
    ];
    for (name, value) in fields {
        let path = dir.join(name);
        let Some(value) = value else {
            match rustix::fs::unlinkat(&folder, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(Error::io(&path, e.into())),
            }
            continue;
        };
        let temporary = format!(".{name}.tmp-{}", std::process::id());
        let _ = rustix::fs::unlinkat(&folder, &temporary, AtFlags::empty());
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&folder, &temporary, flags, Mode::from_raw_mode(0o666))
            .map_err(|e| Error::io(&path, e.into()))?;
        let written = std::io::Write::write_all(&mut std::fs::File::from(fd), value.as_bytes());
        let placed = written.map_err(|e| Error::io(&path, e)).and_then(|()| {
            rustix::fs::renameat(&folder, &temporary, &folder, name)
                .map_err(|e| Error::io(&path, e.into()))
        });
        if let Err(e) = placed {
            let _ = rustix::fs::unlinkat(&folder, &temporary, AtFlags::empty());
            return Err(e);
        }
    }
    Ok(())
}
