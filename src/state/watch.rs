//! Waking up when the state changes: inotify on the state folder (every
//! commit renames a file into it), with a timeout for what no file shows
//! (a process that died), and an extra descriptor for signals.

use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::inotify;

use crate::error::{Error, Result};

pub struct Watch {
    fd: OwnedFd,
}

/// Why [`Watch::wait`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    Changed,
    Timeout,
    /// The extra descriptor became readable.
    Other,
}

impl Watch {
    pub fn new(dir: &Path) -> Result<Self> {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
            .map_err(|e| Error::io(dir, e.into()))?;
        let mask = inotify::WatchFlags::MOVED_TO
            | inotify::WatchFlags::CLOSE_WRITE
            | inotify::WatchFlags::DELETE;
        inotify::add_watch(&fd, dir, mask).map_err(|e| Error::io(dir, e.into()))?;
        Ok(Watch { fd })
    }

    /// Waits for a change to a state file, the timeout, or `extra`.
    /// Opening and closing `genv.lock` and writing our temporary files are
    /// not changes; the rename that ends a commit is.
    pub fn wait(&self, timeout: Duration, extra: Option<BorrowedFd<'_>>) -> Wake {
        let now = Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(86_400));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut fds = vec![PollFd::new(&self.fd, PollFlags::IN)];
            if let Some(extra) = extra {
                fds.push(PollFd::from_borrowed_fd(extra, PollFlags::IN));
            }
            let timespec = Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: left.subsec_nanos() as i64,
            };
            match rustix::event::poll(&mut fds, Some(&timespec)) {
                Ok(0) => return Wake::Timeout,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return Wake::Timeout,
                Ok(_) => {
                    if fds.get(1).is_some_and(|fd| !fd.revents().is_empty()) {
                        return Wake::Other;
                    }
                    if self.drain() {
                        return Wake::Changed;
                    }
                }
            }
        }
    }

    /// Reads the pending events; whether one of them is a state change.
    fn drain(&self) -> bool {
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(&self.fd, &mut buf);
        let mut relevant = false;
        while let Ok(event) = reader.next() {
            let name = event.file_name().map(|n| n.to_bytes()).unwrap_or_default();
            if !name.starts_with(b".") && name != b"genv.lock" {
                relevant = true;
            }
        }
        relevant
    }
}
