//! genv: GPU environments, compatible with genv 1.4.3's files and command
//! lines.

pub mod backend;
pub mod cli;
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
pub mod signals;
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
        Ok(code) => code,
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

/// Runs the verb; its exit code (0, or the command's for `genv lock`).
fn run(cli: Cli, out: &mut String) -> Result<i32> {
    let dir = StateDir::from_env();
    let Some(command) = cli.command else {
        // The VS Code extension probes `genv` alone: help, exit 0.
        out.push_str(&Cli::command().render_help().to_string());
        return Ok(0);
    };
    let done = match command {
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
        // The command's exit code is `genv lock`'s; every other verb
        // succeeds with 0.
        Command::Lock(args) => return cli::lock::run(args, &dir),
        Command::Version => {
            cli::version::run(out);
            Ok(())
        }
    };
    done.map(|()| 0)
}
