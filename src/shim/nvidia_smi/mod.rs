//! The `nvidia-smi` shim: only the environment's GPUs (`--id=`), and in the
//! default table only its processes and the memory they use. [`plan`]
//! decides what to run, [`compute_apps`] and [`rewrite`] change what the
//! real program prints; this file runs it.

pub(crate) mod compute_apps;
pub(crate) mod list;
pub(crate) mod plan;
pub(crate) mod rewrite;

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use crate::context::{Context, Exit};
use crate::error::{Error, Result};
use crate::os::exec;
use crate::smi::table::parse::Frames;
use crate::state::StateDir;
use list::ListFilter;
use plan::{Plan, plan};
use rewrite::{Cap, rewrite_frame};

pub(crate) use crate::smi::PROGRAM;
const NO_DEVICES: &str = "No devices were found";
/// nvidia-smi's exit code when no GPU matches.
const EXIT_NOT_FOUND: i32 = 6;

/// Whether a process runs in the environment, asked once per pid: its
/// `GENV_ENVIRONMENT_ID`, or the environment's pids in `envs.json` (genv
/// 1.4.3's `genv.sdk.activate()` registers a process there without the
/// variable).
pub(crate) struct Membership<'a> {
    dir: &'a StateDir,
    eid: String,
    known: HashMap<u32, bool>,
    registered: Option<Vec<i64>>,
}

impl<'a> Membership<'a> {
    pub(crate) fn new(dir: &'a StateDir, eid: &str) -> Self {
        Membership {
            dir,
            eid: eid.to_owned(),
            known: HashMap::new(),
            registered: None,
        }
    }

    /// With the environment's pids already read from `envs.json`.
    fn registered(mut self, pids: Option<Vec<i64>>) -> Self {
        self.registered = pids;
        self
    }

    pub(crate) fn contains(&mut self, pid: u32) -> bool {
        if let Some(&known) = self.known.get(&pid) {
            return known;
        }
        let member = crate::backend::process_eid(pid).as_deref() == Some(self.eid.as_str())
            || self
                .registered
                .get_or_insert_with(|| registered_pids(self.dir, &self.eid))
                .contains(&i64::from(pid));
        self.known.insert(pid, member);
        member
    }
}

/// The pids `envs.json` lists for the environment; none when the state
/// cannot be read (the shim then shows only what the variables prove).
fn registered_pids(dir: &StateDir, eid: &str) -> Vec<i64> {
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
fn accounted(dir: &StateDir, eid: &str) -> Option<crate::state::memcap_ledger::Usage> {
    let root = dir.root_dir().ok()?;
    crate::state::memcap_ledger::usage(root, crate::os::procs::current_uid(), eid)
}

/// The shim's entry point: the real nvidia-smi run (or become) with the
/// environment's GPUs, what it prints narrowed to the environment.
pub(crate) fn run(args: Vec<OsString>, ctx: &mut Context) -> Result<Exit> {
    let real = exec::find_real(PROGRAM)?;
    let (Some(eid), false) = (super::environment_id(), super::bypass()) else {
        return Err(exec::exec(&real, &args));
    };
    let args = super::Args::new(args);
    let (attached, registered) = super::attached_and_pids(&ctx.dir, &eid);
    let planned = plan(args.text(), &attached);
    let to_run = match &planned {
        Plan::Exec(planned) | Plan::Table(planned) => planned,
        Plan::ComputeApps(filter) => &filter.args,
        Plan::List { args, .. } => args,
        Plan::NoDevices => &Vec::new(),
    };
    let to_run = args.given(to_run)?;
    let dir = ctx.dir.clone();
    match planned {
        Plan::Exec(_) => Err(exec::exec(&real, &to_run)),
        Plan::NoDevices => {
            let _ = ctx.print(&format!("{NO_DEVICES}\n"));
            Ok(Exit(EXIT_NOT_FOUND))
        }
        Plan::List { visible, .. } => {
            let mut filter = ListFilter::new(visible);
            pipe(ctx, &real, &to_run, |line, out| {
                if filter.keep(&line) {
                    out.push_str(&line);
                    out.push('\n');
                }
                true
            })
        }
        Plan::ComputeApps(filter) => {
            let mut members = Membership::new(&dir, &eid).registered(registered);
            let mut first = true;
            pipe(ctx, &real, &to_run, |line, out| {
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
            let mut members = Membership::new(&dir, &eid).registered(registered);
            let cap = Cap::from_env();
            let mut accounted = || cap.as_ref().and_then(|_| accounted(&dir, &eid));
            let mut frames = Frames::default();
            let code = pipe(ctx, &real, &to_run, |line, out| match frames.push(line) {
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
                let _ = ctx.print(&text);
            }
            code
        }
    }
}

/// Runs the real program with its output through `each`, which appends
/// what to print and says when to print it (at the end of a frame).
fn pipe(
    ctx: &mut Context,
    real: &std::path::Path,
    args: &[OsString],
    mut each: impl FnMut(String, &mut String) -> bool,
) -> Result<Exit> {
    let mut child = exec::command(real, args)?
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Exec {
            program: real.to_owned(),
            source,
        })?;
    let Some(stdout) = child.stdout.take() else {
        return Ok(Exit(1));
    };
    let mut reader = BufReader::new(stdout);
    let mut out = String::new();
    let mut buffer = Vec::new();
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
            if ctx.print(&out).is_err() {
                // The reader went away: stop, and let the real program
                // meet the closed pipe too.
                drop(reader);
                let _ = child.wait();
                return Ok(Exit::SUCCESS);
            }
            out.clear();
        }
    }
    let _ = ctx.print(&out);
    Ok(Exit(match child.wait() {
        Ok(status) => status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        Err(_) => 1,
    }))
}
