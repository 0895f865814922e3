//! `genv status`: the current environment, its devices and configuration.

use std::fmt::Write;

use super::{Context, Exit};
use crate::error::Result;
use crate::escape::{self, terminal};
use crate::session;
use crate::state::{Config, LoadOptions};

pub(crate) fn run(ctx: &mut Context) -> Result<Exit> {
    let out = &mut ctx.out;
    let dir = &ctx.dir;
    let Some(eid) = session::eid() else {
        out.push_str("Environment is not active\n");
        return Ok(Exit::SUCCESS);
    };
    let mut tx = dir.transaction(LoadOptions::default())?;
    let (config, uid, known) = match tx.envs()?.get(&eid) {
        Some(env) => (env.config.clone(), u32::try_from(env.uid).ok(), true),
        None => (from_variables(), None, false),
    };
    let mut indices = session::attached(&mut tx, &eid);
    let envs = tx.envs()?.clone();
    let mut queue = tx.queue()?.clone();
    tx.commit()?;
    // Only entries whose process still waits (queue.json is anyone's).
    queue.keep_waiting_at(dir);
    if !known && crate::env_vars::get(crate::env_vars::GENV_CONTAINER).is_some() {
        indices = in_container(dir);
    }
    let _ = writeln!(out, "Environment is active ({})", escape::terminal(&eid));
    if indices.is_empty() {
        out.push_str("Detached from GPUs\n");
    } else {
        let list: Vec<String> = indices.iter().map(u32::to_string).collect();
        let _ = writeln!(out, "Attached to GPUs at indices {}", list.join(","));
    }
    // As Python's `value or 'N/A'`: empty strings and a count of 0 are N/A.
    // Another user may have named the environment: show it as data.
    let or_na = |v: Option<String>| {
        v.filter(|v| !v.is_empty())
            .map(|v| escape::terminal(&v).into_owned())
            .unwrap_or_else(|| "N/A".into())
    };
    let capped = config.gpu_memory.as_deref().is_some_and(|m| !m.is_empty());
    let _ = write!(
        out,
        "\nConfiguration\n    Name: {}\n    Device count: {}\n    GPU memory capacity: {}\n\n",
        or_na(config.name.map(String::from)),
        or_na(config.gpus.filter(|&g| g != 0).map(|g| g.to_string())),
        or_na(config.gpu_memory.map(String::from))
    );
    if capped {
        let uid = uid.unwrap_or_else(crate::caller::uid);
        let usage = dir
            .root_dir()
            .ok()
            .and_then(|root| crate::state::memcap_ledger::usage(root, uid, &eid));
        out.push_str(&memory_cap(&indices, usage.as_ref()));
    }
    // Not in genv 1.4.3, and only when there is something to say, so the
    // usual output stays the same.
    let mut locks = String::new();
    for &index in &indices {
        let holders = crate::state::device_locks::lock_holders(dir, index, &envs);
        if holders.is_empty() {
            continue;
        }
        let describe = |h: &crate::state::device_locks::Holder| {
            let env = h.eid.as_deref().and_then(|e| envs.get(e));
            // The user is the holding process's owner, as the kernel says;
            // the environment is what the shared state claims.
            match (h.eid.as_deref().map(terminal), env) {
                (Some(eid), Some(_)) => format!(
                    "environment {eid} ({}, pid {}, {})",
                    terminal(&h.user()),
                    h.pid,
                    h.mode()
                ),
                (Some(eid), None) => format!("environment {eid} (pid {}, {})", h.pid, h.mode()),
                (None, _) => format!("pid {} ({})", h.pid, h.mode()),
            }
        };
        let held: Vec<String> = holders
            .iter()
            .filter(|h| !h.waiting)
            .map(describe)
            .collect();
        let waiting: Vec<String> = holders.iter().filter(|h| h.waiting).map(describe).collect();
        let state = if held.is_empty() {
            "free".to_owned()
        } else {
            format!("held by {}", held.join(", "))
        };
        let _ = write!(locks, "    GPU {index}: {state}");
        if !waiting.is_empty() {
            let _ = write!(locks, "; waiting: {}", waiting.join(", "));
        }
        locks.push('\n');
    }
    if !locks.is_empty() {
        let _ = write!(out, "Device locks\n{locks}\n");
    }
    let ours: Vec<(usize, &crate::state::Waiter)> = queue
        .waiters
        .iter()
        .enumerate()
        .filter(|(_, w)| w.eid == eid)
        .collect();
    if !ours.is_empty() {
        out.push_str("Waiting for GPUs\n");
        for (place, waiter) in ours {
            let _ = writeln!(
                out,
                "    place {} in line (pid {}, since {})",
                place + 1,
                waiter.pid,
                escape::terminal(&waiter.since)
            );
        }
        out.push('\n');
    }
    Ok(Exit::SUCCESS)
}

/// Whether this shell's processes are held to the capacity, and what the
/// environment's processes hold by the cap's count (not in genv 1.4.3:
/// shown only for an environment with a capacity).
fn memory_cap(indices: &[u32], usage: Option<&crate::state::memcap_ledger::Usage>) -> String {
    let state = match crate::memcap::preloaded() {
        Some(library) if std::path::Path::new(&library).is_file() => {
            format!("enforced (LD_PRELOAD holds {})", escape::terminal(&library))
        }
        Some(library) => format!(
            "not enforced: LD_PRELOAD names {}, which does not exist; enforcement (genv enforce) is the backstop",
            escape::terminal(&library)
        ),
        None => format!(
            "not enforced in this shell: LD_PRELOAD does not hold {}; enforcement (genv enforce) is the backstop",
            crate::memcap::LIBRARY
        ),
    };
    let mut text = format!("GPU memory cap\n    {state}\n");
    if let Some(usage) = usage {
        for index in indices {
            let used = usage.get(index).copied().unwrap_or(0);
            let _ = writeln!(
                text,
                "    GPU {index}: {}MiB allocated by the environment's processes",
                crate::memory::to_mib(used)
            );
        }
    }
    text.push('\n');
    text
}

/// A container's devices, which its own state folder does not record
/// (the host's does): the lock files the hook mounted into it, named by
/// the host's indices (as `genv sdk attached` reads them), else the
/// indices the hook gave the NVIDIA hook in `NVIDIA_VISIBLE_DEVICES`.
fn in_container(dir: &crate::state::StateDir) -> Vec<u32> {
    let mounted = crate::state::device_locks::lockable(dir);
    if !mounted.is_empty() {
        return mounted;
    }
    let visible = crate::env_vars::get(crate::env_vars::NVIDIA_VISIBLE_DEVICES).unwrap_or_default();
    // `void`, `none`, `all` or UUIDs: nothing known by index.
    visible
        .split(',')
        .map(|i| i.trim().parse::<u32>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .unwrap_or_default()
}

/// The configuration as the shell's variables carry it.
fn from_variables() -> Config {
    use crate::env_vars::{self as ev, get};
    Config {
        name: get(ev::GENV_ENVIRONMENT_NAME).map(Into::into),
        gpu_memory: get(ev::GENV_GPU_MEMORY).map(Into::into),
        gpus: get(ev::GENV_GPUS).and_then(|g| g.parse().ok()),
    }
}
