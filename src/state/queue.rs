//! `queue.json`: requests waiting for GPUs (`--wait`), first come first
//! served. A file of our own beside the state, so `envs.json` and
//! `devices.json` keep genv 1.4.3's exact keys.
//!
//! Every user can write the file, so an entry proves nothing by itself:
//! a waiter holds a shared `flock` on `queue.guard` for as long as it
//! waits, and an entry counts only while the kernel says its process
//! holds that lock and is owned by the uid the entry names (see
//! [`Queue::keep_waiting`]). Anything else (pid 1, a dead pid, a process
//! that is not waiting, or one of another user) leaves the line.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, FlockOperation};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StateDir;
use crate::error::{Error, Result};
use crate::os::procs::{self, FileId};

/// The highest ticket a waiter may hold. Tickets count up by one per
/// request and start again at 1 whenever the line empties; when the next
/// one would pass this, the line is numbered again from 1 in its order
/// (waiters know their entry by pid), so tickets never run out or wrap.
pub(super) const MAX_TICKET: u64 = u32::MAX as u64;

/// The file waiters hold a shared `flock` on while they wait.
const GUARD_FILE: &str = "queue.guard";
/// How many more times `/proc/locks` is read when an entry's process is
/// not seen holding the guard.
const RELOOKS: usize = 2;
/// How often to try again when the guard is replaced or locked
/// exclusively (no waiter does that) while taking it.
const ATTEMPTS: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    /// Place in line: lower tickets are served first.
    pub ticket: u64,
    pub eid: String,
    /// The waiting process; a waiter whose process is gone, or that does
    /// not hold the guard, leaves the line.
    pub pid: i64,
    /// The owner of the waiting process, which `/proc` must confirm.
    #[serde(default)]
    pub uid: Option<u32>,
    pub since: String,
    pub count: Option<u32>,
    pub index: Option<u32>,
    pub over_subscribe: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    pub waiters: Vec<Waiter>,
}

/// The clients `genv daemon` is waiting for, by pid: in a folder the
/// daemon owns, the entries that count (a daemon started again serves
/// none of those its predecessor left).
static SERVED: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// A client in the daemon's line, until dropped.
pub struct Served(u32);

impl Drop for Served {
    fn drop(&mut self) {
        let mut served = SERVED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = served.iter().position(|&p| p == self.0) {
            served.swap_remove(at);
        }
    }
}

impl Queue {
    /// Counts the daemon's client `pid` as waiting, until the result is
    /// dropped.
    pub fn served(pid: u32) -> Served {
        SERVED.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
        Served(pid)
    }

    /// Takes a ticket at the end of the line. When the tickets would pass
    /// [`MAX_TICKET`], the line is numbered again from 1 first, in its
    /// order.
    pub fn enqueue(&mut self, mut waiter: Waiter) -> u64 {
        self.waiters.sort_by_key(|w| w.ticket);
        let last = self.waiters.last().map_or(0, |w| w.ticket);
        let ticket = match last.checked_add(1).filter(|&t| t <= MAX_TICKET) {
            Some(ticket) => ticket,
            None => {
                for (place, w) in (1..).zip(self.waiters.iter_mut()) {
                    w.ticket = place;
                }
                self.waiters.len() as u64 + 1
            }
        };
        waiter.ticket = ticket;
        self.waiters.push(waiter);
        ticket
    }

    /// The entry of process `pid`, brought in line with `waiter` (a forged
    /// entry naming this process asks for what it really asks for) but
    /// keeping its place and time, or a new one at the end of the line;
    /// its ticket.
    pub fn join(&mut self, waiter: Waiter) -> u64 {
        match self.waiters.iter_mut().find(|w| w.pid == waiter.pid) {
            Some(entry) => {
                let (ticket, since) = (entry.ticket, std::mem::take(&mut entry.since));
                *entry = Waiter {
                    ticket,
                    since,
                    ..waiter
                };
                ticket
            }
            None => self.enqueue(waiter),
        }
    }

    /// Takes process `pid` out of the line.
    pub fn leave(&mut self, pid: i64) {
        self.waiters.retain(|w| w.pid != pid);
    }

    pub fn contains(&self, ticket: u64) -> bool {
        self.waiters.iter().any(|w| w.ticket == ticket)
    }

    /// Those in line before `ticket`.
    pub fn ahead_of(&self, ticket: u64) -> impl Iterator<Item = &Waiter> {
        self.waiters.iter().filter(move |w| w.ticket < ticket)
    }

    /// Keeps only the entries whose process waits, as the kernel says: it
    /// holds `guard`'s lock (per `/proc/locks`) and `/proc` names the
    /// entry's uid as its owner. One entry per process, its first.
    pub fn keep_waiting(&mut self, guard: &QueueGuard) {
        self.keep_holders_of(guard.file);
    }

    /// [`Queue::keep_waiting`] for a reader that holds no guard (`genv
    /// devices queue`, `genv status`): the guard is the file now named
    /// `queue.guard`; with none, nobody waits.
    pub fn keep_waiting_at(&mut self, dir: &StateDir) {
        let current = dir.root_dir().ok().and_then(|root| {
            rustix::fs::statat(root.fd(), GUARD_FILE, AtFlags::SYMLINK_NOFOLLOW).ok()
        });
        match current {
            Some(stat) => self.keep_holders_of(id_of(&stat)),
            None => self.waiters.clear(),
        }
    }

    fn keep_holders_of(&mut self, guard: FileId) {
        if super::file::locked_down() {
            // In the daemon, which alone writes the line: those it serves.
            let served = SERVED.lock().unwrap_or_else(|e| e.into_inner());
            self.retain_waiting(|pid, uid| {
                served.contains(&pid) && procs::owner(pid).is_ok_and(|owner| owner == uid)
            });
            return;
        }
        let holders = || {
            procs::flocks(guard)
                .into_iter()
                .filter(|lock| !lock.blocked)
                .map(|lock| lock.pid)
        };
        // `/proc/locks` is read a page at a time while locks come and go,
        // so a row can be missed: look again before dropping anyone.
        let mut holding: Vec<u32> = holders().collect();
        for _ in 0..RELOOKS {
            let missing = self
                .waiters
                .iter()
                .any(|w| u32::try_from(w.pid).is_ok_and(|pid| !holding.contains(&pid)));
            if !missing {
                break;
            }
            holding.extend(holders());
        }
        self.retain_waiting(|pid, uid| {
            holding.contains(&pid) && procs::owner(pid).is_ok_and(|owner| owner == uid)
        });
    }

    /// [`Queue::keep_waiting`] with the kernel's answer as `waits(pid,
    /// uid)`.
    fn retain_waiting(&mut self, waits: impl Fn(u32, u32) -> bool) {
        self.waiters.sort_by_key(|w| w.ticket);
        let mut seen: Vec<i64> = Vec::new();
        self.waiters.retain(|w| {
            let (Ok(pid), Some(uid)) = (u32::try_from(w.pid), w.uid) else {
                return false;
            };
            if pid == 0 || seen.contains(&w.pid) || !waits(pid, uid) {
                return false;
            }
            seen.push(w.pid);
            true
        });
    }

    /// Takes the guard this process holds while it waits: a shared `flock`
    /// on `queue.guard`, created when missing. A guard that someone holds
    /// exclusively (no waiter does) is replaced by a new one.
    pub fn guard(dir: &StateDir) -> Result<QueueGuard> {
        let root = dir.root_dir()?;
        for _ in 0..ATTEMPTS {
            let fd = root.open_lock(GUARD_FILE)?;
            match flock_shared(&fd) {
                Ok(()) => {
                    let file =
                        file_id(&fd).map_err(|e| Error::io(root.join(GUARD_FILE), e.into()))?;
                    return Ok(QueueGuard { _lock: fd, file });
                }
                Err(Errno::WOULDBLOCK) => {
                    let _ = rustix::fs::unlinkat(root.fd(), GUARD_FILE, AtFlags::empty());
                }
                Err(e) => return Err(Error::io(root.join(GUARD_FILE), e.into())),
            }
        }
        Err(Error::io(
            root.join(GUARD_FILE),
            std::io::Error::other("locked exclusively again and again"),
        ))
    }
}

/// A waiter's shared lock on `queue.guard`, held until dropped.
#[derive(Debug)]
pub struct QueueGuard {
    /// Holds the lock: closing it lets go.
    _lock: OwnedFd,
    file: FileId,
}

impl QueueGuard {
    /// Makes sure the lock held is on the file now named `queue.guard`
    /// (someone may have replaced it), taking that one otherwise. Call it
    /// under the global lock, before [`Queue::keep_waiting`].
    pub fn refresh(&mut self, dir: &StateDir) -> Result<()> {
        let root = dir.root_dir()?;
        let current = rustix::fs::statat(root.fd(), GUARD_FILE, AtFlags::SYMLINK_NOFOLLOW)
            .ok()
            .map(|stat| id_of(&stat));
        if current != Some(self.file) {
            *self = Queue::guard(dir)?;
        }
        Ok(())
    }
}

fn flock_shared(fd: &OwnedFd) -> rustix::io::Result<()> {
    loop {
        match rustix::fs::flock(fd, FlockOperation::NonBlockingLockShared) {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}

fn file_id(fd: &OwnedFd) -> rustix::io::Result<FileId> {
    rustix::fs::fstat(fd.as_fd()).map(|stat| id_of(&stat))
}

fn id_of(stat: &rustix::fs::Stat) -> FileId {
    FileId {
        major: rustix::fs::major(stat.st_dev),
        minor: rustix::fs::minor(stat.st_dev),
        inode: stat.st_ino,
    }
}

impl super::salvage::Entries for Queue {
    const KEY: &'static str = "waiters";

    /// One waiter at a time; a waiter that does not parse or claims a
    /// ticket beyond [`MAX_TICKET`] is returned as it was.
    fn from_value(value: Value) -> Result<(Self, Vec<Value>), String> {
        let Value::Object(mut root) = value else {
            return Err("expected a JSON object".into());
        };
        let Some(Value::Array(list)) = root.remove("waiters") else {
            return Err("missing the list \"waiters\"".into());
        };
        let mut queue = Queue::default();
        let mut rejected = Vec::new();
        for entry in list {
            match Waiter::deserialize(&entry) {
                Ok(waiter) if waiter.ticket <= MAX_TICKET => queue.waiters.push(waiter),
                _ => rejected.push(entry),
            }
        }
        Ok((queue, rejected))
    }

    fn fill_from(&mut self, older: Self) {
        for waiter in older.waiters {
            if !self.contains(waiter.ticket) {
                self.waiters.push(waiter);
            }
        }
    }

    fn len(&self) -> usize {
        self.waiters.len()
    }

    fn needs_review(&self) -> bool {
        self.waiters.iter().any(|w| w.ticket > MAX_TICKET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::salvage::Entries;

    fn waiter(ticket: u64) -> Waiter {
        Waiter {
            ticket,
            eid: "e".into(),
            pid: 1,
            uid: Some(0),
            since: String::new(),
            count: Some(1),
            index: None,
            over_subscribe: false,
        }
    }

    #[test]
    fn tickets_count_up_from_one() {
        let mut queue = Queue::default();
        assert_eq!(queue.enqueue(waiter(0)), 1);
        assert_eq!(queue.enqueue(waiter(0)), 2);
    }

    #[test]
    fn tickets_never_run_out_or_wrap_to_the_front() {
        let mut queue = Queue {
            waiters: vec![waiter(MAX_TICKET - 1), waiter(MAX_TICKET)],
        };
        queue.waiters[0].pid = 7;
        assert_eq!(queue.enqueue(waiter(0)), 3);
        let order: Vec<(u64, i64)> = queue.waiters.iter().map(|w| (w.ticket, w.pid)).collect();
        assert_eq!(order, [(1, 7), (2, 1), (3, 1)]);
    }

    #[test]
    fn only_processes_that_wait_stay_in_line_once_each() {
        let mut queue = Queue::default();
        for (ticket, pid, uid) in [
            (1, 1, Some(0)),
            (2, 50, Some(1000)),
            (3, 60, None),
            (4, 50, Some(1000)),
            (5, 70, Some(1000)),
        ] {
            let mut w = waiter(ticket);
            w.pid = pid;
            w.uid = uid;
            queue.waiters.push(w);
        }
        // pid 1 holds no guard; 60 names no uid; 70 is another user's.
        queue.retain_waiting(|pid, uid| match pid {
            50 => uid == 1000,
            60 => true,
            70 => uid == 1001,
            _ => false,
        });
        let kept: Vec<(u64, i64)> = queue.waiters.iter().map(|w| (w.ticket, w.pid)).collect();
        assert_eq!(kept, [(2, 50)]);
    }

    #[test]
    fn a_process_keeps_its_place_and_asks_for_its_own_request() {
        let mut queue = Queue::default();
        let mut forged = waiter(1);
        forged.pid = 9;
        forged.count = Some(8);
        queue.waiters.push(forged);
        let mut mine = waiter(0);
        mine.pid = 9;
        queue.waiters[0].since = "then".into();
        mine.since = "now".into();
        assert_eq!(queue.join(mine), 1);
        assert_eq!(queue.waiters.len(), 1);
        assert_eq!(queue.waiters[0].count, Some(1));
        assert_eq!(queue.waiters[0].since, "then");
        queue.leave(9);
        assert!(queue.waiters.is_empty());
    }

    #[test]
    fn a_hostile_ticket_is_set_aside() {
        let value = serde_json::to_value(Queue {
            waiters: vec![waiter(3), waiter(u64::MAX)],
        })
        .unwrap();
        let (queue, rejected) = Queue::from_value(value).unwrap();
        assert_eq!(queue.waiters, vec![waiter(3)]);
        assert_eq!(rejected.len(), 1);
        assert!(
            Queue {
                waiters: vec![waiter(u64::MAX)]
            }
            .needs_review()
        );
    }
}
