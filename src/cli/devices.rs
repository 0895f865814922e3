//! `genv devices`: query and manage devices.

use std::collections::HashMap;

use super::{Context, DevicesArgs, DevicesCommand, Exit, PsArgs};
use crate::error::Result;
use crate::output::{self, Column, Layout, Listing, Table, column};
use crate::provision;
use crate::state::{Devices, Env, StateDir, Transaction};
use crate::{escape, timefmt};

pub(crate) use crate::provision::Request;

pub(crate) const QUERIES: [&str; 4] = ["index", "eids", "total_memory", "attachments"];

pub(crate) fn run(args: DevicesArgs, ctx: &mut Context) -> Result<Exit> {
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

pub(crate) fn print_indices(devices: &Devices, eid: &str, out: &mut String) {
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
    let listing = DevicesTable {
        envs: envs.by_eid(),
        devices,
        dir,
        timestamp: ps.timestamp,
    };
    output::print(&listing, Layout::new(ps.format, ps.no_header), out)
}

/// `genv devices ps`: a row per attachment, a device without one as a
/// row of its own.
struct DevicesTable<'a> {
    envs: HashMap<&'a str, &'a Env>,
    devices: &'a Devices,
    dir: &'a StateDir,
    timestamp: bool,
}

impl DevicesTable<'_> {
    fn name_of(&self, eid: &str) -> &str {
        self.envs
            .get(eid)
            .and_then(|e| e.config.name.as_deref())
            .unwrap_or_default()
    }
}

impl Listing for DevicesTable<'_> {
    const COLUMNS: &'static [Column] = &[
        column("ID", 8),
        column("ENV ID", 12),
        column("ENV NAME", 16),
        column("ATTACHED", 0),
    ];

    fn rows(&self, table: &mut Table<'_>) {
        // The local time zone is read only when a row needs it.
        let now = std::cell::OnceCell::new();
        // Any local user can write anything into the state: Row shows it as data.
        let mut attached = String::new();
        for device in &self.devices.devices {
            if device.attachments.is_empty() {
                table
                    .row()
                    .number(device.index)
                    .cell("")
                    .cell("")
                    .cell("")
                    .end();
            }
            for a in &device.attachments {
                attached.clear();
                if self.timestamp {
                    attached.push_str(&a.time);
                } else {
                    timefmt::write_since(
                        &mut attached,
                        &a.time,
                        *now.get_or_init(timefmt::local_now),
                    );
                }
                table
                    .row()
                    .number(device.index)
                    .cell(&a.eid)
                    .cell(self.name_of(&a.eid))
                    .cell(&attached)
                    .end();
            }
        }
    }

    fn json(&self) -> impl serde::Serialize {
        // What each environment's processes hold by the memory cap's count
        // (its ledger), read once per environment; null without one.
        let root = self.dir.root_dir().ok();
        let mut usage = HashMap::new();
        let mut in_use = |eid: &str, index: u32| -> Option<u64> {
            let usage = usage.entry(eid.to_owned()).or_insert_with(|| {
                let uid = u32::try_from(self.envs.get(eid)?.uid).ok()?;
                crate::state::memcap_ledger::usage(root?, uid, eid)
            });
            usage.as_ref().map(|u| u.get(&index).copied().unwrap_or(0))
        };
        let rows: Vec<serde_json::Value> = self
            .devices
            .devices
            .iter()
            .map(|d| {
                let attachments: Vec<serde_json::Value> = d
                    .attachments
                    .iter()
                    .map(|a| {
                        serde_json::json!({
                            "eid": a.eid,
                            "env_name": self.envs.get(a.eid.as_str()).and_then(|e| e.config.name.clone()),
                            "gpu_memory": a.gpu_memory,
                            "time": a.time,
                            "memory_in_use": in_use(&a.eid, d.index),
                        })
                    })
                    .collect();
                serde_json::json!({"index": d.index, "total_memory": d.total_memory, "attachments": attachments})
            })
            .collect();
        serde_json::json!({ "devices": rows })
    }
}

/// `genv devices queue`: the line of `--wait` requests, in the padded
/// table only.
pub(crate) fn print_queue(
    envs: &crate::state::Envs,
    queue: &crate::state::Queue,
    out: &mut String,
) {
    const COLUMNS: &[Column] = &[
        column("PLACE", 8),
        column("ENV ID", 12),
        column("ENV NAME", 16),
        column("USER", 16),
        column("PID", 10),
        column("REQUEST", 20),
        column("SINCE", 0),
    ];
    let mut table = Table::new(out, COLUMNS, false);
    table.header();
    for (place, waiter) in queue.waiters.iter().enumerate() {
        let env = envs.get(&waiter.eid);
        let name = env
            .and_then(|e| e.config.name.as_deref())
            .unwrap_or_default();
        let user = env.map(|e| e.user()).unwrap_or_default();
        let request = describe_request(waiter.count, waiter.index, waiter.over_subscribe);
        table
            .row()
            .number(place + 1)
            .cell(&waiter.eid)
            .cell(name)
            .cell(&user)
            .number(waiter.pid)
            .cell(&request)
            .cell(&waiter.since)
            .end();
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
