//! `genv enforce`: the administrator's daemon. Every `--interval` seconds
//! it takes a snapshot, runs the chosen rules and acts on their report;
//! SIGINT or SIGTERM ends it cleanly between cycles.

use std::io::Write;
use std::time::Duration;

use super::{Context, EnforceArgs, Exit};
use crate::enforce::execute::{self, Acting, Done};
use crate::enforce::rules::Quota;
use crate::enforce::{self, Rules, snapshot};
use crate::error::Result;
use crate::os::procs;
use crate::{memory, messages, timefmt};

/// `username=maximum`, as genv 1.4.3 reads `--max-devices-for-user`.
pub fn parse_devices_spec(value: &str) -> std::result::Result<(String, u64), String> {
    let invalid = || format!("not a valid spec: {value}");
    let (user, maximum) = value.split_once('=').ok_or_else(invalid)?;
    if user.is_empty() || maximum.contains('=') {
        return Err(invalid());
    }
    Ok((
        user.to_owned(),
        maximum.trim().parse().map_err(|_| invalid())?,
    ))
}

/// A memory amount (`40g`, `512mi`), in bytes.
pub fn parse_memory(value: &str) -> std::result::Result<u64, String> {
    memory::to_bytes(value).map_err(|_| {
        format!(
            "not a memory amount: {value} (a number with an optional unit b, k, m, g, ki, mi or gi)"
        )
    })
}

/// `username=amount`.
pub fn parse_memory_spec(value: &str) -> std::result::Result<(String, u64), String> {
    let invalid =
        || format!("not a valid spec: {value} (expected username=amount, e.g. alice=40g)");
    let (user, amount) = value.split_once('=').ok_or_else(invalid)?;
    if user.is_empty() {
        return Err(invalid());
    }
    Ok((user.to_owned(), parse_memory(amount)?))
}

pub fn parse_grace(value: &str) -> std::result::Result<f64, String> {
    match value.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && (0.0..=86_400.0).contains(&seconds) => Ok(seconds),
        _ => Err(format!(
            "not a number of seconds between 0 and 86400: {value}"
        )),
    }
}

impl EnforceArgs {
    pub fn rules(&self) -> Rules {
        Rules {
            non_env_processes: self.non_env_processes,
            env_devices: !self.no_env_devices,
            env_memory: !self.no_env_memory,
            max_devices: Quota {
                per_user: self.max_devices_per_user,
                for_user: self.max_devices_for_user.iter().cloned().collect(),
            },
            max_memory: Quota {
                per_user: self.max_memory_per_user,
                for_user: self.max_memory_for_user.iter().cloned().collect(),
            },
        }
    }
}

pub fn run(args: EnforceArgs, ctx: &mut Context) -> Result<Exit> {
    let rules = args.rules();
    let dry_run = args.dry_run || args.report;
    let acting = Acting {
        signal: !dry_run && execute::terminate_allowed(),
        detach: !dry_run,
        grace: Duration::from_secs_f64(args.grace),
    };
    if procs::current_uid() != 0 {
        messages::warn_hint(
            "not running as root: processes of other users cannot be inspected or signalled",
            "run `sudo genv enforce` on a machine that users share",
        );
    }
    if args.dry_run {
        messages::note("dry run: no process is signalled and no environment is detached");
    }
    let signals = (args.interval > 0).then(Signals::block);
    let mut cycle: u64 = 0;
    loop {
        cycle += 1;
        match one_cycle(&args, &rules, acting, ctx) {
            Ok(done) if done.any() => messages::note(format!(
                "{}: cycle {cycle}: {}",
                timefmt::now(),
                summary(done, dry_run)
            )),
            Ok(_) => {}
            // One cycle run on request: its failure is the command's.
            Err(e) if signals.is_none() => return Err(e),
            Err(e) => messages::warn(format!("cycle {cycle} failed: {e}")),
        }
        flush(&mut ctx.out);
        let Some(signals) = &signals else {
            return Ok(Exit::SUCCESS);
        };
        if let Some(signal) = signals.wait(Duration::from_secs(args.interval)) {
            messages::note(format!(
                "{}: stopping on {signal} after {cycle} cycle(s)",
                timefmt::now()
            ));
            return Ok(Exit::SUCCESS);
        }
    }
}

fn one_cycle(args: &EnforceArgs, rules: &Rules, acting: Acting, ctx: &mut Context) -> Result<Done> {
    let snapshot = snapshot::take(&ctx.dir, ctx.backend.get())?;
    let survey = enforce::decide(&snapshot, rules);
    let report = survey.report();
    if args.report {
        let mut err = std::io::stderr().lock();
        for line in &survey.lines {
            let _ = writeln!(err, "{line}");
        }
        let json = crate::output::json::to_json(&report)?;
        ctx.out.push_str(&String::from_utf8_lossy(&json));
        ctx.out.push('\n');
        return Ok(Done::default());
    }
    for line in &survey.lines {
        ctx.out.push_str(line);
        ctx.out.push('\n');
    }
    execute::enforce(&report, &snapshot, acting, &ctx.dir, &mut ctx.out)
}

fn summary(done: Done, dry_run: bool) -> String {
    let mut parts = Vec::new();
    if dry_run {
        parts.push("dry run".to_owned());
    }
    parts.push(format!("{} process(es) sent SIGTERM", done.terminated));
    parts.push(format!("{} sent SIGKILL", done.killed));
    parts.push(format!("{} left alone", done.refused));
    parts.push(format!("{} environment(s) detached", done.detached));
    parts.join(", ")
}

/// Prints what a cycle said now, not when the daemon exits.
fn flush(out: &mut String) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush());
    out.clear();
}

/// SIGINT and SIGTERM held back during a cycle and taken between cycles,
/// so that a cycle is never cut short.
struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    fn block() -> Self {
        // SAFETY: the set is initialised by sigemptyset before use;
        // pthread_sigmask only reads it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Signals { set }
        }
    }

    /// Waits `interval` for SIGINT or SIGTERM; the signal's name if one
    /// came.
    fn wait(&self, interval: Duration) -> Option<&'static str> {
        let deadline = std::time::Instant::now() + interval;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let timeout = libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            };
            // SAFETY: the set and timeout outlive the call; no siginfo.
            let signal = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &timeout) };
            match signal {
                libc::SIGINT => return Some("SIGINT"),
                libc::SIGTERM => return Some("SIGTERM"),
                // EINTR (another signal) or EAGAIN (the time is up).
                _ if left.is_zero() || std::time::Instant::now() >= deadline => return None,
                _ => continue,
            }
        }
    }
}
