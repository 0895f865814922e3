//! `genv detach`: detach the current environment from one device or all.

use super::{Context, DetachArgs, Exit};
use crate::error::Result;
use crate::provision;
use crate::session;
use crate::state::LoadOptions;

pub(crate) fn run(args: DetachArgs, ctx: &mut Context) -> Result<Exit> {
    let eid = session::require_eid()?;
    let mut tx = ctx.dir.transaction(LoadOptions::default())?;
    provision::detach(tx.devices_mut()?, &eid, args.index);
    tx.commit()?;
    Ok(Exit::SUCCESS)
}
