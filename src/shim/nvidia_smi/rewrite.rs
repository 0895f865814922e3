//! The default table as the environment sees it: other environments'
//! process rows removed, each GPU's used memory the sum of the
//! environment's processes on it, the total the environment's cap, and
//! genv 1.4.3's two warnings after the table.

use std::collections::HashMap;

use crate::env_vars::{self as ev, get};
use crate::smi::table::no_running_processes;
use crate::smi::table::parse::{parse_frame, set_memory};
use crate::state::memcap_ledger::Usage;

const MISSING_PROCESSES: &str = "Missing information about running processes. Cannot calculate GPU memory usage.\n\nIf you are running in a container, using the host pid namespace would solve this.\nThis could be done by passing '--pid host' to the 'docker run' command.";

/// The GPU memory cap of the environment (`GENV_GPU_MEMORY`): its text and
/// its size in MiB.
#[derive(Debug, Clone)]
pub(crate) struct Cap {
    pub text: String,
    pub mib: u64,
}

impl Cap {
    pub(crate) fn from_env() -> Option<Self> {
        Self::parse(&get(ev::GENV_GPU_MEMORY)?)
    }

    /// The cap for a `GENV_GPU_MEMORY` value; `None` when it is empty or no
    /// memory string.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        if text.is_empty() {
            return None;
        }
        let bytes = crate::memory::to_bytes(text).ok()?;
        Some(Cap {
            mib: bytes >> 20,
            text: text.to_owned(),
        })
    }
}

/// One frame of the default table (one screen; `-l` prints many), as the
/// environment sees it, with the warnings after it.
///
/// `accounted` is what the environment's processes hold per GPU by the
/// memory cap's ledger, asked only when the driver lists no processes (in
/// a container without the host's pid namespace): then the memory column
/// shows it instead of N/A.
pub(crate) fn rewrite_frame(
    lines: &[String],
    ours: &mut impl FnMut(u32) -> bool,
    cap: Option<&Cap>,
    accounted: &mut impl FnMut() -> Option<Usage>,
) -> String {
    let frame = parse_frame(lines);
    let mut dropped = vec![false; lines.len()];
    let mut used: HashMap<u32, u64> = HashMap::new();
    let mut kept_rows = 0;
    for (i, row) in &frame.process_rows {
        if ours(row.pid) {
            kept_rows += 1;
            *used.entry(row.gpu).or_default() += row.mib.unwrap_or(0);
        } else {
            dropped[*i] = true;
        }
    }
    // A processes table with no rows at all (not even "No running processes
    // found"): the driver cannot see the processes, e.g. in a container
    // without the host's pid namespace.
    let missing =
        !frame.memory_lines.is_empty() && frame.process_rows.is_empty() && !frame.no_processes_line;
    let accounted = if missing { accounted() } else { None };
    let mut over_cap = false;
    let mut rewritten: HashMap<usize, String> = HashMap::new();
    for (i, gpu) in &frame.memory_lines {
        let shown = if let Some(usage) = &accounted {
            let bytes = gpu.and_then(|g| usage.get(&g).copied()).unwrap_or(0);
            Some(crate::memory::to_mib(bytes))
        } else if missing {
            None
        } else {
            Some(gpu.and_then(|g| used.get(&g).copied()).unwrap_or(0))
        };
        if let (Some(shown), Some(cap)) = (shown, cap) {
            over_cap |= shown > cap.mib;
        }
        rewritten.insert(*i, set_memory(&lines[*i], shown, cap.map(|c| c.mib)));
    }

    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        if dropped[i] {
            continue;
        }
        out.push_str(rewritten.get(&i).unwrap_or(line));
        out.push('\n');
        if Some(i) == frame.rows_separator && !frame.process_rows.is_empty() && kept_rows == 0 {
            out.push_str(&no_running_processes(line.len()));
            out.push('\n');
        }
    }
    if missing && accounted.is_none() {
        warn(&mut out, MISSING_PROCESSES);
    }
    if over_cap && let Some(cap) = cap {
        warn(
            &mut out,
            &format!(
                "The GPU memory usage for this environment has exceeded the set capacity of {}",
                cap.text
            ),
        );
    }
    out
}

/// genv 1.4.3's warnings, on stdout after the table.
fn warn(out: &mut String, message: &str) {
    out.push_str(&format!("\nWARNING: {message}\n\n"));
}

#[cfg(test)]
mod tests {
    //! Published tables (tests/fixtures/nvidia-smi) through the rewrite,
    //! as a user sees them. A changed snapshot fails the test and leaves a
    //! `.snap.new` next to it to review (`cargo insta review`, or compare by
    //! hand and rename).

    use super::*;
    use crate::smi::table::parse::Frames;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/nvidia-smi/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(path).unwrap()
    }

    /// `text` cut into frames as the shim reads it, each rewritten.
    fn rewrite(text: &str, pids: &[u32], cap: Option<&str>) -> String {
        let cap = cap.and_then(Cap::parse);
        let mut ours = |pid| pids.contains(&pid);
        let mut none = || None;
        let mut frames = Frames::default();
        let mut out = String::new();
        for line in text.lines() {
            if let Some(frame) = frames.push(line.to_owned()) {
                out.push_str(&rewrite_frame(&frame, &mut ours, cap.as_ref(), &mut none));
            }
        }
        let rest = frames.finish();
        if !rest.is_empty() {
            out.push_str(&rewrite_frame(&rest, &mut ours, cap.as_ref(), &mut none));
        }
        out
    }

    #[test]
    fn narrow_470_one_process_of_the_environment() {
        insta::assert_snapshot!(rewrite(&fixture("470-v100.txt"), &[33724], None));
    }

    #[test]
    fn narrow_470_none_of_the_environment() {
        insta::assert_snapshot!(rewrite(&fixture("470-v100.txt"), &[], None));
    }

    #[test]
    fn wide_550_with_a_cap_exceeded() {
        insta::assert_snapshot!(rewrite(
            &fixture("550-rtx4090.txt"),
            &[812345, 812346],
            Some("480mi")
        ));
    }

    #[test]
    fn wide_550_looped_keeps_each_frame() {
        let table = fixture("550-rtx4090.txt");
        let looped = format!("{table}{table}");
        let once = rewrite(&table, &[812346], Some("4g"));
        assert_eq!(rewrite(&looped, &[812346], Some("4g")), once.repeat(2));
        insta::assert_snapshot!(once);
    }

    #[test]
    fn idle_570_is_kept() {
        let table = fixture("570-l4-idle.txt");
        assert_eq!(rewrite(&table, &[], None), table);
    }

    #[test]
    fn mig_devices_are_left_as_printed() {
        insta::assert_snapshot!(rewrite(&fixture("510-a100-mig.txt"), &[42152, 46505], None));
    }

    #[test]
    fn missing_processes_show_n_a_and_warn() {
        let table = fixture("550-rtx4090.txt");
        let cut: String = table
            .lines()
            .filter(|l| crate::smi::table::parse::parse_process_row(l).is_none())
            .map(|l| format!("{l}\n"))
            .collect();
        insta::assert_snapshot!(rewrite(&cut, &[], Some("8g")));
    }
}
