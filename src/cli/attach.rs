//! `genv attach`: attach devices to the current environment.

use super::{AttachArgs, Context, Exit};
use crate::error::Result;
use crate::provision::{self, Request};
use crate::session;
use crate::state::LoadOptions;

pub(crate) fn run(args: AttachArgs, ctx: &mut Context) -> Result<Exit> {
    let eid = session::require_eid()?;
    if args.refresh {
        return Ok(Exit::SUCCESS);
    }
    let request = Request {
        count: args.count,
        index: args.index,
        over_subscribe: args.over_subscribe,
    };
    if let Some(wait) = args.wait {
        provision::attach_waiting(&ctx.dir, ctx.backend.get(), &eid, request, wait)?;
        return Ok(Exit::SUCCESS);
    }
    // A GPU may have come or gone: the driver is asked, before the lock,
    // when the GPUs' fingerprint changed.
    let survey = ctx.dir.survey(ctx.backend.get(), false)?;
    let mut tx = ctx.dir.transaction(LoadOptions::default())?;
    tx.reconcile(&survey)?;
    provision::attach_env(&mut tx, &eid, request)?;
    tx.commit()?;
    Ok(Exit::SUCCESS)
}
