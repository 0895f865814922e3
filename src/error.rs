//! The errors a user can meet. Each message names the value, the file or the
//! fix; `main` prints it as one line on stderr and exits 1.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A message genv 1.4.3 prints word for word (clients match on them).
    #[error("{0}")]
    Message(String),

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

    /// One of genv's own errors with the fix for it, printed by `main` as
    /// `genv: error: <message>` and `hint: <hint>`.
    #[error("{message}")]
    Hinted { message: String, hint: String },

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

    pub fn msg(message: impl Into<String>) -> Self {
        Error::Message(message.into())
    }

    pub fn hinted(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Hinted {
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// What the user can do about it, when genv knows.
    pub fn hint(&self) -> Option<&str> {
        match self {
            Error::Hinted { hint, .. } => Some(hint),
            _ => None,
        }
    }

    /// Whether the message is genv 1.4.3's own, which clients match word
    /// for word and which is printed without genv's prefix.
    pub fn is_reference_message(&self) -> bool {
        matches!(self, Error::Message(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
