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

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::FlockOperation;
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use super::{Dir, StateDir};
use crate::error::{Error, Result};
use crate::procs;

const DEVICES_FOLDER: &str = "devices";
/// A safety net: waiters look again this often even when nothing told them
/// to (a holder in another pid namespace has no pidfd here).
const RECHECK: Duration = Duration::from_millis(500);

/// How a process wants a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The whole device, alone (`LOCK_EX`), as genv 1.4.3 always takes it.
    Exclusive,
    /// Beside anyone but exclusive holders, using no memory of its own.
    Shared,
    /// This many bytes of the device's memory, beside others that fit.
    Fraction(u64),
}

/// One device to lock and what for.
#[derive(Debug, Clone)]
pub struct Request {
    pub index: u32,
    pub need: Need,
    /// The device's memory, against which fractions are counted.
    pub total_bytes: u64,
}

impl Request {
    /// The need of an environment with this capacity (`None`: the whole
    /// device). A capacity beyond the device's memory needs all of it.
    pub fn for_capacity(index: u32, capacity: Option<u64>, total_bytes: u64) -> Self {
        let need = match capacity {
            Some(bytes) if bytes <= total_bytes && total_bytes > 0 => Need::Fraction(bytes),
            _ => Need::Exclusive,
        };
        Request {
            index,
            need,
            total_bytes,
        }
    }
}

/// How to wait.
#[derive(Debug, Clone, Copy, Default)]
pub struct WaitOptions {
    /// Fail with [`LockError::Busy`] at once instead of waiting.
    pub nonblock: bool,
}

/// Why a lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// `nonblock` and the device is in use; who holds it.
    Busy {
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

/// Someone who holds or waits for a device lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub eid: Option<String>,
    pub need: Need,
    pub waiting: bool,
}

impl Holder {
    pub fn mode(&self) -> &'static str {
        match self.need {
            Need::Exclusive => "exclusive",
            Need::Shared => "shared",
            Need::Fraction(_) => "fraction",
        }
    }
}

/// Device locks held until dropped; dropping releases them and removes
/// this process from the ledgers.
pub struct HeldLocks {
    dir: StateDir,
    held: Vec<Held>,
}

struct Held {
    index: u32,
    seq: u64,
    lock: Option<OwnedFd>,
}

impl HeldLocks {
    pub fn indices(&self) -> Vec<u32> {
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Ledger {
    next_seq: u64,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    seq: u64,
    pid: u32,
    /// The process's start time (`/proc/<pid>/stat`), against pid reuse.
    start: Option<u64>,
    eid: Option<String>,
    mode: String,
    bytes: Option<u64>,
    admitted: bool,
}

impl Entry {
    fn need(&self) -> Need {
        match (self.mode.as_str(), self.bytes) {
            ("fraction", Some(bytes)) => Need::Fraction(bytes),
            ("shared", _) => Need::Shared,
            _ => Need::Exclusive,
        }
    }

    fn alive(&self) -> bool {
        procs::pid_alive(i64::from(self.pid))
            && match (self.start, start_time(self.pid)) {
                (Some(recorded), Some(now)) => recorded == now,
                _ => true,
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

/// The devices folder when it exists as a real folder, for readers that
/// must not create or move anything.
fn existing_devices_dir(dir: &StateDir) -> Option<Dir> {
    dir.root_dir().ok()?.existing_subdir(DEVICES_FOLDER)
}

/// `devices/<index>.lock`, the file genv 1.4.3 locks (the path, for
/// messages; opened through [`devices_dir`]).
pub fn lock_path(dir: &StateDir, index: u32) -> PathBuf {
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
pub fn lockable(dir: &StateDir) -> Vec<u32> {
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
/// called once per device that this has to wait for, with its holders.
pub fn acquire(
    dir: &StateDir,
    requests: &[Request],
    eid: Option<&str>,
    options: WaitOptions,
    on_wait: &mut dyn FnMut(u32, &[Holder]),
) -> Result<HeldLocks, LockError> {
    let mut sorted = requests.to_vec();
    sorted.sort_by_key(|r| r.index);
    sorted.dedup_by_key(|r| r.index);
    devices_dir(dir)?;
    let mut locks = HeldLocks {
        dir: dir.clone(),
        held: Vec::new(),
    };
    for request in &sorted {
        let held = acquire_one(dir, request, eid, options, on_wait)?;
        locks.held.push(held);
    }
    Ok(locks)
}

fn acquire_one(
    dir: &StateDir,
    request: &Request,
    eid: Option<&str>,
    options: WaitOptions,
    on_wait: &mut dyn FnMut(u32, &[Holder]),
) -> Result<Held, LockError> {
    let index = request.index;
    let lock_file = lock_path(dir, index);
    let fd = devices_dir(dir)?.open_lock(&lock_name(index))?;
    // Watch before registering, so no change after our first look is missed.
    let watcher = if options.nonblock {
        None
    } else {
        Watcher::new(&devices_folder(dir))
    };
    let pid = std::process::id();
    let (mode, bytes) = match request.need {
        Need::Exclusive => ("exclusive", None),
        Need::Shared => ("shared", None),
        Need::Fraction(b) => ("fraction", Some(b)),
    };
    let mut mine = Entry {
        seq: 0,
        pid,
        start: start_time(pid),
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
    while let Some(pids) = blockers {
        if options.nonblock {
            let holders = lock_holders(dir, index)
                .into_iter()
                .filter(|h| h.pid != pid)
                .collect();
            return Err(release(LockError::Busy { index, holders }));
        }
        if !told {
            told = true;
            let holders: Vec<Holder> = lock_holders(dir, index)
                .into_iter()
                .filter(|h| h.pid != pid && pids.contains(&h.pid))
                .collect();
            on_wait(index, &holders);
        }
        wait_for_change(watcher.as_ref(), &pids);
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
    let operation = match request.need {
        Need::Exclusive => FlockOperation::NonBlockingLockExclusive,
        _ => FlockOperation::NonBlockingLockShared,
    };
    match flock(&fd, operation) {
        Ok(()) => {}
        Err(Errno::WOULDBLOCK) => {
            let others: Vec<Holder> = lock_holders(dir, index)
                .into_iter()
                .filter(|h| h.pid != pid && !h.waiting)
                .collect();
            if options.nonblock {
                return Err(release(LockError::Busy {
                    index,
                    holders: others,
                }));
            }
            if !told {
                on_wait(index, &others);
            }
            let blocking = match request.need {
                Need::Exclusive => FlockOperation::LockExclusive,
                _ => FlockOperation::LockShared,
            };
            flock(&fd, blocking).map_err(|e| release(Error::io(&lock_file, e.into()).into()))?;
        }
        Err(e) => return Err(release(Error::io(&lock_file, e.into()).into())),
    }
    Ok(Held {
        index,
        seq,
        lock: Some(fd),
    })
}

fn flock(fd: &OwnedFd, operation: FlockOperation) -> rustix::io::Result<()> {
    loop {
        match rustix::fs::flock(fd, operation) {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}

/// Admits entry `seq` when it may hold the device now and returns `None`;
/// otherwise the pids it waits for.
fn admit(ledger: &mut Ledger, seq: u64, total_bytes: u64) -> Option<Vec<u32>> {
    let me = ledger.entries.iter().find(|e| e.seq == seq)?;
    if me.admitted {
        return None;
    }
    let need = me.need();
    let earlier: Vec<u32> = ledger
        .entries
        .iter()
        .filter(|e| e.seq < seq && !e.admitted)
        .map(|e| e.pid)
        .collect();
    let admitted: Vec<&Entry> = ledger
        .entries
        .iter()
        .filter(|e| e.admitted && e.seq != seq)
        .collect();
    let exclusive_held = admitted.iter().any(|e| e.need() == Need::Exclusive);
    let fits = match need {
        Need::Exclusive => admitted.is_empty(),
        Need::Shared => !exclusive_held,
        Need::Fraction(bytes) => {
            let used: u64 = admitted
                .iter()
                .filter_map(|e| match e.need() {
                    Need::Fraction(b) => Some(b),
                    _ => None,
                })
                .fold(0, u64::saturating_add);
            !exclusive_held && used.saturating_add(bytes) <= total_bytes
        }
    };
    if earlier.is_empty() && fits {
        if let Some(me) = ledger.entries.iter_mut().find(|e| e.seq == seq) {
            me.admitted = true;
        }
        return None;
    }
    let mut pids = earlier;
    pids.extend(admitted.iter().map(|e| e.pid));
    pids.sort_unstable();
    pids.dedup();
    Some(pids)
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
    let pid = std::process::id();
    with_ledger(dir, index, |ledger| {
        ledger.entries.retain(|e| !(e.seq == seq && e.pid == pid));
    })
}

/// Removes every entry of this process from the given devices' ledgers,
/// for a process that gives up waiting (a timeout) and exits.
pub fn forget_waits(dir: &StateDir, indices: &[u32]) {
    let pid = std::process::id();
    for &index in indices {
        let _ = with_ledger(dir, index, |ledger| ledger.entries.retain(|e| e.pid != pid));
    }
}

/// Who holds or waits for a device's lock: every `flock` on
/// `devices/<index>.lock` the kernel lists in `/proc/locks` (ours, genv
/// 1.4.3's, `flock(1)`'s), plus the ledger's entries still waiting for
/// room. Holders come first, then waiters in arrival order.
pub fn lock_holders(dir: &StateDir, index: u32) -> Vec<Holder> {
    let ledger = read_ledger(dir, index);
    let entries: Vec<&Entry> = ledger.entries.iter().filter(|e| e.alive()).collect();
    let mut holders = Vec::new();
    if let Ok(stat) = rustix::fs::stat(lock_path(dir, index)) {
        let text = std::fs::read_to_string("/proc/locks").unwrap_or_default();
        for lock in parse_proc_locks(&text, stat.st_ino) {
            let entry = entries.iter().find(|e| e.pid == lock.pid);
            let need = match entry.map(|e| e.need()) {
                Some(need @ Need::Fraction(_)) if !lock.exclusive => need,
                _ if lock.exclusive => Need::Exclusive,
                _ => Need::Shared,
            };
            holders.push(Holder {
                pid: lock.pid,
                eid: entry
                    .and_then(|e| e.eid.clone())
                    .or_else(|| crate::backend::process_eid(lock.pid)),
                need,
                waiting: lock.blocked,
            });
        }
    }
    for entry in entries {
        if !holders.iter().any(|h| h.pid == entry.pid) {
            holders.push(Holder {
                pid: entry.pid,
                eid: entry.eid.clone(),
                need: entry.need(),
                waiting: true,
            });
        }
    }
    holders.sort_by_key(|h| h.waiting);
    holders
}

struct ProcLock {
    pid: u32,
    exclusive: bool,
    blocked: bool,
}

/// The `FLOCK` lines of `/proc/locks` on inode `inode`, e.g.
/// `1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF`, and waiters as
/// `1: -> FLOCK  ADVISORY  WRITE 1235 00:2a:5678 0 EOF`.
fn parse_proc_locks(text: &str, inode: u64) -> Vec<ProcLock> {
    let mut locks = Vec::new();
    for line in text.lines() {
        let mut fields: Vec<&str> = line.split_whitespace().skip(1).collect();
        let blocked = fields.first() == Some(&"->");
        if blocked {
            fields.remove(0);
        }
        if fields.len() < 5 || fields[0] != "FLOCK" {
            continue;
        }
        let ino = fields[4]
            .rsplit(':')
            .next()
            .and_then(|i| i.parse::<u64>().ok());
        let Ok(pid) = fields[3].parse::<u32>() else {
            continue;
        };
        // /proc/locks is read in pieces while locks come and go, so an
        // entry may be seen twice: one per pid.
        if ino == Some(inode) && !locks.iter().any(|l: &ProcLock| l.pid == pid) {
            locks.push(ProcLock {
                pid,
                exclusive: fields[2] == "WRITE",
                blocked,
            });
        }
    }
    locks
}

/// The start time of a process in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Wakes a waiter when a ledger is replaced in the devices folder.
struct Watcher {
    fd: OwnedFd,
}

impl Watcher {
    fn new(folder: &Path) -> Option<Self> {
        use rustix::fs::inotify;
        let fd =
            inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK).ok()?;
        inotify::add_watch(&fd, folder, inotify::WatchFlags::MOVED_TO).ok()?;
        Some(Watcher { fd })
    }

    fn drain(&self) {
        let mut buf = [0u8; 4096];
        while matches!(rustix::io::read(&self.fd, &mut buf), Ok(n) if n > 0) {}
    }
}

/// Sleeps until the ledger changes, one of `pids` exits, or [`RECHECK`].
fn wait_for_change(watcher: Option<&Watcher>, pids: &[u32]) {
    let pidfds: Vec<OwnedFd> = pids
        .iter()
        .filter_map(|&pid| rustix::process::Pid::from_raw(pid as i32))
        .filter_map(|pid| {
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
        })
        .collect();
    let mut polls: Vec<libc::pollfd> = watcher
        .map(|w| w.fd.as_fd().as_raw_fd())
        .into_iter()
        .chain(pidfds.iter().map(|fd| fd.as_raw_fd()))
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `polls` is a valid array of pollfd for the length given, and
    // every descriptor in it stays open until poll returns.
    unsafe {
        libc::poll(
            polls.as_mut_ptr(),
            polls.len() as libc::nfds_t,
            RECHECK.as_millis() as libc::c_int,
        );
    }
    if let Some(watcher) = watcher {
        watcher.drain();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, mode: &str, bytes: Option<u64>, admitted: bool) -> Entry {
        Entry {
            seq,
            pid: 100 + seq as u32,
            start: None,
            eid: None,
            mode: mode.into(),
            bytes,
            admitted,
        }
    }

    const G: u64 = 1 << 30;

    #[test]
    fn fractions_that_fit_share() {
        let mut ledger = Ledger {
            next_seq: 2,
            entries: vec![
                entry(0, "fraction", Some(7 * G), true),
                entry(1, "fraction", Some(7 * G), false),
            ],
        };
        assert_eq!(admit(&mut ledger, 1, 16 * G), None);
        assert!(ledger.entries[1].admitted);
    }

    #[test]
    fn fractions_that_do_not_fit_wait() {
        let mut ledger = Ledger {
            next_seq: 2,
            entries: vec![
                entry(0, "fraction", Some(10 * G), true),
                entry(1, "fraction", Some(10 * G), false),
            ],
        };
        assert_eq!(admit(&mut ledger, 1, 16 * G), Some(vec![100]));
    }

    #[test]
    fn first_come_first_served() {
        let mut ledger = Ledger {
            next_seq: 3,
            entries: vec![
                entry(0, "fraction", Some(10 * G), true),
                entry(1, "exclusive", None, false),
                entry(2, "fraction", Some(G), false),
            ],
        };
        assert_eq!(admit(&mut ledger, 2, 16 * G), Some(vec![100, 101]));
        assert_eq!(admit(&mut ledger, 1, 16 * G), Some(vec![100]));
    }

    #[test]
    fn shared_only_excluded_by_exclusive() {
        let mut ledger = Ledger {
            next_seq: 2,
            entries: vec![
                entry(0, "fraction", Some(16 * G), true),
                entry(1, "shared", None, false),
            ],
        };
        assert_eq!(admit(&mut ledger, 1, 16 * G), None);
        let mut ledger = Ledger {
            next_seq: 2,
            entries: vec![
                entry(0, "exclusive", None, true),
                entry(1, "shared", None, false),
            ],
        };
        assert!(admit(&mut ledger, 1, 16 * G).is_some());
    }

    #[test]
    fn capacity_beyond_the_device_is_exclusive() {
        assert_eq!(
            Request::for_capacity(0, Some(20 * G), 16 * G).need,
            Need::Exclusive
        );
        assert_eq!(Request::for_capacity(0, None, 16 * G).need, Need::Exclusive);
        assert_eq!(
            Request::for_capacity(0, Some(7 * G), 16 * G).need,
            Need::Fraction(7 * G)
        );
    }

    #[test]
    fn parses_proc_locks() {
        let text = "1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF\n\
                    1: -> FLOCK  ADVISORY  READ 1235 00:2a:5678 0 EOF\n\
                    2: POSIX  ADVISORY  WRITE 99 00:2a:5678 0 EOF\n\
                    3: FLOCK  ADVISORY  READ 77 00:2a:1 0 EOF\n";
        let locks = parse_proc_locks(text, 5678);
        assert_eq!(locks.len(), 2);
        assert!(locks[0].exclusive && !locks[0].blocked && locks[0].pid == 1234);
        assert!(!locks[1].exclusive && locks[1].blocked && locks[1].pid == 1235);
    }
}
