//! Running one command on many hosts through the system's `ssh`, one
//! thread a host, and collecting what each answered.

use std::process::{Command, Stdio};

use super::{Host, command_line};
use crate::env_vars::GENV_SSH;

/// How `ssh` is run: the program and its own options (`GENV_SSH`, split
/// on whitespace, default `ssh`) and the connection timeout.
#[derive(Debug, Clone)]
pub(crate) struct Ssh {
    pub program: Vec<String>,
    pub timeout: Option<u64>,
}

/// Without `--timeout`, a host that does not answer gives up after this
/// many seconds rather than the system's TCP timeout (minutes).
const DEFAULT_CONNECT_TIMEOUT: u64 = 10;

/// What one host answered: its stdout when the command exited 0, or why
/// not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    Ok { stdout: String, stderr: String },
    Failed { code: Option<i32>, stderr: String },
}

impl Ssh {
    pub(crate) fn from_env(timeout: Option<u64>) -> Self {
        let program = std::env::var(GENV_SSH)
            .ok()
            .map(|s| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| vec!["ssh".to_owned()]);
        Ssh { program, timeout }
    }

    /// `ssh … host LINE`, LINE a command line for the remote shell made
    /// of quoted words; `interactive` asks for a terminal and allows
    /// password prompts, otherwise ssh never waits on the user.
    pub(crate) fn command(&self, host: &Host, line: &str, interactive: bool) -> Command {
        self.command_with(host, line, if interactive { Some("-t") } else { None })
    }

    /// `ssh -tt … host LINE`: a terminal on the host even when this side
    /// has none, so that the remote command ends (SIGHUP) with the
    /// connection.
    pub(crate) fn terminal_command(&self, host: &Host, line: &str) -> Command {
        self.command_with(host, line, Some("-tt"))
    }

    fn command_with(&self, host: &Host, line: &str, terminal: Option<&str>) -> Command {
        let mut cmd = Command::new(&self.program[0]);
        cmd.args(&self.program[1..]);
        if let Some(flag) = terminal {
            cmd.arg(flag);
        } else {
            cmd.args(["-o", "BatchMode=yes"]);
        }
        let timeout = self.timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        cmd.args(["-o", &format!("ConnectTimeout={timeout}")]);
        if let Some(user) = &host.username {
            cmd.args(["-l", user]);
        }
        cmd.arg("--").arg(&host.hostname).arg(line);
        cmd
    }

    /// Runs `args` on every host at once; the answers in the hosts' order.
    pub(crate) fn ask_all(&self, hosts: &[Host], args: &[String]) -> Vec<Answer> {
        let line = command_line(args);
        self.run_all(hosts, |_| Some((line.clone(), None)))
    }

    /// Runs on every host at once the remote command line (and standard
    /// input) that `job` gives for its index, skipping hosts it gives
    /// `None` for (their answer is `None`).
    pub(crate) fn run_all_some(
        &self,
        hosts: &[Host],
        job: impl Fn(usize) -> Option<(String, Option<String>)> + Sync,
    ) -> Vec<Option<Answer>> {
        std::thread::scope(|scope| {
            let threads: Vec<_> = hosts
                .iter()
                .enumerate()
                .map(|(i, host)| {
                    let job = &job;
                    scope.spawn(move || job(i).map(|(line, stdin)| self.ask(host, &line, stdin)))
                })
                .collect();
            threads
                .into_iter()
                .map(|t| {
                    t.join().unwrap_or_else(|_| {
                        Some(Answer::Failed {
                            code: None,
                            stderr: "the thread asking this host panicked".into(),
                        })
                    })
                })
                .collect()
        })
    }

    /// [`Ssh::run_all_some`] for every host.
    pub(crate) fn run_all(
        &self,
        hosts: &[Host],
        job: impl Fn(usize) -> Option<(String, Option<String>)> + Sync,
    ) -> Vec<Answer> {
        self.run_all_some(hosts, job)
            .into_iter()
            .map(|a| {
                a.unwrap_or(Answer::Failed {
                    code: None,
                    stderr: "not asked".into(),
                })
            })
            .collect()
    }

    fn ask(&self, host: &Host, line: &str, stdin: Option<String>) -> Answer {
        let mut command = self.command(host, line, false);
        command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = command.spawn().and_then(|mut child| {
            if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
                // A host that stops reading early is seen in its answer.
                let _ = std::io::Write::write_all(&mut pipe, text.as_bytes());
            }
            child.wait_with_output()
        });
        match output {
            Ok(out) => {
                let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
                if out.status.success() {
                    Answer::Ok { stdout, stderr }
                } else {
                    Answer::Failed {
                        code: out.status.code(),
                        stderr,
                    }
                }
            }
            Err(e) => Answer::Failed {
                code: None,
                stderr: format!("cannot run {}: {e}", self.program[0]),
            },
        }
    }
}
