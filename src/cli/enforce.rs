//! `genv enforce`: the administrator's daemon. Every `--interval` seconds
//! it takes a snapshot, runs the chosen rules and acts on their report;
//! SIGINT or SIGTERM ends it cleanly between cycles.

use std::io::Write;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{Context, EnforceArgs, Exit};
use crate::enforce::execute::{self, Acting, Done};
use crate::enforce::rules::Quota;
use crate::enforce::{self, Rules, snapshot};
use crate::error::Result;
use crate::os::procs;
use crate::os::signals::Blocked;
use crate::{messages, timefmt};

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

pub(crate) fn run(args: EnforceArgs, ctx: &mut Context) -> Result<Exit> {
    crate::error::reference::log::verbose(args.verbose);
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
    // SIGINT and SIGTERM held back during a cycle and taken between
    // cycles, so that a cycle is never cut short.
    let signals = (args.interval > 0).then(|| Blocked::of(&[Signal::SIGINT, Signal::SIGTERM]));
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
        let _ = ctx.flush();
        let Some(signals) = &signals else {
            return Ok(Exit::SUCCESS);
        };
        if let Some(signal) = signals.wait(Duration::from_secs(args.interval)) {
            messages::note(format!(
                "{}: stopping on {} after {cycle} cycle(s)",
                timefmt::now(),
                Blocked::name(signal)
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
