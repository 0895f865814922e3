//! `genv usage`: the JSON snapshots and report execution that `genv
//! remote` and `genv enforce` use over ssh.

use std::io::Read;

use serde_json::json;

use super::{UsageArgs, UsageCommand};
use crate::backend::DeviceBackend;
use crate::enforce::{self, Report};
use crate::error::{Error, Result};
use crate::state::{LoadOptions, StateDir, file::to_json};

pub fn run(
    args: UsageArgs,
    dir: &StateDir,
    backend: &dyn DeviceBackend,
    out: &mut String,
) -> Result<()> {
    match args.command {
        UsageCommand::Snapshot { kind, .. } => snapshot(kind.as_deref(), dir, backend, out),
        UsageCommand::Execute => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .map_err(|e| Error::msg(format!("could not read the report from stdin: {e}")))?;
            let report: Report = serde_json::from_str(&input)
                .map_err(|e| Error::msg(format!("invalid report on stdin: {e}")))?;
            let mut tx = dir.transaction(LoadOptions::default())?;
            enforce::execute(&report, &mut tx, backend, out)?;
            tx.commit()
        }
    }
}

fn snapshot(
    kind: Option<&str>,
    dir: &StateDir,
    backend: &dyn DeviceBackend,
    out: &mut String,
) -> Result<()> {
    let processes = || backend.processes().map(enforce::processes);
    let value = {
        let mut tx = dir.transaction(LoadOptions::default())?;
        let value = match kind {
            Some("processes") => serde_json::to_value(processes()?),
            Some("envs") => serde_json::to_value(tx.envs()?.clone()),
            Some("devices") => serde_json::to_value(tx.devices(backend, false)?.clone()),
            _ => {
                let processes = processes()?;
                let envs = tx.envs()?.clone();
                let devices = tx.devices(backend, false)?.clone();
                Ok(json!({"processes": processes, "envs": envs, "devices": devices}))
            }
        }
        .map_err(|e| Error::msg(e.to_string()))?;
        tx.commit()?;
        value
    };
    out.push_str(&String::from_utf8_lossy(&to_json(&value)));
    out.push('\n');
    Ok(())
}
