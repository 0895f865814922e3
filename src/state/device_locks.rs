//! Per-device access locks, `devices/<index>.lock`, shared with genv 1.4.3.
//!
//! genv 1.4.3 takes `flock(LOCK_EX)` on `devices/<index>.lock` for as long
//! as it uses the device. We take the same lock: exclusively for an
//! environment that owns the whole device, shared (`LOCK_SH`) for one with
//! a memory capacity, so a 1.4.3 process still excludes everyone and is
//! excluded by everyone. Which shared holders fit together is decided by a
//! small ledger of our own beside the lock, `devices/<index>.ledger`
//! (replaced atomically, guarded by `devices/<index>.ledger.guard`):
//!
//! - every `genv lock` registers there, in arrival order, before it waits;
//! - an entry is *admitted* when no earlier entry still waits (first come,
//!   first served, so a large request is never starved by small ones) and
//!   it fits beside the admitted ones: an exclusive entry needs none
//!   admitted, a fraction needs the admitted fractions plus itself to fit
//!   the device's memory and no exclusive one admitted, a shared one only
//!   that no exclusive one is admitted;
//! - an admitted entry then blocks on the `flock` itself, which is where it
//!   meets genv 1.4.3 and plain `flock(1)` users.
//!
//! Entries of processes that died are pruned (pid plus start time, so a
//! recycled pid does not count). Waiters sleep on inotify (the ledger is
//! renamed into place) and on pidfds of the processes they wait for, so a
//! hand-over takes microseconds and a holder killed with SIGKILL wakes them
//! too. No file name here other than `<index>.lock` ends in `.lock`: genv
//! 1.4.3's SDK parses every `devices/*.lock` as an index.

mod admission;
mod attached;
mod holders;

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;

use super::{Dir, StateDir, Watch};
use crate::error::{Error, Result};
use crate::os::procs;
use crate::state::Envs;
use admission::{Entry, Ledger, admit};
pub(crate) use admission::{Need, Request};
pub(crate) use attached::attached_requests;
pub(crate) use holders::{Holder, lock_holders};

const DEVICES_FOLDER: &str = "devices";
/// A safety net: waiters look again this often even when nothing told them
/// to (a holder in another pid namespace has no pidfd here).
const RECHECK: Duration = Duration::from_millis(500);

/// How to wait.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WaitOptions {
    /// Fail with [`LockError::Busy`] at once instead of waiting.
    pub nonblock: bool,
    /// Give up with [`LockError::TimedOut`] at this time.
    pub deadline: Option<Instant>,
}

/// Why a lock was not taken.
#[derive(Debug)]
pub(crate) enum LockError {
    /// `nonblock` and the device is in use; who holds it.
    Busy {
        index: u32,
        holders: Vec<Holder>,
    },
    /// The deadline passed while waiting; who holds the device.
    TimedOut {
        index: u32,
        holders: Vec<Holder>,
    },
    Other(Error),
}

impl From<Error> for LockError {
    fn from(e: Error) -> Self {
        LockError::Other(e)
    }
}

/// Device locks held until dropped; dropping releases them and removes
/// this process from the ledgers.
pub(crate) struct HeldLocks {
    dir: StateDir,
    held: Vec<Held>,
}

struct Held {
    index: u32,
    seq: u64,
    lock: Option<File>,
}

impl HeldLocks {
    pub(crate) fn indices(&self) -> Vec<u32> {
        self.held.iter().map(|h| h.index).collect()
    }
}

impl Drop for HeldLocks {
    fn drop(&mut self) {
        for held in self.held.iter_mut().rev() {
            // Unlock first, so that a genv 1.4.3 waiter blocked in flock
            // gets the device without waiting for the ledger.
            drop(held.lock.take());
            let _ = deregister(&self.dir, held.index, held.seq);
        }
    }
}

/// The path of the devices folder, for watching and messages; files in it
/// are opened through [`devices_dir`].
fn devices_folder(dir: &StateDir) -> PathBuf {
    dir.path(DEVICES_FOLDER)
}

/// The devices folder, created 0777 when missing; a link or a file in its
/// place is moved aside, so nothing is ever created outside the state
/// folder.
fn devices_dir(dir: &StateDir) -> Result<Dir> {
    dir.subdir(DEVICES_FOLDER)
}

/// `devices/<index>.lock` opened (created 0666 when missing, never through
/// a link), for the container runtime's hook to mount into a container:
/// the descriptor is what gets mounted, so nothing can be swapped in
/// between the check and the mount.
pub(crate) fn open_lock_file(dir: &StateDir, index: u32) -> Result<OwnedFd> {
    let fd = devices_dir(dir)?.open_lock(&lock_name(index))?;
    // genv never links lock files: another link may be any file at all.
    let links = rustix::fs::fstat(&fd).map(|s| s.st_nlink).unwrap_or(0);
    if links != 1 {
        return Err(Error::hinted(
            format!(
                "{} has {links} links: not mounting it into a container",
                lock_path(dir, index).display()
            ),
            "remove it: genv makes a new one",
        ));
    }
    Ok(fd)
}

/// The devices folder for taking locks, created 0777 when missing. Unlike
/// [`devices_dir`], anything else in its place is an error: holders may
/// hold the lock files of the folder that was there, so locks taken in a
/// new one would exclude nobody.
fn locks_dir(dir: &StateDir) -> Result<Dir> {
    let root = dir.root_dir()?;
    if let Some(devices) = root.existing_subdir(DEVICES_FOLDER) {
        return Ok(devices);
    }
    if root.has(DEVICES_FOLDER) {
        return Err(Error::hinted(
            format!(
                "{} is not a folder: not taking device locks beside whoever holds them in the folder that was there",
                devices_folder(dir).display()
            ),
            "remove it once no `genv lock` runs; genv then makes the folder again",
        ));
    }
    devices_dir(dir)
}

/// The devices folder when it exists as a real folder, for readers that
/// must not create or move anything.
fn existing_devices_dir(dir: &StateDir) -> Option<Dir> {
    dir.root_dir().ok()?.existing_subdir(DEVICES_FOLDER)
}

/// `devices/<index>.lock`, the file genv 1.4.3 locks (the path, for
/// messages; opened through [`devices_dir`]).
pub(crate) fn lock_path(dir: &StateDir, index: u32) -> PathBuf {
    devices_folder(dir).join(lock_name(index))
}

fn lock_name(index: u32) -> String {
    format!("{index}.lock")
}

fn ledger_name(index: u32) -> String {
    format!("{index}.ledger")
}

fn guard_name(index: u32) -> String {
    format!("{index}.ledger.guard")
}

/// The indices that have a lock file, as genv 1.4.3 finds a container's
/// devices (only the attached ones are mounted into it).
pub(crate) fn lockable(dir: &StateDir) -> Vec<u32> {
    let Some(devices) = existing_devices_dir(dir) else {
        return Vec::new();
    };
    let mut indices: Vec<u32> = devices
        .names()
        .iter()
        .filter_map(|name| name.strip_suffix(".lock")?.parse().ok())
        .collect();
    indices.sort_unstable();
    indices
}

/// Takes the locks of the requested devices in index order, so that two
/// processes never hold one each and wait for the other's. `on_wait` is
/// called once per device that this has to wait for, with those in the
/// way (credited to their environments in `envs`).
pub(crate) fn acquire(
    dir: &StateDir,
    requests: &[Request],
    eid: Option<&str>,
    envs: &Envs,
    options: WaitOptions,
    on_wait: &mut dyn FnMut(u32, &[Holder]),
) -> Result<HeldLocks, LockError> {
    let mut sorted = requests.to_vec();
    sorted.sort_by_key(|r| r.index);
    sorted.dedup_by_key(|r| r.index);
    locks_dir(dir)?;
    let mut locks = HeldLocks {
        dir: dir.clone(),
        held: Vec::new(),
    };
    for request in &sorted {
        let held = acquire_one(dir, request, eid, envs, options, on_wait)?;
        locks.held.push(held);
    }
    Ok(locks)
}

fn acquire_one(
    dir: &StateDir,
    request: &Request,
    eid: Option<&str>,
    envs: &Envs,
    options: WaitOptions,
    on_wait: &mut dyn FnMut(u32, &[Holder]),
) -> Result<Held, LockError> {
    let index = request.index;
    let lock_file = lock_path(dir, index);
    let fd = locks_dir(dir)?.open_lock(&lock_name(index))?;
    // std's flock: the lock genv 1.4.3's `fcntl.flock` takes.
    let lock = File::from(fd);
    // Watch before registering, so no change after our first look is missed.
    let watcher = if options.nonblock {
        None
    } else {
        Watch::ledgers(&devices_folder(dir)).ok()
    };
    // In the daemon the client is the holder: the locks are kept for it.
    let pid = crate::caller::pid().unwrap_or_else(std::process::id);
    let (mode, bytes) = match request.need {
        Need::Exclusive => ("exclusive", None),
        Need::Shared => ("shared", None),
        Need::Fraction(b) => ("fraction", Some(b)),
    };
    let mut mine = Entry {
        seq: 0,
        pid,
        start: procs::start_time(pid),
        eid: eid.map(str::to_owned),
        mode: mode.to_owned(),
        bytes,
        admitted: false,
    };
    let (seq, mut blockers) = with_ledger(dir, index, |ledger| {
        mine.seq = ledger.next_seq;
        ledger.next_seq += 1;
        ledger.entries.push(mine.clone());
        (mine.seq, admit(ledger, mine.seq, request.total_bytes))
    })?;
    let mut told = false;
    let release = |e: LockError| {
        let _ = deregister(dir, index, seq);
        e
    };
    let others = |only: &dyn Fn(&Holder) -> bool| -> Vec<Holder> {
        lock_holders(dir, index, envs)
            .into_iter()
            .filter(|h| h.pid != pid && only(h))
            .collect()
    };
    while let Some(pids) = blockers {
        if options.nonblock {
            let holders = others(&|_| true);
            return Err(release(LockError::Busy { index, holders }));
        }
        if options.deadline.is_some_and(|d| Instant::now() >= d) {
            let holders = others(&|h| pids.contains(&h.pid));
            return Err(release(LockError::TimedOut { index, holders }));
        }
        if !told {
            told = true;
            on_wait(index, &others(&|h| pids.contains(&h.pid)));
        }
        crate::caller::progress();
        wait_for_change(watcher.as_ref(), &pids, options.deadline);
        if crate::caller::hung_up() {
            return Err(release(LockError::Other(Error::Interrupted)));
        }
        blockers = with_ledger(dir, index, |ledger| {
            if !ledger.entries.iter().any(|e| e.seq == seq) {
                // The ledger was lost (removed by hand, or unreadable):
                // register again, in the same place in the queue.
                ledger.entries.push(mine.clone());
                ledger.entries.sort_by_key(|e| e.seq);
                ledger.next_seq = ledger.next_seq.max(seq + 1);
            }
            admit(ledger, seq, request.total_bytes)
        })
        .map_err(|e| release(e.into()))?;
    }
    let exclusive = request.need == Need::Exclusive;
    let lock = match try_flock(&lock, exclusive) {
        Ok(true) => lock,
        Ok(false) => {
            let holding = |h: &Holder| !h.waiting;
            if options.nonblock {
                let holders = others(&holding);
                return Err(release(LockError::Busy { index, holders }));
            }
            if !told {
                on_wait(index, &others(&holding));
            }
            crate::caller::progress();
            match flock_until(lock, exclusive, options.deadline) {
                Ok(Some(lock)) => lock,
                Ok(None) => {
                    let holders = others(&holding);
                    return Err(release(LockError::TimedOut { index, holders }));
                }
                Err(e) => return Err(release(Error::io(&lock_file, e).into())),
            }
        }
        Err(e) => return Err(release(Error::io(&lock_file, e).into())),
    };
    Ok(Held {
        index,
        seq,
        lock: Some(lock),
    })
}

/// Takes the `flock` if nobody is in the way; `false` when someone is.
fn try_flock(file: &File, exclusive: bool) -> std::io::Result<bool> {
    loop {
        let result = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        return match result {
            Ok(()) => Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                continue;
            }
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        };
    }
}

/// Blocks on the `flock` (where a genv 1.4.3 holder or `flock(1)` makes us
/// wait, which nothing announces) until taken or `deadline`; `None` when
/// the deadline came first. With a deadline the blocking call runs on a
/// thread of its own: if it is taken after we gave up, that thread lets
/// it go at once, and the caller is about to exit anyway.
fn flock_until(
    file: File,
    exclusive: bool,
    deadline: Option<Instant>,
) -> std::io::Result<Option<File>> {
    let lock = move |file: File| loop {
        let result = if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        };
        match result {
            Ok(()) => return Ok(file),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    let Some(deadline) = deadline else {
        return lock(file).map(Some);
    };
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(lock(file));
    });
    match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(result) => result.map(Some),
        Err(_) => Ok(None),
    }
}

/// Reads, prunes, changes and writes back a device's ledger under its
/// guard. The file is written only when it changed.
fn with_ledger<T>(dir: &StateDir, index: u32, change: impl FnOnce(&mut Ledger) -> T) -> Result<T> {
    let devices = devices_dir(dir)?;
    let _guard = StateDir::lock_file(&devices, &guard_name(index), FlockOperation::LockExclusive)?;
    let name = ledger_name(index);
    let original = devices.read(&name)?;
    let mut ledger: Ledger = original
        .as_deref()
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default();
    ledger.entries.retain(Entry::alive);
    let result = change(&mut ledger);
    let bytes = serde_json::to_vec(&ledger).map_err(|e| Error::Serialize(e.to_string()))?;
    if original.as_deref() != Some(bytes.as_slice()) {
        devices.write_atomic(&name, &bytes, false)?;
    }
    Ok(result)
}

/// The ledger as it is, without its guard: a reader never moves or writes
/// anything.
fn read_ledger(dir: &StateDir, index: u32) -> Ledger {
    existing_devices_dir(dir)
        .and_then(|devices| devices.peek(&ledger_name(index)))
        .and_then(|b| serde_json::from_slice::<Ledger>(&b).ok())
        .unwrap_or_default()
}

fn deregister(dir: &StateDir, index: u32, seq: u64) -> Result<()> {
    let pid = crate::caller::pid().unwrap_or_else(std::process::id);
    with_ledger(dir, index, |ledger| {
        ledger.entries.retain(|e| !(e.seq == seq && e.pid == pid));
    })
}

/// Sleeps until the ledger changes, one of `pids` exits, the deadline
/// or [`RECHECK`].
fn wait_for_change(watcher: Option<&Watch>, pids: &[u32], deadline: Option<Instant>) {
    let pidfds: Vec<OwnedFd> = pids
        .iter()
        .filter_map(|&pid| i32::try_from(pid).ok())
        .filter_map(rustix::process::Pid::from_raw)
        .filter_map(|pid| {
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
        })
        .collect();
    // The daemon's client hanging up wakes it too.
    let hangup = crate::caller::hangup();
    let fds: Vec<BorrowedFd<'_>> = pidfds.iter().chain(&hangup).map(AsFd::as_fd).collect();
    let timeout = deadline.map_or(RECHECK, |d| {
        d.saturating_duration_since(Instant::now()).min(RECHECK)
    });
    match watcher {
        Some(watcher) => {
            watcher.wait(timeout, &fds);
        }
        None => {
            use rustix::event::{PollFd, PollFlags, Timespec};
            let mut polls: Vec<PollFd<'_>> = fds
                .iter()
                .map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN))
                .collect();
            let timespec = Timespec {
                tv_sec: timeout.as_secs() as i64,
                tv_nsec: timeout.subsec_nanos() as i64,
            };
            let _ = rustix::event::poll(&mut polls, Some(&timespec));
        }
    }
}
