//! `--env-devices`: processes on GPUs their environment is not attached to.

use crate::enforce::survey::Survey;
use crate::escape::terminal;

/// Terminates processes using devices not attached to their environment.
pub fn env_devices(survey: &mut Survey) {
    let snapshot = survey.snapshot;
    for env in &snapshot.envs.envs {
        let allowed = snapshot.devices.indices_of(&env.eid);
        for process in snapshot.processes_of(&env.eid) {
            let unallowed: Vec<String> = process
                .indices()
                .filter(|i| !allowed.contains(i))
                .map(|i| i.to_string())
                .collect();
            if unallowed.is_empty() {
                continue;
            }
            survey.say(format!(
                "Process {} from environment {} is using non-attached GPU(s) {}",
                process.pid,
                terminal(&env.eid),
                unallowed.join(",")
            ));
            survey.terminate(process.pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::rules::test_support::*;

    #[test]
    fn terminates_processes_on_devices_not_attached() {
        let snapshot = snapshot(
            vec![
                process(10, 1000, Some("a"), &[(0, 42)]),
                process(11, 1000, Some("a"), &[(0, 42), (1, 42)]),
                process(12, 1000, Some("b"), &[(0, 42), (1, 42)]),
                process(13, 1000, None, &[(1, 42)]),
            ],
            vec![env("a", 1000, &[9]), env("b", 1000, &[8])],
            devices(2, &[(0, "a", None)]),
        );
        let mut survey = Survey::new(&snapshot);
        env_devices(&mut survey);
        assert_eq!(
            survey.lines,
            [
                "Process 11 from environment a is using non-attached GPU(s) 1",
                "Process 12 from environment b is using non-attached GPU(s) 0,1",
            ]
        );
        assert_eq!(outcome(&survey), (vec![11, 12], vec![]));
    }

    #[test]
    fn names_from_the_state_are_escaped_for_the_terminal() {
        let eid = "x\u{1b}[2J";
        let snapshot = snapshot(
            vec![process(10, 1000, Some(eid), &[(1, 42)])],
            vec![env(eid, 1000, &[9])],
            devices(2, &[]),
        );
        let mut survey = Survey::new(&snapshot);
        env_devices(&mut survey);
        assert_eq!(
            survey.lines,
            ["Process 10 from environment x\\u{1b}[2J is using non-attached GPU(s) 1"]
        );
        // The report keeps the value itself.
        assert_eq!(
            survey.report().terminate.processes[0].eid.as_deref(),
            Some(eid)
        );
    }
}
