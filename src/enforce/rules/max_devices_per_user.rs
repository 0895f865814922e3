//! `--max-devices-per-user` and `--max-devices-for-user`: how many devices
//! a user's environments may be attached to.

use super::Quota;
use crate::enforce::survey::Survey;
use crate::escape::terminal;

/// Detaches a user's environments from devices, in index order, until the
/// user is within the quota; their processes on those devices are
/// terminated with them.
pub fn max_devices_per_user(survey: &mut Survey, quota: &Quota<u64>) {
    let snapshot = survey.snapshot;
    let mut users: Vec<&str> = snapshot.owners.values().map(|o| o.name.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    for user in users {
        let Some(maximum) = quota.of(user) else {
            continue;
        };
        let eids: Vec<&str> = snapshot
            .envs
            .envs
            .iter()
            .filter(|env| snapshot.owner(&env.eid).is_some_and(|o| o.name == user))
            .map(|env| env.eid.as_str())
            .collect();
        let devices: Vec<(u32, Vec<&str>)> = snapshot
            .devices
            .devices
            .iter()
            .map(|d| {
                let mine: Vec<&str> = eids.iter().copied().filter(|e| d.is_attached(e)).collect();
                (d.index, mine)
            })
            .filter(|(_, mine)| !mine.is_empty())
            .collect();
        let attached = devices.len() as u64;
        if attached <= maximum {
            continue;
        }
        let over = attached - maximum;
        // Across hosts, genv 1.4.3 also says on how many the user has
        // environments.
        let on_hosts = if snapshot.hosts.is_empty() {
            String::new()
        } else {
            let mut hosts: Vec<usize> = eids
                .iter()
                .filter_map(|e| snapshot.hosts.get(*e).copied())
                .collect();
            hosts.sort_unstable();
            hosts.dedup();
            format!(" on {} hosts", hosts.len())
        };
        survey.say(format!(
            "User {} is using {attached} devices{on_hosts} which is {over} more than the maximum allowed",
            terminal(user)
        ));
        for (index, mine) in devices.iter().take(over as usize) {
            survey.detach(*index, mine);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::rules::test_support::*;

    fn two_users() -> crate::enforce::snapshot::Snapshot {
        snapshot(
            vec![
                process(10, 1000, Some("a"), &[(0, 42)]),
                process(11, 1000, Some("a2"), &[(1, 42)]),
                process(12, 1001, Some("b"), &[(2, 42)]),
            ],
            vec![
                env("a", 1000, &[9]),
                env("a2", 1000, &[8]),
                env("b", 1001, &[7]),
            ],
            devices(
                3,
                &[
                    (0, "a", None),
                    (1, "a", Some("1g")),
                    (1, "a2", Some("1g")),
                    (2, "b", None),
                ],
            ),
        )
    }

    #[test]
    fn detaches_the_surplus_in_index_order() {
        let snapshot = two_users();
        let mut survey = Survey::new(&snapshot);
        let quota = Quota {
            per_user: Some(1),
            ..Quota::default()
        };
        max_devices_per_user(&mut survey, &quota);
        assert_eq!(
            survey.lines,
            ["User u1000 is using 2 devices which is 1 more than the maximum allowed"]
        );
        assert_eq!(
            outcome(&survey),
            (vec![10], vec![("0".into(), vec!["a".into()])])
        );
    }

    #[test]
    fn a_user_of_their_own_quota() {
        let snapshot = two_users();
        let mut survey = Survey::new(&snapshot);
        let quota = Quota {
            per_user: Some(2),
            for_user: [("u1000".to_owned(), 0), ("u1001".to_owned(), 5)].into(),
        };
        max_devices_per_user(&mut survey, &quota);
        assert_eq!(
            survey.lines,
            ["User u1000 is using 2 devices which is 2 more than the maximum allowed"]
        );
        assert_eq!(
            outcome(&survey),
            (
                vec![10, 11],
                vec![
                    ("0".into(), vec!["a".into()]),
                    ("1".into(), vec!["a".into(), "a2".into()])
                ]
            )
        );
    }
}
