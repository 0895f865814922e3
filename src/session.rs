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

/// The variables that carry an environment's configuration.
pub fn config_actions(config: &Config) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut field = |name: &'static str, value: Option<String>| {
        actions.push(match value {
            Some(value) => Action::Set(name, value),
            None => Action::Unset(name),
        })
    };
    field(ev::GENV_ENVIRONMENT_NAME, config.name.clone());
    field(ev::GENV_GPU_MEMORY, config.gpu_memory.clone());
    field(ev::GENV_GPUS, config.gpus.map(|g| g.to_string()));
    actions
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
        name: field("name")?,
        gpu_memory,
        gpus: gpus.map(i64::from),
    })
}

pub fn save_config(dir: &std::path::Path, config: &Config) -> Result<()> {
    let fields = [
        ("name", config.name.clone()),
        ("gpu-memory", config.gpu_memory.clone()),
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
