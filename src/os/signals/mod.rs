//! The signal handlers genv installs for a while and gives back: a wait
//! (`--wait`) turns SIGINT, SIGTERM and SIGHUP into a readable pipe so it
//! can leave the line before exiting, and `genv lock` passes signals on to
//! its command. Each is a guard that puts the previous dispositions back
//! when dropped, so a Ctrl-C after the wait ends the process again.
//!
//! `genv monitor` and `genv top` take theirs synchronously instead
//! ([`Blocked`]: blocked, then waited for).
//!
//! Not `signal-hook`: its registry keeps its own handler installed for the
//! life of the process (`unregister` leaves the signal caught and ignored,
//! and `cleanup_signal` is irreversible), which is the very bug a guard
//! must not have. Only one guard of each kind is active at a time.

mod blocked;

pub use blocked::Blocked;

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::{Error, Result};

/// The signals that end a wait.
pub const WAIT_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
/// The signals `genv lock` passes on to its command.
pub const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Dispositions replaced by a guard, put back on drop.
struct Saved(Vec<(libc::c_int, libc::sigaction)>);

impl Saved {
    /// Installs `handler` for `signals`, remembering what was there.
    fn install(signals: &[libc::c_int], handler: usize, flags: libc::c_int) -> Result<Self> {
        let mut saved = Saved(Vec::new());
        for &signal in signals {
            // SAFETY: zeroed sigactions are valid values; the handlers given
            // here only touch atomics and call write(2) or kill(2), which are
            // async-signal-safe; `previous` is written by the kernel.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = handler;
                action.sa_flags = flags;
                libc::sigemptyset(&mut action.sa_mask);
                let mut previous: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, &action, &mut previous) != 0 {
                    // `saved` drops here and restores those already replaced.
                    return Err(Error::hinted(
                        format!(
                            "cannot handle signal {signal}: {}",
                            std::io::Error::last_os_error()
                        ),
                        "this is a bug in genv; please report it",
                    ));
                }
                saved.0.push((signal, previous));
            }
        }
        Ok(saved)
    }
}

impl Drop for Saved {
    fn drop(&mut self) {
        for (signal, previous) in self.0.iter().rev() {
            // SAFETY: `previous` is what the kernel gave us for this signal.
            unsafe {
                libc::sigaction(*signal, previous, std::ptr::null_mut());
            }
        }
    }
}

static PIPE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn to_pipe(_: libc::c_int) {
    let fd = PIPE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the buffer is static.
        unsafe {
            libc::write(fd, b"x".as_ptr().cast(), 1);
        }
    }
}

/// [`WAIT_SIGNALS`] turned into a readable pipe while this lives.
pub struct SignalPipe {
    read: OwnedFd,
    _write: OwnedFd,
    saved: Option<Saved>,
}

impl SignalPipe {
    pub fn install() -> Result<Self> {
        let (read, write) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )
        .map_err(|e| Error::io("pipe", e.into()))?;
        PIPE_FD.store(write.as_raw_fd(), Ordering::SeqCst);
        let saved = Saved::install(
            &WAIT_SIGNALS,
            to_pipe as *const () as usize,
            libc::SA_RESTART,
        )?;
        Ok(SignalPipe {
            read,
            _write: write,
            saved: Some(saved),
        })
    }

    /// Readable once one of the signals came.
    pub fn fd(&self) -> BorrowedFd<'_> {
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
    // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO.
    let code = unsafe { info.as_ref().map_or(0, |i| i.si_code) };
    // Sent by the kernel for the terminal (Ctrl-C, hang-up): it reached
    // the whole foreground process group, the command included.
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

/// Passes [`FORWARDED`] signals on to a child while this lives. Signals
/// that come before the child is known are kept and sent by
/// [`Forwarding::child_started`].
pub struct Forwarding {
    saved: Option<Saved>,
}

impl Forwarding {
    pub fn install() -> Result<Self> {
        CHILD.store(0, Ordering::SeqCst);
        PENDING.store(0, Ordering::SeqCst);
        let saved = Saved::install(
            &FORWARDED,
            forward as *const () as usize,
            libc::SA_SIGINFO | libc::SA_RESTART,
        )?;
        Ok(Forwarding { saved: Some(saved) })
    }

    /// From now on signals go to `pid`; one that came before goes now.
    pub fn child_started(&self, pid: u32) {
        let Ok(pid) = i32::try_from(pid) else {
            return;
        };
        CHILD.store(pid, Ordering::SeqCst);
        let pending = PENDING.swap(0, Ordering::SeqCst);
        if pending > 0 {
            // SAFETY: kill has no memory effects; `pid` is our own child,
            // not yet reaped.
            unsafe { libc::kill(pid, pending) };
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
pub(crate) fn disposition(signal: libc::c_int) -> usize {
    // SAFETY: a null new action only queries; `current` is written by the kernel.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut current);
        current.sa_sigaction
    }
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
        // SAFETY: raise sends SIGHUP to this thread, which our handler takes.
        unsafe { libc::raise(libc::SIGHUP) };
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
        assert_eq!(disposition(libc::SIGTERM), forward as *const () as usize);
        drop(forwarding);
        let after: Vec<usize> = FORWARDED.iter().map(|&s| disposition(s)).collect();
        assert_eq!(before, after);
    }
}
