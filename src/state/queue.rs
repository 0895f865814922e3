//! `queue.json`: requests waiting for GPUs (`--wait`), first come first
//! served. A file of our own beside the state, so `envs.json` and
//! `devices.json` keep genv 1.4.3's exact keys.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    /// Place in line: lower tickets are served first.
    pub ticket: u64,
    pub eid: String,
    /// The waiting process; a waiter whose process is gone leaves the line.
    pub pid: i64,
    pub since: String,
    pub count: Option<u32>,
    pub index: Option<u32>,
    pub over_subscribe: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    pub waiters: Vec<Waiter>,
}

impl Queue {
    /// Takes a ticket at the end of the line.
    pub fn enqueue(&mut self, mut waiter: Waiter) -> u64 {
        waiter.ticket = self
            .waiters
            .iter()
            .map(|w| w.ticket)
            .max()
            .map_or(1, |t| t + 1);
        let ticket = waiter.ticket;
        self.waiters.push(waiter);
        self.waiters.sort_by_key(|w| w.ticket);
        ticket
    }

    pub fn remove(&mut self, ticket: u64) {
        self.waiters.retain(|w| w.ticket != ticket);
    }

    pub fn contains(&self, ticket: u64) -> bool {
        self.waiters.iter().any(|w| w.ticket == ticket)
    }

    /// Those in line before `ticket`.
    pub fn ahead_of(&self, ticket: u64) -> impl Iterator<Item = &Waiter> {
        self.waiters.iter().filter(move |w| w.ticket < ticket)
    }
}
