//! `genv top`: the live view, or one frame as plain text with `--once`.

use std::time::Duration;

use super::{Context, Exit, TopArgs};
use crate::error::{Error, Result};
use crate::monitor::Snapshot;
use crate::top::{frame, live};

pub(crate) fn run(args: TopArgs, ctx: &mut Context) -> Result<Exit> {
    if args.once {
        let snapshot = Snapshot::take(&ctx.dir, ctx.backend.get())?;
        ctx.out
            .push_str(&frame::plain(&frame::lines(&snapshot, args.sort)));
        return Ok(Exit::SUCCESS);
    }
    if !(args.delay.is_finite() && args.delay >= 0.1) {
        return Err(Error::hinted(
            format!("invalid delay {}", args.delay),
            "give --delay a number of seconds, at least 0.1",
        ));
    }
    live::run(
        &ctx.dir,
        ctx.backend.get(),
        Duration::from_secs_f64(args.delay),
        args.sort,
    )?;
    Ok(Exit::SUCCESS)
}
