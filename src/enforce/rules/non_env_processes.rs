//! `--non-env-processes`: processes outside every environment.

use crate::enforce::survey::Survey;

/// Terminates GPU processes that run in no environment.
pub fn non_env_processes(survey: &mut Survey) {
    let pids: Vec<i64> = survey
        .snapshot
        .processes
        .iter()
        .filter(|p| p.eid.is_none())
        .map(|p| p.pid)
        .collect();
    for pid in pids {
        survey.say(format!("Process {pid} is not running in a GPU environment"));
        survey.terminate(pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::rules::test_support::*;

    #[test]
    fn terminates_only_processes_outside_environments() {
        let snapshot = snapshot(
            vec![
                process(10, 1000, Some("a"), &[(0, 42)]),
                process(11, 1000, None, &[(1, 42)]),
            ],
            vec![env("a", 1000, &[9])],
            devices(2, &[(0, "a", None)]),
        );
        let mut survey = Survey::new(&snapshot);
        non_env_processes(&mut survey);
        assert_eq!(
            survey.lines,
            ["Process 11 is not running in a GPU environment"]
        );
        assert_eq!(outcome(&survey), (vec![11], vec![]));
    }
}
