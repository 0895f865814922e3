//! `enforcement.json`: how many processes enforcement terminated and how
//! many environments it detached, since the state folder was made. Our own
//! file (genv 1.4.3 keeps no such record), counted so that `genv monitor`
//! can publish them as Prometheus counters that survive restarts of the
//! monitor and of the enforcer.

use serde::{Deserialize, Serialize};

use super::Transaction;
use crate::output::json;

const FILE: &str = "enforcement.json";

/// Actions taken so far; they only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnforcementCounts {
    #[serde(default)]
    pub terminated: u64,
    #[serde(default)]
    pub detached: u64,
}

/// Adds actions to the record. Takes the transaction so that it runs under
/// the global lock, which keeps concurrent enforcers from losing counts.
pub(crate) fn record(
    tx: &Transaction<'_>,
    terminated: u64,
    detached: u64,
) -> crate::error::Result<()> {
    if terminated == 0 && detached == 0 {
        return Ok(());
    }
    let mut counts = parse(tx.root.read(FILE).ok().flatten());
    counts.terminated = counts.terminated.saturating_add(terminated);
    counts.detached = counts.detached.saturating_add(detached);
    tx.root.write_atomic(FILE, &json::to_json(&counts)?, false)
}

/// The record, without the lock: it is replaced by rename, so a reader sees
/// one whole version. A missing or damaged file counts as nothing done.
pub(crate) fn read(dir: &super::StateDir) -> EnforcementCounts {
    parse(dir.root_dir().ok().and_then(|root| root.peek(FILE)))
}

fn parse(bytes: Option<Vec<u8>>) -> EnforcementCounts {
    bytes
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}
