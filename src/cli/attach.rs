//! `genv attach`: attach devices to the current environment.

use super::AttachArgs;
use crate::error::Result;
use crate::provision::{self, Request};
use crate::session;
use crate::state::{LoadOptions, StateDir};

pub fn run(args: AttachArgs, dir: &StateDir) -> Result<()> {
    let eid = session::require_eid()?;
    if args.refresh {
        return Ok(());
    }
    let backend = crate::backend::detect();
    let request = Request {
        count: args.count,
        index: args.index,
        over_subscribe: args.over_subscribe,
    };
    if let Some(wait) = args.wait {
        return provision::attach_waiting(dir, backend.as_ref(), &eid, request, wait);
    }
    let mut tx = dir.transaction(LoadOptions::default())?;
    tx.devices(backend.as_ref(), true)?;
    super::devices::attach(&mut tx, backend.as_ref(), &eid, request)?;
    tx.commit()
}
