//! Snapshots of what users see: the tables of `envs`, `devices` and
//! `status`, and the shell code each shell evals. A change shows as a diff
//! to review (`cargo insta review`); a mismatch fails the test.
//!
//! The state is written as fixed files so times are stable; pids and the
//! sandbox's path are replaced by placeholders that keep the columns.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use crate::common::{Run, Sandbox, Sleeper};

/// A name that must stay data in every shell.
const HOSTILE: &str = "it's \"q\" $HOME `id` \\ x\nline two";

/// A name with quotes, `$` and backticks that fits a table column.
/// (Control characters in tables are escaped by a rule of their own.)
const QUOTED: &str = "it's \"q\" `$x`";

/// Replaces each pid (with the spaces that pad its column) by `[PID]` and
/// the sandbox's folder by `[SANDBOX]`, keeping the width of table columns.
fn scrub(sb: &Sandbox, text: &str, pids: &[u32]) -> String {
    let mut text = text.replace(sb.dir.path().to_str().unwrap(), "[SANDBOX]");
    // The memory cap library is found next to the genv binary.
    let bin = std::path::Path::new(crate::common::GENV).parent().unwrap();
    text = text.replace(bin.to_str().unwrap(), "[BIN]");
    for pid in pids {
        let pid = pid.to_string();
        let mut out = String::new();
        let mut rest = text.as_str();
        while let Some(at) = rest.find(&pid) {
            let before = rest[..at].chars().next_back();
            let after = rest[at + pid.len()..].chars().next();
            // Not part of a longer word, a date, a time or `alice(1000)`.
            let joined = |c: Option<char>| {
                c.is_some_and(|c| c.is_ascii_alphanumeric() || "/:()".contains(c))
            };
            let bounded = !joined(before) && !joined(after);
            out.push_str(&rest[..at]);
            rest = &rest[at + pid.len()..];
            if bounded {
                let pad = rest.len() - rest.trim_start_matches(' ').len();
                // A short pid still keeps a space before the next column.
                let width = (pid.len() + pad).max("[PID]".len() + pad.min(1));
                out.push_str(&format!("{:<width$}", "[PID]"));
                rest = &rest[pad..];
            } else {
                out.push_str(&pid);
            }
        }
        out.push_str(rest);
        text = out;
    }
    text
}

/// What users see of a command: its output, and its errors and exit code
/// when there are any.
fn shown(run: &Run) -> String {
    let mut text = run.stdout.clone();
    if !run.stderr.is_empty() {
        text += &format!("--- stderr\n{}", run.stderr);
    }
    if run.code != 0 {
        text += &format!("--- exit code {}\n", run.code);
    }
    text
}

/// Ages ("3 weeks ago") as `[AGE]`, padded to the envs table's column
/// when another column follows.
fn ages() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            r"\d+ (second|minute|hour|day|week)s? ago +",
            "[AGE]                ",
        ),
        (r"\d+ (second|minute|hour|day|week)s? ago", "[AGE]"),
    ]
}

/// Two environments, one of alice attached to GPU 0 with a capacity and
/// one with a quoted name on GPU 1, at fixed times. The second has no
/// username and a uid above the largest pid (2^22), so that replacing pids
/// never touches it.
fn fixed_state(sb: &Sandbox, a: u32, b: u32) {
    let name = serde_json::to_string(QUOTED).unwrap();
    sb.write(
        "envs.json",
        &format!(
            r#"{{"envs": [
  {{"eid": "aaa", "uid": 1000, "creation": "01/02/2024 10:00:00", "username": "alice",
    "config": {{"name": "train", "gpu_memory": "4g", "gpus": 1}}, "pids": [{a}], "kernel_ids": []}},
  {{"eid": "bbb", "uid": 4200000, "creation": "02/02/2024 11:30:00", "username": null,
    "config": {{"name": {name}, "gpu_memory": null, "gpus": null}}, "pids": [{b}, {a}], "kernel_ids": []}}
]}}"#
        ),
    );
    sb.write(
        "devices.json",
        r#"{"devices": [
  {"index": 0, "total_memory": "15258mi", "attachments": [
    {"eid": "aaa", "gpu_memory": "4g", "time": "01/02/2024 10:00:05"}]},
  {"index": 1, "total_memory": "15258mi", "attachments": [
    {"eid": "bbb", "gpu_memory": null, "time": "02/02/2024 11:30:05"}]}
]}"#,
    );
}

#[test]
fn envs_and_devices_tables() {
    let sb = Sandbox::new();
    let (a, b) = (Sleeper::new(), Sleeper::new());
    fixed_state(&sb, a.pid(), b.pid());
    let pids = [a.pid(), b.pid()];
    let show = |args: &[&str]| scrub(&sb, &shown(&sb.run(args)), &pids);

    insta::assert_snapshot!("envs_tui", show(&["envs", "ps", "--timestamp"]));
    insta::assert_snapshot!(
        "envs_csv",
        show(&["envs", "ps", "--format", "csv", "--timestamp"])
    );
    insta::assert_snapshot!("devices_tui", show(&["devices", "ps", "--timestamp"]));
    insta::assert_snapshot!(
        "devices_csv",
        show(&["devices", "ps", "--format", "csv", "--timestamp"])
    );
    // Without --timestamp, ages depend on today: filtered.
    insta::with_settings!({filters => ages()}, {
        insta::assert_snapshot!("envs_default", show(&["envs"]));
        insta::assert_snapshot!("devices_default", show(&["devices"]));
    });
}

#[test]
fn status_in_an_active_environment() {
    let sb = Sandbox::new();
    let (a, b) = (Sleeper::new(), Sleeper::new());
    fixed_state(&sb, a.pid(), b.pid());
    let pids = [a.pid(), b.pid()];
    insta::assert_snapshot!(
        "status_attached",
        scrub(&sb, &shown(&sb.run_in("aaa", &["status"])), &pids)
    );
    insta::assert_snapshot!(
        "status_quoted_name",
        scrub(&sb, &shown(&sb.run_in("bbb", &["status"])), &pids)
    );
    insta::assert_snapshot!("status_inactive", shown(&sb.run(&["status"])));
}

/// Runs `genv lock` in environment `eid` until its stdin closes, returning
/// once the lock is held.
fn hold_lock(sb: &Sandbox, eid: &str) -> Child {
    let mut holder = sb
        .cmd(&["lock", "sh", "-c", "echo in; read x"])
        .env("GENV_ENVIRONMENT_ID", eid)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "in\n");
    holder
}

#[test]
fn device_locks_and_queue_tables() {
    let sb = Sandbox::new();
    let (a, b) = (Sleeper::new(), Sleeper::new());
    fixed_state(&sb, a.pid(), b.pid());
    let empty = |args: &[&str]| shown(&sb.run(args));
    insta::assert_snapshot!("locks_none", empty(&["devices", "locks"]));
    insta::assert_snapshot!("queue_empty", empty(&["devices", "queue"]));

    let mut holder = hold_lock(&sb, "aaa");
    // The waiter for GPU 1 (taken by bbb) says so on stderr once in line.
    let job = Sleeper::new();
    sb.activate_env("www", job.pid()).ok();
    sb.config_name("www", "waiter").ok();
    let mut waiter = sb
        .cmd(&[
            "devices", "attach", "--eid", "www", "--index", "1", "--wait",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(waiter.stderr.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();

    let pids = [a.pid(), b.pid(), job.pid(), holder.id(), waiter.id()];
    let mut filters = ages();
    filters.push((r"\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2}", "[TIME]"));
    insta::with_settings!({filters => filters}, {
        insta::assert_snapshot!("locks_held", scrub(&sb, &shown(&sb.run(&["devices", "locks"])), &pids));
        insta::assert_snapshot!("queue_one_waiter", scrub(&sb, &shown(&sb.run(&["devices", "queue"])), &pids));
    });

    holder.stdin.take().unwrap().write_all(b"done\n").unwrap();
    assert!(holder.wait().unwrap().success());
    sb.detach("bbb").ok();
    assert!(waiter.wait().unwrap().success());
}

/// A live shell process, so that `--shell PID` finds bash, zsh or fish;
/// it waits on its stdin until dropped.
struct ShellProcess(Child);

impl ShellProcess {
    fn new(shell: &str) -> Self {
        let mut cmd = Command::new(shell);
        match shell {
            "bash" => cmd.args(["--norc", "--noprofile", "-c", "read -r x"]),
            "zsh" => cmd.args(["-f", "-c", "read -r x"]),
            _ => cmd.args(["--no-config", "-c", "read x"]),
        };
        let child = cmd
            .stdin(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{shell} is not installed ({e}); scripts/test installs it"));
        // genv tells the shell by its name in /proc; under load the name
        // can lag the spawn, so wait (with a deadline) until it shows.
        let comm = format!("/proc/{}/comm", child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::fs::read_to_string(&comm).unwrap_or_default().trim() != shell {
            assert!(
                std::time::Instant::now() < deadline,
                "{shell} never showed in {comm}"
            );
            std::thread::yield_now();
        }
        ShellProcess(child)
    }

    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for ShellProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn shell_code_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let mut sb = Sandbox::new();
        sb.set(
            "XDG_CACHE_HOME",
            sb.dir.path().join("cache").to_str().unwrap(),
        );
        let process = ShellProcess::new(shell);
        let pid = process.pid();
        let pids = [process.0.id()];
        let show = |sb: &Sandbox, args: &[&str]| scrub(sb, &shown(&sb.run(args)), &pids);

        let activate = show(
            &sb,
            &[
                "activate",
                "--shell",
                &pid,
                "--name",
                HOSTILE,
                "--gpus",
                "1",
                "--gpu-memory",
                "4g",
            ],
        );
        insta::assert_snapshot!(format!("activate_{shell}"), activate);

        sb.set("GENV_ENVIRONMENT_ID", &pid);
        sb.set("GENV_SHELL", "1");
        insta::assert_snapshot!(
            format!("reattach_{shell}"),
            show(&sb, &["shell", "--reattach", shell])
        );
        sb.config_name(&pid, "renamed").ok();
        sb.config_memory(&pid, "2g").ok();
        insta::assert_snapshot!(
            format!("reconfigure_{shell}"),
            show(&sb, &["shell", "--reconfigure", shell])
        );
        sb.detach(&pid).ok();
        insta::assert_snapshot!(
            format!("reattach_detached_{shell}"),
            show(&sb, &["shell", "--reattach", shell])
        );
        insta::assert_snapshot!(
            format!("deactivate_{shell}"),
            show(&sb, &["deactivate", "--shell", &pid])
        );
        sb.unset("GENV_ENVIRONMENT_ID");
        sb.unset("GENV_SHELL");
        insta::assert_snapshot!(
            format!("init_{shell}"),
            show(&sb, &["shell", "--init", shell])
        );
    }
}

/// Names another user wrote with an escape sequence, a newline that would
/// forge a row, a right-to-left override and a comma: shown as data.
#[test]
fn hostile_names_in_tables() {
    let mut sb = Sandbox::new();
    let a = Sleeper::new();
    let name = serde_json::to_string("evil\u{1b}[31m\nfake row\u{202e}txt,x").unwrap();
    let user = serde_json::to_string("mal\u{7}lory").unwrap();
    sb.write(
        "envs.json",
        &format!(
            r#"{{"envs": [{{"eid": "aaa", "uid": 1000, "creation": "01/02/2024 10:00:00", "username": {user},
    "config": {{"name": {name}, "gpu_memory": null, "gpus": null}}, "pids": [{}], "kernel_ids": []}}]}}"#,
            a.pid()
        ),
    );
    sb.write(
        "devices.json",
        r#"{"devices": [{"index": 0, "total_memory": "15258mi", "attachments": [
    {"eid": "aaa", "gpu_memory": null, "time": "01/02/2024 10:00:05"}]}]}"#,
    );
    let pids = [a.pid()];
    let show = |sb: &Sandbox, args: &[&str]| scrub(sb, &shown(&sb.run(args)), &pids);
    insta::assert_snapshot!(
        "hostile_envs_tui",
        show(&sb, &["envs", "ps", "--timestamp"])
    );
    insta::assert_snapshot!(
        "hostile_envs_csv",
        show(&sb, &["envs", "ps", "--format", "csv", "--timestamp"])
    );
    insta::assert_snapshot!(
        "hostile_devices_tui",
        show(&sb, &["devices", "ps", "--timestamp"])
    );
    sb.set("GENV_ENVIRONMENT_ID", "aaa");
    insta::assert_snapshot!("hostile_status", show(&sb, &["status"]));
}
