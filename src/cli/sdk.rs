//! `genv sdk`: the plumbing under the Python SDK (`import genv`), hidden
//! from help. Each subcommand prints one line of JSON on stdout, so the
//! state logic stays here and the Python package only parses answers; an
//! error is genv's usual line on stderr with exit code 1.
//!
//! The other SDK calls use the public commands (`envs deactivate`,
//! `devices attach|detach|find`, `genv lock`), which already print what
//! the SDK needs.

use std::io::Read;

use serde_json::{Value, json};

use super::{Context, Exit, SdkArgs, SdkCommand};
use crate::error::{Error, Result};
use crate::provision::{self, Activation, Attach, Configure};
use crate::session;
use crate::state::{Config, LoadOptions, Transaction};

pub(crate) fn run(args: SdkArgs, ctx: &mut Context) -> Result<Exit> {
    let answer = match args.command {
        SdkCommand::Activate { eid, pid, config } => {
            let config = config.as_deref().map(parse_config).transpose()?;
            activate(ctx, &eid, pid, config)?
        }
        SdkCommand::Configure { eid, config } => {
            let config = parse_config(&config)?;
            let mut tx = ctx.dir.transaction(LoadOptions::default())?;
            let env = tx
                .envs_mut()?
                .get_mut(&eid)
                .ok_or_else(|| Error::new(format!("Environment {eid} does not exist")))?;
            env.config = config.clone();
            // Attachments follow the new capacity, as `genv config` does.
            provision::update_capacity(tx.devices_mut()?, &eid, config.gpu_memory.as_deref());
            let answer = describe(&mut tx, &eid)?;
            tx.commit()?;
            answer
        }
        SdkCommand::Show { eid } => {
            let mut tx = ctx.dir.transaction(LoadOptions::default())?;
            let answer = describe(&mut tx, &eid)?;
            tx.commit()?;
            answer
        }
        SdkCommand::Devices => {
            let survey = ctx.dir.survey(ctx.backend.get(), false)?;
            let mut tx = ctx.dir.transaction(LoadOptions::default())?;
            let devices: Vec<Value> = tx
                .reconcile(&survey)?
                .devices
                .iter()
                .map(|d| {
                    json!({
                        "index": d.index,
                        "total_memory": d.total_memory,
                        "total_bytes": d.total_bytes(),
                    })
                })
                .collect();
            tx.commit()?;
            json!({ "devices": devices })
        }
        SdkCommand::Attached => attached(ctx)?,
        SdkCommand::Hold => return hold(ctx),
    };
    ctx.out.push_str(&answer.to_string());
    ctx.out.push('\n');
    Ok(Exit::SUCCESS)
}

/// `{"indices": […]}`: a container's devices are the lock files mounted
/// into its state folder (their names are the host's indices, as genv
/// 1.4.3's SDK reads them); a process elsewhere has `CUDA_VISIBLE_DEVICES`.
fn attached(ctx: &Context) -> Result<Value> {
    let indices = if crate::env_vars::get(crate::env_vars::GENV_CONTAINER).is_some() {
        crate::state::device_locks::lockable(&ctx.dir)
    } else {
        super::lock::visible_indices().ok_or_else(crate::error::reference::no_attached_indices)?
    };
    Ok(json!({ "indices": indices }))
}

/// `{"name": …, "gpu_memory": …, "gpus": …}`, every field optional, checked
/// as `genv config` checks them.
fn parse_config(text: &str) -> Result<Config> {
    let config: Config = serde_json::from_str(text)
        .map_err(|e| Error::new(format!("invalid configuration '{text}': {e}")))?;
    if let Some(memory) = &config.gpu_memory {
        crate::memory::validate(memory)?;
    }
    if let Some(name) = &config.name {
        session::validate_name(name)?;
    }
    if config.gpus.is_some_and(|g| g < 0) {
        return Err(Error::new(format!(
            "invalid device count {}: expected 0 or more",
            config.gpus.unwrap_or_default()
        )));
    }
    Ok(config)
}

/// Creates (or joins) the environment for process `pid`, replaces its
/// configuration when one is given, and attaches the configured count
/// when it is attached to nothing, in one transaction: a failure leaves
/// no half-activated environment behind.
fn activate(ctx: &Context, eid: &str, pid: i64, config: Option<Config>) -> Result<Value> {
    let activation = Activation {
        eid,
        pid,
        config: config.map_or(Configure::Keep, Configure::Replace),
        attach: Attach::ConfiguredIfDetached,
        over_subscribe: false,
        survey_always: false,
    };
    provision::activate(&ctx.dir, &ctx.backend, activation)?;
    let mut tx = ctx.dir.transaction(LoadOptions::default())?;
    let answer = describe(&mut tx, eid)?;
    tx.commit()?;
    Ok(answer)
}

/// `{"eid": …, "config": {…} or null, "indices": […]}`: what the SDK keeps
/// in the process's environment variables.
fn describe(tx: &mut Transaction<'_>, eid: &str) -> Result<Value> {
    let config = tx.envs()?.get(eid).map(|e| e.config.clone());
    let indices = session::attached(tx, eid);
    // The memory cap library for LD_PRELOAD, when the environment has a
    // capacity and the library is installed next to genv.
    let preload = config
        .as_ref()
        .and_then(|c| c.gpu_memory.as_ref())
        .and_then(|_| crate::memcap::library())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| crate::memcap::preloadable(p));
    Ok(json!({ "eid": eid, "config": config, "indices": indices, "preload": preload }))
}

/// Run by the SDK under `genv lock`: says `held` once the locks are taken,
/// then keeps them until the SDK writes to its standard input (leaving
/// `genv.sdk.lock()`) or closes it (the Python process died). Not EOF
/// alone: a process forked inside the block keeps the pipe open. Writes at
/// once, not through `main`: the SDK waits for this line before it
/// returns.
fn hold(ctx: &mut Context) -> Result<Exit> {
    ctx.out.push_str("held\n");
    ctx.flush()
        .map_err(|e| Error::new(format!("could not say the locks are held: {e}")))?;
    let mut byte = [0u8; 1];
    let mut stdin = std::io::stdin().lock();
    loop {
        match stdin.read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // Data, end of input, or a broken input: the SDK is done.
            _ => return Ok(Exit::SUCCESS),
        }
    }
}
