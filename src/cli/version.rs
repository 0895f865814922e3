//! `genv version`: the genv release whose files and command lines this one
//! speaks.

use super::{Context, Exit};
use crate::error::Result;

pub fn run(ctx: &mut Context) -> Result<Exit> {
    ctx.out.push_str(env!("CARGO_PKG_VERSION"));
    ctx.out.push('\n');
    Ok(Exit::SUCCESS)
}
