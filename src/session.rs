//! The environment a shell (or process) is in: what activation sets and
//! how the shell verbs find it.

use std::path::PathBuf;

use crate::env_vars::{self as ev, get};
use crate::error::{Error, Result};
use crate::shell::Action;
use crate::state::{Config, Transaction};

pub const NOT_ACTIVE: &str = "Not running in an active environment";
pub const ALREADY_ACTIVE: &str = "Already running in an active environment";

/// What genv 1.4.3 says when `activate`/`deactivate` run without the
/// shell function.
pub const NOT_INITIALIZED: &str = "Your shell is not properly initialized at the moment.
Run the following command to initialize it.
You should also add it to your ~/.bashrc or any equivalent file.

    eval \"$(genv shell --init)\"
";

/// The configuration folder, as genv 1.4.3's `genv.sdk.home()` finds it:
/// `.genv` in the working directory, else in `$HOME`.
pub fn home() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    [cwd, home]
        .into_iter()
        .flatten()
        .map(|dir| dir.join(".genv"))
        .find(|p| p.is_dir())
}

/// The current environment's identifier, if any.
pub fn eid() -> Option<String> {
    get(ev::GENV_ENVIRONMENT_ID).filter(|e| !e.is_empty())
}

pub fn require_eid() -> Result<String> {
    eid().ok_or_else(|| Error::msg(NOT_ACTIVE))
}

/// The folder of `nvidia-smi` and `docker` links to this executable that
/// activation puts first on `PATH`. Per user (never in the shared state
/// folder, where another user could replace the links).
pub fn shims_dir() -> Result<PathBuf> {
    let base = get("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            get("HOME")
                .filter(|d| !d.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .ok_or_else(|| {
            Error::msg("cannot place the shims folder: neither XDG_CACHE_HOME nor HOME is set")
        })?;
    crate::shim::ensure_shims_dir(&base.join("genv").join("shims"))
}

/// The longest environment name genv accepts and exports. Every variable
/// of a shell goes to every program it starts: a name of a megabyte (which
/// another user can write into the shared state) would make every later
/// command of that shell fail with "Argument list too long".
pub const MAX_NAME_BYTES: usize = 256;

/// Checks an environment name a user gives on the command line.
pub fn validate_name(name: &str) -> Result<()> {
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
pub fn config_actions(config: &Config) -> Vec<Action> {
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
pub fn attached(tx: &mut Transaction<'_>, eid: &str) -> Vec<u32> {
    tx.devices().map(|d| d.indices_of(eid)).unwrap_or_default()
}

/// `CUDA_VISIBLE_DEVICES` for the attached devices, `-1` for none.
pub fn devices_action(indices: &[u32]) -> Action {
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
pub fn load_config(dir: &std::path::Path) -> Result<Config> {
    let field = |name: &str| -> Result<Option<String>> {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    };
    let gpu_memory = field("gpu-memory")?
        .map(|m| crate::memory::validate(&m))
        .transpose()?;
    let gpus = match field("gpus")? {
        Some(text) => Some(text.parse::<u32>().map_err(|_| {
            Error::msg(format!(
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

pub fn save_config(dir: &std::path::Path, config: &Config) -> Result<()> {
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
        match value {
            Some(value) => std::fs::write(&path, value).map_err(|e| Error::io(&path, e))?,
            None => match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            },
        }
    }
    Ok(())
}
