//! The signal handlers genv installs for a while and gives back: a wait
//! (`--wait`) turns SIGINT, SIGTERM and SIGHUP into a readable pipe so it
//! can leave the line before exiting, and `genv lock` passes signals on to
//! its command. Each is a guard that puts the previous dispositions back
//! when dropped, so a Ctrl-C after the wait ends the process again.
//!
//! `genv monitor`, `genv top` and `genv enforce` take theirs
//! synchronously instead ([`Blocked`]: blocked, then read from a
//! signalfd).
//!
//! nix wraps all of it; `sigaction` stays `unsafe` there (a handler must
//! be async-signal-safe, which no type can say), so the two calls below
//! and the handlers' own lines are genv's only unsafe code.
//!
//! Not `signal-hook`: its registry keeps its own handler installed for the
//! life of the process (`unregister` leaves the signal caught and ignored,
//! and `cleanup_signal` is irreversible), which is the very bug a guard
//! must not have. Only one guard of each kind is active at a time.

mod blocked;

pub(crate) use blocked::Blocked;

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// The signals that end a wait.
pub(crate) const WAIT_SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];
/// The signals `genv lock` passes on to its command.
pub(crate) const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// Dispositions replaced by a guard, put back on drop.
struct Saved(Vec<(Signal, SigAction)>);

impl Saved {
    /// Installs `handler` for `signals`, remembering what was there.
    fn install(signals: &[Signal], handler: SigHandler, flags: SaFlags) -> Result<Self> {
        let action = SigAction::new(handler, flags, SigSet::empty());
        let mut saved = Saved(Vec::new());
        for &signal in signals {
            // SAFETY: the handlers installed here ([`to_pipe`], [`forward`],
            // or the default) only load and store atomics and call write(2)
            // or kill(2), which are async-signal-safe.
            #[allow(unsafe_code)]
            let previous = unsafe { nix::sys::signal::sigaction(signal, &action) };
            match previous {
                Ok(previous) => saved.0.push((signal, previous)),
                // `saved` drops here and restores those already replaced.
                Err(e) => {
                    return Err(Error::hinted(
                        format!("cannot handle signal {signal}: {e}"),
                        "this is a bug in genv; please report it",
                    ));
                }
            }
        }
        Ok(saved)
    }
}

impl Drop for Saved {
    fn drop(&mut self) {
        for (signal, previous) in self.0.iter().rev() {
            // SAFETY: `previous` is what was installed before, given back
            // as it was.
            #[allow(unsafe_code)]
            let _ = unsafe { nix::sys::signal::sigaction(*signal, previous) };
        }
    }
}

static PIPE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn to_pipe(_: libc::c_int) {
    let fd = PIPE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: `fd` is the pipe's write end, open while PIPE_FD holds it
        // (SignalPipe's drop takes the handlers away before closing it);
        // write(2) is async-signal-safe and the buffer is static.
        #[allow(unsafe_code)]
        unsafe {
            libc::write(fd, b"x".as_ptr().cast(), 1);
        }
    }
}

/// [`WAIT_SIGNALS`] turned into a readable pipe while this lives.
pub(crate) struct SignalPipe {
    read: OwnedFd,
    _write: OwnedFd,
    saved: Option<Saved>,
}

impl SignalPipe {
    pub(crate) fn install() -> Result<Self> {
        let (read, write) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )
        .map_err(|e| Error::io("pipe", e.into()))?;
        PIPE_FD.store(write.as_raw_fd(), Ordering::SeqCst);
        let saved = Saved::install(
            &WAIT_SIGNALS,
            SigHandler::Handler(to_pipe),
            SaFlags::SA_RESTART,
        )?;
        Ok(SignalPipe {
            read,
            _write: write,
            saved: Some(saved),
        })
    }

    /// Readable once one of the signals came.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.read.as_fd()
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        // Handlers first, then the descriptor they write to.
        drop(self.saved.take());
        PIPE_FD.store(-1, Ordering::SeqCst);
    }
}

static CHILD: AtomicI32 = AtomicI32::new(0);
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo (or null,
    // which `as_ref` turns into None), read only during this call.
    #[allow(unsafe_code)]
    let code = unsafe { info.as_ref().map_or(0, |i| i.si_code) };
    // Sent by the kernel for the terminal (Ctrl-C, hang-up): it reached
    // the whole foreground process group, the command included.
    if code == libc::SI_KERNEL {
        return;
    }
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // kill(2) is async-signal-safe; so is nix's wrapper, a plain call.
        if let Ok(signal) = Signal::try_from(signal) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
        }
    } else {
        PENDING.store(signal, Ordering::SeqCst);
    }
}

/// Passes [`FORWARDED`] signals on to a child while this lives. Signals
/// that come before the child is known are kept and sent by
/// [`Forwarding::child_started`].
pub(crate) struct Forwarding {
    saved: Option<Saved>,
}

impl Forwarding {
    pub(crate) fn install() -> Result<Self> {
        CHILD.store(0, Ordering::SeqCst);
        PENDING.store(0, Ordering::SeqCst);
        let saved = Saved::install(
            &FORWARDED,
            SigHandler::SigAction(forward),
            SaFlags::SA_SIGINFO | SaFlags::SA_RESTART,
        )?;
        Ok(Forwarding { saved: Some(saved) })
    }

    /// From now on signals go to `pid`; one that came before goes now.
    pub(crate) fn child_started(&self, pid: u32) {
        let Ok(pid) = i32::try_from(pid) else {
            return;
        };
        CHILD.store(pid, Ordering::SeqCst);
        let pending = PENDING.swap(0, Ordering::SeqCst);
        // `pid` is our own child, not yet reaped.
        if let Ok(signal) = Signal::try_from(pending) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
        }
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        drop(self.saved.take());
        CHILD.store(0, Ordering::SeqCst);
        PENDING.store(0, Ordering::SeqCst);
    }
}

/// The handler address installed for `signal` now (`SIG_DFL` is 0).
#[cfg(test)]
pub(crate) fn disposition(signal: Signal) -> usize {
    // SAFETY: a null new action only queries (nix has no call for that);
    // `current` is written by the kernel.
    #[allow(unsafe_code)]
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal as libc::c_int, std::ptr::null(), &mut current);
        current.sa_sigaction
    }
}

/// Puts `signal`'s default disposition in place, as in a program started
/// from a terminal.
#[cfg(test)]
pub(crate) fn set_default(signal: Signal) {
    // Forgotten, so that the default stays.
    std::mem::forget(Saved::install(
        &[signal],
        SigHandler::SigDfl,
        SaFlags::empty(),
    ));
}

/// Unit tests that change or read SIGINT's, SIGTERM's, SIGHUP's or
/// SIGQUIT's disposition hold this, as tests run on threads of one process.
#[cfg(test)]
pub(crate) static TEST_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_pipe_gives_the_handlers_back() {
        let _serial = TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let before: Vec<usize> = WAIT_SIGNALS.iter().map(|&s| disposition(s)).collect();
        let pipe = SignalPipe::install().unwrap();
        for &signal in &WAIT_SIGNALS {
            assert_eq!(disposition(signal), to_pipe as *const () as usize);
        }
        // A signal while it lives makes the pipe readable.
        nix::sys::signal::raise(Signal::SIGHUP).unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(rustix::io::read(pipe.fd(), &mut byte), Ok(1));
        drop(pipe);
        let after: Vec<usize> = WAIT_SIGNALS.iter().map(|&s| disposition(s)).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn forwarding_gives_the_handlers_back() {
        let _serial = TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let before: Vec<usize> = FORWARDED.iter().map(|&s| disposition(s)).collect();
        let forwarding = Forwarding::install().unwrap();
        assert_eq!(disposition(Signal::SIGTERM), forward as *const () as usize);
        drop(forwarding);
        let after: Vec<usize> = FORWARDED.iter().map(|&s| disposition(s)).collect();
        assert_eq!(before, after);
    }
}
