//! `genv home`: the `.genv` folder of the working directory or of `$HOME`.

use std::path::PathBuf;

use crate::error::{Error, Result};

const NOT_FOUND: &str = "Could not find any Genv configuration directory.

Create a directory named '.genv' under one of the following directories:
  1) Current working directory (i.e. $PWD)
  2) Home directory (i.e. $HOME)
";

/// The configuration folder, as genv 1.4.3's `genv.sdk.home()` finds it.
pub fn find() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    [cwd, home]
        .into_iter()
        .flatten()
        .map(|dir| dir.join(".genv"))
        .find(|p| p.is_dir())
}

pub fn run(quiet: bool, out: &mut String) -> Result<()> {
    match find() {
        Some(path) => {
            out.push_str(&path.to_string_lossy());
            out.push('\n');
            Ok(())
        }
        None if quiet => Ok(()),
        None => Err(Error::msg(NOT_FOUND)),
    }
}
