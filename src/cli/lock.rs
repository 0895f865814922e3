//! `genv lock`: runs a command while holding the locks of the devices
//! attached to the current environment, like `flock(1)`.
//!
//! Outside an environment, or attached to no device, the command just
//! runs. Without a command, the locks are taken and given back at once,
//! which waits until the devices are free (as genv 1.4.3 does). When the
//! state cannot be read (a state file that is not a readable regular file,
//! garbage with no good copy, `devices/` not a folder), nothing runs
//! unlocked: the devices come from `CUDA_VISIBLE_DEVICES`, or the command
//! does not run. Nor does it run when the environment lost a device while
//! waiting for its lock.

mod table;

use std::time::Instant;

pub(crate) use table::print_locks;

use super::{Context, Exit, LockArgs};
use crate::env_vars as ev;
use crate::error::{Error, Result};
use crate::escape;
use crate::messages;
use crate::state::device_locks::{self, HeldLocks, Holder, LockError, Need, Request, WaitOptions};
use crate::state::{Envs, LoadOptions, StateDir};

const LOCKS_HINT: &str = "`genv devices locks` shows who holds and who waits for each GPU";

/// Runs the command under the locks; streams (the command's output is its
/// own, on the same stdout).
pub(crate) fn run(args: LockArgs, ctx: &mut Context) -> Result<Exit> {
    let dir = &ctx.dir;
    let eid = ev::get(ev::GENV_ENVIRONMENT_ID).filter(|e| !e.is_empty());
    let (requests, source) = match &eid {
        Some(eid) => requests(dir, eid, &args)?,
        None => (Vec::new(), Source::Variables),
    };
    let locks = if requests.is_empty() {
        None
    } else {
        let (locks, waited) = take(dir, requests, eid.clone(), &args)?;
        if let (true, Some(eid), Source::State) = (waited, &eid, source) {
            still_attached(dir, eid, &locks.indices())?;
        }
        Some(locks)
    };
    if crate::caller::remote() {
        // In the daemon: the locks are the client's until it hangs up;
        // the command runs in the client, as the user.
        crate::caller::hold_until_hangup();
        drop(locks);
        return Ok(Exit::SUCCESS);
    }
    let code = match args.command.split_first() {
        Some((program, rest)) => {
            crate::os::child::run(std::process::Command::new(program).args(rest), |_| {})
        }
        None => 0,
    };
    drop(locks);
    Ok(Exit(code))
}

/// Where the devices to lock came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The environment's attachments in the state.
    State,
    /// `CUDA_VISIBLE_DEVICES` or the lock files mounted into a container.
    Variables,
}

/// After a wait, the environment must still hold every device just
/// locked: someone may have detached it meanwhile (any user can), and the
/// command would then run on a device another environment may be given.
/// Without a wait there is no "meanwhile" worth a second look: a detach
/// an instant later, once the command runs, is the same.
fn still_attached(dir: &StateDir, eid: &str, locked: &[u32]) -> Result<()> {
    let now = match device_locks::attached_requests(dir, eid) {
        Ok(Some(requests)) => requests,
        Ok(None) => Vec::new(),
        Err(cause) => {
            return Err(Error::hinted(
                format!(
                    "cannot tell whether environment {} still has its GPUs: the state cannot be read ({}); not running the command",
                    escape::terminal(eid),
                    escape::terminal(&cause.to_string())
                ),
                "fix the state folder (GENV_TMPDIR), then run the command again",
            ));
        }
    };
    let gone: Vec<String> = locked
        .iter()
        .filter(|index| !now.iter().any(|r| r.index == **index))
        .map(u32::to_string)
        .collect();
    if gone.is_empty() {
        return Ok(());
    }
    Err(Error::hinted(
        format!(
            "environment {} was detached from GPU {} while waiting for its lock; not running the command on a GPU it no longer has",
            escape::terminal(eid),
            gone.join(", ")
        ),
        "attach the environment again (`genv attach`), then run the command again",
    ))
}

/// The devices to lock and what for: the environment's attachments in the
/// state, with the capacity of each (the attachment's, else the
/// environment's); when the state does not know the environment, the
/// devices mounted into a container or those in `CUDA_VISIBLE_DEVICES`,
/// whole. When the state cannot be read, the same devices, or an error
/// when there are none to go by: never the command without its locks.
fn requests(dir: &StateDir, eid: &str, args: &LockArgs) -> Result<(Vec<Request>, Source)> {
    let whole = |indices: Vec<u32>| -> Vec<Request> {
        indices
            .into_iter()
            .map(|index| Request::for_capacity(index, None, 0))
            .collect()
    };
    let container = ev::get(ev::GENV_CONTAINER).is_some();
    let mut source = Source::Variables;
    let mut requests = match device_locks::attached_requests(dir, eid) {
        Ok(Some(requests)) => {
            source = Source::State;
            requests
        }
        Ok(None) if container => whole(device_locks::lockable(dir)),
        Ok(None) => whole(visible_indices().unwrap_or_default()),
        Err(cause) => {
            let mounted = if container {
                device_locks::lockable(dir)
            } else {
                Vec::new()
            };
            if !mounted.is_empty() {
                whole(mounted)
            } else if let Some(visible) = visible_indices() {
                // An empty list hides every GPU from CUDA: nothing to lock.
                whole(visible)
            } else {
                return Err(Error::hinted(
                    format!(
                        "cannot tell which GPUs environment {} uses: the state cannot be read ({}) and CUDA_VISIBLE_DEVICES names no GPU index; not running the command without its locks",
                        escape::terminal(eid),
                        escape::terminal(&cause.to_string())
                    ),
                    "fix the state folder (GENV_TMPDIR), or set CUDA_VISIBLE_DEVICES to the indices of the GPUs to lock",
                ));
            }
        }
    };
    for request in &mut requests {
        if args.shared {
            request.need = Need::Shared;
        } else if args.exclusive {
            request.need = Need::Exclusive;
        }
    }
    Ok((requests, source))
}

/// The indices `CUDA_VISIBLE_DEVICES` names; `None` when it is unset or
/// names a GPU otherwise than by index (a UUID has no lock file).
pub(crate) fn visible_indices() -> Option<Vec<u32>> {
    let list = ev::get(ev::CUDA_VISIBLE_DEVICES)?;
    crate::cuda::visible_devices(&list)
        .iter()
        .map(|device| match device {
            crate::cuda::VisibleDevice::Index(index) => Some(*index),
            crate::cuda::VisibleDevice::Uuid(_) => None,
        })
        .collect()
}

/// Takes the locks, waiting as the options say, and whether it had to
/// wait; `Err(code)` when they could not be taken (busy with `-n`, or
/// `-w` ran out), after saying so.
fn take(
    dir: &StateDir,
    requests: Vec<Request>,
    eid: Option<String>,
    args: &LockArgs,
) -> Result<(HeldLocks, bool)> {
    let envs = load_envs(dir);
    let mut waited = false;
    let nonblock = args.nonblock || args.timeout.is_some_and(|t| t.is_zero());
    let deadline = args
        .timeout
        .filter(|_| !nonblock)
        .and_then(|t| Instant::now().checked_add(t));
    let mut on_wait = |index: u32, holders: &[Holder]| {
        waited = true;
        messages::note(format!(
            "waiting for GPU {index}{}",
            in_the_way(&envs, holders)
        ));
    };
    let options = WaitOptions { nonblock, deadline };
    let result =
        device_locks::acquire(dir, &requests, eid.as_deref(), &envs, options, &mut on_wait);
    let conflict_code = args.conflict_exit_code.unwrap_or(1);
    match result {
        Ok(locks) => Ok((locks, waited)),
        Err(LockError::Busy { index, holders }) => Err(Error::Conflict {
            message: format!(
                "cannot lock GPU {index} without waiting{}",
                in_the_way(&envs, &holders)
            ),
            hint: LOCKS_HINT,
            code: conflict_code,
        }),
        Err(LockError::TimedOut { index, holders }) => {
            let timeout = args.timeout.unwrap_or_default();
            Err(Error::Conflict {
                message: format!(
                    "timed out after {timeout:?} waiting for GPU {index}{}",
                    in_the_way(&envs, &holders)
                ),
                hint: LOCKS_HINT,
                code: conflict_code,
            })
        }
        Err(LockError::Other(e)) => Err(e),
    }
}

/// ` (held by …; waiting ahead: …)`: who is in the way, those who hold
/// the device apart from those who wait for it before us.
fn in_the_way(envs: &Envs, holders: &[Holder]) -> String {
    let list = |waiting: bool| -> String {
        holders
            .iter()
            .filter(|h| h.waiting == waiting)
            .map(|h| describe(envs, h))
            .collect::<Vec<_>>()
            .join(" and ")
    };
    let mut parts = Vec::new();
    let held = list(false);
    if !held.is_empty() {
        parts.push(format!("held by {held}"));
    }
    let waiting = list(true);
    if !waiting.is_empty() {
        parts.push(format!("waiting ahead: {waiting}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

/// `environment E (NAME), USER, pid P, MODE`, or `pid P outside genv,
/// MODE`: the environment as the process claims it, the user as the
/// kernel says who runs it.
fn describe(envs: &Envs, holder: &Holder) -> String {
    let mut parts = Vec::new();
    match holder.eid.as_deref() {
        Some(eid) => {
            let env = envs.get(eid);
            let name = env
                .and_then(|e| e.config.name.as_deref())
                .filter(|n| !n.is_empty());
            parts.push(match name {
                Some(name) => format!(
                    "environment {} ({})",
                    escape::terminal(eid),
                    escape::terminal(name)
                ),
                None => format!("environment {}", escape::terminal(eid)),
            });
            let user = holder.user();
            if !user.is_empty() {
                parts.push(escape::terminal(&user).into_owned());
            }
            parts.push(format!("pid {}", holder.pid));
        }
        None => parts.push(format!("pid {} outside genv", holder.pid)),
    }
    parts.push(holder.mode().to_owned());
    parts.join(", ")
}

/// The environments as they are, for names and users; empty when the
/// state cannot be read.
pub(crate) fn load_envs(dir: &StateDir) -> Envs {
    let options = LoadOptions {
        cleanup: false,
        reset: false,
    };
    dir.transaction(options)
        .ok()
        .and_then(|mut tx| tx.envs().ok().cloned())
        .unwrap_or_default()
}
