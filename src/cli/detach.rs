//! `genv detach`: detach the current environment from one device or all.

use super::{Context, DetachArgs, Exit};
use crate::error::{Error, Result};
use crate::provision;
use crate::session;
use crate::state::LoadOptions;

pub(crate) fn run(args: DetachArgs, ctx: &mut Context) -> Result<Exit> {
    let eid = session::require_eid()?;
    let mut tx = ctx.dir.transaction(LoadOptions::default())?;
    if let Some(index) = args.index
        && !tx.devices()?.indices_of(&eid).contains(&index)
    {
        // Nothing to detach is a mistake worth a word (genv 1.4.3 says
        // nothing and exits 0); nothing is written.
        return Err(Error::hinted(
            format!("this environment is not attached to GPU {index}"),
            "'genv status' names the GPUs it is attached to",
        ));
    }
    provision::detach(tx.devices_mut()?, &eid, args.index);
    tx.commit()?;
    Ok(Exit::SUCCESS)
}
