//! `genv usage`: the JSON snapshots and report execution that `genv
//! remote` and `genv enforce` use over ssh.

use std::io::Read;

use serde::Serialize;

use super::{Context, Exit, UsageArgs, UsageCommand};
use crate::backend::DeviceBackend;
use crate::enforce::{self, Processes, Report};
use crate::error::{Error, Result};
use crate::output::json::to_json;
use crate::state::{Devices, Envs, LoadOptions, StateDir};

pub(crate) fn run(args: UsageArgs, ctx: &mut Context) -> Result<Exit> {
    match args.command {
        UsageCommand::Snapshot { kind, .. } => {
            snapshot(kind.as_deref(), &ctx.dir, ctx.backend.get(), &mut ctx.out)?
        }
        UsageCommand::Execute { verbose } => {
            crate::error::reference::log::verbose(verbose);
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .map_err(|e| Error::new(format!("could not read the report from stdin: {e}")))?;
            let report: Report = serde_json::from_str(&input)
                .map_err(|e| Error::new(format!("invalid report on stdin: {e}")))?;
            let mut tx = ctx.dir.transaction(LoadOptions::default())?;
            enforce::execute(&report, &mut tx, &mut ctx.out)?;
            tx.commit()?;
        }
    }
    Ok(Exit::SUCCESS)
}

/// A full snapshot, in genv 1.4.3's key order.
#[derive(Serialize)]
struct Snapshot<'a> {
    processes: &'a Processes,
    envs: &'a Envs,
    devices: &'a Devices,
}

fn snapshot(
    kind: Option<&str>,
    dir: &StateDir,
    backend: &dyn DeviceBackend,
    out: &mut String,
) -> Result<()> {
    let processes = || backend.processes().map(enforce::processes);
    let survey = dir.survey(backend, false)?;
    let mut tx = dir.transaction(LoadOptions::default())?;
    let json = match kind {
        Some("processes") => to_json(&processes()?)?,
        Some("envs") => {
            let mut json = Vec::new();
            crate::state::envs_json::write(tx.envs()?, &mut json);
            json
        }
        Some("devices") => to_json(tx.reconcile(&survey)?)?,
        _ => {
            let processes = processes()?;
            tx.reconcile(&survey)?;
            let envs = tx.envs()?.clone();
            let devices = tx.devices()?;
            to_json(&Snapshot {
                processes: &processes,
                envs: &envs,
                devices,
            })?
        }
    };
    tx.commit()?;
    out.push_str(&String::from_utf8_lossy(&json));
    out.push('\n');
    Ok(())
}
