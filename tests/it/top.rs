//! `genv top`: one frame as text (`--once`), and the live view driven in
//! a real terminal (tmux): it shows the machine, refreshes, sorts and
//! quits with `q`. Screens are read by polling with a deadline.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::Sandbox;
use crate::monitor::{GpuProcess, gpu_processes, poll};

/// Two environments and a process outside them:
/// - `ta` (alice, named `train`, 4g, on GPU 0) with a process on both GPUs,
/// - `tb` (bob, on GPU 1) with a process on GPU 0,
/// - a process on GPU 1 in no environment.
fn machine(sb: &mut Sandbox, name: &str) -> Vec<GpuProcess> {
    let spawn = gpu_processes(sb, name);
    let a = spawn(&[("GENV_ENVIRONMENT_ID", "ta")]);
    let b = spawn(&[("GENV_ENVIRONMENT_ID", "tb"), ("CUDA_VISIBLE_DEVICES", "0")]);
    let stray = spawn(&[("CUDA_VISIBLE_DEVICES", "1")]);
    sb.activate_env_as("ta", 1000, Some("alice"), a.pid()).ok();
    sb.activate_env_as("tb", 1001, Some("bob"), b.pid()).ok();
    sb.config_name("ta", "train").ok();
    sb.config_memory("ta", "4g").ok();
    sb.attach_index("ta", 0).ok();
    sb.attach_index("tb", 1).ok();
    vec![a, b, stray]
}

fn scrub(text: &str, processes: &[GpuProcess]) -> String {
    let mut text = text.to_owned();
    for (i, p) in processes.iter().enumerate() {
        let pid = p.pid().to_string();
        text = text.replace(
            &format!("{pid:<8} "),
            &format!("{:<8} ", format!("[PID{i}]")),
        );
    }
    text
}

#[test]
fn once_prints_the_frame_as_text() {
    let mut sb = Sandbox::new();
    let processes = machine(&mut sb, "gt-once");
    let run = sb.run(&["top", "--once"]).ok();
    assert_eq!(run.stderr, "");
    insta::assert_snapshot!("top_once", scrub(&run.stdout, &processes));

    let by_env = sb.run(&["top", "--once", "--sort", "env"]).ok().stdout;
    let rows: Vec<&str> = by_env
        .lines()
        .skip_while(|l| !l.starts_with("PID"))
        .skip(1)
        .collect();
    assert!(rows[0].contains(" -  "), "{by_env}");
    assert!(rows[1].contains(" ta "), "{by_env}");
    assert!(rows[2].contains(" tb "), "{by_env}");
}

#[test]
fn once_escapes_names_from_the_shared_state() {
    let mut sb = Sandbox::new();
    let processes = machine(&mut sb, "gt-hostile");
    sb.config_name("ta", "x\u{1b}[31mred\nrow").ok();
    let out = sb.run(&["top", "--once"]).ok().stdout;
    assert!(!out.contains('\u{1b}'), "{out}");
    assert!(out.contains("ta (x\\u{1b}[31mred\\nrow) 4g"), "{out}");
    drop(processes);
}

struct Tmux {
    socket: String,
}

impl Tmux {
    /// `genv top` in a 120x40 terminal; when it exits the pane says so.
    fn start(sb: &Sandbox) -> Tmux {
        let socket = sb.dir.path().join("tmux.sock").to_str().unwrap().to_owned();
        let bin = Path::new(crate::common::GENV).parent().unwrap();
        let mut cmd = Command::new("tmux");
        cmd.args(["-S", &socket, "-f", "/dev/null", "new-session", "-d"]);
        cmd.args(["-s", "top", "-x", "120", "-y", "40"]);
        cmd.args([
            "env",
            "-i",
            &format!("PATH={}:/usr/bin:/bin", bin.display()),
            "TERM=xterm-256color",
        ]);
        for (name, value) in &sb.vars {
            cmd.arg(format!("{name}={value}"));
        }
        cmd.args(["sh", "-c", "genv top; echo \"top exited $?\"; exec cat"]);
        let status = cmd
            .status()
            .expect("tmux is not installed; scripts/test installs it");
        assert!(status.success());
        Tmux { socket }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .args(["-S", &self.socket])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "tmux {args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        self.tmux(&["send-keys", "-t", "top", keys]);
    }

    /// Polls the screen until it shows every one of `texts`.
    #[track_caller]
    fn until(&self, texts: &[&str]) -> String {
        let mut last = String::new();
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            poll(
                &format!("{texts:?} on the screen"),
                Duration::from_secs(20),
                || {
                    last = self.tmux(&["capture-pane", "-p", "-t", "top"]);
                    texts.iter().all(|t| last.contains(t)).then(|| last.clone())
                },
            )
        }));
        match found {
            Ok(screen) => screen,
            Err(_) => panic!("timed out waiting for {texts:?}; the screen:\n{last}"),
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-S", &self.socket, "kill-server"])
            .status();
    }
}

#[test]
fn the_live_view_refreshes_sorts_and_quits_with_q() {
    let mut sb = Sandbox::new();
    let mut processes = machine(&mut sb, "gt-live");
    let tmux = Tmux::start(&sb);
    let screen = tmux.until(&[
        "genv top  2 GPUs · 2 environments · 2 users · 3 processes  (sorted by memory)",
        "ta (train) 4g",
        "tb           ",
        "q quit · s sort",
    ]);
    // The memory bar, utilization and temperature of each GPU.
    assert!(
        screen.contains("0   [░░░░░░░░░░░░░░░░░░░░]   0%  10 / 15258 MiB        93%   38C"),
        "{screen}"
    );

    // A new environment shows up without a key press.
    let spawn = gpu_processes(&mut sb, "gt-live");
    let c = spawn(&[("GENV_ENVIRONMENT_ID", "tc")]);
    sb.activate_env_as("tc", 1002, Some("carol"), c.pid()).ok();
    processes.push(c);
    tmux.until(&["3 environments · 3 users · 4 processes", "carol(1002)"]);

    tmux.keys("s");
    tmux.until(&["(sorted by environment)"]);
    tmux.keys("s");
    tmux.until(&["(sorted by user)"]);

    tmux.keys("q");
    let screen = tmux.until(&["top exited 0"]);
    assert!(
        !screen.contains("q quit"),
        "the screen was not restored:\n{screen}"
    );
}

#[test]
fn once_shows_who_holds_and_who_waits_for_a_device_lock() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;

    let mut sb = Sandbox::new();
    let processes = machine(&mut sb, "gt-locks");
    let mut holder = sb
        .cmd(&["lock", "sh", "-c", "echo in; read x"])
        .env("GENV_ENVIRONMENT_ID", "ta")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "in\n");
    let pid = holder.id();
    let out = sb.run(&["top", "--once"]).ok().stdout;
    let locks: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("GPU  LOCK"))
        .collect();
    assert_eq!(locks.len(), 2, "{out}");
    assert_eq!(
        locks[1],
        format!("0    holding  ta           alice(1000)      {pid:<8} fraction"),
        "{out}"
    );
    holder.stdin.take().unwrap().write_all(b"done\n").unwrap();
    assert!(holder.wait().unwrap().success());
    drop(processes);
}

#[test]
fn sigterm_ends_the_live_view_and_restores_the_terminal() {
    let mut sb = Sandbox::new();
    let processes = machine(&mut sb, "gt-term");
    let tmux = Tmux::start(&sb);
    tmux.until(&["q quit · s sort"]);
    // The pane runs `sh -c 'genv top; …'`: genv top is the shell's child.
    let shell = tmux
        .tmux(&["list-panes", "-t", "top", "-F", "#{pane_pid}"])
        .trim()
        .to_owned();
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
    let top: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: a signal to the genv top this test started.
    assert_eq!(unsafe { libc::kill(top, libc::SIGTERM) }, 0);
    let screen = tmux.until(&["top exited 0"]);
    assert!(
        !screen.contains("q quit"),
        "the screen was not restored:\n{screen}"
    );
    drop(processes);
}
