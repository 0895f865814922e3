//! Asking every host: in parallel over SSH, the hosts that did not answer
//! reported (or an error, with `--exit-on-error`), what the others said
//! read into the caller's type.

use std::os::unix::process::CommandExt;

use serde::de::DeserializeOwned;

use super::ssh::{Answer, Ssh};
use super::{Host, command_line};
use crate::error::{Error, Result};
use crate::escape;
use crate::messages::{warn, warn_hint};

/// Asks every host in parallel and reports the hosts that did not answer.
pub(crate) struct Asker<'a> {
    pub ssh: Ssh,
    pub hosts: &'a [Host],
    /// `--quiet`: a host that failed is not reported.
    pub quiet: bool,
    /// `--exit-on-error`: a host that failed is an error.
    pub throw_on_error: bool,
}

impl Asker<'_> {
    /// Says that a host failed, as `--quiet` and `--exit-on-error` ask.
    pub(crate) fn failed(&self, message: String, hint: Option<String>) -> Result<()> {
        if self.throw_on_error {
            return Err(match hint {
                Some(hint) => Error::hinted(message, hint),
                None => Error::new(message),
            });
        }
        if !self.quiet {
            match hint {
                Some(hint) => warn_hint(message, hint),
                None => warn(message),
            }
        }
        Ok(())
    }

    /// The hosts that answered (`answers` in the order of `hosts`) with
    /// what they said read by `read`; the others reported. Also whether
    /// all answered. What a host said on stderr is shown with its name.
    pub(crate) fn read<T>(
        &self,
        hosts: &[Host],
        answers: Vec<Answer>,
        what: &str,
        read: impl Fn(&str) -> std::result::Result<T, String>,
    ) -> Result<(bool, Vec<(Host, T)>)> {
        let mut all = true;
        let mut answered = Vec::new();
        for (host, answer) in hosts.iter().zip(answers) {
            let shown = escape::terminal(&host.hostname);
            let (message, hint) = match answer {
                Answer::Ok { stdout, stderr } => match read(&stdout) {
                    Ok(value) => {
                        for line in stderr.lines() {
                            crate::messages::relay(format_args!(
                                "[{shown}] {}",
                                escape::terminal(line)
                            ));
                        }
                        answered.push((host.clone(), value));
                        continue;
                    }
                    Err(e) => (format!("Failed reading the {what} of {shown} ({e})"), None),
                },
                Answer::Failed { code, stderr } => failure(&host.hostname, code, &stderr),
            };
            all = false;
            self.failed(message, hint)?;
        }
        Ok((all, answered))
    }

    /// `genv usage snapshot --type KIND` (all of it without a kind) on
    /// every host (genv 1.4.3's protocol): the hosts that answered with
    /// their snapshots, and whether all did.
    pub(crate) fn snapshots<T: DeserializeOwned>(
        &self,
        kind: Option<&str>,
    ) -> Result<(bool, Vec<(Host, T)>)> {
        let mut args: Vec<String> = ["genv", "usage", "snapshot"].map(str::to_owned).to_vec();
        if let Some(kind) = kind {
            args.extend(["--type".to_owned(), kind.to_owned()]);
        }
        let answers = self.ssh.ask_all(self.hosts, &args);
        self.read(self.hosts, answers, "snapshot", |stdout| {
            serde_json::from_str::<T>(stdout).map_err(|e| e.to_string())
        })
    }

    /// `sh -c SCRIPT` on every host.
    pub(crate) fn script(&self, script: &str) -> Vec<Answer> {
        let line = command_line(&["sh", "-c", script]);
        self.ssh.run_all(self.hosts, |_| Some((line.clone(), None)))
    }

    /// Replaces this process with `ssh -tt host LINE`: a terminal there
    /// even when this one has none, so that the remote command ends with
    /// the connection.
    pub(crate) fn exec_on(&self, host: &Host, args: &[String]) -> Error {
        let err = self.ssh.terminal_command(host, &command_line(args)).exec();
        Error::new(format!("cannot run {}: {err}", self.ssh.program[0]))
    }
}

/// A failed host's message, and a hint when genv is not on its PATH.
pub(crate) fn failure(hostname: &str, code: Option<i32>, stderr: &str) -> (String, Option<String>) {
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
}
