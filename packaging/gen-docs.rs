//! Writes genv's man pages and shell completions, generated from its clap
//! definitions, into a `share` folder laid out as the man and completion
//! loaders look for them:
//!
//!     man/man1/genv.1, genv-activate.1, genv-devices-attach.1, …
//!     bash-completion/completions/genv
//!     zsh/site-functions/_genv
//!     fish/vendor_completions.d/genv.fish
//!
//! `cargo run --example gen-docs -- ~/.local/share` (or `/usr/local/share`
//! as root) installs them; scripts/build-deb puts them in the package.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use genv::shell::Shell;

/// Each completion script: the shell, and where in `share` it goes.
const COMPLETIONS: [(Shell, &str); 3] = [
    (Shell::Bash, "bash-completion/completions/genv"),
    (Shell::Zsh, "zsh/site-functions/_genv"),
    (Shell::Fish, "fish/vendor_completions.d/genv.fish"),
];

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(share), None) = (args.next(), args.next()) else {
        eprintln!("usage: cargo run --example gen-docs -- SHARE_DIR   (e.g. ~/.local/share)");
        return ExitCode::from(2);
    };
    match write(Path::new(&share)) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err((path, error)) => {
            eprintln!("gen-docs: error: {}: {error}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// Writes every page and script under `share`; returns their paths, or
/// the path that failed and why.
fn write(share: &Path) -> Result<Vec<PathBuf>, (PathBuf, std::io::Error)> {
    let man = share.join("man/man1");
    std::fs::create_dir_all(&man).map_err(|e| (man.clone(), e))?;
    let mut written = Vec::new();
    pages(genv::command(), &man, &mut written)?;
    for (shell, relative) in COMPLETIONS {
        let path = share.join(relative);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder).map_err(|e| (folder.to_owned(), e))?;
        }
        let script = genv::cli::shell::completions(shell);
        std::fs::write(&path, script).map_err(|e| (path.clone(), e))?;
        written.push(path);
    }
    Ok(written)
}

/// One page for the command and one for each visible subcommand, at any
/// depth (`genv-devices-attach.1`), as clap_mangen names them.
fn pages(
    mut command: clap::Command,
    man: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<(), (PathBuf, std::io::Error)> {
    // Built first: each verb's arguments are deferred until it runs, and
    // building gives each subcommand its `genv-…` page name.
    command = command.disable_help_subcommand(true);
    command.build();
    // Every page's footer names genv and its version, when it has one.
    let source = match command.get_version() {
        Some(version) => format!("genv {version}"),
        None => "genv".to_owned(),
    };
    let mut stack = vec![command];
    while let Some(command) = stack.pop() {
        stack.extend(
            command
                .get_subcommands()
                .filter(|verb| !verb.is_hide_set())
                .cloned(),
        );
        let page = clap_mangen::Man::new(command).source(source.as_str());
        let path = page.generate_to(man).map_err(|e| (man.to_owned(), e))?;
        written.push(path);
    }
    Ok(())
}
