//! Running a command as a child that gets the signals sent to genv, whose
//! exit code becomes genv's: `genv lock`'s command, `genv llm serve`'s
//! Ollama.

use std::io;
use std::os::unix::process::ExitStatusExt;

use crate::escape;
use crate::messages;
use crate::os::signals::Forwarding;

/// Runs the command and returns its exit code, 128 + the signal that
/// ended it, or 126/127 when it cannot be started (as shells and
/// `flock(1)` do). SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to us go on to
/// the command while it runs; our own dispositions come back afterwards.
/// `started` is told the child's pid before it is waited for.
pub(crate) fn run(command: &mut std::process::Command, started: impl FnOnce(u32)) -> i32 {
    let forwarding = match Forwarding::install() {
        Ok(forwarding) => Some(forwarding),
        Err(e) => {
            messages::warn(format!("signals will not reach the command: {e}"));
            None
        }
    };
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let name = command.get_program().to_string_lossy();
            messages::error(format!("cannot run {}: {e}", escape::terminal(&name)), None);
            return if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    if let Some(forwarding) = &forwarding {
        forwarding.child_started(child.id());
    }
    started(child.id());
    let status = loop {
        match child.wait() {
            Ok(status) => break status,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                messages::error(format!("waiting for the command: {e}"), None);
                return 1;
            }
        }
    };
    drop(forwarding);
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}
