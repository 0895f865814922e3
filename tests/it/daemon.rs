//! `genv daemon` as its users meet it: root serving a state folder that
//! alice uses through it, and mallory, another user of the machine,
//! trying to change alice's environments or hold the daemon up.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::daemon::{Daemon, NOT_ANSWERING, RULES_HINT, bash_as, read_frame, write_frame};
use crate::common::users::{ALICE, MALLORY, ROOT, sleeper_as};
use crate::common::{Run, Sandbox, Sleeper};

const SLEEP: &str = "/bin/sleep";

/// A terminal of `uid`'s.
fn terminal(uid: u32) -> Sleeper {
    sleeper_as(uid, Path::new(SLEEP), &[])
}

/// Owner uid and permission bits of a path (not followed).
fn owner_mode(path: &Path) -> (u32, u32) {
    let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    (meta.uid(), meta.permissions().mode() & 0o7777)
}

/// The two state files, to show that a refused command wrote nothing.
fn state_files(sb: &Sandbox) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(sb.file("envs.json")).unwrap_or_default(),
        std::fs::read(sb.file("devices.json")).unwrap_or_default(),
    )
}

/// `genv envs activate --eid eid --uid uid --pid pid` as `uid`.
fn activate_as(sb: &Sandbox, uid: u32, eid: &str, pid: u32) -> Run {
    sb.run_as(
        uid,
        &[
            "envs",
            "activate",
            "--eid",
            eid,
            "--uid",
            &uid.to_string(),
            "--pid",
            &pid.to_string(),
        ],
    )
}

/// The eids `genv envs` lists, as `uid` sees them.
fn eids_as(sb: &Sandbox, uid: u32) -> Vec<String> {
    let run = sb
        .run_as(uid, &["envs", "ps", "--format", "csv", "--no-header"])
        .ok();
    run.stdout
        .lines()
        .map(|l| l.split(',').next().unwrap_or_default().to_owned())
        .collect()
}

/// A multi-user sandbox served by a daemon, with alice's environment
/// `a1` (her terminal in it) attached to GPU 0.
struct Served {
    sb: Sandbox,
    daemon: Daemon,
    alice: Sleeper,
}

fn served() -> Served {
    let sb = Sandbox::multi_user();
    let daemon = Daemon::start(&sb);
    let alice = terminal(ALICE);
    activate_as(&sb, ALICE, "a1", alice.pid()).ok();
    sb.run_as(ALICE, &["devices", "attach", "--eid", "a1", "--index", "0"])
        .ok();
    Served { sb, daemon, alice }
}

#[test]
fn taking_over_a_file_mode_folder_keeps_alices_state() {
    let sb = Sandbox::multi_user();
    let job = terminal(ALICE);
    activate_as(&sb, ALICE, "a1", job.pid()).ok();
    sb.run_as(ALICE, &["devices", "attach", "--eid", "a1", "--count", "1"])
        .ok();
    assert_eq!(owner_mode(&sb.file("envs.json")).0, ALICE);
    let before = state_files(&sb);

    let _daemon = Daemon::start(&sb);

    assert_eq!(owner_mode(&sb.state()), (ROOT, 0o755));
    for entry in std::fs::read_dir(sb.state()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let expected = match name.as_str() {
            // genv 1.4.3's global lock, which its commands open to write.
            "genv.sock" | "genv.lock" => 0o666,
            ".daemon.lock" | "queue.guard" => 0o600,
            _ => 0o644,
        };
        assert_eq!(owner_mode(&entry.path()), (ROOT, expected), "{name}");
    }
    let socket = std::fs::symlink_metadata(sb.file("genv.sock")).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_socket(&socket.file_type()),
        "genv.sock is a socket"
    );
    for name in ["genv.lock", ".daemon.lock", "queue.guard"] {
        assert!(sb.file(name).is_file(), "{name}");
    }
    assert_eq!(state_files(&sb), before, "taking over changes no content");
    assert_eq!(eids_as(&sb, ALICE), ["a1"]);
    let devices = sb
        .run_as(ALICE, &["devices", "ps", "--format", "csv", "--no-header"])
        .ok();
    assert!(devices.stdout.starts_with("0,a1,"), "{devices:?}");
}

/// A reader that opened `devices.json` before some changes (genv 1.4.3
/// taking a snapshot, a slow `nvidia-smi`) reads the version it opened,
/// whole, however many changes the daemon puts in place meanwhile: the
/// daemon never writes into a file that was once in place.
#[test]
fn a_reader_keeps_the_version_it_opened_across_changes() {
    let Served {
        sb,
        daemon: _daemon,
        alice: _alice,
    } = served();
    let before = sb.read("devices.json");
    let mut opened = std::fs::File::open(sb.file("devices.json")).unwrap();
    for _ in 0..3 {
        sb.run_as(ALICE, &["devices", "detach", "--eid", "a1"]).ok();
        sb.run_as(ALICE, &["devices", "attach", "--eid", "a1", "--index", "1"])
            .ok();
    }
    let mut read = String::new();
    opened.read_to_string(&mut read).unwrap();
    assert_eq!(read, before, "the version opened, as it was");
    let after = sb
        .run_as(ALICE, &["devices", "ps", "--format", "csv", "--no-header"])
        .ok();
    assert!(after.stdout.contains("1,a1,"), "{after:?}");
    assert_ne!(sb.read("devices.json"), before, "the changes are in place");
}

/// What the VS Code and JupyterLab extensions run (tests/it/extensions.rs),
/// run by alice where the daemon serves the folder; her kernels' folder
/// is hers to name, and names nothing for mallory's environments.
#[test]
fn the_editor_extensions_work_for_alice_through_the_daemon() {
    let sb = Sandbox::multi_user();
    let _daemon = Daemon::start(&sb);
    let vscode = bash_as(
        &sb,
        ALICE,
        &format!(
            r#"set -e
genv >/dev/null
genv envs activate --pid $$ --eid vs1 --uid {ALICE} --username alice
genv envs config --eid vs1 name --name "my notebook"
genv envs config --eid vs1 gpus --count 1
genv envs ps --format csv --no-header --timestamp | cut -d, -f1-3
genv devices attach --eid vs1 --count 1
genv devices ps --format csv --no-header --timestamp | cut -d, -f1-3
genv devices detach --eid vs1
"#
        ),
    )
    .ok();
    assert_eq!(
        vscode.stdout,
        format!("vs1,alice({ALICE}),my notebook\n0\n0,vs1,my notebook\n1,,\n\n"),
        "{vscode:?}"
    );

    // Her Jupyter server keeps its kernels in a folder of its own.
    let jupyter = format!(
        r#"set -e
export JUPYTER_RUNTIME_DIR=$HOME/runtime
mkdir -p "$JUPYTER_RUNTIME_DIR"
echo '{{}}' > "$JUPYTER_RUNTIME_DIR/kernel-k-123.json"
genv envs activate --eid nb1 --uid {ALICE} --kernel-id k-123
genv envs find --kernel-id k-123
genv envs config --eid nb1 gpus --count 1
genv devices attach --eid nb1
genv devices find --eid nb1
genv envs ps --format csv --no-header | cut -d, -f1
"#
    );
    let run = bash_as(&sb, ALICE, &jupyter).ok();
    assert_eq!(run.stdout, "nb1\n0\n0\nnb1\n", "{run:?}");
    // Mallory's variables point at alice's kernels: not for her
    // environment, which goes at once.
    let mallory = bash_as(
        &sb,
        MALLORY,
        &format!(
            r#"export JUPYTER_RUNTIME_DIR={runtime}
genv envs activate --eid m1 --uid {MALLORY} --kernel-id k-123
genv envs ps --format csv --no-header | cut -d, -f1"#,
            runtime = sb.home_of(ALICE).join("runtime").display()
        ),
    )
    .ok();
    assert_eq!(mallory.stdout, "nb1\n", "{mallory:?}");
    // The kernel ends: its connection file goes, and so does nb1.
    let ended = bash_as(
        &sb,
        ALICE,
        r#"export JUPYTER_RUNTIME_DIR=$HOME/runtime
rm "$JUPYTER_RUNTIME_DIR/kernel-k-123.json"
genv envs find --kernel-id k-123
genv devices find --eid nb1"#,
    )
    .ok();
    assert_eq!(ended.stdout, "\n", "{ended:?}");
}

#[test]
fn alice_works_in_her_shell_through_the_daemon() {
    let sb = Sandbox::multi_user();
    let _daemon = Daemon::start(&sb);
    std::fs::create_dir(sb.home_of(ALICE).join(".genv")).unwrap();
    std::os::unix::fs::chown(sb.home_of(ALICE).join(".genv"), Some(ALICE), Some(ALICE)).unwrap();
    let run = bash_as(
        &sb,
        ALICE,
        r#"set -e
eval "$(genv shell --init)"
genv activate --gpus 1 --gpu-memory 1g
echo "eid=$GENV_ENVIRONMENT_ID cuda=$CUDA_VISIBLE_DEVICES"
genv attach --count 2
echo "cuda=$CUDA_VISIBLE_DEVICES"
genv config name train
genv config gpu-memory 2g
genv config gpus 2
genv config --save
genv status
ls -ln "$GENV_TMPDIR" | grep " memcap-" | awk '{print $1, $3, $9}'
genv detach --index 1
echo "cuda=$CUDA_VISIBLE_DEVICES"
genv envs ps --format csv --no-header | cut -d, -f1-3
genv devices ps --format csv --no-header | cut -d, -f1-3
genv config name other
genv config --load
genv config name
genv deactivate
echo "after=${GENV_ENVIRONMENT_ID:-none}"
"#,
    );
    let run = run.ok();
    let out: Vec<&str> = run.stdout.lines().collect();
    let eid = out[0]
        .strip_prefix("eid=")
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("{run:?}"));
    assert!(!eid.is_empty(), "{run:?}");
    assert_eq!(out[0], format!("eid={eid} cuda=0"), "{run:?}");
    assert_eq!(out[1], "cuda=0,1", "{run:?}");
    assert!(run.stdout.contains("Name: train"), "{run:?}");
    assert!(run.stdout.contains("Device count: 2"), "{run:?}");
    assert!(run.stdout.contains("GPU memory capacity: 2g"), "{run:?}");
    assert!(
        run.stdout
            .contains(&format!("-rw------- {ALICE} memcap-{ALICE}-{eid}\n")),
        "her ledger is hers, 0600: {run:?}"
    );
    assert!(run.stdout.contains("cuda=0\n"), "{run:?}");
    assert!(
        run.stdout.contains(&format!("{eid},{ALICE},train\n")),
        "{run:?}"
    );
    assert!(
        run.stdout.contains(&format!("0,{eid},train\n1,,\n")),
        "{run:?}"
    );
    assert!(run.stdout.ends_with("train\nafter=none\n"), "{run:?}");
    let saved = sb.home_of(ALICE).join(".genv");
    let mut saved_files = 0;
    for entry in std::fs::read_dir(&saved).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(owner_mode(&entry.path()).0, ALICE, "{entry:?}");
        saved_files += 1;
    }
    assert!(saved_files >= 3, "config --save wrote her .genv");
    assert_eq!(
        std::fs::read_to_string(saved.join("name")).unwrap().trim(),
        "train"
    );
    assert!(eids_as(&sb, ALICE).is_empty());
    let devices = sb.read("devices.json");
    assert!(!devices.contains(eid), "{devices}");
}

/// The memory cap library cannot make its ledger in root's folder: a cap
/// set after activation needs one made for it, as activation does.
#[test]
fn a_memory_cap_set_after_activation_has_her_ledger() {
    let sb = Sandbox::multi_user();
    let _daemon = Daemon::start(&sb);
    let run = bash_as(
        &sb,
        ALICE,
        r#"set -e
eval "$(genv shell --init)"
genv activate --gpus 1
genv config gpu-memory 2g
echo "$GENV_ENVIRONMENT_ID"
"#,
    )
    .ok();
    let eid = run.stdout.lines().last().unwrap_or_default();
    let ledger = sb.file(&format!("memcap-{ALICE}-{eid}"));
    assert!(ledger.exists(), "no ledger {ledger:?}: {run:?}");
    assert_eq!(owner_mode(&ledger), (ALICE, 0o600));
}

#[test]
fn root_may_change_alices_environment() {
    let s = served();
    let sb = &s.sb;
    sb.run_as(
        ROOT,
        &["envs", "config", "--eid", "a1", "name", "--name", "by-root"],
    )
    .ok();
    sb.run_as(ROOT, &["devices", "attach", "--eid", "a1", "--index", "1"])
        .ok();
    sb.run_as(ROOT, &["devices", "detach", "--eid", "a1"]).ok();
    assert!(!sb.read("devices.json").contains("a1"));
    let run = sb
        .run_as(ALICE, &["envs", "ps", "--format", "csv", "--no-header"])
        .ok();
    assert!(
        run.stdout.starts_with(&format!("a1,{ALICE},by-root,")),
        "{run:?}"
    );
    sb.run_as(
        ROOT,
        &["envs", "deactivate", "--pid", &s.alice.pid().to_string()],
    )
    .ok();
    assert!(eids_as(sb, ALICE).is_empty());
}

/// What mallory tries against alice's environment `a1`; each must be
/// refused naming the rule (`says`), print nothing and write nothing.
#[test]
fn mallory_cannot_touch_alices_environment() {
    let s = served();
    let sb = &s.sb;
    let mine = terminal(MALLORY);
    let (alice_pid, mallory_pid) = (s.alice.pid().to_string(), mine.pid().to_string());
    let mallory = MALLORY.to_string();
    let devices_rule = "genv: error: environment 'a1' belongs to uid 47101; only its owner or root may attach or detach its devices\n";
    let change_rule = "genv: error: environment 'a1' belongs to uid 47101; only its owner or root may change it\n";
    let remove_rule = "genv: error: environment 'a1' belongs to uid 47101; only its owner or root may deactivate it\n";
    let for_alice = "genv: error: only root may make an environment for another user (uid 47101); you are uid 47102\n";
    let not_hers = format!(
        "genv: error: process {alice_pid} belongs to uid 47101, not to you: only its owner or root may add it to an environment\n"
    );
    let config = r#"{"name": "x", "gpu_memory": null, "gpus": 2}"#;
    let reset_rule =
        "genv: error: only root may reset the state (--reset) where genv daemon keeps it\n";
    let cases: Vec<(Vec<&str>, bool, &str)> = vec![
        // Starting the state over would drop everyone's environments.
        (vec!["envs", "--reset"], false, reset_rule),
        (vec!["devices", "--reset"], false, reset_rule),
        (
            vec!["devices", "attach", "--eid", "a1", "--index", "1"],
            false,
            devices_rule,
        ),
        (
            vec!["devices", "detach", "--eid", "a1"],
            false,
            devices_rule,
        ),
        (
            vec!["envs", "config", "--eid", "a1", "name", "--name", "x"],
            false,
            change_rule,
        ),
        (
            vec!["envs", "deactivate", "--pid", &alice_pid],
            false,
            remove_rule,
        ),
        (
            vec![
                "envs",
                "activate",
                "--eid",
                "a1",
                "--uid",
                &mallory,
                "--pid",
                &mallory_pid,
            ],
            false,
            change_rule,
        ),
        (
            vec![
                "envs", "activate", "--eid", "new", "--uid", "47101", "--pid", &alice_pid,
            ],
            false,
            for_alice,
        ),
        (
            vec![
                "envs", "activate", "--eid", "m", "--uid", &mallory, "--pid", &alice_pid,
            ],
            false,
            &not_hers,
        ),
        (
            vec![
                "activate",
                "--eid",
                "a1",
                "--shell",
                &mallory_pid,
                "--no-load",
            ],
            false,
            change_rule,
        ),
        (vec!["attach", "--index", "1"], true, devices_rule),
        (vec!["detach"], true, devices_rule),
        (vec!["config", "gpus", "2"], true, change_rule),
        (vec!["deactivate", "--shell", &alice_pid], true, remove_rule),
        (
            vec!["sdk", "activate", "--eid", "a1", "--pid", &mallory_pid],
            false,
            change_rule,
        ),
        (
            vec!["sdk", "configure", "--eid", "a1", "--config", config],
            false,
            change_rule,
        ),
    ];
    for (args, in_env, says) in cases {
        let before = state_files(sb);
        let run = if in_env {
            sb.run_as_in(MALLORY, "a1", &args)
        } else {
            sb.run_as(MALLORY, &args)
        };
        assert_eq!(run.code, 1, "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}: {run:?}");
        assert!(
            run.stderr.starts_with(says) && run.stderr.contains(RULES_HINT),
            "{args:?}: {run:?}"
        );
        assert_eq!(state_files(sb), before, "{args:?} wrote");
    }
    // Her own shell leaving changes nothing of alice's.
    let before = state_files(sb);
    sb.run_as_in(MALLORY, "a1", &["deactivate", "--shell", &mallory_pid]);
    assert_eq!(state_files(sb), before);
    assert_eq!(eids_as(sb, ALICE), ["a1"]);
    drop(s.daemon);
}

#[test]
fn mallory_cannot_hold_up_the_daemon_or_write_the_state() {
    let s = served();
    let sb = &s.sb;
    let probe = |path: &Path, write: bool| -> std::io::Result<()> {
        let mut cmd = crate::common::users::command_as(MALLORY, "sh");
        let redirect = if write { ">>" } else { "<" };
        cmd.arg("-c")
            .arg(format!("exec 3{redirect}\"$0\"",))
            .arg(path);
        let out = cmd.output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        }
    };
    for name in [".daemon.lock", "queue.guard"] {
        let err = probe(&sb.file(name), false).expect_err(name);
        assert!(
            err.to_string().contains("Permission denied"),
            "{name}: {err}"
        );
    }
    // genv.lock is genv 1.4.3's: holding it holds up no one of ours.
    let mut holder = crate::common::users::command_as(MALLORY, "flock");
    holder
        .args(["-x"])
        .arg(sb.file("genv.lock"))
        .args(["sleep", "30"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    let mut holder = holder.spawn().expect("flock");
    let holding = || {
        std::fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .any(|l| l.contains("FLOCK") && l.contains(&format!(" {} ", holder.id())))
    };
    let since = std::time::Instant::now();
    while !holding() {
        assert!(
            since.elapsed() < std::time::Duration::from_secs(10),
            "flock never held"
        );
        std::thread::yield_now();
    }
    let started = std::time::Instant::now();
    assert_eq!(eids_as(sb, ALICE), ["a1"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let _ = holder.kill();
    let _ = holder.wait();
    for entry in std::fs::read_dir(sb.state()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n == "genv.sock" || n == "genv.lock")
        {
            continue;
        }
        let err = probe(&path, true).expect_err(&path.display().to_string());
        assert!(
            err.to_string().contains("Permission denied"),
            "{path:?}: {err}"
        );
    }
    // Nor make a file in the folder.
    assert!(probe(&sb.file("planted"), true).is_err());
    assert!(!sb.file("planted").exists());
}

#[test]
fn a_socket_planted_in_a_file_mode_folder_is_ignored() {
    let sb = Sandbox::multi_user();
    // Mallory listens on genv.sock in the open folder.
    let planted = sb.file("genv.sock");
    let listener = {
        let planted = planted.clone();
        std::thread::spawn(move || {
            // SAFETY: raw set*id on this thread only.
            unsafe {
                assert_eq!(
                    libc::syscall(libc::SYS_setresgid, MALLORY, MALLORY, MALLORY),
                    0
                );
                assert_eq!(
                    libc::syscall(libc::SYS_setresuid, MALLORY, MALLORY, MALLORY),
                    0
                );
            }
            std::os::unix::net::UnixListener::bind(&planted).unwrap()
        })
        .join()
        .unwrap()
    };
    assert_eq!(owner_mode(&planted).0, MALLORY);
    let job = terminal(ALICE);
    activate_as(&sb, ALICE, "a1", job.pid()).ok();
    sb.run_as(ALICE, &["devices", "attach", "--eid", "a1", "--count", "1"])
        .ok();
    assert_eq!(eids_as(&sb, ALICE), ["a1"]);
    assert_eq!(owner_mode(&sb.file("envs.json")).0, ALICE);
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "alice's genv never connected");
}

#[test]
fn a_stopped_daemon_makes_alices_commands_fail_and_write_nothing() {
    let mut s = served();
    let sb = &s.sb;
    s.daemon.kill9();
    assert!(sb.file("genv.sock").exists());
    let before = sb.snapshot_files();
    for args in [
        vec!["envs"],
        vec!["devices", "attach", "--eid", "a1", "--index", "1"],
    ] {
        let run = sb.run_as(ALICE, &args);
        assert_eq!(run.code, 1, "{run:?}");
        assert_eq!(run.stdout, "", "{run:?}");
        assert!(run.stderr.starts_with(NOT_ANSWERING), "{run:?}");
    }
    assert_eq!(sb.snapshot_files(), before);
    // Started again, it serves what was there.
    let _again = Daemon::start(sb);
    assert_eq!(eids_as(sb, ALICE), ["a1"]);
}

/// How long alice's command may take while mallory misbehaves.
const BOUND: Duration = Duration::from_secs(5);

/// Alice's `genv envs` works, in bounded time, and lists `a1`.
#[track_caller]
fn alice_still_works(sb: &Sandbox) {
    let started = Instant::now();
    assert_eq!(eids_as(sb, ALICE), ["a1"]);
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
}

/// The final answer's code and stderr.
fn code_and_stderr(answer: &serde_json::Value) -> (i64, String) {
    (
        answer["code"].as_i64().unwrap_or(-1),
        answer["stderr"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn malformed_frames_are_answered_or_cut_and_alice_goes_on() {
    let s = served();
    let sb = &s.sb;
    let mut conns = s.daemon.connect_as(MALLORY, 4);
    // A frame announcing 2 GiB.
    conns[0].write_all(&(2u32 << 30).to_be_bytes()).unwrap();
    if let Some(answer) = read_frame(&mut conns[0]) {
        let (code, stderr) = code_and_stderr(&answer);
        assert_ne!(code, 0, "{answer}");
        assert!(stderr.starts_with("genv: error: "), "{answer}");
    }
    alice_still_works(sb);
    // A frame cut short, then closed.
    let mut cut = conns.remove(1);
    cut.write_all(&100u32.to_be_bytes()).unwrap();
    cut.write_all(br#"{"argv": ["en"#).unwrap();
    drop(cut);
    alice_still_works(sb);
    // Not JSON; then, on the same connection, an unknown field.
    let stream = &mut conns[1];
    write_frame(stream, b"{not json").unwrap();
    let (code, stderr) = code_and_stderr(&read_frame(stream).expect("an answer"));
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("genv: error: genv daemon: a malformed request: "),
        "{stderr}"
    );
    write_frame(stream, br#"{"argv": ["envs"], "uid": 0}"#).unwrap();
    let (code, stderr) = code_and_stderr(&read_frame(stream).expect("an answer"));
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown field `uid`"), "{stderr}");
    // The connection still serves a good request.
    let answer =
        crate::common::daemon::request(stream, &["envs", "ps", "--format", "csv", "--no-header"]);
    assert_eq!(code_and_stderr(&answer).0, 0, "{answer}");
    assert!(
        answer["stdout"].as_str().unwrap().starts_with("a1,"),
        "{answer}"
    );
    alice_still_works(sb);
}

#[test]
fn ten_thousand_connections_of_mallory_do_not_stop_alice() {
    raise_open_files();
    let s = served();
    let sb = &s.sb;
    let mut conns = s.daemon.connect_as(MALLORY, 10_000);
    alice_still_works(sb);
    // Her first 64 are served (they wait for a request); every other one
    // is refused with the per-uid line, then closed.
    let per_uid =
        "genv: error: uid 47102 has 64 connections to genv daemon open already; close some\n";
    let mut refused = 0;
    for (i, conn) in conns.iter_mut().enumerate().skip(64) {
        let answer = read_frame(conn).unwrap_or_else(|| panic!("connection {i}: no answer"));
        assert_eq!(code_and_stderr(&answer), (1, per_uid.to_owned()), "{i}");
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        refused += 1;
    }
    assert_eq!(refused, 10_000 - 64);
    for conn in &mut conns[..64] {
        conn.set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let mut byte = [0u8];
        let err = conn
            .read(&mut byte)
            .expect_err("nothing to read on a served connection");
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    }
    alice_still_works(sb);
    // Each served connection still answers her (in its own time: not the
    // millisecond given above to show there was nothing to read).
    conns[0]
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let answer = crate::common::daemon::request(
        &mut conns[0],
        &["envs", "ps", "--format", "csv", "--no-header"],
    );
    assert_eq!(code_and_stderr(&answer).0, 0, "{answer}");
}

/// Lets this process hold 10,000 connections: the soft limit on open
/// files raised to the hard one (root's to raise).
fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct of ours.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_cur > 12_000,
        "open files limited to {}",
        limit.rlim_cur
    );
}

/// `count` environments of alice's, all with her terminal `pid`, written
/// as genv writes them, before the daemon starts.
fn big_state(sb: &Sandbox, count: usize, pid: u32) {
    let envs: Vec<String> = (0..count)
        .map(|i| {
            format!(
                r#"    {{
      "eid": "big-{i:06}",
      "uid": {ALICE},
      "creation": "03/12/2026 03:13:57",
      "username": null,
      "config": {{
        "name": "a rather long name for environment number {i:06}",
        "gpu_memory": null,
        "gpus": null
      }},
      "pids": [
        {pid}
      ],
      "kernel_ids": []
    }}"#
            )
        })
        .collect();
    sb.write(
        "envs.json",
        &format!("{{\n  \"envs\": [\n{}\n  ]\n}}", envs.join(",\n")),
    );
}

#[test]
fn a_client_that_never_reads_its_answer_does_not_stop_alice() {
    let sb = Sandbox::multi_user();
    let alice = terminal(ALICE);
    big_state(&sb, 10_000, alice.pid());
    let _daemon = Daemon::start(&sb);
    let mut stalled = _daemon.connect_as(MALLORY, 8);
    for conn in &mut stalled {
        let body = serde_json::json!({ "argv": ["envs"] }).to_string();
        write_frame(conn, body.as_bytes()).unwrap();
    }
    let started = Instant::now();
    let run = sb
        .run_as(ALICE, &["envs", "ps", "--format", "csv", "--no-header"])
        .ok();
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
    assert_eq!(run.stdout.lines().count(), 10_000);
    let started = Instant::now();
    activate_as(&sb, ALICE, "a1", alice.pid()).ok();
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
    drop(stalled);
}

#[test]
fn a_client_that_trickles_is_cut_off() {
    let s = served();
    let sb = &s.sb;
    let mut slow = s.daemon.connect_as(MALLORY, 1).remove(0);
    let trickle = std::thread::spawn(move || {
        let frame = [&100u32.to_be_bytes()[..], &[b' '; 100]].concat();
        let started = Instant::now();
        for byte in frame {
            if slow.write_all(&[byte]).is_err() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        None
    });
    // Alice works all along.
    while !trickle.is_finished() {
        alice_still_works(sb);
    }
    let cut = trickle
        .join()
        .unwrap()
        .expect("the daemon never cut it off");
    assert!(
        cut >= Duration::from_secs(9) && cut < Duration::from_secs(13),
        "cut off after {cut:?}"
    );
}

#[test]
fn kill_9_during_a_storm_loses_no_acknowledged_change() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    const THREADS: usize = 8;
    const EACH: usize = 25;
    let sb = Arc::new(Sandbox::multi_user());
    let mut daemon = Daemon::start(&sb);
    let terminals: Vec<Sleeper> = (0..THREADS).map(|_| terminal(ALICE)).collect();
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let killed: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let storm: Vec<_> = terminals
        .iter()
        .enumerate()
        .map(|(t, job)| {
            let (sb, acknowledged, killed, pid) =
                (sb.clone(), acknowledged.clone(), killed.clone(), job.pid());
            std::thread::spawn(move || {
                (0..EACH)
                    .map(|i| {
                        let eid = format!("s{t}-{i}");
                        let started = Instant::now();
                        let run = activate_as(&sb, ALICE, &eid, pid);
                        let after_kill = killed.lock().unwrap().is_some_and(|at| at < started);
                        if run.code == 0 {
                            acknowledged.fetch_add(1, Ordering::SeqCst);
                        }
                        (eid, after_kill, run)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    while acknowledged.load(Ordering::SeqCst) < 40 {
        std::thread::yield_now();
    }
    daemon.kill9();
    *killed.lock().unwrap() = Some(Instant::now());
    let results: Vec<_> = storm.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let envs = sb.read("envs.json");
    let mut refused_after = 0;
    for (eid, after_kill, run) in &results {
        match run.code {
            0 => assert!(
                envs.contains(&format!("\"eid\": \"{eid}\"")),
                "{eid} was acknowledged but is not in envs.json"
            ),
            1 if *after_kill => {
                assert!(run.stderr.starts_with(NOT_ANSWERING), "{eid}: {run:?}");
                assert_eq!(run.stdout, "", "{run:?}");
                refused_after += 1;
            }
            // In flight when the daemon died: it may or may not be done.
            1 => assert!(
                run.stderr.starts_with(NOT_ANSWERING)
                    || run
                        .stderr
                        .starts_with("genv: error: genv daemon stopped answering on "),
                "{eid}: {run:?}"
            ),
            _ => panic!("{eid}: {run:?}"),
        }
    }
    assert!(refused_after > 0, "the storm ended before the kill");
    // Until it is started again, nothing works, and nothing is written.
    let before = sb.snapshot_files();
    let run = activate_as(&sb, ALICE, "late", terminals[0].pid());
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.starts_with(NOT_ANSWERING), "{run:?}");
    assert_eq!(sb.snapshot_files(), before);
    let _again = Daemon::start(&sb);
    activate_as(&sb, ALICE, "late", terminals[0].pid()).ok();
    let listed = eids_as(&sb, ALICE);
    for (eid, _, run) in &results {
        if run.code == 0 {
            assert!(listed.contains(eid), "{eid} lost after the restart");
        }
    }
    assert!(listed.contains(&"late".to_owned()));
}

/// genv 1.4.3 as alice, from the reference's packages with the system's
/// Python 3.11 (the reference's own interpreter sits in root's home).
fn reference_as(sb: &Sandbox, uid: u32, args: &[&str]) -> Run {
    let packages =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/genv-ref/lib/python3.11/site-packages");
    assert!(
        packages.join("genv").is_dir(),
        "genv 1.4.3 is not installed in target/genv-ref"
    );
    let mut cmd = crate::common::users::command_as(uid, "/usr/bin/python3.11");
    cmd.args(["-m", "genv.cli"]).args(args);
    sb.apply(&mut cmd);
    cmd.env("PYTHONPATH", packages)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("HOME", sb.home_of(uid))
        .current_dir(sb.home_of(uid));
    Run::from(cmd.output().expect("run genv 1.4.3"))
}

#[test]
fn genv_1_4_3_reads_the_daemons_folder() {
    let s = served();
    // Its library's snapshots, which its SDK and monitoring read.
    let packages =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/genv-ref/lib/python3.11/site-packages");
    let mut cmd = crate::common::users::command_as(ALICE, "/usr/bin/python3.11");
    cmd.args([
        "-c",
        "import genv.core.envs as e, genv.core.devices as d; \
         print(e.snapshot().eids, [x.eids for x in d.snapshot()])",
    ]);
    s.sb.apply(&mut cmd);
    cmd.env("PYTHONPATH", &packages)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(s.sb.home_of(ALICE));
    let snapshot = Run::from(cmd.output().expect("run genv 1.4.3"));
    assert_eq!(snapshot.code, 0, "{snapshot:?}");
    assert_eq!(snapshot.stdout, "['a1'] [['a1'], []]\n", "{snapshot:?}");
    // Its command line prints, then writes the file back as it ends,
    // reads included, which the daemon's folder refuses (docs/DAEMON.md).
    let envs = reference_as(
        &s.sb,
        ALICE,
        &["envs", "ps", "--format", "csv", "--no-header"],
    );
    assert!(envs.stdout.starts_with("a1,"), "{envs:?}");
    assert!(
        envs.stderr.contains("PermissionError") && envs.stderr.contains("envs.json"),
        "{envs:?}"
    );
    let devices = reference_as(
        &s.sb,
        ALICE,
        &["devices", "ps", "--format", "csv", "--no-header"],
    );
    assert!(devices.stdout.starts_with("0,a1,"), "{devices:?}");
}

#[test]
fn genv_1_4_3_cannot_write_the_daemons_folder() {
    let s = served();
    let sb = &s.sb;
    let pid = s.alice.pid().to_string();
    for args in [
        vec![
            "envs", "activate", "--eid", "x", "--uid", "47101", "--pid", &pid,
        ],
        vec!["devices", "attach", "--eid", "a1", "--index", "1"],
    ] {
        let before = sb.snapshot_files();
        let run = reference_as(sb, ALICE, &args);
        assert_ne!(run.code, 0, "{args:?}: {run:?}");
        assert!(run.stderr.contains("PermissionError"), "{args:?}: {run:?}");
        assert_eq!(sb.snapshot_files(), before, "{args:?}");
    }
    assert_eq!(eids_as(sb, ALICE), ["a1"]);
}

#[test]
fn the_nvidia_smi_shim_shows_alice_only_her_devices() {
    use crate::shim_support::SIM;
    let s = served();
    let sb = &s.sb;
    let (shims, real) = (sb.dir.path().join("shims"), sb.dir.path().join("real"));
    for dir in [&shims, &real] {
        std::fs::create_dir(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::os::unix::fs::symlink(crate::common::GENV, shims.join("nvidia-smi")).unwrap();
    std::os::unix::fs::symlink(SIM, real.join("nvidia-smi")).unwrap();
    // Alice's a1 moves to GPU 1 only.
    sb.run_as(ALICE, &["devices", "attach", "--eid", "a1", "--index", "1"])
        .ok();
    sb.run_as(ALICE, &["devices", "detach", "--eid", "a1", "--index", "0"])
        .ok();
    let smi = |eid: &str, args: &[&str]| {
        let mut cmd = crate::common::users::command_as(ALICE, shims.join("nvidia-smi"));
        cmd.args(args);
        sb.apply(&mut cmd);
        cmd.env("GENV_ENVIRONMENT_ID", eid)
            .env(
                "PATH",
                format!("{}:{}:/usr/bin:/bin", shims.display(), real.display()),
            )
            .env("HOME", sb.home_of(ALICE))
            .current_dir(sb.home_of(ALICE));
        Run::from(cmd.output().expect("run the nvidia-smi shim"))
    };
    let run = smi("a1", &["--query-gpu=index,uuid", "--format=csv,noheader"]).ok();
    assert_eq!(
        run.stdout, "1, GPU-00000000-0000-0000-0000-000000000001\n",
        "{run:?}"
    );
    let table = smi("a1", &[]).ok();
    assert_eq!(table.stdout.matches("MiB /").count(), 1, "{table:?}");
    // Outside her environment, the machine as it is.
    let run = smi("", &["--query-gpu=index", "--format=csv,noheader"]).ok();
    assert_eq!(run.stdout, "0\n1\n", "{run:?}");
}

/// A Python process of mallory's that opens `files` in the state folder
/// (read and write, made if missing) while it is still open to all,
/// takes `flock`s on those named in `locks`, says `held`, then, on each
/// line of its stdin, writes that line's JSON text over the first file
/// through the descriptor it kept and says `written`.
struct Holder {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Holder {
    fn start(sb: &Sandbox, files: &[&str], locks: &[&str]) -> Holder {
        let script = r#"
import fcntl, json, os, sys
folder, files, locks = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
fds = [os.open(os.path.join(folder, f), os.O_RDWR | os.O_CREAT, 0o666) for f in files]
for f, fd in zip(files, fds):
    if f in locks:
        fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
for line in sys.stdin:
    os.ftruncate(fds[0], 0)
    os.pwrite(fds[0], json.loads(line).encode(), 0)
    print("written", flush=True)
"#;
        let mut cmd = crate::common::users::command_as(MALLORY, "/usr/bin/python3");
        cmd.arg("-c")
            .arg(script)
            .arg(sb.state())
            .arg(serde_json::to_string(files).unwrap())
            .arg(serde_json::to_string(locks).unwrap())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("python3 as mallory");
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut holder = Holder { child, out };
        holder.expect("held");
        holder
    }

    fn expect(&mut self, word: &str) {
        use std::io::BufRead;
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), word, "mallory's holder");
    }

    /// Writes `text` over the first file through the old descriptor.
    fn write(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{}", serde_json::to_string(text).unwrap()).unwrap();
        self.expect("written");
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `genv args` as `uid`, killed when it takes longer than [`BOUND`].
fn run_bounded(sb: &Sandbox, uid: u32, args: &[&str]) -> Option<Run> {
    let mut child = sb
        .cmd_as(uid, args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run genv");
    let deadline = Instant::now() + BOUND;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Run::from(child.wait_with_output().unwrap()))
}

/// Locks mallory took while the folder was open to all must not hold the
/// daemon up once it is root's.
#[test]
fn locks_mallory_held_before_the_takeover_do_not_hold_up_the_daemon() {
    let sb = Sandbox::multi_user();
    let job = terminal(ALICE);
    activate_as(&sb, ALICE, "a1", job.pid()).ok();
    let _holder = Holder::start(
        &sb,
        &["genv.lock", "queue.guard"],
        &["genv.lock", "queue.guard"],
    );
    let _daemon = Daemon::start(&sb);
    let run = run_bounded(
        &sb,
        ALICE,
        &["envs", "ps", "--format", "csv", "--no-header"],
    );
    let run = run.expect("alice's genv envs waits on mallory's genv.lock");
    assert!(run.ok().stdout.starts_with("a1,"));
}

/// A state file mallory opened while the folder was open to all must
/// not let her write the state once it is root's.
#[test]
fn a_state_file_mallory_opened_before_the_takeover_is_not_hers_to_write() {
    let sb = Sandbox::multi_user();
    let job = terminal(ALICE);
    activate_as(&sb, ALICE, "a1", job.pid()).ok();
    let mut holder = Holder::start(&sb, &["envs.json"], &[]);
    let _daemon = Daemon::start(&sb);
    // Alice's environment, said to be mallory's.
    let stolen = sb
        .read("envs.json")
        .replace("\"uid\": 47101", "\"uid\": 47102");
    holder.write(&stolen);
    let run = sb
        .run_as(ALICE, &["envs", "ps", "--format", "csv", "--no-header"])
        .ok();
    assert!(run.stdout.starts_with("a1,47101,"), "{run:?}");
}

/// Where the state is and which GPUs exist stay the daemon's, whatever
/// variables a client sends.
#[test]
fn a_client_cannot_choose_the_daemons_folder_or_gpus() {
    let s = served();
    let elsewhere = s.sb.dir.path().join("elsewhere");
    let mine = terminal(MALLORY);
    let mut conn = s.daemon.connect_as(MALLORY, 1).remove(0);
    let env = serde_json::json!({
        "GENV_TMPDIR": elsewhere,
        "GENV_MOCK_DEVICE_COUNT": "8",
    });
    let ask = |conn: &mut std::os::unix::net::UnixStream, argv: &[&str]| {
        let body = serde_json::json!({ "argv": argv, "env": env }).to_string();
        write_frame(conn, body.as_bytes()).unwrap();
        read_frame(conn).expect("an answer")
    };
    let answer = ask(
        &mut conn,
        &["devices", "ps", "--format", "csv", "--no-header"],
    );
    assert_eq!(answer["code"], 0, "{answer}");
    assert_eq!(
        answer["stdout"].as_str().unwrap().lines().count(),
        2,
        "{answer}"
    );
    let pid = mine.pid().to_string();
    let answer = ask(
        &mut conn,
        &[
            "envs", "activate", "--eid", "m1", "--uid", "47102", "--pid", &pid,
        ],
    );
    assert_eq!(answer["code"], 0, "{answer}");
    assert!(!elsewhere.exists());
    assert!(s.sb.read("envs.json").contains("\"eid\": \"m1\""));
}

/// Where the daemon keeps the state, root's enforcement counts a process
/// in the environment its owner registered it in (as genv 1.4.3's SDK
/// registers one, without `GENV_ENVIRONMENT_ID`), and mallory can get
/// root to act on none of alice's processes: she can neither register
/// them in an environment of hers, nor detach alice, nor put her own
/// stray process in alice's environment to shield it.
#[test]
fn enforcement_credits_what_the_daemon_registered_and_no_more() {
    let sb = Sandbox::multi_user();
    // A GPU program of a unique name (the simulated GPUs list processes by
    // name), at most 15 characters.
    let name = format!("dmnenf{}", std::process::id() % 100_000);
    let program = sb.dir.path().join(&name);
    std::fs::copy(SLEEP, &program).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _daemon = Daemon::start(&sb);
    let holder = terminal(ALICE);
    activate_as(&sb, ALICE, "a1", holder.pid()).ok();
    sb.run_as(ALICE, &["devices", "attach", "--eid", "a1", "--index", "0"])
        .ok();
    let on_gpu_0 = [("CUDA_VISIBLE_DEVICES", "0")];
    let registered = sleeper_as(ALICE, &program, &on_gpu_0);
    activate_as(&sb, ALICE, "a1", registered.pid()).ok();
    // Mallory's own GPU process, outside environments; she can put it in
    // none of alice's, nor put alice's process in one of hers.
    let stray = sleeper_as(MALLORY, &program, &on_gpu_0);
    let shield = activate_as(&sb, MALLORY, "a1", stray.pid());
    assert_eq!(shield.code, 1, "{shield:?}");
    let mine = terminal(MALLORY);
    activate_as(&sb, MALLORY, "m1", mine.pid()).ok();
    let steal = sb.run_as(
        MALLORY,
        &[
            "envs",
            "activate",
            "--eid",
            "m1",
            "--uid",
            "47102",
            "--pid",
            &registered.pid().to_string(),
        ],
    );
    assert_eq!(steal.code, 1, "{steal:?}");
    let detach = sb.run_as(MALLORY, &["devices", "detach", "--eid", "a1"]);
    assert_eq!(detach.code, 1, "{detach:?}");

    // Root's enforcement: processes outside environments are terminated.
    let run = Run::from(
        sb.cmd(&["enforce", "--interval", "0", "--non-env-processes"])
            .env("GENV_MOCK_COMPUTE_APPS_PROCESS_NAME", &name)
            .output()
            .unwrap(),
    )
    .ok();
    assert!(
        run.stdout.contains(&stray.pid().to_string()),
        "the stray process is named: {run:?}"
    );
    assert!(
        !run.stdout.contains(&registered.pid().to_string()),
        "alice's registered process is hers: {run:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{}/comm", stray.pid())).exists()
        && std::fs::read_to_string(format!("/proc/{}/stat", stray.pid()))
            .is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(
            Instant::now() < deadline,
            "the stray process was not terminated"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        std::fs::read_to_string(format!("/proc/{}/stat", registered.pid()))
            .is_ok_and(|s| !s.contains(") Z ")),
        "alice's registered process runs on"
    );
    assert_eq!(eids_as(&sb, ALICE), ["a1", "m1"]);
}

/// `genv lock` through the daemon: the daemon holds the device's lock for
/// alice's `genv lock` while her command runs (a second one finds the
/// device busy), and when the daemon dies under it (its locks go with
/// it) the command is told and stopped, never left running as if it held
/// them.
#[test]
fn genv_lock_through_the_daemon_holds_for_the_command_and_fails_loudly_without_it() {
    let mut s = served();
    let sb = &s.sb;
    let mut holder = sb.cmd_as(ALICE, &["lock", "sh", "-c", "echo running; exec sleep 30"]);
    holder
        .env("GENV_ENVIRONMENT_ID", "a1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut holder = holder.spawn().expect("genv lock");
    // The command runs only once the daemon holds the locks for it; wait
    // for it to run, so the daemon dies under a running command.
    let mut said = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut said,
    )
    .unwrap();
    assert_eq!(said, "running\n");
    // Held once `genv devices locks` names alice's `genv lock` holding.
    let holding = format!("{}", holder.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let locks = sb.run_as(ALICE, &["devices", "locks"]).ok();
        if locks
            .stdout
            .lines()
            .any(|l| l.contains(&holding) && l.contains("holding"))
        {
            assert!(locks.stdout.contains("a1"), "{locks:?}");
            break;
        }
        assert!(Instant::now() < deadline, "never held: {locks:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let busy = sb.run_as_in(ALICE, "a1", &["lock", "-n", "true"]);
    assert_eq!(busy.code, 1, "{busy:?}");
    assert!(
        busy.stderr.contains("cannot lock GPU 0 without waiting"),
        "{busy:?}"
    );
    s.daemon.kill9();
    let out = holder.wait_with_output().expect("genv lock ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("stopped: the device locks are no longer held; stopping the command"),
        "{stderr}"
    );
}

/// `--wait` through the daemon: mallory waits in line in her own name,
/// sees her place while she waits (not at the end), and gets the devices
/// once alice lets go; a waiter that hangs up leaves the line.
#[test]
fn waiting_in_line_through_the_daemon() {
    let s = served();
    let sb = &s.sb;
    let mine = terminal(MALLORY);
    activate_as(sb, MALLORY, "m1", mine.pid()).ok();
    let mut waiter = sb.cmd_as(MALLORY, &["attach", "--count", "2", "--wait=30"]);
    waiter
        .env("GENV_ENVIRONMENT_ID", "m1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut waiter = waiter.spawn().expect("genv attach --wait");
    let mut stderr = std::io::BufReader::new(waiter.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    assert!(
        line.starts_with("genv: waiting for 2 devices (1st in line"),
        "{line:?}"
    );
    let queue = sb.run_as(ALICE, &["devices", "queue"]).ok();
    assert!(queue.stdout.contains("m1"), "{queue:?}");
    // A second waiter of hers that hangs up (Ctrl-C) leaves the line.
    let mut quitter = sb.cmd_as(MALLORY, &["attach", "--count", "2", "--wait=30"]);
    quitter
        .env("GENV_ENVIRONMENT_ID", "m1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut quitter = quitter.spawn().expect("second waiter");
    let mut said = String::new();
    let mut quitter_err = std::io::BufReader::new(quitter.stderr.take().unwrap());
    std::io::BufRead::read_line(&mut quitter_err, &mut said).unwrap();
    assert!(said.contains("2nd in line"), "{said:?}");
    let _ = quitter.kill();
    let _ = quitter.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let queue = sb.run_as(ALICE, &["devices", "queue"]).ok();
        if queue.stdout.lines().filter(|l| l.contains("m1")).count() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the quitter stays in line: {queue:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sb.run_as(ALICE, &["devices", "detach", "--eid", "a1"]).ok();
    let out = waiter.wait_with_output().expect("the waiter ends");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let found = sb.run_as(MALLORY, &["devices", "find", "--eid", "m1"]).ok();
    assert_eq!(found.stdout, "0,1\n", "{found:?}");
}
