//! `genv docker …`: `genv-docker` as a verb of genv.

use super::{Context, DockerArgs, Exit};
use crate::error::Result;

pub(crate) fn run(args: DockerArgs, ctx: &mut Context) -> Result<Exit> {
    crate::container::docker::main(args.args, ctx)
}
