//! Real, different uids for the tests of what one local user can do to
//! another and what root's commands believe: every command runs through
//! `setpriv` with its own real and effective uid and gid and no
//! supplementary groups, so the kernel, not a field in a file, says who
//! it is. The test binary itself must run as root to switch; anything
//! else fails loudly rather than skipping.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{GENV, Run, Sandbox, Sleeper};

/// The victim: an ordinary user with GPU jobs of her own.
pub const ALICE: u32 = 47101;
/// The attacker: an ordinary user who writes whatever she likes into the
/// shared state folder.
pub const MALLORY: u32 = 47102;
/// Root, running what root runs (enforcement, the exporter, the hook).
pub const ROOT: u32 = 0;

/// Fails the test at once, naming why, unless it runs as root: only root
/// can start processes as other users.
#[track_caller]
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the multi-user tests switch uids with setpriv and must run as root \
         (scripts/test runs them as root; run `sudo -E cargo test` otherwise)"
    );
    assert!(
        Path::new("/usr/bin/setpriv").exists() || Path::new("/bin/setpriv").exists(),
        "setpriv (util-linux) is missing: scripts/test installs it"
    );
}

/// `program args` run as `uid` (its own group, no supplementary groups);
/// as itself for root.
pub fn command_as(uid: u32, program: impl AsRef<std::ffi::OsStr>) -> Command {
    if uid == ROOT {
        return Command::new(program);
    }
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(program);
    cmd
}

impl Sandbox {
    /// A sandbox that other users can reach: the temporary folder holding
    /// the state folder as open as `/var/tmp` (1777), the state folder
    /// made by root, 0777, as the README tells an administrator to, and a
    /// home of their own for each test user.
    pub fn multi_user() -> Self {
        require_root();
        let sb = Sandbox::new();
        let top = sb.dir.path();
        std::fs::set_permissions(top, std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::fs::create_dir(sb.state()).unwrap();
        std::fs::set_permissions(sb.state(), std::fs::Permissions::from_mode(0o777)).unwrap();
        for uid in [ALICE, MALLORY] {
            let home = top.join(format!("home-{uid}"));
            std::fs::create_dir_all(&home).unwrap();
            std::os::unix::fs::chown(&home, Some(uid), Some(uid)).unwrap();
        }
        sb
    }

    /// The home folder of a test user (root's is the sandbox itself).
    pub fn home_of(&self, uid: u32) -> PathBuf {
        if uid == ROOT {
            return self.dir.path().to_path_buf();
        }
        self.dir.path().join(format!("home-{uid}"))
    }

    /// `genv args` as `uid`, with the sandbox's variables.
    pub fn cmd_as(&self, uid: u32, args: &[&str]) -> Command {
        let mut cmd = command_as(uid, GENV);
        cmd.args(args);
        self.apply(&mut cmd);
        cmd.env("HOME", self.home_of(uid));
        cmd.current_dir(self.home_of(uid));
        cmd
    }

    pub fn run_as(&self, uid: u32, args: &[&str]) -> Run {
        Run::from(self.cmd_as(uid, args).output().expect("run genv"))
    }

    /// `genv args` as `uid` inside environment `eid`, as its shell runs it.
    pub fn run_as_in(&self, uid: u32, eid: &str, args: &[&str]) -> Run {
        let mut cmd = self.cmd_as(uid, args);
        cmd.env("GENV_ENVIRONMENT_ID", eid);
        Run::from(cmd.output().expect("run genv"))
    }
}

/// A process of `uid` that lives until dropped: a terminal or a job of
/// that user. `program` may be a link to `sleep` under another name (the
/// simulated GPUs' processes are picked by name).
pub fn sleeper_as(uid: u32, program: &Path, vars: &[(&str, &str)]) -> Sleeper {
    let mut cmd = command_as(uid, program);
    cmd.arg("100000")
        .env_remove("GENV_ENVIRONMENT_ID")
        .env_remove("CUDA_VISIBLE_DEVICES")
        .stdin(Stdio::null());
    for (name, value) in vars {
        cmd.env(name, value);
    }
    let sleeper = Sleeper(cmd.spawn().expect("spawn a sleeper as another user"));
    wait_exec(&sleeper, uid);
    sleeper
}

/// Until `setpriv` has become the program as `uid`, so that `/proc` tells
/// the right owner and name.
fn wait_exec(sleeper: &Sleeper, uid: u32) {
    let status = format!("/proc/{}/status", sleeper.pid());
    let comm = format!("/proc/{}/comm", sleeper.pid());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let owner = std::fs::read_to_string(&status).ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        });
        let name = std::fs::read_to_string(&comm).unwrap_or_default();
        if owner.as_deref() == Some(&uid.to_string()) && name.trim() != "setpriv" {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process {} never ran as uid {uid}",
            sleeper.pid()
        );
        std::thread::yield_now();
    }
}

/// Whether a process is still running (not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
