//! genv: GPU environments, compatible with genv 1.4.3's files and command
//! lines.

pub mod backend;
pub mod cli;
pub mod cuda;
pub mod enforce;
pub mod env_vars;
pub mod error;
pub mod escape;
pub mod memory;
pub mod messages;
pub mod procs;
pub mod provision;
pub mod session;
pub mod shell;
pub mod shim;
pub mod smi;
pub mod state;
pub mod timefmt;

use std::io::Write;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command};
use error::Result;
use state::StateDir;

/// Runs genv with the process's arguments and returns the exit code.
pub fn main() -> i32 {
    // Run as `nvidia-smi` or `docker` (a link in the shims folder).
    if let Some(code) = shim::dispatch() {
        return code;
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // The shell function evals what `activate` and `deactivate`
            // print: their help goes to stderr, as genv 1.4.3 does it.
            let evaluated = std::env::args()
                .nth(1)
                .is_some_and(|a| a == "activate" || a == "deactivate");
            if evaluated && e.kind() == clap::error::ErrorKind::DisplayHelp {
                eprint!("{}", e.render());
                return 0;
            }
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
        Err(error::Error::Interrupted) => 130,
        Err(e) if e.is_reference_message() => {
            // As genv 1.4.3 prints them: a message that ends with a newline
            // gets one more.
            eprintln!("{e}");
            1
        }
        Err(e) => {
            messages::error(&e, e.hint());
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
        Command::Activate(args) => cli::activate::run(args, &dir, out),
        Command::Attach(args) => cli::attach::run(args, &dir),
        Command::Config(args) => cli::config::run(args, &dir, out),
        Command::Deactivate(args) => cli::deactivate::run(args, &dir, out),
        Command::Detach(args) => cli::detach::run(args, &dir),
        Command::Shell(args) => cli::shell::run(args, &dir, out),
        Command::Status => cli::status::run(&dir, out),
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
