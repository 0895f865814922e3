//! The client's side: whether a trustworthy daemon serves the state
//! folder, and a command line run by it.
//!
//! The socket is believed only when it is a socket owned by root, in a
//! state folder owned by root that no one else may write (so that no one
//! could have put it there or swapped it since), and when the process
//! that answers is root's (`SO_PEERCRED`). When such a socket is there and
//! nobody answers, the command fails: it never goes back to writing the
//! files, which the daemon owns.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::protocol::{self, Answer, DotGenv, MAX_ANSWER, Request};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::session;
use crate::state::StateDir;

/// The daemon's socket for `dir`, when one is there to be believed
/// ([`StateDir::daemon_socket`]).
pub(crate) fn find(dir: &StateDir) -> Option<PathBuf> {
    dir.daemon_socket()
}

/// Connects to the daemon, which must be root's.
pub(crate) fn connect(socket: &Path) -> Result<UnixStream> {
    let shown = crate::state::file::shown(socket);
    let stream = UnixStream::connect(socket).map_err(|e| {
        Error::hinted(
            format!("genv daemon does not answer on {shown} ({e}); nothing was done"),
            "start it (sudo systemctl start genv-daemon.socket, or sudo genv daemon); genv does not change the state without it while its socket is there",
        )
    })?;
    let peer =
        rustix::net::sockopt::socket_peercred(&stream).map_err(|e| Error::io(socket, e.into()))?;
    if peer.uid.as_raw() != 0 {
        return Err(Error::new(format!(
            "the process answering on {shown} is not root's; genv does not believe it"
        )));
    }
    Ok(stream)
}

/// What the client does around a request.
pub(crate) enum Around {
    /// Nothing more.
    Nothing,
    /// Makes the user's shims folder first, as the user (the daemon only
    /// names it): `genv activate`.
    Shims,
    /// Runs this once the daemon says the device locks are held, and
    /// gives its exit code: `genv lock`'s command.
    Held(Box<dyn FnOnce() -> i32>),
}

/// Runs the command line `args` (without `genv`) in the daemon, prints
/// what it answers, saves a `.genv` configuration it asks for, and
/// returns the exit code.
pub(crate) fn run(
    socket: &Path,
    args: Vec<String>,
    around: Around,
    ctx: &mut Context,
) -> Result<i32> {
    let mut held = None;
    match around {
        Around::Nothing => {}
        Around::Shims => {
            let _ = session::shims_dir();
        }
        Around::Held(command) => held = Some(command),
    }
    let home = session::home();
    let dotgenv = home.as_ref().map(|home| match session::load_config(home) {
        Ok(config) => DotGenv::Config(config),
        Err(e) => DotGenv::Error(e.to_string()),
    });
    let request = Request {
        argv: args,
        env: variables(),
        dotgenv,
    };
    let mut stream = connect(socket)?;
    let body = serde_json::to_vec(&request).map_err(|e| Error::new(e.to_string()))?;
    let lost = |e: &dyn std::fmt::Display| {
        Error::new(format!(
            "genv daemon stopped answering on {} ({e}); the command may or may not have been done",
            crate::state::file::shown(socket)
        ))
    };
    protocol::write_frame(&mut stream, &body).map_err(|e| lost(&e))?;
    loop {
        let frame = protocol::read_frame(&mut stream, MAX_ANSWER).map_err(|e| lost(&e))?;
        let answer: Answer = serde_json::from_slice(&frame).map_err(|e| lost(&e))?;
        if !answer.stderr.is_empty() {
            crate::messages::relay_raw(&answer.stderr);
        }
        if answer.held
            && let Some(command) = held.take()
        {
            // The locks are ours while the connection is open.
            let code = command();
            drop(stream);
            return Ok(code);
        }
        let Some(code) = answer.code else {
            continue;
        };
        ctx.out.push_str(&answer.stdout);
        if let (Some(config), Some(home)) = (answer.save, home) {
            session::save_config(&home, &config)?;
        }
        return Ok(code);
    }
}

/// Runs the command line `args` (without `genv`) in the daemon for a
/// part of genv that needs one change made (`genv llm serve`'s
/// environment): its stdout, or its stderr as the error.
pub(crate) fn ask(socket: &Path, args: &[&str]) -> Result<String> {
    let request = Request {
        argv: args.iter().map(|a| (*a).to_owned()).collect(),
        env: variables(),
        dotgenv: None,
    };
    let mut stream = connect(socket)?;
    let body = serde_json::to_vec(&request).map_err(|e| Error::new(e.to_string()))?;
    let lost = |e: &dyn std::fmt::Display| {
        Error::new(format!(
            "genv daemon stopped answering on {} ({e})",
            crate::state::file::shown(socket)
        ))
    };
    protocol::write_frame(&mut stream, &body).map_err(|e| lost(&e))?;
    loop {
        let frame = protocol::read_frame(&mut stream, MAX_ANSWER).map_err(|e| lost(&e))?;
        let answer: Answer = serde_json::from_slice(&frame).map_err(|e| lost(&e))?;
        match answer.code {
            None => crate::messages::relay_raw(&answer.stderr),
            Some(0) => {
                crate::messages::relay_raw(&answer.stderr);
                return Ok(answer.stdout);
            }
            Some(_) => {
                let said = answer.stderr.trim_end();
                let said = said.strip_prefix("genv: error: ").unwrap_or(said);
                return Err(Error::new(said.to_owned()));
            }
        }
    }
}

/// The variables a verb may read that are the caller's to decide: genv's
/// own, the devices a process sees, where its shims and `.genv` are.
fn variables() -> std::collections::HashMap<String, String> {
    std::env::vars()
        .filter(|(name, _)| {
            name.starts_with("GENV_")
                || matches!(
                    name.as_str(),
                    "CUDA_VISIBLE_DEVICES"
                        | "NVIDIA_VISIBLE_DEVICES"
                        | "LD_PRELOAD"
                        | "HOME"
                        | "XDG_CACHE_HOME"
                )
        })
        .filter(|(name, _)| !crate::caller::daemon_owns(name))
        .collect()
}
