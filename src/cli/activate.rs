//! `genv activate`: create or join an environment and print the shell code
//! that enters it.

use super::{ActivateArgs, Context, Exit};
use crate::env_vars::{self as ev, get};
use crate::error::reference;
use crate::error::{Error, Result};
use crate::provision::{self, Request};
use crate::session;
use crate::shell::{Action, Shell};
use crate::state::LoadOptions;

pub fn run(mut args: ActivateArgs, ctx: &mut Context) -> Result<Exit> {
    let shell_pid = args.shell.ok_or_else(reference::not_initialized)?;
    if session::eid().is_some() {
        return Err(reference::already_active());
    }
    if args.preactivate {
        args.no_prompt |= get("GENV_PREACTIVATE_PROMPT").as_deref() == Some("0");
        if let Some(gpus) = get("GENV_PREACTIVATE_GPUS").filter(|g| !g.is_empty()) {
            args.gpus = Some(gpus.trim().parse().map_err(|_| {
                Error::new(format!(
                    "GENV_PREACTIVATE_GPUS: '{gpus}' is not a number of GPUs"
                ))
            })?);
        }
        if let Some(memory) = get("GENV_PREACTIVATE_GPU_MEMORY").filter(|m| !m.is_empty()) {
            args.gpu_memory = Some(memory);
        }
        if let Some(name) = get("GENV_PREACTIVATE_ENVIRONMENT_NAME").filter(|n| !n.is_empty()) {
            args.name = Some(name);
        }
    }
    if let Some(memory) = &args.gpu_memory {
        crate::memory::validate(memory)?;
    }
    if let Some(name) = &args.name {
        session::validate_name(name)?;
    }
    let shell = Shell::of_pid(shell_pid);
    let eid = args.eid.clone().unwrap_or_else(|| shell_pid.to_string());
    if eid.is_empty() {
        return Err(Error::new("the environment identifier must not be empty"));
    }
    let loaded = if args.no_load {
        None
    } else {
        session::home()
            .map(|home| session::load_config(&home))
            .transpose()?
    };
    let dir = &ctx.dir;
    let uid = crate::os::procs::current_uid();
    let username = crate::os::procs::username(uid);

    // Asked before the lock in case devices are attached below; whether
    // they are depends on the configuration in the state, so a failure
    // here (no driver) only matters if they are, and then shows there.
    let survey = if args.no_attach {
        None
    } else {
        dir.survey(ctx.backend.get(), false).ok()
    };
    let mut tx = dir.transaction(LoadOptions::default())?;
    let now = tx.now();
    let envs = tx.envs_mut()?;
    let new = !envs.contains(&eid);
    envs.activate(&eid, uid.into(), username, now);
    let env = envs
        .get_mut(&eid)
        .ok_or_else(|| Error::new("environment vanished"))?;
    if !env.pids.contains(&shell_pid) {
        env.pids.push(shell_pid);
    }
    if new && let Some(loaded) = loaded {
        env.config = loaded;
    }
    if let Some(name) = args.name.take() {
        env.config.name = Some(name.into());
    }
    if let Some(memory) = args.gpu_memory.take() {
        env.config.gpu_memory = Some(memory.into());
    }
    if let Some(gpus) = args.gpus {
        env.config.gpus = Some(gpus.into());
    }
    let config = env.config.clone();
    let request = Request {
        over_subscribe: args.over_subscribe,
        ..Request::default()
    };
    let attach = !args.no_attach && config.gpus.is_some();
    match (attach, args.wait) {
        (true, Some(wait)) => {
            tx.commit()?;
            if let Err(e) = provision::attach_waiting(dir, ctx.backend.get(), &eid, request, wait) {
                // Leave no trace of an activation that did not happen.
                let mut tx = dir.transaction(LoadOptions::default())?;
                tx.envs_mut()?.cleanup(|pid| pid != shell_pid, |_, _| true);
                tx.devices()?;
                tx.commit()?;
                return Err(e);
            }
        }
        (true, None) => {
            match &survey {
                Some(survey) => tx.reconcile(survey)?,
                None => tx.reconcile(&dir.survey(ctx.backend.get(), false)?)?,
            };
            provision::attach_env(&mut tx, &eid, request)?;
            tx.commit()?;
        }
        (false, _) => tx.commit()?,
    }
    let mut tx = dir.transaction(LoadOptions::default())?;
    let indices = session::attached(&mut tx, &eid);
    tx.commit()?;

    let mut actions = vec![
        Action::Set(ev::GENV_SHELL, "1".into()),
        Action::Set(ev::GENV_ENVIRONMENT_ID, eid),
    ];
    match session::shims_dir() {
        Ok(shims) => actions.push(Action::PrependPath(shims.to_string_lossy().into_owned())),
        Err(e) => crate::messages::warn(format_args!(
            "{e}; nvidia-smi and docker will not be narrowed to the environment"
        )),
    }
    actions.extend(session::config_actions(&config));
    actions.push(session::devices_action(&indices));
    if !args.no_prompt {
        actions.push(Action::Prompt);
    }
    ctx.out.push_str(&shell.render(&actions));
    Ok(Exit::SUCCESS)
}
