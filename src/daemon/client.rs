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
    /// Runs this command once the daemon says the device locks are held,
    /// and gives its exit code: `genv lock`'s command (none: the locks are
    /// given back at once).
    Held(Vec<std::ffi::OsString>),
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
    let mut exchange = Exchange::send(socket, &request)?;
    loop {
        let answer = exchange.next()?;
        if !answer.stderr.is_empty() {
            crate::messages::relay_raw(&answer.stderr);
        }
        if answer.held
            && let Some(command) = held.take()
        {
            // The locks are ours while the connection is open.
            return Ok(run_held(&exchange.stream, socket, &command));
        }
        let Some(code) = answer.code else {
            continue;
        };
        if answer.stdout_frame {
            // A long listing: passed to stdout as it arrives.
            let len = protocol::read_len(&mut exchange.stream, MAX_ANSWER)
                .map_err(|e| exchange.lost(&e))?;
            ctx.pass_through(&mut exchange.stream, len as u64)
                .map_err(|e| exchange.lost(&e))?;
        } else {
            ctx.out.push_str(&answer.stdout);
        }
        if let (Some(config), Some(home)) = (answer.save, home) {
            session::save_config(&home, &config)?;
        }
        return Ok(code);
    }
}

/// Runs `genv lock`'s command while the daemon holds the locks for it,
/// watching the connection: should the daemon stop meanwhile (its locks
/// go with it), the command is told so and stopped (SIGTERM), never left
/// running as if it held them.
fn run_held(stream: &UnixStream, socket: &Path, command: &[std::ffi::OsString]) -> i32 {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let Some((program, rest)) = command.split_first() else {
        return 0;
    };
    let done = Arc::new(AtomicBool::new(false));
    let child = Arc::new(AtomicU32::new(0));
    let lost = Arc::new(AtomicBool::new(false));
    let watcher = stream.try_clone().ok().map(|mut watch| {
        let (done, child, lost) = (done.clone(), child.clone(), lost.clone());
        let shown = crate::state::file::shown(socket);
        std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            // The daemon sends nothing more: a read ends when it goes.
            let _ = std::io::Read::read(&mut watch, &mut byte);
            if done.load(Ordering::SeqCst) {
                return;
            }
            lost.store(true, Ordering::SeqCst);
            crate::messages::error(
                format!("genv daemon on {shown} stopped: the device locks are no longer held; stopping the command"),
                None,
            );
            let pid = child.load(Ordering::SeqCst);
            if let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        })
    });
    let mut run = std::process::Command::new(program);
    run.args(rest);
    let code = crate::os::child::run(&mut run, |pid| {
        child.store(pid, Ordering::SeqCst);
        if lost.load(Ordering::SeqCst)
            && let Some(pid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    });
    done.store(true, Ordering::SeqCst);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    if let Some(watcher) = watcher {
        let _ = watcher.join();
    }
    if lost.load(Ordering::SeqCst) && code == 0 {
        return 1;
    }
    code
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
    let mut exchange = Exchange::send(socket, &request)?;
    loop {
        let answer = exchange.next()?;
        match answer.code {
            None => crate::messages::relay_raw(&answer.stderr),
            Some(0) => {
                crate::messages::relay_raw(&answer.stderr);
                if !answer.stdout_frame {
                    return Ok(answer.stdout);
                }
                let bytes = protocol::read_frame(&mut exchange.stream, MAX_ANSWER)
                    .map_err(|e| exchange.lost(&e))?;
                return Ok(String::from_utf8_lossy(&bytes).into_owned());
            }
            Some(_) => {
                let said = answer.stderr.trim_end();
                let said = said.strip_prefix("genv: error: ").unwrap_or(said);
                return Err(Error::new(said.to_owned()));
            }
        }
    }
}

/// A request sent to the daemon, its answers to read.
struct Exchange<'a> {
    stream: UnixStream,
    socket: &'a Path,
}

impl<'a> Exchange<'a> {
    fn send(socket: &'a Path, request: &Request) -> Result<Self> {
        let body = serde_json::to_vec(request).map_err(|e| Error::new(e.to_string()))?;
        let mut exchange = Exchange {
            stream: connect(socket)?,
            socket,
        };
        let sent = protocol::write_frame(&mut exchange.stream, &body);
        sent.map_err(|e| exchange.lost(&e))?;
        Ok(exchange)
    }

    /// The next answer, a progress frame or the final one.
    fn next(&mut self) -> Result<Answer> {
        let frame =
            protocol::read_frame(&mut self.stream, MAX_ANSWER).map_err(|e| self.lost(&e))?;
        serde_json::from_slice(&frame).map_err(|e| self.lost(&e))
    }

    /// The connection failed once the request was sent.
    fn lost(&self, e: &dyn std::fmt::Display) -> Error {
        Error::new(format!(
            "genv daemon stopped answering on {} ({e}); the command may or may not have been done",
            crate::state::file::shown(self.socket)
        ))
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
                        | "XDG_DATA_HOME"
                        | "JUPYTER_RUNTIME_DIR"
                )
        })
        .filter(|(name, _)| !crate::caller::daemon_owns(name))
        .collect()
}
