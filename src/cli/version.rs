//! `genv version`: the genv release whose files and command lines this one
//! speaks (1.4.3, which clients such as the IDE extensions read); and
//! `genv --version`: this implementation's own release and commit.

use super::{Context, Exit};
use crate::error::Result;

/// This implementation's release: genv 1.4.3's interface, with a fourth
/// number counting its own releases (the Python wheel's version too).
pub(crate) const RELEASE: &str = "1.4.3.1";

pub(crate) fn run(ctx: &mut Context) -> Result<Exit> {
    ctx.out.push_str(env!("CARGO_PKG_VERSION"));
    ctx.out.push('\n');
    Ok(Exit::SUCCESS)
}

/// `genv --version` and `genv -V`.
pub fn long(ctx: &mut Context) -> Result<Exit> {
    ctx.out.push_str(&describe(env!("GENV_BUILD_COMMIT")));
    Ok(Exit::SUCCESS)
}

fn describe(commit: &str) -> String {
    let commit = if commit.is_empty() {
        "unknown commit".to_owned()
    } else {
        format!("commit {commit}")
    };
    format!(
        "genv {RELEASE} ({commit}; compatible with genv {})\n",
        env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wheel_carries_the_same_release() {
        let pyproject = include_str!("../../pyproject.toml");
        assert!(
            pyproject.contains(&format!("\nversion = \"{RELEASE}\"\n")),
            "pyproject.toml's version is not {RELEASE}"
        );
    }

    #[test]
    fn the_version_line_names_the_release_and_the_commit() {
        assert_eq!(
            describe("0123456789ab"),
            "genv 1.4.3.1 (commit 0123456789ab; compatible with genv 1.4.3)\n"
        );
        assert_eq!(
            describe(""),
            "genv 1.4.3.1 (unknown commit; compatible with genv 1.4.3)\n"
        );
    }
}
