//! `genv remote`: ask many hosts over SSH for their devices and
//! environments, or open a shell on one with room for a new environment.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

use serde::de::DeserializeOwned;

use super::{Context, Exit, RemoteArgs, RemoteCommand};
use crate::error::{Error, Result};
use crate::escape;
use crate::messages::{note, warn, warn_hint};
use crate::remote::report::{self, Layout};
use crate::remote::ssh::{Answer, Ssh};
use crate::remote::{self, Host, quote};
use crate::state::{Devices, Envs};

/// genv 1.4.3's message when no host has room.
const NO_HOST: &str = "Cannot find a host with enough available resources";

pub fn run(args: RemoteArgs, ctx: &mut Context) -> Result<Exit> {
    let hostfile = match &args.hostfile {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?),
        None => None,
    };
    let hosts = remote::parse_hosts(
        args.hostnames.as_deref(),
        hostfile.as_deref(),
        args.username.as_deref(),
    )?;
    let asker = Asker {
        ssh: Ssh::from_env(args.timeout),
        hosts: &hosts,
        quiet: args.quiet,
        throw_on_error: args.throw_on_error,
    };
    let (all, text) = match args.command {
        RemoteCommand::Devices(table) => {
            let (all, answers) = asker.snapshots::<Devices>("devices")?;
            let rows: Vec<_> = answers
                .iter()
                .map(|(h, d)| (h.hostname.as_str(), d))
                .collect();
            let layout = Layout {
                format: table.format,
                header: !table.no_header,
                summary: !table.no_summary,
            };
            (all, report::devices(&rows, layout))
        }
        RemoteCommand::Envs { table, timestamp } => {
            let (all, answers) = asker.snapshots::<Envs>("envs")?;
            let rows: Vec<_> = answers
                .iter()
                .map(|(h, e)| (h.hostname.as_str(), e))
                .collect();
            let layout = Layout {
                format: table.format,
                header: !table.no_header,
                summary: !table.no_summary,
            };
            let now = crate::timefmt::local_now();
            (all, report::envs(&rows, layout, timestamp, now))
        }
        RemoteCommand::Query { name, queries } => {
            let (all, answers) = asker.snapshots::<Envs>("envs")?;
            let rows: Vec<_> = answers
                .iter()
                .map(|(h, e)| (h.hostname.as_str(), e))
                .collect();
            (all, report::query(&rows, &name, &queries))
        }
        RemoteCommand::Activate {
            name,
            gpus,
            gpu_memory,
            no_prompt,
        } => {
            let memory = gpu_memory
                .as_deref()
                .map(crate::memory::to_bytes)
                .transpose()?;
            let (_, answers) = asker.snapshots::<Devices>("devices")?;
            let snapshots: Vec<&Devices> = answers.iter().map(|(_, d)| d).collect();
            let Some(index) = report::find_host(&snapshots, gpus, memory) else {
                return Err(Error::msg(NO_HOST));
            };
            let host = &answers[index].0;
            let mut vars = vec![
                "GENV_PREACTIVATE=1".to_owned(),
                format!("GENV_PREACTIVATE_PROMPT={}", if no_prompt { 0 } else { 1 }),
            ];
            if let Some(gpus) = gpus.filter(|&g| g > 0) {
                vars.push(format!("GENV_PREACTIVATE_GPUS={gpus}"));
            }
            if let Some(name) = name.filter(|n| !n.is_empty()) {
                vars.push(format!("GENV_PREACTIVATE_ENVIRONMENT_NAME={name}"));
            }
            if let Some(memory) = gpu_memory {
                vars.push(format!("GENV_PREACTIVATE_GPU_MEMORY={memory}"));
            }
            note(format!(
                "activating an environment on {}",
                escape::terminal(&host.hostname)
            ));
            let err = asker
                .ssh
                .command(host, &preactivate_line(&vars), true)
                .exec();
            return Err(Error::msg(format!(
                "cannot run {}: {err}",
                asker.ssh.program[0]
            )));
        }
    };
    ctx.out.push_str(&text);
    Ok(if all { Exit::SUCCESS } else { Exit(1) })
}

/// genv 1.4.3 also takes `genv remote -host …` and `-hostfile …`
/// (argparse); clap would read `-host` as `-h -o -s -t`, so those two
/// words, before the subcommand, are given their two dashes.
pub fn single_dash_options(mut args: Vec<OsString>) -> Vec<OsString> {
    if args.get(1).is_none_or(|a| a != "remote") {
        return args;
    }
    let mut i = 2;
    while i < args.len() {
        let arg = &args[i];
        if arg == "-host" || arg == "-hostfile" {
            let mut long = OsString::from("-");
            long.push(arg);
            args[i] = long;
        } else if !arg.to_string_lossy().starts_with('-') {
            break;
        }
        // Skip the value of an option that takes one.
        if [
            "-H",
            "--host",
            "--hosts",
            "--hostfile",
            "-l",
            "--username",
            "-t",
            "--timeout",
        ]
        .iter()
        .any(|o| args[i] == *o)
        {
            i += 1;
        }
        i += 1;
    }
    args
}

/// The remote command that replaces the login shell with a login shell
/// whose genv init script activates an environment as `vars` say.
fn preactivate_line(vars: &[String]) -> String {
    let vars: Vec<String> = vars.iter().map(|v| quote(v)).collect();
    format!("exec env {} \"$SHELL\" -l", vars.join(" "))
}

/// Asks every host in parallel and reports the hosts that did not answer.
struct Asker<'a> {
    ssh: Ssh,
    hosts: &'a [Host],
    quiet: bool,
    throw_on_error: bool,
}

impl Asker<'_> {
    /// `genv usage snapshot --type KIND` on every host (genv 1.4.3's
    /// protocol): the hosts that answered with their snapshots, and
    /// whether all did.
    fn snapshots<T: DeserializeOwned>(&self, kind: &str) -> Result<(bool, Vec<(Host, T)>)> {
        let args: Vec<String> = ["genv", "usage", "snapshot", "--type", kind]
            .map(str::to_owned)
            .to_vec();
        let answers = self.ssh.ask_all(self.hosts, &args);
        let mut all = true;
        let mut answered = Vec::new();
        for (host, answer) in self.hosts.iter().zip(answers) {
            let shown = escape::terminal(&host.hostname);
            let (message, hint) = match answer {
                Answer::Ok { stdout, stderr } => match serde_json::from_str::<T>(&stdout) {
                    Ok(snapshot) => {
                        for line in stderr.lines() {
                            eprintln!("[{shown}] {}", escape::terminal(line));
                        }
                        answered.push((host.clone(), snapshot));
                        continue;
                    }
                    Err(e) => (
                        format!("Failed reading the snapshot of {shown} ({e})"),
                        None,
                    ),
                },
                Answer::Failed { code, stderr } => failure(&host.hostname, code, &stderr),
            };
            all = false;
            match hint {
                _ if self.throw_on_error => {
                    return Err(match hint {
                        Some(hint) => Error::hinted(message, hint),
                        None => Error::msg(message),
                    });
                }
                _ if self.quiet => {}
                Some(hint) => warn_hint(message, hint),
                None => warn(message),
            }
        }
        Ok((all, answered))
    }
}

/// genv 1.4.3's line for a host that failed, on one line and safe for a
/// terminal, and a hint when the fix is known.
fn failure(hostname: &str, code: Option<i32>, stderr: &str) -> (String, Option<String>) {
    let reason: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut reason = reason.join("; ");
    if reason.is_empty() {
        reason = match code {
            Some(code) => format!("exit status {code}, nothing on stderr"),
            None => "killed by a signal".to_owned(),
        };
    }
    let host = escape::terminal(hostname);
    let message = format!(
        "Failed running SSH command on {host} ({})",
        escape::terminal(&reason)
    );
    let not_found = code == Some(127)
        && (reason.contains("genv: command not found")
            || reason.contains("genv: not found")
            || reason.contains("genv: No such file"));
    let hint = not_found.then(|| {
        format!(
            "genv is not on the PATH of non-interactive SSH commands on {host}: \
             link it into /usr/local/bin there, or set PATH above the interactive check of ~/.bashrc \
             (or in ~/.ssh/environment, with PermitUserEnvironment yes in sshd_config)"
        )
    });
    (message, hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_one_line_naming_the_host() {
        let (message, hint) = failure("gpu\u{1b}1", Some(255), "ssh: connect\nrefused\n");
        assert_eq!(
            message,
            "Failed running SSH command on gpu\\u{1b}1 (ssh: connect; refused)"
        );
        assert!(hint.is_none());
    }

    #[test]
    fn genv_missing_from_path_gets_a_hint() {
        let (_, hint) = failure("h", Some(127), "bash: line 1: genv: command not found");
        assert!(hint.unwrap().contains("/usr/local/bin"));
        let (_, hint) = failure("h", Some(127), "sh: 1: genv: not found");
        assert!(hint.is_some());
    }

    #[test]
    fn single_dash_host_options_get_two_dashes() {
        let args = |s: &str| s.split(' ').map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            single_dash_options(args("genv remote -l u -host a,b devices")),
            args("genv remote -l u --host a,b devices")
        );
        assert_eq!(
            single_dash_options(args("genv remote -hostfile f envs --name -host")),
            args("genv remote --hostfile f envs --name -host")
        );
        assert_eq!(
            single_dash_options(args("genv envs -host")),
            args("genv envs -host")
        );
    }

    #[test]
    fn the_preactivation_line_quotes_every_value() {
        assert_eq!(
            preactivate_line(&["GENV_PREACTIVATE_ENVIRONMENT_NAME=a b'c".into()]),
            r#"exec env 'GENV_PREACTIVATE_ENVIRONMENT_NAME=a b'\''c' "$SHELL" -l"#
        );
    }
}
