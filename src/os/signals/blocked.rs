//! The signals that end `genv monitor` and `genv top`, taken synchronously:
//! blocked, then waited for (`sigtimedwait`), so that shutting down is
//! ordinary code (stop the server, restore the terminal) and no handler
//! runs at an arbitrary point.

use std::time::Duration;

/// SIGINT, SIGTERM and SIGHUP, blocked in this thread (and the threads it
/// starts from now on) so that [`Blocked::wait`] receives them.
pub struct Blocked {
    set: libc::sigset_t,
}

impl Blocked {
    pub fn block() -> Blocked {
        // SAFETY: plain calls on a local, zero-initialised signal set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGHUP);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Blocked { set }
        }
    }

    /// Waits up to `timeout`; the signal that came, if one did.
    pub fn wait(&self, timeout: Duration) -> Option<i32> {
        let spec = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        loop {
            // SAFETY: the set is initialised; no siginfo is asked for.
            let signal = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &spec) };
            if signal > 0 {
                return Some(signal);
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                _ => return None,
            }
        }
    }

    /// The name of a signal [`Blocked::wait`] returned.
    pub fn name(signal: i32) -> &'static str {
        match signal {
            libc::SIGINT => "SIGINT",
            libc::SIGHUP => "SIGHUP",
            _ => "SIGTERM",
        }
    }
}
