//! `genv detach`: detach the current environment from one device or all.

use super::DetachArgs;
use crate::error::Result;
use crate::session;
use crate::state::{LoadOptions, StateDir};

pub fn run(args: DetachArgs, dir: &StateDir) -> Result<()> {
    let eid = session::require_eid()?;
    let backend = crate::backend::detect();
    let mut tx = dir.transaction(LoadOptions::default())?;
    super::devices::detach(tx.devices(backend.as_ref(), false)?, &eid, args.index);
    tx.commit()
}
