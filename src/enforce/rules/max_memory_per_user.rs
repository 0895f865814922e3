//! `--max-memory-per-user` and `--max-memory-for-user` (not in genv
//! 1.4.3; genv issue 76): how much GPU memory a user may hold.
//!
//! On each device a user holds the larger of what their environments
//! reserve there (an attachment's capacity, or the whole device for one
//! without) and what their processes use there (the driver's numbers,
//! owners as the kernel tells them, in an environment or not). What is
//! reserved and unused still counts, and so does what is used beyond a
//! reservation or without any.
//!
//! A reservation is an environment's uid as written in `envs.json`, which
//! any user can write: it may detach that environment, but processes are
//! terminated only when what the kernel confirms is over the quota (the
//! processes' own use, and reservations of environments that a process of
//! the user's claims as its own).

use std::collections::BTreeSet;

use super::{Quota, megabytes};
use crate::enforce::snapshot::{Snapshot, bytes};
use crate::enforce::survey::Survey;
use crate::escape::terminal;

/// What a user holds on one device.
struct Holding<'a> {
    index: u32,
    eids: Vec<&'a str>,
    pids: Vec<i64>,
    bytes: u64,
    /// What the kernel confirms of `bytes`: the use, and the reservations
    /// of environments a process of the user's claims.
    confirmed: u64,
}

fn holdings<'a>(snapshot: &'a Snapshot, uid: u32) -> Vec<Holding<'a>> {
    let mut holdings = Vec::new();
    for device in &snapshot.devices.devices {
        let total = device.total_bytes();
        let mut eids = Vec::new();
        let mut reserved = 0u64;
        let mut confirmed_reserved = 0u64;
        for attachment in &device.attachments {
            if snapshot
                .owner(&attachment.eid)
                .is_some_and(|o| o.uid == uid)
            {
                eids.push(attachment.eid.as_str());
                let capacity = attachment.gpu_memory.as_deref().and_then(bytes);
                let capacity = capacity.unwrap_or(total);
                reserved = reserved.saturating_add(capacity);
                if snapshot.processes_of(&attachment.eid).next().is_some() {
                    confirmed_reserved = confirmed_reserved.saturating_add(capacity);
                }
            }
        }
        let mut used = 0u64;
        let mut pids = Vec::new();
        for process in &snapshot.processes {
            if process.uses(device.index) && process.identity.is_some_and(|i| i.uid == uid) {
                used = used.saturating_add(process.bytes_on(device.index));
                pids.push(process.pid);
            }
        }
        let held = reserved.max(used);
        if held > 0 {
            holdings.push(Holding {
                index: device.index,
                eids,
                pids,
                bytes: held,
                confirmed: confirmed_reserved.max(used),
            });
        }
    }
    holdings
}

/// Frees whole devices of a user's, in index order, until the user is
/// within the quota: detaches their environments there and terminates
/// their processes there.
pub fn max_memory_per_user(survey: &mut Survey, quota: &Quota<u64>) {
    let snapshot = survey.snapshot;
    let uids: BTreeSet<u32> = snapshot
        .owners
        .values()
        .map(|o| o.uid)
        .chain(
            snapshot
                .processes
                .iter()
                .filter_map(|p| p.identity.map(|i| i.uid)),
        )
        .collect();
    let mut users: Vec<(String, u32)> = uids
        .into_iter()
        .map(|uid| (snapshot.user_name(uid), uid))
        .collect();
    users.sort();
    for (user, uid) in users {
        let Some(maximum) = quota.of(&user) else {
            continue;
        };
        let holdings = holdings(snapshot, uid);
        let held: u64 = holdings.iter().map(|h| h.bytes).sum();
        if held <= maximum {
            continue;
        }
        let over = held - maximum;
        // What the kernel confirms is over the quota: processes are
        // terminated only until that much is freed, whatever else
        // `envs.json` claims.
        let confirmed_over = holdings
            .iter()
            .map(|h| h.confirmed)
            .sum::<u64>()
            .saturating_sub(maximum);
        survey.say(format!(
            "User {} is using {} of GPU memory which is {} more than the maximum allowed of {}",
            terminal(&user),
            megabytes(held),
            megabytes(over),
            megabytes(maximum)
        ));
        let (mut freed, mut confirmed_freed) = (0u64, 0u64);
        for holding in holdings {
            if !holding.eids.is_empty() {
                survey.detach(holding.index, &holding.eids);
            }
            if confirmed_freed < confirmed_over {
                for pid in holding.pids {
                    survey.terminate(pid);
                }
                confirmed_freed += holding.confirmed;
            }
            freed += holding.bytes;
            if freed >= over && confirmed_freed >= confirmed_over {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::rules::test_support::*;

    fn quota(per_user: u64) -> Quota<u64> {
        Quota {
            per_user: Some(per_user),
            ..Quota::default()
        }
    }

    #[test]
    fn reservations_count_even_when_unused() {
        // Two 4 GiB reservations, nothing running: 8 GiB held.
        let snapshot = snapshot(
            vec![],
            vec![with_memory(env("a", 1000, &[9]), "4gi")],
            devices(2, &[(0, "a", Some("4gi")), (1, "a", Some("4gi"))]),
        );
        let mut survey = Survey::new(&snapshot);
        max_memory_per_user(&mut survey, &quota(5 << 30));
        assert_eq!(
            survey.lines,
            [
                "User u1000 is using 8589m of GPU memory which is 3221m more than the maximum allowed of 5368m"
            ]
        );
        assert_eq!(
            outcome(&survey),
            (vec![], vec![("0".into(), vec!["a".into()])])
        );
    }

    #[test]
    fn use_beyond_a_reservation_and_outside_environments_counts() {
        let snapshot = snapshot(
            vec![
                // 3 GiB in an environment reserving 1 GiB on device 0.
                process(10, 1000, Some("a"), &[(0, 3072)]),
                // 2 GiB outside any environment on device 1.
                process(11, 1000, None, &[(1, 2048)]),
                // Someone else's.
                process(12, 1001, None, &[(1, 9000)]),
            ],
            vec![with_memory(env("a", 1000, &[9]), "1gi")],
            devices(2, &[(0, "a", Some("1gi"))]),
        );
        let mut survey = Survey::new(&snapshot);
        max_memory_per_user(
            &mut survey,
            &Quota {
                per_user: None,
                for_user: [("u1000".to_owned(), 4u64 << 30)].into(),
            },
        );
        assert_eq!(
            survey.lines,
            [
                "User u1000 is using 5368m of GPU memory which is 1073m more than the maximum allowed of 4294m"
            ]
        );
        // Device 0 (3 GiB) frees enough.
        assert_eq!(
            outcome(&survey),
            (vec![10], vec![("0".into(), vec!["a".into()])])
        );
    }

    #[test]
    fn a_reservation_no_process_confirms_never_terminates() {
        // Environment "f" says it is u1000's and reserves both devices;
        // no process claims it. u1000's own job uses 100 MB.
        let snapshot = snapshot(
            vec![process(10, 1000, None, &[(0, 100)])],
            vec![env("f", 1000, &[10])],
            devices(2, &[(0, "f", None), (1, "f", None)]),
        );
        let mut survey = Survey::new(&snapshot);
        max_memory_per_user(&mut survey, &quota(1 << 30));
        // Detached, but nothing terminated.
        assert_eq!(
            outcome(&survey),
            (
                vec![],
                vec![
                    ("0".into(), vec!["f".into()]),
                    ("1".into(), vec!["f".into()])
                ]
            )
        );
    }

    #[test]
    fn a_forged_reservation_never_terminates_beyond_the_confirmed_excess() {
        // u1000 really uses 6 GiB on each of devices 0 and 1 (2 GiB over a
        // 10 GiB quota); "f" claims all of device 2 in u1000's name.
        let snapshot = snapshot(
            vec![
                process(10, 1000, None, &[(0, 6144)]),
                process(11, 1000, None, &[(1, 6144)]),
            ],
            vec![env("f", 1000, &[])],
            devices(3, &[(2, "f", None)]),
        );
        let mut survey = Survey::new(&snapshot);
        max_memory_per_user(&mut survey, &quota(10 << 30));
        // Device 0's job frees the confirmed 2 GiB; device 1's is spared.
        assert_eq!(
            outcome(&survey),
            (vec![10], vec![("2".into(), vec!["f".into()])])
        );
    }

    #[test]
    fn a_user_within_the_quota_is_left_alone() {
        let snapshot = snapshot(
            vec![process(10, 1000, Some("a"), &[(0, 100)])],
            vec![env("a", 1000, &[9])],
            devices(1, &[(0, "a", Some("1gi"))]),
        );
        let mut survey = Survey::new(&snapshot);
        max_memory_per_user(&mut survey, &quota(1 << 30));
        assert!(survey.is_empty());
    }
}
