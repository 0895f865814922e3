//! Which invocation of the real nvidia-smi the shim runs for a command
//! line, and what it does with the output.

use super::compute_apps::ComputeAppsFilter;
use crate::shim::Attached;

/// What the shim does with a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Run the real program with these arguments.
    Exec(Vec<String>),
    /// Run it and keep only the environment's rows of `--query-compute-apps`.
    ComputeApps(ComputeAppsFilter),
    /// Run it and rewrite the default table.
    Table(Vec<String>),
    /// Run it and keep the environment's GPUs of `-L`: drivers 580 and
    /// later refuse `--id` with `-L`, so the list is filtered instead.
    List {
        args: Vec<String>,
        visible: Vec<String>,
    },
    /// Print "No devices were found" and exit 6, as nvidia-smi does.
    NoDevices,
}

/// Modes of nvidia-smi that take no `--id`: they run untouched.
fn takes_no_id(args: &[String]) -> bool {
    match args.first() {
        // A subcommand: pmon, dmon, topo, nvlink, mig, drain, vgpu, …
        Some(first) if !first.starts_with('-') => true,
        _ => args
            .iter()
            .any(|a| matches!(a.as_str(), "-h" | "--help" | "--version")),
    }
}

/// Splits `-i LIST`, `-i=LIST`, `--id LIST` and `--id=LIST` from the rest.
fn take_ids(args: &[String]) -> (Option<String>, Vec<String>) {
    let mut ids = None;
    let mut rest = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "-i" | "--id" => ids = iter.next().cloned().or(Some(String::new())),
            _ => match arg
                .strip_prefix("--id=")
                .or_else(|| arg.strip_prefix("-i="))
            {
                Some(value) => ids = Some(value.to_owned()),
                None => rest.push(arg.clone()),
            },
        }
    }
    (ids, rest)
}

/// Options that keep the default table: the loop options and their values.
fn only_loop_options(args: &[String]) -> bool {
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        let name = arg.split_once('=').map_or(arg.as_str(), |(n, _)| n);
        if !matches!(name, "-l" | "--loop" | "-lms" | "--loop-ms") {
            return false;
        }
        if !arg.contains('=') && iter.peek().is_some_and(|v| v.parse::<u64>().is_ok()) {
            iter.next();
        }
    }
    true
}

/// Decides what to run for `args` in an environment attached to `attached`.
pub(crate) fn plan(args: &[String], attached: &Attached) -> Plan {
    if takes_no_id(args) {
        return Plan::Exec(args.to_vec());
    }
    let (asked, rest) = take_ids(args);
    let ids = match (attached, asked) {
        (Attached::Unknown, asked) => asked,
        (Attached::Devices(devices), _) if devices.is_empty() => return Plan::NoDevices,
        (Attached::Devices(devices), None) => Some(devices.join(",")),
        (Attached::Devices(devices), Some(asked)) => {
            let visible: Vec<&str> = asked
                .split(',')
                .map(str::trim)
                .filter(|id| devices.iter().any(|d| d == id))
                .collect();
            if visible.is_empty() {
                return Plan::NoDevices;
            }
            Some(visible.join(","))
        }
    };
    if let Some(ids) = &ids
        && rest.iter().any(|a| a == "-L" || a == "--list-gpus")
    {
        return Plan::List {
            args: rest,
            visible: ids.split(',').map(str::to_owned).collect(),
        };
    }
    let mut full: Vec<String> = ids.map(|ids| format!("--id={ids}")).into_iter().collect();
    if let Some(filter) = ComputeAppsFilter::from_args(&rest, &full) {
        return Plan::ComputeApps(filter);
    }
    let table = only_loop_options(&rest);
    full.extend(rest);
    if table {
        Plan::Table(full)
    } else {
        Plan::Exec(full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    fn attached(devices: &[&str]) -> Attached {
        Attached::Devices(devices.iter().map(|d| (*d).to_owned()).collect())
    }

    fn plan_of(line: &str) -> Plan {
        plan(&args(line), &attached(&["0", "1"]))
    }

    #[test]
    fn the_table_gets_the_attached_gpus() {
        assert_eq!(plan_of(""), Plan::Table(args("--id=0,1")));
        assert_eq!(
            plan(
                &[],
                &attached(&["GPU-00000000-0000-0000-0000-000000000001"])
            ),
            Plan::Table(args("--id=GPU-00000000-0000-0000-0000-000000000001"))
        );
    }

    #[test]
    fn loops_keep_the_table() {
        assert_eq!(plan_of("-l 1"), Plan::Table(args("--id=0,1 -l 1")));
        assert_eq!(plan_of("--loop=5"), Plan::Table(args("--id=0,1 --loop=5")));
        assert_eq!(
            plan_of("-lms 500 -l"),
            Plan::Table(args("--id=0,1 -lms 500 -l"))
        );
    }

    #[test]
    fn asked_ids_are_narrowed_to_the_attached_ones() {
        assert_eq!(plan_of("-i 1"), Plan::Table(args("--id=1")));
        assert_eq!(plan_of("-i 0,1,2"), Plan::Table(args("--id=0,1")));
        assert_eq!(plan_of("-i 1,2"), Plan::Table(args("--id=1")));
        assert_eq!(plan_of("--id=1 -q"), Plan::Exec(args("--id=1 -q")));
        assert_eq!(plan_of("--id 0 -q"), Plan::Exec(args("--id=0 -q")));
        assert_eq!(plan_of("-i=1"), Plan::Table(args("--id=1")));
        assert_eq!(plan_of("-i 3"), Plan::NoDevices);
        assert_eq!(plan_of("-i"), Plan::NoDevices);
    }

    #[test]
    fn every_mode_with_an_id_gets_it() {
        assert_eq!(
            plan_of("-L"),
            Plan::List {
                args: args("-L"),
                visible: args("0 1")
            }
        );
        assert_eq!(
            plan_of("-i 1 --list-gpus"),
            Plan::List {
                args: args("--list-gpus"),
                visible: args("1")
            }
        );
        assert_eq!(plan_of("-q"), Plan::Exec(args("--id=0,1 -q")));
        assert_eq!(
            plan_of("-q -d MEMORY"),
            Plan::Exec(args("--id=0,1 -q -d MEMORY"))
        );
        assert_eq!(
            plan_of("--query-gpu=index,memory.used --format=csv"),
            Plan::Exec(args("--id=0,1 --query-gpu=index,memory.used --format=csv"))
        );
        // Options genv does not know are passed on after the ids.
        assert_eq!(
            plan_of("--some-new-option"),
            Plan::Exec(args("--id=0,1 --some-new-option"))
        );
    }

    #[test]
    fn compute_apps_are_filtered() {
        let Plan::ComputeApps(filter) =
            plan_of("--query-compute-apps=pid,used_memory --format=csv,noheader")
        else {
            panic!("not filtered");
        };
        assert_eq!(
            filter.args,
            args("--id=0,1 --query-compute-apps=pid,used_memory --format=csv,noheader")
        );
        assert_eq!(
            (filter.pid_field, filter.added_pid, filter.header),
            (0, false, false)
        );
        let Plan::ComputeApps(filter) =
            plan_of("--query-compute-apps gpu_uuid,used_memory --format=csv -i 1")
        else {
            panic!("not filtered");
        };
        assert_eq!(
            filter.args,
            args("--id=1 --query-compute-apps=gpu_uuid,used_memory,pid --format=csv")
        );
        assert_eq!(
            (filter.pid_field, filter.added_pid, filter.header),
            (2, true, true)
        );
        // Not CSV: nothing to filter line by line.
        assert_eq!(
            plan_of("--query-compute-apps=pid --format=xml"),
            Plan::Exec(args("--id=0,1 --query-compute-apps=pid --format=xml"))
        );
    }

    #[test]
    fn modes_without_ids_run_untouched() {
        for line in [
            "pmon -c 1",
            "dmon",
            "topo -m",
            "mig -lgi",
            "-h",
            "--help",
            "--version",
            "-q --help",
        ] {
            assert_eq!(plan_of(line), Plan::Exec(args(line)), "{line}");
        }
    }

    #[test]
    fn detached_sees_no_devices() {
        assert_eq!(plan(&args("-L"), &attached(&[])), Plan::NoDevices);
        assert_eq!(plan(&[], &attached(&[])), Plan::NoDevices);
        // Still untouched: modes without ids.
        assert_eq!(
            plan(&args("--version"), &attached(&[])),
            Plan::Exec(args("--version"))
        );
    }

    #[test]
    fn unknown_attachment_keeps_what_was_asked() {
        assert_eq!(plan(&[], &Attached::Unknown), Plan::Table(vec![]));
        // What was asked, as a filter: drivers 580 and later refuse --id
        // with -L.
        assert_eq!(
            plan(&args("-i 3 -L"), &Attached::Unknown),
            Plan::List {
                args: args("-L"),
                visible: args("3")
            }
        );
        assert_eq!(
            plan(&args("-q"), &Attached::Unknown),
            Plan::Exec(args("-q"))
        );
    }
}
