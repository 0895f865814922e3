//! The errors a user can meet. Each message names the value, the file or the
//! fix; the entry prints it through [`report`]: genv's own as
//! `genv: error: <message>` (and `hint: <hint>`), genv 1.4.3's texts
//! ([`Error::Reference`], made only in [`reference`]) as they are.

pub(crate) mod reference;

use std::io;
use std::path::PathBuf;

use crate::messages;
use reference::Reference;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A message genv 1.4.3 prints word for word (clients match on them),
    /// made only by [`reference`].
    #[error("{0}")]
    Reference(Reference),

    #[error(
        "invalid memory value '{0}': expected an integer with an optional unit b, k, m, g, ki, mi or gi (e.g. 4g, 512mi)"
    )]
    InvalidMemory(String),

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{0}")]
    Backend(String),

    /// A value that has no JSON form; nothing is written.
    #[error("cannot write the state as JSON: {0}")]
    Serialize(String),

    /// One of genv's own errors, with the fix for it when genv knows one.
    #[error("{message}")]
    Genv {
        message: String,
        hint: Option<String>,
    },

    /// A change the daemon's ownership rules refuse (who owns an
    /// environment, whose a process is); nothing was written.
    #[error("{0}")]
    Refused(String),

    /// A shim or the container runtime found no real program to run.
    #[error(
        "genv's {program} shim could not find the real {program} on PATH (other than the shim itself)"
    )]
    RealNotFound { program: String },

    /// Shims that run one another: a copy of genv installed as the real
    /// program.
    #[error("genv shims call one another in a loop ({depth} levels)")]
    ShimLoop { depth: u32 },

    /// A program genv runs or becomes could not be started; exit code 127
    /// when it is not there, 126 otherwise, as a shell says.
    #[error("could not run {}: {source}", program.display())]
    Exec {
        program: PathBuf,
        #[source]
        source: io::Error,
    },

    /// `genv lock` could not take a device: its own exit code
    /// (`--conflict-exit-code`).
    #[error("{message}")]
    Conflict {
        message: String,
        hint: &'static str,
        code: i32,
    },

    /// Ctrl-C or another signal ended a wait; exit code 130, no message.
    #[error("")]
    Interrupted,
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// One of genv's own errors, without a hint.
    pub fn new(message: impl Into<String>) -> Self {
        Error::Genv {
            message: message.into(),
            hint: None,
        }
    }

    /// One of genv's own errors with the fix for it.
    pub fn hinted(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Genv {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    /// What the user can do about it, when genv knows.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Genv { hint, .. } => hint.clone(),
            Error::Conflict { hint, .. } => Some((*hint).to_owned()),
            Error::Refused(_) => Some(
                "genv daemon keeps the state on this machine: only an environment's owner or root changes it; nothing was changed"
                    .to_owned(),
            ),
            Error::RealNotFound { program } => Some(format!("install {program} or fix PATH")),
            Error::ShimLoop { .. } => Some(format!(
                "a copy of genv is installed as the real program on PATH: remove it, or set {}=1",
                crate::env_vars::GENV_BYPASS
            )),
            _ => None,
        }
    }

    /// The exit code of a program that ends with this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Interrupted => 130,
            Error::Exec { source, .. } if source.kind() == io::ErrorKind::NotFound => 127,
            Error::Exec { .. } => 126,
            Error::Conflict { code, .. } => *code,
            _ => 1,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Prints the error that ends a program (any of them: `genv`, the shims,
/// the container runtime and its hook) and returns its exit code: genv
/// 1.4.3's texts as they are, genv's own as `genv: error: …` and `hint: …`,
/// nothing for an interrupted wait.
/// An error of a program that a container engine runs (the runtime and
/// its hook): the engine folds what they print into one line of its own
/// (`OCI runtime error: …`, a newline shown as `\n`), so the part that
/// failed, the message and its hint are printed as one line.
pub fn report_in_line(e: &Error, part: &str) -> i32 {
    if !matches!(e, Error::Interrupted) {
        let mut line = format!("{part}: {e}");
        if let Some(hint) = e.hint() {
            line.push_str(" (hint: ");
            line.push_str(&hint);
            line.push(')');
        }
        messages::error(line.trim_end(), None);
    }
    e.exit_code()
}

pub fn report(e: &Error) -> i32 {
    match e {
        Error::Interrupted => {}
        // As genv 1.4.3 prints them: a message that ends with a newline
        // gets one more.
        Error::Reference(text) => messages::raw_line(&text.to_string()),
        e => messages::error(e, e.hint().as_deref()),
    }
    e.exit_code()
}
