//! The platform layer: what genv asks of the operating system about
//! processes, users and signals, and the children it runs.

pub(crate) mod child;
pub(crate) mod exec;
pub mod procs;
pub(crate) mod signals;

/// Whether a descriptor is readable now, without waiting: a pidfd whose
/// process exited, a connection whose other end hung up or wrote.
pub(crate) fn readable_now(fd: impl std::os::fd::AsFd) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&now)), Ok(n) if n > 0)
}
