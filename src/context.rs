//! What every program and verb is given, and what it gives back: one shape
//! for every command, so that the entry is the only place that prints the
//! result and exits.

use std::cell::OnceCell;
use std::io::Write;

use crate::backend::{self, DeviceBackend};
use crate::state::StateDir;

/// The state folder, the device backend (made once, and only when a verb
/// asks for it) and the output a verb produces for stdout. Separate
/// fields, so a verb can write its output while it asks the backend.
pub struct Context {
    pub dir: StateDir,
    pub backend: LazyBackend,
    /// What goes to stdout, printed by the entry when the command ends,
    /// even when an error follows (as genv 1.4.3 does); a streaming
    /// context prints it at each [`Context::print`] as well.
    pub out: String,
    printing: Printing,
}

/// When output reaches stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Printing {
    /// All at the end (the verbs: nothing printed while the state is
    /// locked, and output before an error is still printed).
    Buffer,
    /// As it is made: programs that run another one or run long (the
    /// shims, `genv lock`).
    Stream,
}

impl Context {
    /// A context whose output is printed at the end.
    pub fn new(dir: StateDir) -> Self {
        Context::printing(dir, Printing::Buffer)
    }

    pub fn printing(dir: StateDir, printing: Printing) -> Self {
        Context {
            dir,
            backend: LazyBackend::default(),
            out: String::new(),
            printing,
        }
    }

    /// Adds `text` to the output; streaming, prints it (and anything
    /// before it) now. An error means stdout is closed: the reader went
    /// away.
    pub fn print(&mut self, text: &str) -> std::io::Result<()> {
        self.out.push_str(text);
        match self.printing {
            Printing::Buffer => Ok(()),
            Printing::Stream => self.flush(),
        }
    }

    /// Prints the output so far, then `len` bytes from `reader` as they
    /// come (a long listing the daemon sends), on stdout. An error of
    /// stdout (a reader that went away) drains the rest unprinted.
    pub(crate) fn pass_through(
        &mut self,
        reader: &mut impl std::io::Read,
        len: u64,
    ) -> std::io::Result<()> {
        let _ = self.flush();
        let mut from = std::io::Read::take(reader, len);
        let mut stdout = std::io::stdout().lock();
        if std::io::copy(&mut from, &mut stdout).is_err() {
            std::io::copy(&mut from, &mut std::io::sink())?;
        }
        if from.limit() > 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let _ = stdout.flush();
        Ok(())
    }

    /// Prints the output so far on stdout.
    pub fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let mut stdout = std::io::stdout().lock();
        let written = stdout
            .write_all(self.out.as_bytes())
            .and_then(|()| stdout.flush());
        self.out.clear();
        written
    }
}

/// Where the GPUs come from (simulated, NVML or `nvidia-smi`), chosen the
/// first time a verb asks: reading the state never needs it. In `genv
/// daemon`, one backend shared by every request.
#[derive(Default)]
pub struct LazyBackend {
    own: OnceCell<Box<dyn DeviceBackend>>,
    shared: Option<std::sync::Arc<dyn DeviceBackend + Send + Sync>>,
}

impl LazyBackend {
    /// A backend of the caller's choosing (tests).
    #[cfg(test)]
    pub fn with(backend: Box<dyn DeviceBackend>) -> Self {
        LazyBackend {
            own: OnceCell::from(backend),
            shared: None,
        }
    }

    /// The daemon's backend, for one request.
    pub(crate) fn shared(backend: std::sync::Arc<dyn DeviceBackend + Send + Sync>) -> Self {
        LazyBackend {
            own: OnceCell::new(),
            shared: Some(backend),
        }
    }

    pub fn get(&self) -> &dyn DeviceBackend {
        match &self.shared {
            Some(shared) => shared.as_ref(),
            None => self.own.get_or_init(backend::detect).as_ref(),
        }
    }
}

/// A verb's exit status; errors are returned as `Err` and exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit(pub i32);

impl Exit {
    pub const SUCCESS: Exit = Exit(0);
}
