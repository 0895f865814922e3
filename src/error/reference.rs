//! genv 1.4.3's own texts, word for word: clients (scripts, the VS Code
//! extension, the Python SDK) match on them, so they are printed as they
//! are, without genv's prefix. Each is in genv 1.4.3's source; this is the
//! only place that makes them, and [`Reference`] can be made nowhere else.

use std::fmt;

use super::Error;

/// A text genv 1.4.3 prints word for word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference(String);

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn error(text: impl Into<String>) -> Error {
    Error::Reference(Reference(text.into()))
}

/// `genv/cli/attach.py`, `deactivate.py`, `detach.py`.
pub(crate) const NOT_ACTIVE: &str = "Not running in an active environment";

/// `genv/cli/activate.py`.
pub(crate) const ALREADY_ACTIVE: &str = "Already running in an active environment";

/// `genv/cli/shell.py`: what `activate`/`deactivate` say without the shell
/// function.
pub(crate) const NOT_INITIALIZED: &str = "Your shell is not properly initialized at the moment.
Run the following command to initialize it.
You should also add it to your ~/.bashrc or any equivalent file.

    eval \"$(genv shell --init)\"
";

/// `genv/cli/home.py`.
const NO_HOME: &str = "Could not find any Genv configuration directory.

Create a directory named '.genv' under one of the following directories:
  1) Current working directory (i.e. $PWD)
  2) Home directory (i.e. $HOME)
";

pub(crate) fn not_active() -> Error {
    error(NOT_ACTIVE)
}

pub(crate) fn already_active() -> Error {
    error(ALREADY_ACTIVE)
}

pub(crate) fn not_initialized() -> Error {
    error(NOT_INITIALIZED)
}

pub(crate) fn no_home() -> Error {
    error(NO_HOME)
}

/// `genv/cli/devices.py`.
pub(crate) fn more_devices_than_total(count: u32, total: usize) -> Error {
    error(format!(
        "Requested more devices ({count}) than total available ({total})"
    ))
}

/// `genv/entities/core/devices.py`.
pub(crate) fn no_available_devices() -> Error {
    error("No available devices")
}

/// `genv/cli/devices.py`, `genv/core/devices.py`.
pub(crate) fn device_not_available(index: u32) -> Error {
    error(format!("Device {index} is not available"))
}

/// `genv/cli/remote.py`.
pub(crate) fn no_host() -> Error {
    error("Cannot find a host with enough available resources")
}

/// `genv/cli/llm.py`, `genv/cli/remote.py`; `model` already escaped.
pub(crate) fn no_llm_model(model: &str) -> Error {
    error(format!("Could not find LLM model '{model}'"))
}

/// `genv/sdk/devices.py`.
pub(crate) fn no_attached_indices() -> Error {
    error("Failed to find attached device indices")
}

/// `genv/shims/docker`.
pub(crate) fn docker_more_devices_than_attached(count: usize, attached: usize) -> Error {
    error(format!(
        "Requested {count} devices but only {attached} are attached to environment"
    ))
}

/// `genv/shims/docker`.
pub(crate) fn docker_unsupported_gpus(value: &str) -> Error {
    error(format!("Unsupported value for '--gpus' ({value})"))
}

/// The lines `genv enforce` and `genv usage execute` log on stderr as
/// genv 1.4.3 does (`genv/enforce/execute.py`,
/// `genv/entities/core/processes.py`).
pub(crate) mod log {
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::messages::raw_line;

    static VERBOSE: AtomicBool = AtomicBool::new(false);

    /// Whether the `[DEBUG]` lines are printed (`--verbose`): genv 1.4.3
    /// prints them always, which fills an enforcement daemon's log with a
    /// line for every process that ended by itself.
    pub(crate) fn verbose(on: bool) {
        VERBOSE.store(on, Ordering::Relaxed);
    }

    pub(crate) fn no_permission_to_query(pid: impl std::fmt::Display) {
        raw_line(&format!(
            "[WARNING] Not enough permissions to query environment of process {pid}"
        ));
    }

    pub(crate) fn no_permission_to_terminate(pid: impl std::fmt::Display) {
        raw_line(&format!(
            "[ERROR] Not enough permissions to terminate process {pid}"
        ));
    }

    pub(crate) fn already_terminated(pid: impl std::fmt::Display) {
        if !VERBOSE.load(Ordering::Relaxed) {
            return;
        }
        raw_line(&format!("[DEBUG] Process {pid} already terminated"));
    }
}
