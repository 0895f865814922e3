//! `queue.json`: requests waiting for GPUs (`--wait`), first come first
//! served. A file of our own beside the state, so `envs.json` and
//! `devices.json` keep genv 1.4.3's exact keys.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// The highest ticket a waiter may hold. Tickets count up by one per
/// request and start again at 1 whenever the line empties, so no honest
/// line comes near it; a `queue.json` claiming more is set aside entry by
/// entry, and every ticket handed out stays far from wrapping.
pub const MAX_TICKET: u64 = u32::MAX as u64;

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
    /// Takes a ticket at the end of the line; an error, never a ticket
    /// that wraps to the front, when the tickets are used up.
    pub fn enqueue(&mut self, mut waiter: Waiter) -> Result<u64> {
        let last = self.waiters.iter().map(|w| w.ticket).max().unwrap_or(0);
        let ticket = last
            .checked_add(1)
            .filter(|&t| t <= MAX_TICKET)
            .ok_or_else(|| {
                Error::hinted(
                    format!("the line of waiting requests is full (ticket {last})"),
                    "wait for the requests in line to end, or remove queue.json from the state folder",
                )
            })?;
        waiter.ticket = ticket;
        self.waiters.push(waiter);
        self.waiters.sort_by_key(|w| w.ticket);
        Ok(ticket)
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
            since: String::new(),
            count: Some(1),
            index: None,
            over_subscribe: false,
        }
    }

    #[test]
    fn tickets_count_up_from_one() {
        let mut queue = Queue::default();
        assert_eq!(queue.enqueue(waiter(0)).unwrap(), 1);
        assert_eq!(queue.enqueue(waiter(0)).unwrap(), 2);
    }

    #[test]
    fn a_ticket_never_wraps_to_the_front() {
        for last in [MAX_TICKET, u64::MAX] {
            let mut queue = Queue {
                waiters: vec![waiter(last)],
            };
            assert!(queue.enqueue(waiter(0)).is_err());
            assert_eq!(queue.waiters.len(), 1);
        }
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
