//! Shared by the integration tests: a sandbox with its own state folder and
//! simulated GPUs, driving the real `genv` binary.

pub mod daemon;
pub mod users;

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const GENV: &str = env!("CARGO_BIN_EXE_genv");

pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub vars: Vec<(String, String)>,
}

/// What a command did: exit code, stdout and stderr.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(output: Output) -> Self {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "command failed: {self:?}");
        self
    }

    #[track_caller]
    pub fn fails(self) -> Self {
        assert_ne!(self.code, 0, "command should have failed: {self:?}");
        assert!(!self.stderr.contains("panicked"), "panic: {self:?}");
        assert!(
            !self.stderr.contains("RUST_BACKTRACE"),
            "backtrace: {self:?}"
        );
        self
    }
}

impl Sandbox {
    /// A fresh state folder and two simulated 16g GPUs.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sandbox = Sandbox {
            dir,
            vars: Vec::new(),
        };
        sandbox.set("GENV_TMPDIR", sandbox.state().to_str().unwrap());
        sandbox.set("GENV_MOCK_DEVICE_COUNT", "2");
        sandbox
    }

    pub fn set(&mut self, name: &str, value: &str) -> &mut Self {
        self.vars.retain(|(n, _)| n != name);
        self.vars.push((name.into(), value.into()));
        self
    }

    pub fn unset(&mut self, name: &str) -> &mut Self {
        self.vars.retain(|(n, _)| n != name);
        self
    }

    /// The state folder (`$GENV_TMPDIR`), created by genv on first use.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("genv")
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.state().join(name)
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(name)).unwrap_or_default()
    }

    pub fn write(&self, name: &str, content: &str) {
        std::fs::create_dir_all(self.state()).unwrap();
        std::fs::write(self.file(name), content).unwrap();
    }

    /// A `genv` command with the sandbox's variables and none of the
    /// caller's genv variables.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(GENV);
        cmd.args(args);
        self.apply(&mut cmd);
        cmd
    }

    pub fn apply(&self, cmd: &mut Command) {
        for (name, _) in std::env::vars() {
            if name.starts_with("GENV_") || name == "CUDA_VISIBLE_DEVICES" {
                cmd.env_remove(name);
            }
        }
        for (name, value) in &self.vars {
            cmd.env(name, value);
        }
        cmd.stdin(Stdio::null());
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).output().expect("run genv"))
    }

    /// `genv envs activate` for a process of alice (uid 1000), as the
    /// editor extensions register a terminal or a kernel.
    pub fn activate_env(&self, eid: &str, pid: impl Display) -> Run {
        self.activate_env_as(eid, 1000, Some("alice"), pid)
    }

    /// `genv envs activate` with a given uid and, when `Some`, username.
    pub fn activate_env_as(
        &self,
        eid: &str,
        uid: u32,
        username: Option<&str>,
        pid: impl Display,
    ) -> Run {
        let (uid, pid) = (uid.to_string(), pid.to_string());
        let mut args = vec!["envs", "activate", "--eid", eid, "--uid", &uid];
        if let Some(username) = username {
            args.extend(["--username", username]);
        }
        args.extend(["--pid", &pid]);
        self.run(&args)
    }

    /// `genv envs config --eid E name --name N`.
    pub fn config_name(&self, eid: &str, name: &str) -> Run {
        self.run(&["envs", "config", "--eid", eid, "name", "--name", name])
    }

    /// `genv envs config --eid E gpus --count N`.
    pub fn config_gpus(&self, eid: &str, count: impl Display) -> Run {
        let count = count.to_string();
        self.run(&["envs", "config", "--eid", eid, "gpus", "--count", &count])
    }

    /// `genv envs config --eid E gpu-memory --gpu-memory M`.
    pub fn config_memory(&self, eid: &str, memory: &str) -> Run {
        self.run(&[
            "envs",
            "config",
            "--eid",
            eid,
            "gpu-memory",
            "--gpu-memory",
            memory,
        ])
    }

    /// `genv devices attach --eid E --count N`.
    pub fn attach(&self, eid: &str, count: impl Display) -> Run {
        let count = count.to_string();
        self.run(&["devices", "attach", "--eid", eid, "--count", &count])
    }

    /// `genv devices attach --eid E --index I`.
    pub fn attach_index(&self, eid: &str, index: impl Display) -> Run {
        let index = index.to_string();
        self.run(&["devices", "attach", "--eid", eid, "--index", &index])
    }

    /// `genv devices attach --eid E --index I --allow-over-subscription`.
    pub fn attach_shared(&self, eid: &str, index: impl Display) -> Run {
        let index = index.to_string();
        self.run(&[
            "devices",
            "attach",
            "--eid",
            eid,
            "--index",
            &index,
            "--allow-over-subscription",
        ])
    }

    /// `genv devices detach --eid E`: every device.
    pub fn detach(&self, eid: &str) -> Run {
        self.run(&["devices", "detach", "--eid", eid])
    }

    /// `genv devices detach --eid E --index I`.
    pub fn detach_index(&self, eid: &str, index: impl Display) -> Run {
        let index = index.to_string();
        self.run(&["devices", "detach", "--eid", eid, "--index", &index])
    }

    /// `genv devices find --eid E`.
    pub fn find(&self, eid: &str) -> Run {
        self.run(&["devices", "find", "--eid", eid])
    }

    /// What the editor extensions read: `genv envs ps --format csv
    /// --no-header --timestamp`.
    #[track_caller]
    pub fn envs_csv(&self) -> String {
        self.run(&[
            "envs",
            "ps",
            "--format",
            "csv",
            "--no-header",
            "--timestamp",
        ])
        .ok()
        .stdout
    }

    /// What the editor extensions read: `genv devices ps --format csv
    /// --no-header --timestamp`.
    #[track_caller]
    pub fn devices_csv(&self) -> String {
        self.run(&[
            "devices",
            "ps",
            "--format",
            "csv",
            "--no-header",
            "--timestamp",
        ])
        .ok()
        .stdout
    }

    /// A `genv` command run inside environment `eid` (as its shell would,
    /// with `GENV_ENVIRONMENT_ID` set).
    pub fn run_in(&self, eid: &str, args: &[&str]) -> Run {
        let mut cmd = self.cmd(args);
        cmd.env("GENV_ENVIRONMENT_ID", eid);
        Run::from(cmd.output().expect("run genv"))
    }

    pub fn run_stdin(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn genv");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        Run::from(child.wait_with_output().unwrap())
    }

    /// Everything in the state folder, to check that a failed command
    /// changed nothing.
    pub fn snapshot_files(&self) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(self.state())
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().is_file())
                    .map(|e| {
                        (
                            e.file_name().to_string_lossy().into_owned(),
                            std::fs::read(e.path()).unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }
}

/// A process that lives until dropped, to stand for a terminal or a job.
pub struct Sleeper(pub Child);

impl Sleeper {
    pub fn new() -> Self {
        Sleeper(
            Command::new("sleep")
                .arg("100000")
                .spawn()
                .expect("spawn sleep"),
        )
    }

    pub fn with_env(vars: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new("sleep");
        cmd.arg("100000");
        for (n, v) in vars {
            cmd.env(n, v);
        }
        Sleeper(cmd.spawn().expect("spawn sleep"))
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}
