//! What goes over `genv.sock`: frames of a 4-byte big-endian length and
//! that many bytes of JSON, a request from the client and answers from
//! the daemon, any number of requests on one connection, one after the
//! other. docs/DAEMON.md describes it for other clients.
//!
//! A request is a command line as `genv` takes it (without `genv`
//! itself), the client's variables and the `.genv` configuration it
//! found:
//!
//! ```json
//! {"argv": ["attach", "--count", "1"],
//!  "env": {"GENV_ENVIRONMENT_ID": "1234"},
//!  "dotgenv": {"config": {"gpus": 1}}}
//! ```
//!
//! The answers: zero or more progress frames (`{"stderr": "…"}`, a place
//! in line), then the final one with the exit code, stdout and stderr,
//! and a configuration the client saves into its `.genv` (`config
//! --save`); a stdout longer than [`INLINE_STDOUT`] is not in it but
//! follows as the next frame's bytes (`"stdout_frame": true`):
//!
//! ```json
//! {"code": 0, "stdout": "0\n", "stderr": ""}
//! ```

use std::collections::HashMap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::state::Config;

/// The largest request the daemon reads: a command line and a few
/// variables are a few kilobytes.
pub(crate) const MAX_REQUEST: usize = 1 << 20;
/// The largest answer a client reads: `genv envs` of 100,000
/// environments is about 10 MB.
pub(crate) const MAX_ANSWER: usize = 1 << 30;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Request {
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: HashMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dotgenv: Option<DotGenv>,
}

/// The `.genv` folder the client found: what it held, or why it could
/// not be read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum DotGenv {
    Config(Config),
    Error(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Answer {
    /// The exit code; absent in a progress frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stdout: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr: String,
    /// A configuration for the client to save into its `.genv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save: Option<Config>,
    /// In a progress frame of `genv lock`: the device locks are held for
    /// the client, until it closes the connection.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// In a final answer: stdout is not in it but follows, as the bytes of
    /// the next frame (a long listing, written out as it is rather than
    /// escaped into JSON and back).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdout_frame: bool,
}

/// Stdout longer than this goes in a frame of its own after the answer.
pub(crate) const INLINE_STDOUT: usize = 64 << 10;

/// Why a frame could not be read.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The other end closed the connection between frames.
    Closed,
    /// Longer than the reader accepts.
    TooLong(usize),
    /// Cut short, timed out, or another error of the connection.
    Io(std::io::Error),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Closed => write!(f, "the connection was closed"),
            FrameError::TooLong(len) => write!(f, "a frame of {len} bytes is too long"),
            FrameError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Reads one frame of at most `max` bytes.
pub(crate) fn read_frame(reader: &mut impl Read, max: usize) -> Result<Vec<u8>, FrameError> {
    let len = read_len(reader, max)?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).map_err(FrameError::Io)?;
    Ok(body)
}

/// Reads a frame's length, of at most `max` bytes; its bytes follow.
pub(crate) fn read_len(reader: &mut impl Read, max: usize) -> Result<usize, FrameError> {
    let mut head = [0u8; 4];
    let mut filled = 0;
    while filled < head.len() {
        match reader.read(&mut head[filled..]) {
            Ok(0) if filled == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let len = u32::from_be_bytes(head) as usize;
    if len > max {
        return Err(FrameError::TooLong(len));
    }
    Ok(len)
}

/// Writes one frame: the length, then the bytes, in one write.
pub(crate) fn write_frame(writer: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| std::io::Error::other("an answer of more than 4 GiB"))?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    writer.write_all(&frame)?;
    writer.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_are_bounded() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"{\"argv\":[]}").unwrap();
        assert_eq!(&buf[..4], &[0, 0, 0, 11]);
        let body = read_frame(&mut buf.as_slice(), 64).unwrap();
        assert_eq!(body, b"{\"argv\":[]}");
        assert!(matches!(
            read_frame(&mut buf.as_slice(), 4),
            Err(FrameError::TooLong(11))
        ));
        assert!(matches!(
            read_frame(&mut &buf[..6], 64),
            Err(FrameError::Io(_))
        ));
        assert!(matches!(
            read_frame(&mut &buf[..0], 64),
            Err(FrameError::Closed)
        ));
        assert!(matches!(
            read_frame(&mut &buf[..2], 64),
            Err(FrameError::Io(_))
        ));
    }

    #[test]
    fn requests_refuse_unknown_fields() {
        let ok: Request = serde_json::from_str(r#"{"argv": ["envs"]}"#).unwrap();
        assert_eq!(ok.argv, ["envs"]);
        assert!(serde_json::from_str::<Request>(r#"{"argv": [], "uid": 0}"#).is_err());
    }
}
