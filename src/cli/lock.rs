//! `genv lock`: runs a command while holding the locks of the devices
//! attached to the current environment, like `flock(1)`.
//!
//! Outside an environment, or attached to no device, the command just
//! runs. Without a command, the locks are taken and given back at once,
//! which waits until the devices are free (as genv 1.4.3 does).

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use std::fmt::Write;

use super::{Format, LockArgs, PsArgs};
use crate::env_vars as ev;
use crate::error::{Error, Result};
use crate::memory;
use crate::state::device_locks::{self, HeldLocks, Holder, LockError, Need, Request, WaitOptions};
use crate::state::{Envs, LoadOptions, StateDir};

pub fn run(args: LockArgs, dir: &StateDir) -> Result<i32> {
    let eid = ev::get(ev::GENV_ENVIRONMENT_ID).filter(|e| !e.is_empty());
    let requests = match &eid {
        Some(eid) => requests(dir, eid, &args),
        None => Vec::new(),
    };
    let locks = if requests.is_empty() {
        None
    } else {
        Some(take(dir, requests, eid, &args)?)
    };
    let code = match args.command.split_first() {
        Some((program, rest)) => run_command(program, rest),
        None => 0,
    };
    drop(locks);
    Ok(code)
}

/// The devices to lock and what for: the environment's attachments in the
/// state, with the capacity of each (the attachment's, else the
/// environment's); without the state, the devices mounted into a container
/// or those in `CUDA_VISIBLE_DEVICES`, whole.
fn requests(dir: &StateDir, eid: &str, args: &LockArgs) -> Vec<Request> {
    let mut requests = from_state(dir, eid).unwrap_or_else(|| {
        let indices = if ev::get(ev::GENV_CONTAINER).is_some() {
            device_locks::lockable(dir)
        } else {
            visible_devices()
        };
        indices
            .into_iter()
            .map(|index| Request::for_capacity(index, None, 0))
            .collect()
    });
    for request in &mut requests {
        if args.shared {
            request.need = Need::Shared;
        } else if args.exclusive {
            request.need = Need::Exclusive;
        }
    }
    requests
}

fn from_state(dir: &StateDir, eid: &str) -> Option<Vec<Request>> {
    let mut tx = dir.transaction(LoadOptions::default()).ok()?;
    let env = tx.envs().ok()?.get(eid)?.clone();
    let devices = tx.devices().ok()?.clone();
    let _ = tx.commit();
    let capacity = |m: Option<&str>| m.and_then(|m| memory::to_bytes(m).ok());
    Some(
        devices
            .devices
            .iter()
            .filter_map(|device| {
                let attachment = device.attachments.iter().find(|a| a.eid == eid)?;
                let bytes = capacity(attachment.gpu_memory.as_deref())
                    .or_else(|| capacity(env.config.gpu_memory.as_deref()));
                Some(Request::for_capacity(
                    device.index,
                    bytes,
                    device.total_bytes(),
                ))
            })
            .collect(),
    )
}

fn visible_devices() -> Vec<u32> {
    ev::get(ev::CUDA_VISIBLE_DEVICES)
        .unwrap_or_default()
        .split(',')
        .filter_map(|i| i.trim().parse().ok())
        .collect()
}

/// Takes the locks, waiting as the options say. The wait runs on this
/// thread (a hand-over between threads costs milliseconds on a busy
/// machine); a timeout is a watchdog thread that gives up for it, ending
/// the process, which lets go of whatever it holds.
fn take(
    dir: &StateDir,
    requests: Vec<Request>,
    eid: Option<String>,
    args: &LockArgs,
) -> Result<HeldLocks> {
    let nonblock = args.nonblock || args.timeout == Some(Duration::ZERO);
    let indices: Vec<u32> = requests.iter().map(|r| r.index).collect();
    let waiting: Arc<Mutex<Option<u32>>> = Arc::default();
    let done = args.timeout.filter(|_| !nonblock).map(|timeout| {
        let (sender, receiver) = mpsc::channel::<()>();
        let dir = dir.clone();
        let waiting = Arc::clone(&waiting);
        let conflict_code = args.conflict_exit_code.unwrap_or(1);
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = receiver.recv_timeout(timeout) {
                device_locks::forget_waits(&dir, &indices);
                let index = waiting.lock().ok().and_then(|w| *w).unwrap_or(indices[0]);
                let me = std::process::id();
                let holders: Vec<Holder> = device_locks::lock_holders(&dir, index)
                    .into_iter()
                    .filter(|h| h.pid != me && !h.waiting)
                    .collect();
                eprintln!(
                    "genv lock: timed out after {timeout:?} waiting for GPU {index}{}",
                    in_use_by(&dir, &holders)
                );
                std::process::exit(conflict_code);
            }
        });
        sender
    });
    let mut on_wait = |index: u32, holders: &[Holder]| {
        if let Ok(mut w) = waiting.lock() {
            *w = Some(index);
        }
        eprintln!(
            "genv lock: waiting for GPU {index}{}",
            in_use_by(dir, holders)
        );
    };
    let options = WaitOptions { nonblock };
    let result = device_locks::acquire(dir, &requests, eid.as_deref(), options, &mut on_wait);
    drop(done);
    match result {
        Ok(locks) => Ok(locks),
        Err(LockError::Busy { index, holders }) => Err(conflict(
            args,
            Error::msg(format!(
                "genv lock: cannot lock GPU {index}{}",
                in_use_by(dir, &holders)
            )),
        )),
        Err(LockError::Other(e)) => Err(e),
    }
}

/// A busy device ends with `--conflict-exit-code` when one is given.
fn conflict(args: &LockArgs, error: Error) -> Error {
    if let Some(code) = args.conflict_exit_code.filter(|&c| c != 1) {
        eprintln!("{error}");
        std::process::exit(code);
    }
    error
}

/// `, in use by environment E (name N, user U, pid P)` for each holder.
fn in_use_by(dir: &StateDir, holders: &[Holder]) -> String {
    if holders.is_empty() {
        return String::new();
    }
    let envs = load_envs(dir);
    let who: Vec<String> = holders
        .iter()
        .map(|h| {
            let mut parts = Vec::new();
            let env = h.eid.as_deref().and_then(|eid| envs.get(eid));
            if let Some(name) = env.and_then(|e| e.config.name.as_deref()) {
                parts.push(format!("name {name}"));
            }
            if let Some(env) = env {
                parts.push(format!("user {}", env.user()));
            }
            parts.push(format!("pid {}", h.pid));
            parts.push(h.mode().to_owned());
            match &h.eid {
                Some(eid) => format!("environment {eid} ({})", parts.join(", ")),
                None => format!("a process outside genv ({})", parts.join(", ")),
            }
        })
        .collect();
    format!(", in use by {}", who.join("; "))
}

/// The environments as they are, for names and users; empty when the
/// state cannot be read.
pub fn load_envs(dir: &StateDir) -> Envs {
    let options = LoadOptions {
        cleanup: false,
        reset: false,
    };
    dir.transaction(options)
        .ok()
        .and_then(|mut tx| tx.envs().ok().cloned())
        .unwrap_or_default()
}

static CHILD: AtomicI32 = AtomicI32::new(0);
static PENDING: AtomicI32 = AtomicI32::new(0);
const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Runs the command and returns its exit code, 128 + the signal that
/// ended it, or 126/127 when it cannot be started (as shells and
/// `flock(1)` do).
fn run_command(program: &OsString, rest: &[OsString]) -> i32 {
    install_forwarding();
    let mut child = match std::process::Command::new(program).args(rest).spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!(
                "genv lock: failed to execute {}: {e}",
                program.to_string_lossy()
            );
            return if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    let pid = child.id() as i32;
    CHILD.store(pid, Ordering::SeqCst);
    let pending = PENDING.swap(0, Ordering::SeqCst);
    if pending > 0 {
        // SAFETY: kill has no memory effects; `pid` is our own child,
        // not yet reaped.
        unsafe { libc::kill(pid, pending) };
    }
    let status = loop {
        match child.wait() {
            Ok(status) => break status,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("genv lock: waiting for the command: {e}");
                return 1;
            }
        }
    };
    CHILD.store(0, Ordering::SeqCst);
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// Passes SIGINT, SIGTERM, SIGHUP and SIGQUIT on to the command, and keeps
/// `genv lock` alive to return its exit code. Signals the kernel sends for
/// the terminal (Ctrl-C, hang-up) already reach the whole foreground
/// process group, the command included, so they are not sent twice.
fn install_forwarding() {
    extern "C" fn forward(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO.
        let code = unsafe { info.as_ref().map_or(0, |i| i.si_code) };
        if code == libc::SI_KERNEL {
            return;
        }
        let pid = CHILD.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill is async-signal-safe.
            unsafe { libc::kill(pid, signal) };
        } else {
            PENDING.store(signal, Ordering::SeqCst);
        }
    }
    for signal in FORWARDED {
        // SAFETY: a zeroed sigaction is valid; the handler only touches
        // atomics and calls kill, both async-signal-safe. Dispositions of
        // handled signals return to the default in the command on exec.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// `genv devices locks`: a row per holder or waiter of each device's lock,
/// a free device as a row with empty fields.
pub fn print_locks(
    dir: &StateDir,
    envs: &Envs,
    indices: &[u32],
    ps: PsArgs,
    out: &mut String,
) -> Result<()> {
    let rows: Vec<(u32, Option<Holder>)> = indices
        .iter()
        .flat_map(|&index| {
            let holders = device_locks::lock_holders(dir, index);
            if holders.is_empty() {
                vec![(index, None)]
            } else {
                holders.into_iter().map(|h| (index, Some(h))).collect()
            }
        })
        .collect();
    let describe = |h: &Holder| {
        let env = h.eid.as_deref().and_then(|eid| envs.get(eid));
        let mode = match h.need {
            Need::Fraction(bytes) => format!("fraction:{}mi", memory::to_mib(bytes)),
            _ => h.mode().to_owned(),
        };
        (
            h.eid.clone().unwrap_or_default(),
            env.and_then(|e| e.config.name.clone()).unwrap_or_default(),
            env.map(|e| e.user()).unwrap_or_default(),
            h.pid.to_string(),
            mode,
            if h.waiting { "waiting" } else { "holding" }.to_owned(),
        )
    };
    if ps.format == Format::Json {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .filter_map(|(index, h)| {
                let h = h.as_ref()?;
                let (eid, name, user, _, mode, state) = describe(h);
                Some(
                    serde_json::json!({"index": index, "eid": h.eid.as_ref().map(|_| eid),
                    "env_name": name, "user": user, "pid": h.pid, "mode": mode, "state": state}),
                )
            })
            .collect();
        let doc = serde_json::json!({ "locks": rows });
        out.push_str(&String::from_utf8_lossy(&crate::state::file::to_json(
            &doc,
        )?));
        out.push('\n');
        return Ok(());
    }
    if !ps.no_header {
        out.push_str(match ps.format {
            Format::Csv => "ID,ENV ID,ENV NAME,USER,PID,MODE,STATE\n",
            _ => "ID      ENV ID      ENV NAME        USER            PID     MODE            STATE\n",
        });
    }
    for (index, holder) in rows {
        let (eid, name, user, pid, mode, state) = holder.as_ref().map(describe).unwrap_or_default();
        let _ = match ps.format {
            Format::Csv => writeln!(out, "{index},{eid},{name},{user},{pid},{mode},{state}"),
            _ => writeln!(
                out,
                "{index:<8}{eid:<12}{name:<16}{user:<16}{pid:<8}{mode:<16}{state}"
            ),
        };
    }
    Ok(())
}
