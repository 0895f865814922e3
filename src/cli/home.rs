//! `genv home`: the `.genv` folder of the working directory or of `$HOME`.

use super::{Context, Exit, HomeArgs};
use crate::error::{Error, Result};
use crate::session;

const NOT_FOUND: &str = "Could not find any Genv configuration directory.

Create a directory named '.genv' under one of the following directories:
  1) Current working directory (i.e. $PWD)
  2) Home directory (i.e. $HOME)
";

pub fn run(args: HomeArgs, ctx: &mut Context) -> Result<Exit> {
    match session::home() {
        Some(path) => {
            ctx.out.push_str(&path.to_string_lossy());
            ctx.out.push('\n');
            Ok(Exit::SUCCESS)
        }
        None if args.quiet => Ok(Exit::SUCCESS),
        None => Err(Error::msg(NOT_FOUND)),
    }
}
