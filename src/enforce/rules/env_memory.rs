//! `--env-memory`: environments using more memory on a device than their
//! capacity (`gpu-memory`).

use super::megabytes;
use crate::enforce::snapshot::bytes;
use crate::enforce::survey::Survey;
use crate::escape::terminal;

/// For each device an environment with a capacity is attached to,
/// terminates its processes there in the driver's order until what they
/// use is no longer over the capacity (genv 1.4.3's greedy order).
pub fn env_memory(survey: &mut Survey) {
    let snapshot = survey.snapshot;
    for env in &snapshot.envs.envs {
        let Some(capacity) = env.config.gpu_memory.as_deref() else {
            continue;
        };
        let Some(capacity_bytes) = bytes(capacity) else {
            continue;
        };
        for device in snapshot
            .devices
            .devices
            .iter()
            .filter(|d| d.is_attached(&env.eid))
        {
            let processes: Vec<(i64, u64)> = snapshot
                .processes_of(&env.eid)
                .filter(|p| p.uses(device.index))
                .map(|p| (p.pid, p.bytes_on(device.index)))
                .collect();
            let used: u64 = processes.iter().map(|(_, b)| b).sum();
            if used <= capacity_bytes {
                continue;
            }
            let over = used - capacity_bytes;
            survey.say(format!(
                "Environment {} is using {} on device {} which is {} over its capacity of {}",
                terminal(&env.eid),
                megabytes(used),
                device.index,
                megabytes(over),
                capacity
            ));
            let mut freed = 0;
            for (pid, used) in processes {
                survey.terminate(pid);
                freed += used;
                if freed >= over {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::rules::test_support::*;

    #[test]
    fn terminates_in_order_until_under_the_capacity() {
        let snapshot = snapshot(
            vec![
                process(10, 1000, Some("a"), &[(0, 100)]),
                process(11, 1000, Some("a"), &[(0, 300), (1, 300)]),
                process(12, 1000, Some("a"), &[(0, 100)]),
                process(13, 1000, Some("b"), &[(0, 900)]),
            ],
            vec![
                with_memory(env("a", 1000, &[9]), "350mi"),
                env("b", 1000, &[8]),
            ],
            devices(
                2,
                &[
                    (0, "a", Some("350mi")),
                    (1, "a", Some("350mi")),
                    (0, "b", None),
                ],
            ),
        );
        let mut survey = Survey::new(&snapshot);
        env_memory(&mut survey);
        // 500 MiB used on device 0, 150 MiB over: 10 (100) and 11 (300) go.
        assert_eq!(
            survey.lines,
            ["Environment a is using 524m on device 0 which is 157m over its capacity of 350mi"]
        );
        assert_eq!(outcome(&survey), (vec![10, 11], vec![]));
    }

    #[test]
    fn an_environment_within_its_capacity_is_left_alone() {
        let snapshot = snapshot(
            vec![process(10, 1000, Some("a"), &[(0, 100)])],
            vec![with_memory(env("a", 1000, &[9]), "1gi")],
            devices(1, &[(0, "a", Some("1gi"))]),
        );
        let mut survey = Survey::new(&snapshot);
        env_memory(&mut survey);
        assert!(survey.is_empty() && survey.lines.is_empty());
    }
}
