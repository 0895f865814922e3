//! genv: GPU environments, compatible with genv 1.4.3's files and command
//! lines.

pub mod backend;
pub mod cli;
pub mod container;
pub mod context;
pub mod cuda;
pub mod enforce;
pub mod env_vars;
pub mod error;
pub mod escape;
pub mod memcap;
pub mod memory;
pub mod messages;
pub mod monitor;
pub mod os;
pub mod output;
pub mod provision;
pub mod remote;
pub mod session;
pub mod shell;
pub mod shim;
pub mod smi;
pub mod state;
pub mod timefmt;
pub mod top;

use std::io::Write;

use clap::{CommandFactory, FromArgMatches};

use cli::{Cli, Command};
use context::{Context, Exit};
use error::Result;
use state::StateDir;

/// Runs genv with the process's arguments and returns the exit code: the
/// one place that decides how genv exits.
pub fn main() -> i32 {
    // Run as `nvidia-smi` or `docker` (a link in the shims folder).
    if let Some(code) = shim::dispatch() {
        return code;
    }
    let args = cli::remote::single_dash_options(std::env::args_os().collect());
    let cli = match command()
        .try_get_matches_from(args)
        .and_then(|matches| Cli::from_arg_matches(&matches))
    {
        Ok(cli) => cli,
        Err(e) => {
            // The shell function evals what `activate` and `deactivate`
            // print: their help goes to stderr, as genv 1.4.3 does it.
            let evaluated = std::env::args_os()
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
    let mut ctx = Context::new(StateDir::from_env());
    let result = run(cli, &mut ctx);
    // Print what was produced even when an error follows, as the reference
    // does; a closed pipe is not an error.
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(ctx.out.as_bytes())
        .and_then(|()| stdout.flush());
    match result {
        Ok(Exit(code)) => code,
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

/// The command line, accepting unambiguous prefixes of long options
/// (`--form csv`, `--no-h`) as genv 1.4.3's argparse does.
pub fn command() -> clap::Command {
    fn infer(command: clap::Command) -> clap::Command {
        command.infer_long_args(true).mut_subcommands(infer)
    }
    infer(Cli::command())
}

/// Every verb has the same shape: its arguments and the context in, an
/// exit status out.
fn run(cli: Cli, ctx: &mut Context) -> Result<Exit> {
    let Some(command) = cli.command else {
        // The VS Code extension probes `genv` alone: help, exit 0.
        ctx.out.push_str(&Cli::command().render_help().to_string());
        return Ok(Exit::SUCCESS);
    };
    match command {
        Command::Activate(args) => cli::activate::run(args, ctx),
        Command::Attach(args) => cli::attach::run(args, ctx),
        Command::Config(args) => cli::config::run(args, ctx),
        Command::Deactivate(args) => cli::deactivate::run(args, ctx),
        Command::Detach(args) => cli::detach::run(args, ctx),
        Command::Docker(args) => cli::docker::run(args, ctx),
        Command::Devices(args) => cli::devices::run(args, ctx),
        Command::Enforce(args) => cli::enforce::run(args, ctx),
        Command::Envs(args) => cli::envs::run(args, ctx),
        Command::Home(args) => cli::home::run(args, ctx),
        Command::Llm(args) => cli::llm::run(args, ctx),
        Command::Lock(args) => cli::lock::run(args, &ctx.dir).map(Exit),
        Command::Sdk(args) => cli::sdk::run(args, ctx),
        Command::Monitor(args) => cli::monitor::run(args, ctx),
        Command::Remote(args) => cli::remote::run(args, ctx),
        Command::Shell(args) => cli::shell::run(args, ctx),
        Command::Status => cli::status::run(ctx),
        Command::Top(args) => cli::top::run(args, ctx),
        Command::Usage(args) => cli::usage::run(args, ctx),
        Command::Version => cli::version::run(ctx),
    }
}
