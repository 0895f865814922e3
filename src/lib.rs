//! genv: GPU environments, compatible with genv 1.4.3's files and command
//! lines.

pub mod backend;
pub mod cli;
pub mod enforce;
pub mod env_vars;
pub mod error;
pub mod memory;
pub mod procs;
pub mod state;
pub mod timefmt;

use std::io::Write;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command};
use error::Result;
use state::StateDir;

/// Runs genv with the process's arguments and returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let mut out = String::new();
    let result = run(cli, &mut out);
    // Print what was produced even when an error follows, as the reference
    // does; a closed pipe is not an error.
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush());
    match result {
        Ok(()) => 0,
        Err(e) => {
            let message = e.to_string();
            eprintln!("{}", message.trim_end_matches('\n'));
            1
        }
    }
}

fn run(cli: Cli, out: &mut String) -> Result<()> {
    let dir = StateDir::from_env();
    let Some(command) = cli.command else {
        // The VS Code extension probes `genv` alone: help, exit 0.
        out.push_str(&Cli::command().render_help().to_string());
        return Ok(());
    };
    match command {
        Command::Envs(args) => cli::envs::run(args, &dir, out),
        Command::Devices(args) => cli::devices::run(args, &dir, backend::detect().as_ref(), out),
        Command::Usage(args) => cli::usage::run(args, &dir, backend::detect().as_ref(), out),
        Command::Home(args) => cli::home::run(args.quiet, out),
        Command::Lock(args) => {
            // The command's exit code is ours; the locks are given back.
            let code = cli::lock::run(args, &dir)?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::Version => {
            cli::version::run(out);
            Ok(())
        }
    }
}
