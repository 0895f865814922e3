//! Who holds or waits for a device's lock, for `genv devices locks`,
//! `genv status` and `genv lock`'s messages: the kernel's list of `flock`s
//! on `devices/<index>.lock` and our ledger, each process credited to its
//! environment (what it claims) and to its owner (what the kernel says).

use super::admission::{Entry, Need};
use super::{StateDir, lock_path, read_ledger};
use crate::os::procs::{self, FileId};
use crate::state::Envs;

/// Someone who holds or waits for a device lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// The environment the process claims (its ledger entry, its
    /// `GENV_ENVIRONMENT_ID`, or `envs.json`): anyone can claim any.
    pub eid: Option<String>,
    pub need: Need,
    pub waiting: bool,
}

impl Holder {
    /// The owner of the process as `/proc` says, as the tables print a
    /// user: `name(uid)`, or the uid alone when it has no name; empty when
    /// `/proc` does not say (gone, or in another pid namespace).
    pub fn user(&self) -> String {
        match procs::owner(self.pid).ok() {
            Some(uid) => match procs::username(uid) {
                Some(name) => format!("{name}({uid})"),
                None => uid.to_string(),
            },
            None => String::new(),
        }
    }

    pub fn mode(&self) -> &'static str {
        match self.need {
            Need::Exclusive => "exclusive",
            Need::Shared => "shared",
            Need::Fraction(_) => "fraction",
        }
    }
}

/// Who holds or waits for a device's lock: every `flock` on
/// `devices/<index>.lock` the kernel lists in `/proc/locks` (ours, genv
/// 1.4.3's, `flock(1)`'s), plus the ledger's entries not holding it yet.
/// Holders come first, then waiters in arrival order.
pub(crate) fn lock_holders(dir: &StateDir, index: u32, envs: &Envs) -> Vec<Holder> {
    let ledger = read_ledger(dir, index);
    let entries: Vec<&Entry> = ledger.entries.iter().filter(|e| e.alive()).collect();
    let mut holders = Vec::new();
    if let Some(file) = FileId::of(&lock_path(dir, index)) {
        for lock in procs::flocks(file) {
            // The daemon's own flocks are its clients', in the ledger.
            if crate::state::file::locked_down() && lock.pid == std::process::id() {
                continue;
            }
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
                    .or_else(|| environment_of(lock.pid, envs)),
                need,
                waiting: lock.blocked,
            });
        }
    }
    for entry in entries {
        if !holders.iter().any(|h| h.pid == entry.pid) {
            holders.push(Holder {
                pid: entry.pid,
                eid: entry
                    .eid
                    .clone()
                    .or_else(|| environment_of(entry.pid, envs)),
                need: entry.need(),
                // Admitted and about to take the flock: as good as holding.
                waiting: !entry.admitted,
            });
        }
    }
    holders.sort_by_key(|h| h.waiting);
    holders
}

/// The environment of a process that is not a `genv lock` of ours: the
/// `GENV_ENVIRONMENT_ID` it runs with (a shell's process, a genv 1.4.3
/// `genv lock`), else the environment that lists it in `envs.json` (a
/// program that `genv.sdk.activate()` of genv 1.4.3 registered, which has
/// no such variable).
fn environment_of(pid: u32, envs: &Envs) -> Option<String> {
    crate::backend::process_eid(pid)
        .filter(|eid| !eid.is_empty())
        .or_else(|| registered(pid, envs))
}

/// The environment whose `pids` list `pid`.
fn registered(pid: u32, envs: &Envs) -> Option<String> {
    envs.envs
        .iter()
        .find(|env| env.pids.contains(&i64::from(pid)))
        .map(|env| env.eid.to_string())
}
