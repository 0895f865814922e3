//! `genv activate`: create or join an environment and print the shell code
//! that enters it.

use super::{ActivateArgs, Context, Exit};
use crate::env_vars::{self as ev, get};
use crate::error::reference;
use crate::error::{Error, Result};
use crate::provision::{self, Activated, Activation, Attach, Configure};
use crate::session;
use crate::shell::{Action, Shell};
use crate::state::Config;

pub(crate) fn run(mut args: ActivateArgs, ctx: &mut Context) -> Result<Exit> {
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
    let loaded = if args.no_load {
        None
    } else {
        session::home()
            .map(|home| session::load_config(&home))
            .transpose()?
    };
    let activation = Activation {
        eid: &eid,
        pid: shell_pid,
        config: Configure::Merge {
            initial: loaded,
            set: Config {
                name: args.name.take().map(Into::into),
                gpu_memory: args.gpu_memory.take().map(Into::into),
                gpus: args.gpus.map(Into::into),
            },
        },
        attach: if args.no_attach {
            Attach::No
        } else {
            Attach::Configured { wait: args.wait }
        },
        over_subscribe: args.over_subscribe,
        survey_always: false,
    };
    let Activated {
        config,
        indices,
        created,
    } = provision::activate(&ctx.dir, &ctx.backend, activation)?;
    if created && args.eid.is_some() {
        // A mistyped identifier would otherwise make a new environment
        // without a word.
        crate::messages::note(format_args!(
            "made a new environment '{}' (no active environment has that identifier)",
            crate::escape::terminal(&eid)
        ));
    }

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
