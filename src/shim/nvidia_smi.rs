//! The `nvidia-smi` shim: only the environment's GPUs (`--id=`), and in the
//! default table only its processes and the memory they use.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use super::Attached;
use crate::env_vars::{self as ev, get};
use crate::smi::table::no_running_processes;

pub const PROGRAM: &str = "nvidia-smi";
const NO_DEVICES: &str = "No devices were found";
/// nvidia-smi's exit code when no GPU matches.
const EXIT_NOT_FOUND: i32 = 6;

const MISSING_PROCESSES: &str = "Missing information about running processes. Cannot calculate GPU memory usage.\n\nIf you are running in a container, using the host pid namespace would solve this.\nThis could be done by passing '--pid host' to the 'docker run' command.";

/// What the shim does with a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Run the real program with these arguments.
    Exec(Vec<String>),
    /// Run it and keep only the environment's rows of `--query-compute-apps`.
    ComputeApps(ComputeAppsFilter),
    /// Run it and rewrite the default table.
    Table(Vec<String>),
    /// Print "No devices were found" and exit 6, as nvidia-smi does.
    NoDevices,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeAppsFilter {
    pub args: Vec<String>,
    /// Where `pid` is among the fields.
    pub pid_field: usize,
    /// `pid` was added by the shim and is cut from every line.
    pub added_pid: bool,
    pub header: bool,
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
pub fn plan(args: &[String], attached: &Attached) -> Plan {
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
    let mut full: Vec<String> = ids.map(|ids| format!("--id={ids}")).into_iter().collect();
    if let Some(filter) = compute_apps(&rest, &full) {
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

/// The `--query-compute-apps` filter, with `pid` added to the query when it
/// is not asked for.
fn compute_apps(rest: &[String], prefix: &[String]) -> Option<ComputeAppsFilter> {
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

/// Whether a process runs in the environment, asked once per pid.
pub struct Membership {
    eid: String,
    known: HashMap<u32, bool>,
}

impl Membership {
    pub fn new(eid: &str) -> Self {
        Membership {
            eid: eid.to_owned(),
            known: HashMap::new(),
        }
    }

    pub fn contains(&mut self, pid: u32) -> bool {
        let eid = &self.eid;
        *self
            .known
            .entry(pid)
            .or_insert_with(|| crate::backend::process_eid(pid).as_deref() == Some(eid.as_str()))
    }
}

impl ComputeAppsFilter {
    /// The line as the environment sees it, or `None` to drop it.
    pub fn line(
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

/// The GPU memory cap of the environment (`GENV_GPU_MEMORY`): its text and
/// its size in MiB.
#[derive(Debug, Clone)]
pub struct Cap {
    pub text: String,
    pub mib: u64,
}

impl Cap {
    pub fn from_env() -> Option<Self> {
        let text = get(ev::GENV_GPU_MEMORY).filter(|v| !v.is_empty())?;
        let bytes = crate::memory::to_bytes(&text).ok()?;
        Some(Cap {
            mib: bytes >> 20,
            text,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Other,
    Gpus,
    Mig,
    Processes { rows: bool },
}

/// One process row of the processes table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessRow {
    pub gpu: u32,
    pub pid: u32,
    pub mib: Option<u64>,
}

/// Parses a row of the processes table, with or without the GI and CI
/// columns (drivers before 450 have none; MIG rows have numbers there).
pub fn parse_process_row(line: &str) -> Option<ProcessRow> {
    let inner = line.strip_prefix('|')?.strip_suffix('|')?;
    let tokens: Vec<&str> = inner.split_whitespace().collect();
    let gpu = tokens.first()?.parse().ok()?;
    let id = |t: &str| t == "N/A" || t.chars().all(|c| c.is_ascii_digit());
    let pid = if tokens.len() >= 6
        && id(tokens[1])
        && id(tokens[2])
        && tokens[3].parse::<u32>().is_ok()
    {
        tokens[3]
    } else {
        tokens.get(1)?
    };
    let pid = pid.parse().ok()?;
    let mib = tokens
        .last()?
        .strip_suffix("MiB")
        .and_then(|m| m.parse().ok());
    Some(ProcessRow { gpu, pid, mib })
}

/// The `|`-separated cells of a table line, as byte ranges.
fn cells(line: &str) -> Vec<(usize, usize)> {
    let bars: Vec<usize> = line.match_indices('|').map(|(i, _)| i).collect();
    bars.windows(2).map(|w| (w[0] + 1, w[1])).collect()
}

/// The index a GPU block starts with (`|   0  NVIDIA H100 …`).
fn gpu_index(line: &str) -> Option<u32> {
    let &(start, end) = cells(line).first()?;
    line[start..end].split_whitespace().next()?.parse().ok()
}

/// The memory cell of a GPU block's second line: its byte range and the
/// position of `MiB /` in it.
fn memory_cell(line: &str) -> Option<(usize, usize, usize)> {
    let &(start, end) = cells(line).get(1)?;
    let at = line[start..end].find("MiB /")?;
    Some((start, end, start + at))
}

/// The memory cell with `used` (or `N/A` when unknown) and `total`, at the
/// same width and positions as the driver printed it.
fn rewrite_memory(line: &str, used: Option<u64>, total: Option<u64>) -> String {
    let Some((start, end, at)) = memory_cell(line) else {
        return line.to_owned();
    };
    let cell = &line[start..end];
    let used_width = at - start;
    let after = &cell[used_width + "MiB /".len()..];
    let Some(total_end) = after.rfind("MiB") else {
        return line.to_owned();
    };
    let total_width = total_end;
    let trailing = &after[total_end + "MiB".len()..];
    let original_total = after[..total_end].trim();
    let total_text = total.map_or_else(|| original_total.to_owned(), |t| t.to_string());
    let used_text = match used {
        Some(used) => format!("{used:>used_width$}MiB"),
        None => format!("{:>w$}", "N/A", w = used_width + 3),
    };
    let new_cell = format!("{used_text} /{total_text:>total_width$}MiB{trailing}");
    if new_cell.len() != cell.len() {
        // A number too wide for the column: keep the line as printed
        // rather than shift the table.
        return line.to_owned();
    }
    format!("{}{new_cell}{}", &line[..start], &line[end..])
}

/// One frame of the default table (one screen; `-l` prints many), as the
/// environment sees it, with the warnings after it.
pub fn rewrite_frame(
    lines: &[String],
    ours: &mut impl FnMut(u32) -> bool,
    cap: Option<&Cap>,
) -> String {
    let mut section = Section::Other;
    let mut gpu = None;
    let mut memory_lines: Vec<(usize, Option<u32>)> = Vec::new();
    let mut rows: Vec<(usize, ProcessRow)> = Vec::new();
    let mut no_processes_line = false;
    let mut rows_separator = None;
    for (i, line) in lines.iter().enumerate() {
        if line.contains("| MIG devices:") {
            section = Section::Mig;
            continue;
        }
        if line.contains("| Processes:") {
            section = Section::Processes { rows: false };
            continue;
        }
        if line.starts_with("| GPU  Name") {
            section = Section::Gpus;
            continue;
        }
        match section {
            Section::Gpus => {
                if let Some(index) = gpu_index(line) {
                    gpu = Some(index);
                } else if memory_cell(line).is_some() {
                    memory_lines.push((i, gpu));
                }
                if !line.starts_with(['|', '+']) {
                    section = Section::Other;
                }
            }
            Section::Mig => {
                if !line.starts_with(['|', '+']) {
                    section = Section::Other;
                }
            }
            Section::Processes { rows: false } => {
                if line.starts_with("|=") {
                    rows_separator = Some(i);
                    section = Section::Processes { rows: true };
                }
            }
            Section::Processes { rows: true } => {
                if line.contains("No running processes found") {
                    no_processes_line = true;
                } else if let Some(row) = parse_process_row(line) {
                    rows.push((i, row));
                } else if line.starts_with('+') {
                    section = Section::Other;
                }
            }
            Section::Other => {}
        }
    }

    let mut dropped = vec![false; lines.len()];
    let mut used: HashMap<u32, u64> = HashMap::new();
    let mut kept_rows = 0;
    for (i, row) in &rows {
        if ours(row.pid) {
            kept_rows += 1;
            *used.entry(row.gpu).or_default() += row.mib.unwrap_or(0);
        } else {
            dropped[*i] = true;
        }
    }
    let missing = !memory_lines.is_empty() && rows.is_empty() && !no_processes_line;
    let mut over_cap = false;
    let mut rewritten: HashMap<usize, String> = HashMap::new();
    for (i, index) in &memory_lines {
        let line = &lines[*i];
        let shown = if missing {
            None
        } else {
            Some(index.and_then(|g| used.get(&g).copied()).unwrap_or(0))
        };
        if let (Some(shown), Some(cap)) = (shown, cap) {
            over_cap |= shown > cap.mib;
        }
        rewritten.insert(*i, rewrite_memory(line, shown, cap.map(|c| c.mib)));
    }

    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        if dropped[i] {
            continue;
        }
        out.push_str(rewritten.get(&i).unwrap_or(line));
        out.push('\n');
        if Some(i) == rows_separator && !rows.is_empty() && kept_rows == 0 {
            out.push_str(&no_running_processes(line.len()));
            out.push('\n');
        }
    }
    if missing {
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

fn warn(out: &mut String, message: &str) {
    out.push_str(&format!("\nWARNING: {message}\n\n"));
}

/// Cuts the default table into frames: a frame ends with the border under
/// the processes table (with `-l` the driver prints one frame after another).
#[derive(Default)]
pub struct Frames {
    lines: Vec<String>,
    in_processes: bool,
    in_rows: bool,
}

impl Frames {
    /// Adds a line; returns the frame when the line completes one.
    pub fn push(&mut self, line: String) -> Option<Vec<String>> {
        if line.contains("| Processes:") {
            self.in_processes = true;
        } else if self.in_processes && line.starts_with("|=") {
            self.in_rows = true;
        }
        let end = self.in_rows && line.starts_with('+');
        self.lines.push(line);
        if end {
            self.in_processes = false;
            self.in_rows = false;
            return Some(std::mem::take(&mut self.lines));
        }
        None
    }

    pub fn finish(&mut self) -> Vec<String> {
        std::mem::take(&mut self.lines)
    }
}

/// The shim's entry point.
pub fn run(args: Vec<OsString>) -> i32 {
    let real = match super::find_real(PROGRAM) {
        Ok(real) => real,
        Err(e) => return super::fail(&e),
    };
    let (Some(eid), false) = (super::environment_id(), super::bypass()) else {
        return super::exec(&real, &args);
    };
    let Some(text_args) = super::utf8_args(&args) else {
        return super::exec(&real, &args);
    };
    match plan(&text_args, &super::attached(&eid)) {
        Plan::Exec(args) => super::exec(&real, &super::os_args(&args)),
        Plan::NoDevices => {
            println!("{NO_DEVICES}");
            EXIT_NOT_FOUND
        }
        Plan::ComputeApps(filter) => {
            let mut members = Membership::new(&eid);
            let mut first = true;
            pipe(&real, &filter.args, |line, out| {
                let kept = filter.line(&line, first, &mut |pid| members.contains(pid));
                first = false;
                if let Some(kept) = kept {
                    out.push_str(&kept);
                    out.push('\n');
                }
                true
            })
        }
        Plan::Table(args) => {
            let mut members = Membership::new(&eid);
            let cap = Cap::from_env();
            let mut frames = Frames::default();
            let code = pipe(&real, &args, |line, out| match frames.push(line) {
                Some(frame) => {
                    out.push_str(&rewrite_frame(
                        &frame,
                        &mut |pid| members.contains(pid),
                        cap.as_ref(),
                    ));
                    true
                }
                None => false,
            });
            let rest = frames.finish();
            if !rest.is_empty() {
                let text = rewrite_frame(&rest, &mut |pid| members.contains(pid), cap.as_ref());
                let _ = std::io::stdout().lock().write_all(text.as_bytes());
            }
            code
        }
    }
}

/// Runs the real program with its output through `each`, which appends
/// what to print and says when to flush (at the end of a frame).
fn pipe(
    real: &std::path::Path,
    args: &[String],
    mut each: impl FnMut(String, &mut String) -> bool,
) -> i32 {
    let depth = match super::next_depth() {
        Ok(depth) => depth,
        Err(e) => return super::fail(&e),
    };
    let mut child = match Command::new(real)
        .args(args)
        .env(ev::GENV_SHIM_DEPTH, depth.to_string())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("genv: could not run {}: {e}", real.display());
            return 127;
        }
    };
    let Some(stdout) = child.stdout.take() else {
        return 1;
    };
    let mut reader = BufReader::new(stdout);
    let mut out = String::new();
    let mut buffer = Vec::new();
    let mut terminal = std::io::stdout().lock();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buffer);
        let line = line.strip_suffix('\n').unwrap_or(&line);
        let line = line.strip_suffix('\r').unwrap_or(line).to_owned();
        if each(line, &mut out) {
            if terminal
                .write_all(out.as_bytes())
                .and_then(|()| terminal.flush())
                .is_err()
            {
                // The reader went away: stop, and let the real program
                // meet the closed pipe too.
                drop(reader);
                let _ = child.wait();
                return 0;
            }
            out.clear();
        }
    }
    let _ = terminal
        .write_all(out.as_bytes())
        .and_then(|()| terminal.flush());
    drop(terminal);
    match child.wait() {
        Ok(status) => status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        Err(_) => 1,
    }
}
