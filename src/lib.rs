//! genv: GPU environments, compatible with genv 1.4.3's files and command
//! lines.
//!
//! What genv says goes through one place each: stderr through
//! [`messages`], the error that ends a program through [`error::report`],
//! stdout through [`context::Context`]'s printer, the exit code through
//! [`main`]. Clippy's `print_stdout`, `print_stderr` and `exit` lints keep
//! the print macros and `exit` out of the rest of the crate.
#![warn(clippy::print_stdout, clippy::print_stderr, clippy::exit)]

pub mod backend;
pub(crate) mod caller;
pub mod cli;
pub(crate) mod container;
pub(crate) mod context;
pub(crate) mod cuda;
pub(crate) mod daemon;
pub(crate) mod docker_args;
pub mod enforce;
pub(crate) mod env_vars;
pub mod error;
pub(crate) mod escape;
pub(crate) mod memcap;
pub(crate) mod memory;
pub(crate) mod messages;
pub mod monitor;
pub mod os;
pub(crate) mod output;
pub mod provision;
pub(crate) mod remote;
pub(crate) mod session;
pub mod shell;
pub(crate) mod shim;
pub mod smi;
pub mod state;
pub(crate) mod timefmt;
pub(crate) mod top;

use std::ffi::OsString;
use std::path::Path;

use clap::{CommandFactory, FromArgMatches};

use cli::{Cli, Command};
use context::{Context, Exit, Printing};
use error::Result;
use state::StateDir;

/// A program genv is when run under another name: its arguments (without
/// `argv[0]`) and the context in, an exit status out, as every verb.
type Program = fn(Vec<OsString>, &mut Context) -> Result<Exit>;

/// Runs genv with the process's arguments and returns the exit code: the
/// one place that decides how genv exits. `argv[0]` says which program
/// genv is: itself, a shim (a link in the shims folder), or the container
/// toolkit's engine wrapper, runtime or hook.
pub fn main() -> i32 {
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    let name = Path::new(&arg0).file_name().and_then(|n| n.to_str());
    let program: Program = match name.unwrap_or_default() {
        shim::nvidia_smi::PROGRAM => shim::nvidia_smi::run,
        shim::docker::PROGRAM => shim::docker::run,
        container::docker::PROGRAM => container::docker::main,
        container::runtime::PROGRAM => container::runtime::main,
        container::hook::PROGRAM => container::hook::main,
        _ => return genv(),
    };
    // They run another program or pass its output on as it comes.
    let mut ctx = Context::printing(StateDir::from_env(), Printing::Stream);
    let result = program(args.collect(), &mut ctx);
    let part = name.unwrap_or_default();
    if part == container::runtime::PROGRAM || part == container::hook::PROGRAM {
        let _ = ctx.flush();
        return match result {
            Ok(Exit(code)) => code,
            Err(e) => error::report_in_line(&e, part),
        };
    }
    finish(result, &mut ctx)
}

/// genv as itself: the command line parsed, the verb run, here or, when
/// a daemon serves the state folder, by the daemon.
fn genv() -> i32 {
    let args = cli::remote::single_dash_options(std::env::args_os().collect());
    let words: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut out = String::new();
    let cli = match parse(args, &mut out) {
        Ok(cli) => cli,
        Err(code) => {
            // Help, through the one printer of stdout.
            let mut ctx = Context::new(StateDir::from_env());
            ctx.out = out;
            let _ = ctx.flush();
            return code;
        }
    };
    // `genv lock` runs a command under the locks: its output is the
    // command's, as it comes.
    let printing = match cli.command {
        Some(Command::Lock(_)) => Printing::Stream,
        _ => Printing::Buffer,
    };
    let mut ctx = Context::printing(StateDir::from_env(), printing);
    if cli.runs_in_daemon()
        && let Some(socket) = daemon::client::find(&ctx.dir)
    {
        use daemon::client::Around;
        let around = match cli.command {
            Some(Command::Activate(_)) => Around::Shims,
            Some(Command::Lock(args)) => Around::Held(args.command),
            _ => Around::Nothing,
        };
        let result = daemon::client::run(&socket, words, around, &mut ctx).map(Exit);
        return finish(result, &mut ctx);
    }
    let result = run(cli, &mut ctx);
    finish(result, &mut ctx)
}

/// The command line parsed; or what clap said (help into `out`, for
/// stdout; an error on stderr) and the exit code.
pub(crate) fn parse(args: Vec<OsString>, out: &mut String) -> std::result::Result<Cli, i32> {
    let evaluated = args
        .get(1)
        .is_some_and(|a| a == "activate" || a == "deactivate")
        && args.iter().any(|a| a == "--shell");
    // Built once and kept: the daemon parses every request, and building
    // the definition is most of a parse.
    static PARSER: std::sync::Mutex<Option<clap::Command>> = std::sync::Mutex::new(None);
    let matches = {
        let mut parser = PARSER.lock().unwrap_or_else(|e| e.into_inner());
        parser
            .get_or_insert_with(command)
            .try_get_matches_from_mut(args)
    };
    match matches.and_then(|matches| Cli::from_arg_matches(&matches)) {
        Ok(cli) => Ok(cli),
        Err(e) => {
            // A shell function evals what `activate` and `deactivate`
            // print when it passes `--shell`: their help goes to stderr
            // then (today's function runs `--help` itself; one from an
            // older init script may not). Otherwise help goes to stdout,
            // as every verb's does.
            if evaluated && e.kind() == clap::error::ErrorKind::DisplayHelp {
                messages::clap_error(e.render());
                return Err(0);
            }
            let text = e.render().to_string();
            match text.strip_prefix("error: ") {
                // A usage error in genv's voice, like every other error.
                Some(rest) if e.use_stderr() => {
                    messages::clap_error(format!("genv: error: {rest}"))
                }
                _ if e.use_stderr() => messages::clap_error(text),
                _ => out.push_str(&text),
            }
            Err(e.exit_code())
        }
    }
}

/// Prints what was produced, even when an error follows, as the reference
/// does (a closed pipe is not an error), then the error; returns the exit
/// code.
fn finish(result: Result<Exit>, ctx: &mut Context) -> i32 {
    let _ = ctx.flush();
    match result {
        Ok(Exit(code)) => code,
        Err(e) => error::report(&e),
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
pub(crate) fn run(cli: Cli, ctx: &mut Context) -> Result<Exit> {
    if cli.version {
        return cli::version::long(ctx);
    }
    let Some(command) = cli.command else {
        // The VS Code extension probes `genv` alone: help, exit 0.
        ctx.out.push_str(&Cli::command().render_help().to_string());
        return Ok(Exit::SUCCESS);
    };
    match command {
        Command::Activate(args) => cli::activate::run(args, ctx),
        Command::Attach(args) => cli::attach::run(args, ctx),
        Command::Config(args) => cli::config::run(args, ctx),
        Command::Daemon => daemon::run(ctx),
        Command::Deactivate(args) => cli::deactivate::run(args, ctx),
        Command::Detach(args) => cli::detach::run(args, ctx),
        Command::Docker(args) => cli::docker::run(args, ctx),
        Command::Devices(args) => cli::devices::run(args, ctx),
        Command::Enforce(args) => cli::enforce::run(args, ctx),
        Command::Envs(args) => cli::envs::run(args, ctx),
        Command::Home(args) => cli::home::run(args, ctx),
        Command::Init(args) => cli::shell::init(args, ctx),
        Command::Llm(args) => cli::llm::run(args, ctx),
        Command::Lock(args) => cli::lock::run(args, ctx),
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
