//! The commit genv is built from, for `genv --version`: `git rev-parse`
//! when the source is a git checkout, else `GENV_BUILD_COMMIT` as the
//! builder gives it (a source archive), else nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=GENV_BUILD_COMMIT");
    let commit = std::env::var("GENV_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            watch_head();
            git_commit()
        })
        .unwrap_or_default();
    println!("cargo:rustc-env=GENV_BUILD_COMMIT={commit}");
}

fn git_commit() -> Option<String> {
    let output = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let commit = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    commit
        .bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then_some(commit)
}

/// Builds again when HEAD moves: the files that name the commit, those
/// that exist (a missing one would make cargo run this script every time).
fn watch_head() {
    let Some(git) = git_dir(Path::new(".git")) else {
        return;
    };
    let head = git.join("HEAD");
    watch(&head);
    if let Ok(text) = std::fs::read_to_string(&head)
        && let Some(name) = text.trim().strip_prefix("ref: ")
    {
        // A worktree's branches live in the common folder.
        let common = std::fs::read_to_string(git.join("commondir"))
            .map(|c| git.join(c.trim()))
            .unwrap_or_else(|_| git.clone());
        watch(&common.join(name));
        watch(&common.join("packed-refs"));
    }
}

/// `.git` itself, or the folder a worktree's `.git` file points to.
fn git_dir(dot_git: &Path) -> Option<PathBuf> {
    if dot_git.is_dir() {
        return Some(dot_git.to_owned());
    }
    let text = std::fs::read_to_string(dot_git).ok()?;
    Some(PathBuf::from(text.trim().strip_prefix("gitdir: ")?))
}

fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
