//! `genv deactivate`: leave the environment and print the shell code that
//! puts every variable back.

use super::DeactivateArgs;
use crate::error::{Error, Result};
use crate::session;
use crate::shell::Action;
use crate::state::{LoadOptions, StateDir};

pub fn run(args: DeactivateArgs, dir: &StateDir, out: &mut String) -> Result<()> {
    let shell_pid = args
        .shell
        .ok_or_else(|| Error::msg(session::NOT_INITIALIZED))?;
    session::require_eid()?;
    let mut tx = dir.transaction(LoadOptions::default())?;
    tx.envs()?.cleanup(|pid| pid != shell_pid, |_, _| true);
    // Loading the devices drops the attachments of an environment whose
    // last terminal this was. Without a driver there is nothing to drop.
    let backend = crate::backend::detect();
    let _ = tx.devices(backend.as_ref(), false);
    tx.commit()?;
    out.push_str(&super::activate::shell_of(shell_pid).render(&[Action::Restore]));
    Ok(())
}
