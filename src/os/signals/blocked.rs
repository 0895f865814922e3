//! The signals that end `genv monitor`, `genv top` and `genv enforce`,
//! taken synchronously: blocked, then read from a signalfd, so that
//! shutting down is ordinary code (stop the server, restore the terminal,
//! finish the cycle) and no handler runs at an arbitrary point.

use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use rustix::event::{PollFd, PollFlags, Timespec};

/// Signals blocked in this thread (and the threads it starts from now on)
/// so that [`Blocked::wait`] receives them.
pub(crate) struct Blocked {
    /// None when no signalfd could be made: the signals were unblocked
    /// again and keep their usual effect.
    fd: Option<SignalFd>,
}

impl Blocked {
    /// SIGINT, SIGTERM and SIGHUP.
    pub(crate) fn block() -> Blocked {
        Blocked::of(&[Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP])
    }

    /// `signals`, blocked.
    pub(crate) fn of(signals: &[Signal]) -> Blocked {
        let mut set = SigSet::empty();
        for &signal in signals {
            set.add(signal);
        }
        if set.thread_block().is_err() {
            return Blocked { fd: None };
        }
        match SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) {
            Ok(fd) => Blocked { fd: Some(fd) },
            Err(_) => {
                // Out of descriptors: better killed by Ctrl-C than deaf to it.
                let _ = set.thread_unblock();
                Blocked { fd: None }
            }
        }
    }

    /// Waits up to `timeout`; the signal that came, if one did.
    pub(crate) fn wait(&self, timeout: Duration) -> Option<i32> {
        let Some(fd) = &self.fd else {
            std::thread::sleep(timeout);
            return None;
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(info)) = fd.read_signal() {
                return i32::try_from(info.ssi_signo).ok();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let left = Timespec {
                tv_sec: left.as_secs().min(i64::MAX as u64) as i64,
                tv_nsec: left.subsec_nanos().into(),
            };
            let mut fds = [PollFd::new(fd, PollFlags::IN)];
            // Interrupted or ready: read again, with the time left.
            let _ = rustix::event::poll(&mut fds, Some(&left));
        }
    }

    /// The name of a signal [`Blocked::wait`] returned.
    pub(crate) fn name(signal: i32) -> &'static str {
        match Signal::try_from(signal) {
            Ok(Signal::SIGINT) => "SIGINT",
            Ok(Signal::SIGHUP) => "SIGHUP",
            _ => "SIGTERM",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_signal_is_received_and_the_time_is_kept() {
        // SIGUSR2, which no other test uses: blocked on this test's thread
        // only, and sent to that thread.
        let blocked = Blocked::of(&[Signal::SIGUSR2]);
        let started = Instant::now();
        assert_eq!(blocked.wait(Duration::from_millis(50)), None);
        assert!(started.elapsed() >= Duration::from_millis(50));
        // raise(3) sends to the calling thread.
        nix::sys::signal::raise(Signal::SIGUSR2).unwrap();
        assert_eq!(
            blocked.wait(Duration::from_secs(5)),
            Some(Signal::SIGUSR2 as i32)
        );
    }
}
