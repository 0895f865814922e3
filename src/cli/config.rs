//! `genv config`: show or change the current environment's configuration.

use std::fmt::Write;

use super::{ConfigArgs, ConfigFieldArg, Context, Exit};
use crate::error::{Error, Result};
use crate::provision;
use crate::session;
use crate::state::{Config, LoadOptions};

pub(crate) fn run(args: ConfigArgs, ctx: &mut Context) -> Result<Exit> {
    let out = &mut ctx.out;
    let eid = session::require_eid()?;
    // Check what the user typed before touching the state.
    let gpus = match &args.field {
        Some(ConfigFieldArg::Gpus { value: Some(v) }) => Some(v.parse::<u32>().map_err(|_| {
            Error::new(format!(
                "invalid number of GPUs '{v}': expected a whole number like 1 or 2"
            ))
        })?),
        _ => None,
    };
    if let Some(ConfigFieldArg::GpuMemory { value: Some(v) }) = &args.field {
        crate::memory::validate(v)?;
    }
    if let Some(ConfigFieldArg::Name { value: Some(v) }) = &args.field {
        session::validate_name(v)?;
    }
    let home = session::home();
    if args.save && home.is_none() {
        // Said before anything changes: genv 1.4.3 changes the
        // configuration and saves nothing, without a word.
        return Err(Error::hinted(
            "no .genv folder in the working directory or in $HOME to save the configuration to; nothing was changed",
            "create one (mkdir .genv) and run the command again",
        ));
    }
    let mut tx = ctx.dir.transaction(LoadOptions::default())?;
    let stored = tx
        .envs()?
        .get(&eid)
        .map(|e| e.config.clone())
        .unwrap_or_default();
    let mut config = match (&home, args.load) {
        (Some(home), true) => session::load_config(home)?,
        (None, true) => Config::default(),
        _ => stored.clone(),
    };
    match args.field {
        Some(field) => {
            let (value, slot): (Option<String>, FieldSlot) = match field {
                ConfigFieldArg::GpuMemory { value } => (value, FieldSlot::GpuMemory),
                // Checked above: `gpus` is the parsed value when one was given.
                ConfigFieldArg::Gpus { .. } => (gpus.map(|g| g.to_string()), FieldSlot::Gpus),
                ConfigFieldArg::Name { value } => (value, FieldSlot::Name),
            };
            if args.clear {
                slot.set(&mut config, None);
            } else if let Some(value) = value {
                slot.set(&mut config, Some(value));
            } else if !args.quiet
                && let Some(value) = slot.get(&config)
            {
                let _ = writeln!(out, "{}", crate::escape::terminal(&value));
            }
        }
        None => {
            if args.clear {
                config = Config::default();
            } else if !args.quiet {
                for slot in [FieldSlot::GpuMemory, FieldSlot::Gpus, FieldSlot::Name] {
                    if let Some(value) = slot.get(&config) {
                        let value = crate::escape::terminal(&value);
                        let _ = writeln!(out, "{}: {value}", slot.name());
                    }
                }
            }
        }
    }
    // A device count set by this command (`config gpus N`, or `--load`)
    // detaches the surplus at once, highest index first; a change of
    // anything else leaves the attachments' number alone.
    let count_set = gpus.is_some() || config.gpus != stored.gpus;
    let mut detached = Vec::new();
    if config != stored || count_set {
        if config != stored
            && let Some(env) = tx.envs_mut()?.get_mut(&eid)
        {
            env.config = config.clone();
        }
        let wanted = config
            .gpus
            .filter(|_| count_set)
            .and_then(|g| usize::try_from(g).ok());
        let attached = match wanted {
            Some(_) => tx.devices()?.indices_of(&eid),
            None => Vec::new(),
        };
        let surplus = wanted.is_some_and(|wanted| attached.len() > wanted);
        if config.gpu_memory != stored.gpu_memory || surplus {
            let devices = tx.devices_mut()?;
            provision::update_capacity(devices, &eid, config.gpu_memory.as_deref());
            if let Some(wanted) = wanted.filter(|_| surplus) {
                provision::detach_surplus(devices, &eid, wanted);
                let kept = devices.indices_of(&eid);
                detached = attached.into_iter().filter(|i| !kept.contains(i)).collect();
            }
        }
    }
    tx.commit()?;
    if !detached.is_empty() {
        crate::messages::note(detached_note(&detached, config.gpus.unwrap_or(0)));
    }
    if args.save
        && let Some(home) = home
    {
        session::save_config(&home, &config)?;
    }
    Ok(Exit::SUCCESS)
}

/// What `config gpus` detached: `detached from GPU 1 (the environment is
/// configured for 1 GPU)`.
fn detached_note(indices: &[u32], gpus: i64) -> String {
    let list = indices
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    format!(
        "detached from GPU{} {list} (the environment is configured for {gpus} GPU{})",
        plural(indices.len()),
        plural(usize::try_from(gpus).unwrap_or(0)),
    )
}

#[derive(Clone, Copy)]
enum FieldSlot {
    GpuMemory,
    Gpus,
    Name,
}

impl FieldSlot {
    fn name(self) -> &'static str {
        match self {
            FieldSlot::GpuMemory => "gpu-memory",
            FieldSlot::Gpus => "gpus",
            FieldSlot::Name => "name",
        }
    }

    fn get(self, config: &Config) -> Option<String> {
        match self {
            FieldSlot::GpuMemory => config.gpu_memory.as_deref().map(str::to_owned),
            FieldSlot::Gpus => config.gpus.map(|g| g.to_string()),
            FieldSlot::Name => config.name.as_deref().map(str::to_owned),
        }
    }

    fn set(self, config: &mut Config, value: Option<String>) {
        match self {
            FieldSlot::GpuMemory => config.gpu_memory = value.map(Into::into),
            FieldSlot::Gpus => config.gpus = value.and_then(|v| v.parse().ok()),
            FieldSlot::Name => config.name = value.map(Into::into),
        }
    }
}
