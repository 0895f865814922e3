//! What every verb is given, and what it gives back: one shape for every
//! command, so that `main` is the only place that prints the result and
//! exits.

use std::cell::OnceCell;

use crate::backend::{self, DeviceBackend};
use crate::state::StateDir;

/// The state folder, the device backend (made once, and only when a verb
/// asks for it) and the output a verb produces for stdout. Separate
/// fields, so a verb can write its output while it asks the backend.
pub struct Context {
    pub dir: StateDir,
    pub backend: LazyBackend,
    /// What goes to stdout, printed by `main` even when an error follows
    /// (as genv 1.4.3 does).
    pub out: String,
}

impl Context {
    pub fn new(dir: StateDir) -> Self {
        Context {
            dir,
            backend: LazyBackend::default(),
            out: String::new(),
        }
    }
}

/// Where the GPUs come from (simulated, NVML or `nvidia-smi`), chosen the
/// first time a verb asks: reading the state never needs it.
#[derive(Default)]
pub struct LazyBackend(OnceCell<Box<dyn DeviceBackend>>);

impl LazyBackend {
    /// A backend of the caller's choosing (tests).
    pub fn with(backend: Box<dyn DeviceBackend>) -> Self {
        LazyBackend(OnceCell::from(backend))
    }

    pub fn get(&self) -> &dyn DeviceBackend {
        self.0.get_or_init(backend::detect).as_ref()
    }
}

/// A verb's exit status; errors are returned as `Err` and exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit(pub i32);

impl Exit {
    pub const SUCCESS: Exit = Exit(0);
}
