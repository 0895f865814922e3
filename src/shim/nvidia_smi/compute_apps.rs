//! `--query-compute-apps=… --format=csv`: the real program's rows, only
//! those of the environment's processes.

/// How to run the query and read its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ComputeAppsFilter {
    pub args: Vec<String>,
    /// Where `pid` is among the fields.
    pub pid_field: usize,
    /// `pid` was added by the shim and is cut from every line.
    pub added_pid: bool,
    pub header: bool,
}

impl ComputeAppsFilter {
    /// The filter for `rest` (the arguments other than the ids) run after
    /// `prefix` (the ids), with `pid` added to the query when it is not
    /// asked for; `None` when `rest` is no CSV compute-apps query.
    pub(crate) fn from_args(rest: &[String], prefix: &[String]) -> Option<Self> {
        let mut args = prefix.to_vec();
        let mut found = None;
        let mut header = true;
        let mut iter = rest.iter();
        while let Some(arg) = iter.next() {
            if let Some(value) = arg.strip_prefix("--format=") {
                header = !value.split(',').any(|p| p.trim() == "noheader");
                if !value.starts_with("csv") {
                    return None;
                }
            }
            let list = if let Some(list) = arg.strip_prefix("--query-compute-apps=") {
                Some(list.to_owned())
            } else if arg == "--query-compute-apps" {
                iter.next().cloned()
            } else {
                None
            };
            match list {
                Some(list) => {
                    let mut fields: Vec<&str> = list.split(',').map(str::trim).collect();
                    let (pid_field, added_pid) = match fields.iter().position(|f| *f == "pid") {
                        Some(at) => (at, false),
                        None => {
                            fields.push("pid");
                            (fields.len() - 1, true)
                        }
                    };
                    args.push(format!("--query-compute-apps={}", fields.join(",")));
                    found = Some((pid_field, added_pid));
                }
                None => args.push(arg.clone()),
            }
        }
        let (pid_field, added_pid) = found?;
        Some(ComputeAppsFilter {
            args,
            pid_field,
            added_pid,
            header,
        })
    }

    /// The line as the environment sees it, or `None` to drop it.
    pub(crate) fn line(
        &self,
        line: &str,
        first: bool,
        ours: &mut impl FnMut(u32) -> bool,
    ) -> Option<String> {
        let cut = |line: &str| -> String {
            if self.added_pid {
                line.rsplit_once(", ")
                    .map_or(line, |(kept, _)| kept)
                    .to_owned()
            } else {
                line.to_owned()
            }
        };
        if (first && self.header) || line.trim().is_empty() {
            return Some(cut(line));
        }
        let pid = line
            .split(", ")
            .nth(self.pid_field)?
            .trim()
            .parse::<u32>()
            .ok()?;
        ours(pid).then(|| cut(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(query: &str) -> ComputeAppsFilter {
        let rest: Vec<String> = query.split_whitespace().map(str::to_owned).collect();
        ComputeAppsFilter::from_args(&rest, &["--id=0".to_owned()]).unwrap()
    }

    fn run(filter: &ComputeAppsFilter, output: &str) -> Vec<String> {
        let mut ours = |pid: u32| pid == 100;
        output
            .lines()
            .enumerate()
            .filter_map(|(i, line)| filter.line(line, i == 0, &mut ours))
            .collect()
    }

    #[test]
    fn keeps_the_header_and_the_environment_s_rows() {
        let f = filter("--query-compute-apps=pid,used_memory --format=csv");
        let out = run(&f, "pid, used_gpu_memory [MiB]\n100, 42 MiB\n200, 42 MiB\n");
        assert_eq!(out, ["pid, used_gpu_memory [MiB]", "100, 42 MiB"]);
    }

    #[test]
    fn an_added_pid_is_cut() {
        let f = filter("--query-compute-apps=gpu_uuid,used_memory --format=csv,noheader");
        assert_eq!(f.args.last().unwrap(), "--format=csv,noheader");
        let out = run(&f, "GPU-a, 42 MiB, 100\nGPU-a, 43 MiB, 200\n");
        assert_eq!(out, ["GPU-a, 42 MiB"]);
    }

    #[test]
    fn not_a_compute_apps_query() {
        let rest = vec!["--query-gpu=index".to_owned(), "--format=csv".to_owned()];
        assert_eq!(ComputeAppsFilter::from_args(&rest, &[]), None);
    }
}
