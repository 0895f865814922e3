//! Who may hold a device together: the requests, the ledger of who holds
//! and who waits in arrival order, and the rule that admits the next one.
//! Reading and writing the ledger is the parent module's.

use serde::{Deserialize, Serialize};

use crate::os::procs;

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
pub(crate) struct Request {
    pub index: u32,
    pub need: Need,
    /// The device's memory, against which fractions are counted.
    pub total_bytes: u64,
}

impl Request {
    /// The need of an environment with this capacity (`None`: the whole
    /// device). A capacity beyond the device's memory needs all of it.
    pub(crate) fn for_capacity(index: u32, capacity: Option<u64>, total_bytes: u64) -> Self {
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Ledger {
    pub next_seq: u64,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Entry {
    pub seq: u64,
    pub pid: u32,
    /// The process's start time (`/proc/<pid>/stat`), against pid reuse.
    pub start: Option<u64>,
    pub eid: Option<String>,
    pub mode: String,
    pub bytes: Option<u64>,
    pub admitted: bool,
}

impl Entry {
    pub(super) fn need(&self) -> Need {
        match (self.mode.as_str(), self.bytes) {
            ("fraction", Some(bytes)) => Need::Fraction(bytes),
            ("shared", _) => Need::Shared,
            _ => Need::Exclusive,
        }
    }

    pub(super) fn alive(&self) -> bool {
        procs::pid_alive(i64::from(self.pid))
            && match (self.start, procs::start_time(self.pid)) {
                (Some(recorded), Some(now)) => recorded == now,
                _ => true,
            }
    }
}

/// Admits entry `seq` when it may hold the device now and returns `None`;
/// otherwise the pids it waits for.
pub(super) fn admit(ledger: &mut Ledger, seq: u64, total_bytes: u64) -> Option<Vec<u32>> {
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
}
