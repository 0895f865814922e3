//! Waking up when the state changes: inotify on a state folder (every
//! commit renames a file into it), with a timeout for what no file shows
//! (a process that died), and extra descriptors (a signal pipe, pidfds of
//! the processes waited for). One watcher for the state folder, where
//! `--wait` waits, and for `devices/`, where `genv lock` waits.

use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::inotify;

use crate::error::{Error, Result};

pub struct Watch {
    fd: OwnedFd,
    /// Whether a file of this name changing is worth waking up for.
    relevant: fn(&[u8]) -> bool,
}

/// Why [`Watch::wait`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    Changed,
    Timeout,
    /// One of the extra descriptors became readable.
    Other,
}

/// A state file: not a temporary (`.NAME.tmp`) and not the global lock,
/// which every command opens and closes.
fn state_file(name: &[u8]) -> bool {
    !name.starts_with(b".") && name != b"genv.lock"
}

/// A device's ledger, renamed into place on every change.
fn ledger(name: &[u8]) -> bool {
    name.ends_with(b".ledger")
}

impl Watch {
    /// Changes of the state files in `dir`.
    pub fn new(dir: &Path) -> Result<Self> {
        let mask = inotify::WatchFlags::MOVED_TO
            | inotify::WatchFlags::CLOSE_WRITE
            | inotify::WatchFlags::DELETE;
        Self::with(dir, mask, state_file)
    }

    /// Changes of the device ledgers in `devices/` (`dir`).
    pub fn ledgers(dir: &Path) -> Result<Self> {
        Self::with(dir, inotify::WatchFlags::MOVED_TO, ledger)
    }

    fn with(dir: &Path, mask: inotify::WatchFlags, relevant: fn(&[u8]) -> bool) -> Result<Self> {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
            .map_err(|e| Error::io(dir, e.into()))?;
        inotify::add_watch(&fd, dir, mask).map_err(|e| Error::io(dir, e.into()))?;
        Ok(Watch { fd, relevant })
    }

    /// Waits for a relevant change, the timeout, or one of `extra` to be
    /// readable. Opening and closing `genv.lock` and writing our temporary
    /// files are not changes; the rename that ends a commit is.
    pub fn wait(&self, timeout: Duration, extra: &[BorrowedFd<'_>]) -> Wake {
        let now = Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(86_400));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut fds = vec![PollFd::new(&self.fd, PollFlags::IN)];
            fds.extend(
                extra
                    .iter()
                    .map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN)),
            );
            let timespec = Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: left.subsec_nanos() as i64,
            };
            match rustix::event::poll(&mut fds, Some(&timespec)) {
                Ok(0) => return Wake::Timeout,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return Wake::Timeout,
                Ok(_) => {
                    if fds[1..].iter().any(|fd| !fd.revents().is_empty()) {
                        return Wake::Other;
                    }
                    if self.drain() {
                        return Wake::Changed;
                    }
                }
            }
        }
    }

    /// Reads the pending events; whether one of them is relevant.
    fn drain(&self) -> bool {
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(&self.fd, &mut buf);
        let mut relevant = false;
        while let Ok(event) = reader.next() {
            let name = event.file_name().map(|n| n.to_bytes()).unwrap_or_default();
            if (self.relevant)(name) {
                relevant = true;
            }
        }
        relevant
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_wake() {
        assert!(state_file(b"envs.json"));
        assert!(!state_file(b".envs.json.tmp"));
        assert!(!state_file(b"genv.lock"));
        assert!(ledger(b"0.ledger"));
        assert!(!ledger(b"0.ledger.guard"));
        assert!(!ledger(b".0.ledger.tmp"));
        assert!(!ledger(b"0.lock"));
    }
}
