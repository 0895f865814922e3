//! Waiting for GPUs instead of failing (`--wait[=SECONDS]`): a line of
//! requests in `queue.json`, first come first served. A request is met
//! when it fits after every request ahead of it that also fits has been
//! served; waiters whose process dies leave the line; Ctrl-C leaves it too.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{AttachError, Request, attach};
use crate::backend::DeviceBackend;
use crate::error::{Error, Result};
use crate::state::{Config, LoadOptions, Queue, StateDir, Waiter};

/// How long to wait; `None` for as long as it takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wait {
    pub timeout: Option<Duration>,
}

impl Wait {
    /// Parses the value of `--wait[=SECONDS]` (empty: no limit).
    pub fn parse(value: &str) -> std::result::Result<Wait, String> {
        if value.is_empty() {
            return Ok(Wait { timeout: None });
        }
        // `try_from`: a number too large for a duration is an error, not a panic.
        match value
            .parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
        {
            Some(timeout) => Ok(Wait {
                timeout: Some(timeout),
            }),
            None => Err(format!("invalid number of seconds '{value}'")),
        }
    }
}

/// Re-checks this often even when no file changed: an environment whose
/// last process died frees its devices without anyone writing.
const RECHECK: Duration = Duration::from_millis(500);

/// Attaches as [`attach`] does, waiting in line while the devices are
/// taken. Exit code 130 on Ctrl-C (after leaving the line).
pub fn attach_waiting(
    dir: &StateDir,
    backend: &dyn DeviceBackend,
    eid: &str,
    request: Request,
    wait: Wait,
) -> Result<()> {
    let watch = dir.watch()?;
    // Inside the daemon the client waits: it is the one in line, and its
    // hanging up (not a signal to the daemon) ends the wait.
    let (me, uid, _served, wake) = match crate::caller::pid() {
        Some(pid) => (
            i64::from(pid),
            crate::caller::uid(),
            Some(Queue::served(pid)),
            crate::caller::hangup().map(Wake::HangUp),
        ),
        None => (
            i64::from(std::process::id()),
            crate::os::procs::owner(std::process::id()).unwrap_or_else(|_| crate::caller::uid()),
            None,
            Some(Wake::Signal(crate::os::signals::SignalPipe::install()?)),
        ),
    };
    let start = Instant::now();
    let mut told: Option<usize> = None;
    // The driver is asked (when needed) once, before the first lock.
    let survey = dir.survey(backend, false)?;
    // Held while in line: what tells a waiter from an entry anyone wrote.
    let mut guard = Queue::guard(dir)?;
    loop {
        let mut tx = dir.transaction(LoadOptions::default())?;
        guard.refresh(dir)?;
        let now = tx.now();
        let configs: HashMap<String, Config> = tx
            .envs()?
            .envs
            .iter()
            .map(|e| (e.eid.to_string(), e.config.clone()))
            .collect();
        let config = configs.get(eid).cloned().unwrap_or_default();
        let mut trial = tx.reconcile(&survey)?.clone();
        let queue = tx.queue_mut()?;
        queue.keep_waiting(&guard);
        // Found by pid: the line may have been numbered again meanwhile.
        let mine = queue.join(Waiter {
            ticket: 0,
            eid: eid.to_owned(),
            pid: me,
            uid: Some(uid),
            since: now.clone(),
            count: request.count,
            index: request.index,
            over_subscribe: request.over_subscribe,
        });
        let ahead: Vec<Waiter> = queue.ahead_of(mine).cloned().collect();
        // Those ahead are served first, where they fit.
        for w in &ahead {
            let request = Request {
                count: w.count,
                index: w.index,
                over_subscribe: w.over_subscribe,
            };
            let config = configs.get(&w.eid).cloned().unwrap_or_default();
            let _ = attach(&mut trial, &config, &w.eid, request, &now);
        }
        match attach(&mut trial, &config, eid, request, &now) {
            Ok(()) => {
                let devices = tx.devices_mut()?;
                let result =
                    attach(devices, &config, eid, request, &now).map_err(AttachError::into_error);
                tx.queue_mut()?.leave(me);
                tx.commit()?;
                return result;
            }
            Err(AttachError::Impossible(e)) => {
                tx.queue_mut()?.leave(me);
                tx.commit()?;
                return Err(e);
            }
            Err(AttachError::Unavailable(_)) => {
                tx.commit()?;
                let position = ahead.len() + 1;
                if told != Some(position) {
                    crate::messages::note(format_args!(
                        "waiting for {} ({} in line{})",
                        describe(request, &config),
                        ordinal(position),
                        match wait.timeout {
                            Some(t) => format!(", for up to {} s", t.as_secs_f64()),
                            None => String::new(),
                        }
                    ));
                    told = Some(position);
                }
            }
        }
        let left = match wait.timeout {
            Some(t) => match t.checked_sub(start.elapsed()) {
                Some(left) if !left.is_zero() => left.min(RECHECK),
                _ => {
                    leave(dir, me)?;
                    return Err(Error::new(format!(
                        "Timed out after {} s waiting for {}",
                        t.as_secs_f64(),
                        describe(request, &config)
                    )));
                }
            },
            None => RECHECK,
        };
        crate::caller::progress();
        let interrupt: Vec<_> = wake.iter().map(Wake::fd).collect();
        if watch.wait(left, &interrupt) == crate::state::WatchWake::Other {
            leave(dir, me)?;
            return Err(Error::Interrupted);
        }
    }
}

/// What ends a wait early: a signal to this process, or the daemon's
/// client hanging up.
enum Wake {
    Signal(crate::os::signals::SignalPipe),
    HangUp(std::os::fd::OwnedFd),
}

impl Wake {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        match self {
            Wake::Signal(pipe) => pipe.fd(),
            Wake::HangUp(fd) => fd.as_fd(),
        }
    }
}

fn leave(dir: &StateDir, pid: i64) -> Result<()> {
    let mut tx = dir.transaction(LoadOptions::default())?;
    tx.queue_mut()?.leave(pid);
    tx.commit()
}

fn describe(request: Request, config: &Config) -> String {
    let memory = config
        .gpu_memory
        .as_deref()
        .map(|m| format!(" with {m} of memory"))
        .unwrap_or_default();
    match (request.count, request.index) {
        (_, Some(index)) => format!("device {index}{memory}"),
        (Some(1), _) => format!("1 device{memory}"),
        (Some(n), _) => format!("{n} devices{memory}"),
        (None, None) => match config.gpus {
            Some(1) => format!("1 device{memory}"),
            Some(n) => format!("{n} devices{memory}"),
            None => "devices".into(),
        },
    }
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{MockBackend, MockConfig};
    use crate::os::signals::{TEST_LOCK, disposition};

    /// A program that waits for devices (an SDK, a notebook) must die of
    /// Ctrl-C again once the wait is over.
    #[test]
    fn ctrl_c_ends_the_process_again_after_a_wait() {
        let _serial = TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let folder = tempfile::tempdir().unwrap();
        let dir = StateDir::new(folder.path());
        let backend = MockBackend::new(MockConfig::with_defaults());
        let request = Request {
            count: Some(1),
            index: None,
            over_subscribe: false,
        };
        let wait = Wait {
            timeout: Some(Duration::from_secs(30)),
        };
        // As in a program started from a terminal, whatever ran the tests
        // (a background job ignores SIGINT).
        for signal in crate::os::signals::WAIT_SIGNALS {
            crate::os::signals::set_default(signal);
        }
        assert_eq!(disposition(nix::sys::signal::Signal::SIGINT), libc::SIG_DFL);
        attach_waiting(&dir, &backend, "e", request, wait).unwrap();
        for signal in crate::os::signals::WAIT_SIGNALS {
            assert_eq!(disposition(signal), libc::SIG_DFL, "signal {signal}");
        }
    }
}
