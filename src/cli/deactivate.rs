//! `genv deactivate`: leave the environment and print the shell code that
//! puts every variable back.

use super::{Context, DeactivateArgs, Exit};
use crate::error::Result;
use crate::error::reference;
use crate::session;
use crate::shell::{Action, Shell};
use crate::state::LoadOptions;

pub(crate) fn run(args: DeactivateArgs, ctx: &mut Context) -> Result<Exit> {
    let shell_pid = args.shell.ok_or_else(reference::not_initialized)?;
    session::require_eid()?;
    let mut tx = ctx.dir.transaction(LoadOptions::default())?;
    tx.envs_mut()?.cleanup(|pid| pid != shell_pid, |_, _| true);
    // Loading the devices drops the attachments of an environment whose
    // last terminal this was.
    tx.devices()?;
    tx.commit()?;
    ctx.out
        .push_str(&Shell::of_pid(shell_pid).render(&[Action::Restore]));
    Ok(Exit::SUCCESS)
}
