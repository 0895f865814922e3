//! The `nvidia-smi` shim: only the environment's GPUs (`--id=`), and in the
//! default table only its processes and the memory they use. [`plan`]
//! decides what to run, [`compute_apps`] and [`rewrite`] change what the
//! real program prints; this file runs it.

pub mod compute_apps;
pub mod list;
pub mod plan;
pub mod rewrite;

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use crate::env_vars as ev;
use crate::smi::table::parse::Frames;
use list::ListFilter;
use plan::{Plan, plan};
use rewrite::{Cap, rewrite_frame};

pub const PROGRAM: &str = "nvidia-smi";
const NO_DEVICES: &str = "No devices were found";
/// nvidia-smi's exit code when no GPU matches.
const EXIT_NOT_FOUND: i32 = 6;

/// Whether a process runs in the environment, asked once per pid: its
/// `GENV_ENVIRONMENT_ID`, or the environment's pids in `envs.json` (genv
/// 1.4.3's `genv.sdk.activate()` registers a process there without the
/// variable).
pub struct Membership {
    eid: String,
    known: HashMap<u32, bool>,
    registered: Option<Vec<i64>>,
}

impl Membership {
    pub fn new(eid: &str) -> Self {
        Membership {
            eid: eid.to_owned(),
            known: HashMap::new(),
            registered: None,
        }
    }

    pub fn contains(&mut self, pid: u32) -> bool {
        if let Some(&known) = self.known.get(&pid) {
            return known;
        }
        let member = crate::backend::process_eid(pid).as_deref() == Some(self.eid.as_str())
            || self
                .registered
                .get_or_insert_with(|| registered_pids(&self.eid))
                .contains(&i64::from(pid));
        self.known.insert(pid, member);
        member
    }
}

/// The pids `envs.json` lists for the environment; none when the state
/// cannot be read (the shim then shows only what the variables prove).
fn registered_pids(eid: &str) -> Vec<i64> {
    let dir = crate::state::StateDir::from_env();
    let Ok(mut tx) = dir.transaction(crate::state::LoadOptions::default()) else {
        return Vec::new();
    };
    tx.envs()
        .ok()
        .and_then(|envs| envs.get(eid).map(|env| env.pids.clone()))
        .unwrap_or_default()
}

/// What the environment's processes hold per GPU by the memory cap's
/// ledger (this user's, in the state folder), when there is one.
fn accounted(eid: &str) -> Option<crate::state::memcap_ledger::Usage> {
    let dir = crate::state::StateDir::from_env();
    let root = dir.root_dir().ok()?;
    crate::state::memcap_ledger::usage(root, crate::os::procs::current_uid(), eid)
}

/// The shim's entry point.
pub fn run(args: Vec<OsString>) -> i32 {
    let real = match crate::shim::find_real(PROGRAM) {
        Ok(real) => real,
        Err(e) => return crate::shim::fail(&e),
    };
    let (Some(eid), false) = (crate::shim::environment_id(), crate::shim::bypass()) else {
        return crate::shim::exec(&real, &args);
    };
    let args = crate::shim::Args::new(args);
    let planned = plan(args.text(), &crate::shim::attached(&eid));
    let to_run = match &planned {
        Plan::Exec(planned) | Plan::Table(planned) => planned,
        Plan::ComputeApps(filter) => &filter.args,
        Plan::List { args, .. } => args,
        Plan::NoDevices => &Vec::new(),
    };
    let to_run = match args.given(to_run) {
        Ok(to_run) => to_run,
        Err(e) => return crate::shim::fail(&e),
    };
    match planned {
        Plan::Exec(_) => crate::shim::exec(&real, &to_run),
        Plan::NoDevices => {
            println!("{NO_DEVICES}");
            EXIT_NOT_FOUND
        }
        Plan::List { visible, .. } => {
            let mut filter = ListFilter::new(visible);
            pipe(&real, &to_run, |line, out| {
                if filter.keep(&line) {
                    out.push_str(&line);
                    out.push('\n');
                }
                true
            })
        }
        Plan::ComputeApps(filter) => {
            let mut members = Membership::new(&eid);
            let mut first = true;
            pipe(&real, &to_run, |line, out| {
                let kept = filter.line(&line, first, &mut |pid| members.contains(pid));
                first = false;
                if let Some(kept) = kept {
                    out.push_str(&kept);
                    out.push('\n');
                }
                true
            })
        }
        Plan::Table(_) => {
            let mut members = Membership::new(&eid);
            let cap = Cap::from_env();
            let mut accounted = || cap.as_ref().and_then(|_| accounted(&eid));
            let mut frames = Frames::default();
            let code = pipe(&real, &to_run, |line, out| match frames.push(line) {
                Some(frame) => {
                    out.push_str(&rewrite_frame(
                        &frame,
                        &mut |pid| members.contains(pid),
                        cap.as_ref(),
                        &mut accounted,
                    ));
                    true
                }
                None => false,
            });
            let rest = frames.finish();
            if !rest.is_empty() {
                let text = rewrite_frame(
                    &rest,
                    &mut |pid| members.contains(pid),
                    cap.as_ref(),
                    &mut accounted,
                );
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
    args: &[OsString],
    mut each: impl FnMut(String, &mut String) -> bool,
) -> i32 {
    let depth = match crate::shim::next_depth() {
        Ok(depth) => depth,
        Err(e) => return crate::shim::fail(&e),
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
