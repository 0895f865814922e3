//! `genv home`: the `.genv` folder of the working directory or of `$HOME`.

use super::{Context, Exit, HomeArgs};
use crate::error::Result;
use crate::session;

pub(crate) fn run(args: HomeArgs, ctx: &mut Context) -> Result<Exit> {
    match session::home() {
        Some(path) => {
            ctx.out.push_str(&path.to_string_lossy());
            ctx.out.push('\n');
            Ok(Exit::SUCCESS)
        }
        None if args.quiet => Ok(Exit::SUCCESS),
        None => Err(crate::error::reference::no_home()),
    }
}
