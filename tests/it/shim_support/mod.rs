//! A folder of shims (links named `nvidia-smi` and `docker` to the genv
//! binary) first on PATH, before a folder holding the "real" programs.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{GENV, Run, Sandbox};

pub const SIM: &str = env!("CARGO_BIN_EXE_nvidia-smi-sim");

pub struct ShimBed {
    pub sandbox: Sandbox,
}

impl ShimBed {
    pub fn new() -> Self {
        let bed = ShimBed {
            sandbox: Sandbox::new(),
        };
        let shims = bed.shims();
        let real = bed.real();
        std::fs::create_dir_all(&shims).unwrap();
        std::fs::create_dir_all(&real).unwrap();
        symlink(GENV, shims.join("nvidia-smi")).unwrap();
        symlink(GENV, shims.join("docker")).unwrap();
        bed
    }

    pub fn shims(&self) -> PathBuf {
        self.sandbox.dir.path().join("shims")
    }

    pub fn real(&self) -> PathBuf {
        self.sandbox.dir.path().join("real")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.sandbox.dir.path().join(name)
    }

    /// The stand-in as the real nvidia-smi.
    pub fn real_is_sim(&self) -> &Self {
        symlink(SIM, self.real().join("nvidia-smi")).unwrap();
        self
    }

    /// A real `name` that records its arguments, one a line, in
    /// `<name>.args` and prints `<name>.out`.
    pub fn fake(&self, name: &str, output: &str) -> &Self {
        let dir = self.sandbox.dir.path();
        std::fs::write(dir.join(format!("{name}.out")), output).unwrap();
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{dir}/{name}.args'\ncat '{dir}/{name}.out'\n",
            dir = dir.display()
        );
        let path = self.real().join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    /// What the fake `name` was given.
    pub fn args_of(&self, name: &str) -> Vec<String> {
        let text = std::fs::read_to_string(self.path(&format!("{name}.args"))).unwrap_or_default();
        // `printf '%s\n'` with no arguments prints one empty line.
        if text == "\n" {
            return Vec::new();
        }
        text.lines().map(str::to_owned).collect()
    }

    /// The shim `program` with the sandbox's variables and PATH = shims,
    /// then the real folder, then the system.
    pub fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.shims().join(program));
        cmd.args(args);
        self.sandbox.apply(&mut cmd);
        cmd.env(
            "PATH",
            format!(
                "{}:{}:/usr/bin:/bin",
                self.shims().display(),
                self.real().display()
            ),
        );
        cmd
    }

    pub fn run(&self, program: &str, args: &[&str], vars: &[(&str, &str)]) -> Run {
        let mut cmd = self.cmd(program, args);
        for (n, v) in vars {
            cmd.env(n, v);
        }
        Run::from(cmd.output().expect("run shim"))
    }
}

/// A process named `name` (a link to `sleep`), so that the stand-in's
/// process list holds only this test's processes.
pub fn named_sleeper(dir: &Path, name: &str, vars: &[(&str, &str)]) -> crate::common::Sleeper {
    let link = dir.join(name);
    if !link.exists() {
        let sleep = ["/usr/bin/sleep", "/bin/sleep"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("sleep");
        symlink(sleep, &link).unwrap();
    }
    let mut cmd = Command::new(&link);
    cmd.arg("100000");
    cmd.env_remove("GENV_ENVIRONMENT_ID");
    cmd.env_remove("CUDA_VISIBLE_DEVICES");
    for (n, v) in vars {
        cmd.env(n, v);
    }
    crate::common::Sleeper(cmd.spawn().expect("spawn sleeper"))
}

/// `text` with the pid `old` replaced by `new`, right-aligned in the same
/// columns (the pid column is wide enough for any pid).
pub fn put_pid(text: &str, old: &str, new: u32) -> String {
    let new = new.to_string();
    text.lines()
        .map(|line| {
            let needle = format!(" {old} ");
            match line.find(&needle) {
                Some(at) => {
                    let end = at + 1 + old.len();
                    let start = end - new.len().max(old.len());
                    assert!(
                        line[start..end - old.len()].trim().is_empty(),
                        "no room: {line}"
                    );
                    format!(
                        "{}{new:>w$}{}",
                        &line[..start],
                        &line[end..],
                        w = end - start
                    )
                }
                None => line.to_owned(),
            }
        })
        .map(|l| l + "\n")
        .collect()
}

/// Positions of the table's borders in a line.
pub fn bars(line: &str) -> Vec<usize> {
    line.char_indices()
        .filter(|(_, c)| *c == '|' || *c == '+')
        .map(|(i, _)| i)
        .collect()
}
