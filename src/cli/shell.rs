//! `genv shell`: the init script, and the code the shell function evals
//! after `config`, `attach` and `detach`.

use clap::CommandFactory;

use super::{Context, Exit, InitArgs, ShellArgs};
use crate::error::{Error, Result};
use crate::session;
use crate::shell::Shell;
use crate::state::LoadOptions;

const OK: &str = "Your shell is initialized properly and you are all set.
Run the following command to check the status of your environment:

    genv status

If you are not sure how to continue from here, check out the quick start tutorial at https://docs.genv.dev/overview/quickstart.html.

";

pub fn run(args: ShellArgs, ctx: &mut Context) -> Result<Exit> {
    let out = &mut ctx.out;
    let dir = &ctx.dir;
    if let Some(shell) = args.init {
        out.push_str(&shell.unwrap_or_else(Shell::detect).init());
    } else if let Some(shell) = args.deinit {
        out.push_str(shell.unwrap_or_else(Shell::detect).deinit());
    } else if args.ok {
        out.push_str(OK);
    } else if let Some(shell) = args.reattach {
        let eid = session::require_eid()?;
        let mut tx = dir.transaction(LoadOptions::default())?;
        let indices = session::attached(&mut tx, &eid);
        tx.commit()?;
        out.push_str(
            &shell
                .unwrap_or_else(Shell::detect)
                .render(&[session::devices_action(&indices)]),
        );
    } else if let Some(shell) = args.reconfigure {
        let eid = session::require_eid()?;
        let mut tx = dir.transaction(LoadOptions::default())?;
        let config = tx
            .envs()?
            .get(&eid)
            .map(|e| e.config.clone())
            .unwrap_or_default();
        // `config gpus` may have detached devices.
        let indices = session::attached(&mut tx, &eid);
        tx.commit()?;
        let mut actions = session::config_actions(&config);
        actions.push(session::devices_action(&indices));
        out.push_str(&shell.unwrap_or_else(Shell::detect).render(&actions));
    } else if let Some(shell) = args.completions {
        out.push_str(&completions(shell));
    } else {
        out.push_str(crate::error::reference::NOT_INITIALIZED);
        out.push('\n');
    }
    Ok(Exit::SUCCESS)
}

/// The completions for a shell, generated from genv's own command
/// definitions: what `genv shell --completions` prints and the package
/// installs (packaging/gen-docs.rs).
pub fn completions(shell: Shell) -> String {
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut buffer = Vec::new();
    let mut command = super::Cli::command();
    // Each verb's arguments are built only when it runs (`defer`):
    // built here first, the help verb knows their subcommands too.
    for verb in command.get_subcommands_mut() {
        verb.set_bin_name(format!("genv {}", verb.get_name()));
        verb.build();
    }
    clap_complete::generate(generator, &mut command, "genv", &mut buffer);
    String::from_utf8_lossy(&buffer).into_owned()
}

/// `genv init -` (hidden): the shell initialisation that jupyterlab-genv
/// tells its users to evaluate, the same as `genv shell --init`.
pub fn init(args: InitArgs, ctx: &mut Context) -> Result<Exit> {
    let shell = match args.shell.as_deref() {
        None | Some("-") => Shell::detect(),
        Some(name) => clap::ValueEnum::from_str(name, true).map_err(|_| {
            Error::hinted(
                format!(
                    "cannot initialise the shell '{}'",
                    crate::escape::terminal(name)
                ),
                "genv knows bash, zsh and fish; `genv init -` detects the shell",
            )
        })?,
    };
    ctx.out.push_str(&shell.init());
    Ok(Exit::SUCCESS)
}
