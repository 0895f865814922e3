//! `genv devices`: query and manage devices.

use std::fmt::Write;

use super::{DevicesArgs, DevicesCommand, Format, PsArgs};
use crate::backend::DeviceBackend;
use crate::error::Result;
use crate::provision::{self, AttachError};
use crate::state::{Devices, StateDir, Transaction};
use crate::timefmt;

pub use crate::provision::Request;

pub const QUERIES: [&str; 4] = ["index", "eids", "total_memory", "attachments"];

pub fn run(
    args: DevicesArgs,
    dir: &StateDir,
    backend: &dyn DeviceBackend,
    out: &mut String,
) -> Result<()> {
    if let Some(DevicesCommand::Attach {
        eid,
        allow_over_subscription,
        count,
        index,
        wait: Some(wait),
    }) = &args.command
    {
        let request = Request {
            count: *count,
            index: *index,
            over_subscribe: *allow_over_subscription,
        };
        provision::attach_waiting(dir, backend, eid, request, *wait)?;
        let mut tx = dir.transaction(args.state.options())?;
        print_indices(tx.devices(backend, false)?, eid, out);
        return tx.commit();
    }
    let mut tx = dir.transaction(args.state.options())?;
    let attaching = matches!(args.command, Some(DevicesCommand::Attach { .. }));
    // Ask the driver when attaching (a GPU may have come or gone) or on --reset.
    tx.devices(backend, attaching || args.state.reset)?;
    match args.command {
        Some(DevicesCommand::Attach {
            eid,
            allow_over_subscription,
            count,
            index,
            wait: _,
        }) => {
            let request = Request {
                count,
                index,
                over_subscribe: allow_over_subscription,
            };
            attach(&mut tx, backend, &eid, request)?;
            print_indices(tx.devices(backend, false)?, &eid, out);
        }
        Some(DevicesCommand::Detach { eid, index, quiet }) => {
            let devices = tx.devices(backend, false)?;
            detach(devices, &eid, index);
            if !quiet {
                print_indices(devices, &eid, out);
            }
        }
        Some(DevicesCommand::Find { eid }) => print_indices(tx.devices(backend, false)?, &eid, out),
        Some(DevicesCommand::Ps(ps)) => print_ps(&mut tx, backend, ps, out)?,
        Some(DevicesCommand::Locks(ps)) => {
            let envs = tx.envs()?.clone();
            let indices: Vec<u32> = tx
                .devices(backend, false)?
                .devices
                .iter()
                .map(|d| d.index)
                .collect();
            super::lock::print_locks(dir, &envs, &indices, ps, out)?;
        }
        Some(DevicesCommand::Queue) => {
            let envs = tx.envs()?.clone();
            let queue = tx.queue()?.clone();
            print_queue(&envs, &queue, out);
        }
        Some(DevicesCommand::Query { queries }) => {
            for device in &tx.devices(backend, false)?.devices {
                let row: Vec<String> = queries
                    .iter()
                    .map(|q| match q.as_str() {
                        "index" => device.index.to_string(),
                        "eids" => device.eids().collect::<Vec<_>>().join(" "),
                        "total_memory" => device.total_memory.clone(),
                        _ => device
                            .attachments
                            .iter()
                            .map(|a| {
                                format!(
                                    "{}+{}+{}",
                                    a.eid,
                                    a.gpu_memory.as_deref().unwrap_or(""),
                                    a.time.replace(' ', "_")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(" "),
                    })
                    .collect();
                out.push_str(&row.join(","));
                out.push('\n');
            }
        }
        None => print_ps(&mut tx, backend, PsArgs::default(), out)?,
    }
    tx.commit()
}

/// Attaches devices to an environment as genv 1.4.3 does: ensure a count
/// (detaching the surplus) or attach one index. Capacity-aware: an
/// environment with a memory capacity takes a fraction of a device.
pub fn attach(
    tx: &mut Transaction<'_>,
    backend: &dyn DeviceBackend,
    eid: &str,
    request: Request,
) -> Result<()> {
    let now = tx.now();
    let config = tx
        .envs()?
        .get(eid)
        .map(|e| e.config.clone())
        .unwrap_or_default();
    let devices = tx.devices(backend, false)?;
    provision::attach(devices, &config, eid, request, &now).map_err(AttachError::into_error)
}

/// Detaches one device, or all of them.
pub fn detach(devices: &mut Devices, eid: &str, index: Option<u32>) {
    for device in &mut devices.devices {
        if index.is_none_or(|i| i == device.index) {
            device.detach(eid);
        }
    }
}

pub fn print_indices(devices: &Devices, eid: &str, out: &mut String) {
    let indices: Vec<String> = devices.indices_of(eid).iter().map(u32::to_string).collect();
    out.push_str(&indices.join(","));
    out.push('\n');
}

fn print_ps(
    tx: &mut Transaction<'_>,
    backend: &dyn DeviceBackend,
    ps: PsArgs,
    out: &mut String,
) -> Result<()> {
    let envs = tx.envs()?.clone();
    let devices = tx.devices(backend, false)?;
    let name_of = |eid: &str| {
        envs.get(eid)
            .and_then(|e| e.config.name.clone())
            .unwrap_or_default()
    };
    if ps.format == Format::Json {
        let rows: Vec<serde_json::Value> = devices
            .devices
            .iter()
            .map(|d| {
                let attachments: Vec<serde_json::Value> = d
                    .attachments
                    .iter()
                    .map(|a| {
                        serde_json::json!({
                            "eid": a.eid,
                            "env_name": envs.get(&a.eid).and_then(|e| e.config.name.clone()),
                            "gpu_memory": a.gpu_memory,
                            "time": a.time,
                        })
                    })
                    .collect();
                serde_json::json!({"index": d.index, "total_memory": d.total_memory, "attachments": attachments})
            })
            .collect();
        let doc = serde_json::json!({ "devices": rows });
        out.push_str(&String::from_utf8_lossy(&crate::state::file::to_json(
            &doc,
        )?));
        out.push('\n');
        return Ok(());
    }
    if !ps.no_header {
        out.push_str(match ps.format {
            Format::Csv => "ID,ENV ID,ENV NAME,ATTACHED\n",
            _ => "ID      ENV ID      ENV NAME        ATTACHED\n",
        });
    }
    let now = timefmt::local_now();
    let mut line = |index: u32, eid: &str, name: &str, attached: &str| {
        let _ = match ps.format {
            Format::Csv => writeln!(out, "{index},{eid},{name},{attached}"),
            _ => writeln!(out, "{index:<8}{eid:<12}{name:<16}{attached}"),
        };
    };
    for device in &devices.devices {
        if device.attachments.is_empty() {
            line(device.index, "", "", "");
        }
        for a in &device.attachments {
            let attached = if ps.timestamp {
                a.time.clone()
            } else {
                timefmt::since(&a.time, now)
            };
            line(device.index, &a.eid, &name_of(&a.eid), &attached);
        }
    }
    Ok(())
}

/// The line of `--wait` requests: `PLACE  ENV ID  ENV NAME  USER  PID
/// REQUEST  SINCE`.
pub fn print_queue(envs: &crate::state::Envs, queue: &crate::state::Queue, out: &mut String) {
    out.push_str(
        "PLACE   ENV ID      ENV NAME        USER            PID       REQUEST             SINCE\n",
    );
    for (place, waiter) in queue.waiters.iter().enumerate() {
        let env = envs.get(&waiter.eid);
        let name = env.and_then(|e| e.config.name.clone()).unwrap_or_default();
        let user = env.map(|e| e.user()).unwrap_or_default();
        let request = describe_request(waiter.count, waiter.index, waiter.over_subscribe);
        let _ = writeln!(
            out,
            "{:<8}{:<12}{:<16}{:<16}{:<10}{:<20}{}",
            place + 1,
            waiter.eid,
            name,
            user,
            waiter.pid,
            request,
            waiter.since
        );
    }
}

fn describe_request(count: Option<u32>, index: Option<u32>, over_subscribe: bool) -> String {
    let what = match (count, index) {
        (_, Some(index)) => format!("device {index}"),
        (Some(count), None) => format!("{count} device(s)"),
        (None, None) => "configured".to_owned(),
    };
    if over_subscribe {
        format!("{what} (-o)")
    } else {
        what
    }
}
