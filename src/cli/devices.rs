//! `genv devices`: query and manage devices.

use std::fmt::Write;

use super::row::Row;
use super::{Context, DevicesArgs, DevicesCommand, Exit, Format, PsArgs};
use crate::error::Result;
use crate::provision;
use crate::state::{Devices, Transaction};
use crate::{escape, timefmt};

pub use crate::provision::Request;

pub const QUERIES: [&str; 4] = ["index", "eids", "total_memory", "attachments"];

pub fn run(args: DevicesArgs, ctx: &mut Context) -> Result<Exit> {
    let out = &mut ctx.out;
    let dir = &ctx.dir;
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
        provision::attach_waiting(dir, ctx.backend.get(), eid, request, *wait)?;
        let mut tx = dir.transaction(args.state.options())?;
        print_indices(tx.devices()?, eid, out);
        tx.commit()?;
        return Ok(Exit::SUCCESS);
    }
    // The driver is asked before the lock, when it must be (no devices
    // recorded, the GPUs changed, or --reset starting afresh).
    let survey = dir.survey(ctx.backend.get(), args.state.reset)?;
    let mut tx = dir.transaction(args.state.options())?;
    if args.state.reset {
        tx.reconcile(&survey)?;
    }
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
            tx.reconcile(&survey)?;
            provision::attach_env(&mut tx, &eid, request)?;
            print_indices(tx.devices()?, &eid, out);
        }
        Some(DevicesCommand::Detach { eid, index, quiet }) => {
            let devices = tx.devices_mut()?;
            provision::detach(devices, &eid, index);
            if !quiet {
                print_indices(devices, &eid, out);
            }
        }
        Some(DevicesCommand::Find { eid }) => print_indices(tx.devices()?, &eid, out),
        Some(DevicesCommand::Ps(ps)) => {
            tx.reconcile(&survey)?;
            print_ps(&mut tx, dir, ps, out)?
        }
        Some(DevicesCommand::Locks(ps)) => {
            let envs = tx.envs()?.clone();
            let indices: Vec<u32> = tx
                .reconcile(&survey)?
                .devices
                .iter()
                .map(|d| d.index)
                .collect();
            super::lock::print_locks(dir, &envs, &indices, ps, out)?;
        }
        Some(DevicesCommand::Queue) => {
            let envs = tx.envs()?.clone();
            let mut queue = tx.queue()?.clone();
            // Only entries whose process still waits (queue.json is anyone's).
            queue.keep_waiting_at(dir);
            print_queue(&envs, &queue, out);
        }
        Some(DevicesCommand::Query { queries }) => {
            for device in &tx.reconcile(&survey)?.devices {
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
                let row: Vec<String> = row
                    .iter()
                    .map(|field| escape::csv_field(field).into_owned())
                    .collect();
                out.push_str(&row.join(","));
                out.push('\n');
            }
        }
        None => {
            tx.reconcile(&survey)?;
            print_ps(&mut tx, dir, PsArgs::default(), out)?
        }
    }
    tx.commit()?;
    Ok(Exit::SUCCESS)
}

pub fn print_indices(devices: &Devices, eid: &str, out: &mut String) {
    // Indices only: nothing from the state reaches the terminal.
    let indices: Vec<String> = devices.indices_of(eid).iter().map(u32::to_string).collect();
    out.push_str(&indices.join(","));
    out.push('\n');
}

fn print_ps(
    tx: &mut Transaction<'_>,
    dir: &crate::state::StateDir,
    ps: PsArgs,
    out: &mut String,
) -> Result<()> {
    let (envs, devices) = tx.envs_and_devices()?;
    let envs = envs.by_eid();
    let name_of = |eid: &str| {
        envs.get(eid)
            .and_then(|e| e.config.name.as_deref())
            .unwrap_or_default()
    };
    if ps.format == Format::Json {
        // What each environment's processes hold by the memory cap's count
        // (its ledger), read once per environment; null without one.
        let root = dir.root_dir().ok();
        let mut usage = std::collections::HashMap::new();
        let mut in_use = |eid: &str, index: u32| -> Option<u64> {
            let usage = usage.entry(eid.to_owned()).or_insert_with(|| {
                let uid = u32::try_from(envs.get(eid)?.uid).ok()?;
                crate::state::memcap_ledger::usage(root?, uid, eid)
            });
            usage.as_ref().map(|u| u.get(&index).copied().unwrap_or(0))
        };
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
                            "env_name": envs.get(a.eid.as_str()).and_then(|e| e.config.name.clone()),
                            "gpu_memory": a.gpu_memory,
                            "time": a.time,
                            "memory_in_use": in_use(&a.eid, d.index),
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
    // The local time zone is read only when a row needs it.
    let now = std::cell::OnceCell::new();
    let csv = ps.format == Format::Csv;
    // Any local user can write anything into the state: Row shows it as data.
    let mut attached = String::new();
    for device in &devices.devices {
        if device.attachments.is_empty() {
            Row::new(out, csv)
                .number(device.index, 8)
                .cell("", 12)
                .cell("", 16)
                .cell("", 0)
                .end();
        }
        for a in &device.attachments {
            attached.clear();
            if ps.timestamp {
                attached.push_str(&a.time);
            } else {
                timefmt::write_since(&mut attached, &a.time, *now.get_or_init(timefmt::local_now));
            }
            Row::new(out, csv)
                .number(device.index, 8)
                .cell(&a.eid, 12)
                .cell(name_of(&a.eid), 16)
                .cell(&attached, 0)
                .end();
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
        let name = escape::terminal(&name);
        let user = env.map(|e| e.user()).unwrap_or_default();
        let user = escape::terminal(&user);
        let request = describe_request(waiter.count, waiter.index, waiter.over_subscribe);
        let _ = writeln!(
            out,
            "{:<8}{:<12}{:<16}{:<16}{:<10}{:<20}{}",
            place + 1,
            escape::terminal(&waiter.eid),
            name,
            user,
            waiter.pid,
            request,
            escape::terminal(&waiter.since)
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
