//! `genv docker …`: `genv-docker` as a verb of genv.

use super::{Context, DockerArgs, Exit};
use crate::error::Result;

pub fn run(args: DockerArgs, _ctx: &mut Context) -> Result<Exit> {
    Ok(Exit(crate::container::docker::main(args.args)))
}
