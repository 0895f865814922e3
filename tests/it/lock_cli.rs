//! `genv lock` as a command: arguments, exit codes, signals, -n, -w.

use std::path::Path;
use std::time::Instant;

use crate::common::users::{ALICE, MALLORY, command_as, sleeper_as};
use crate::common::{Run, Sandbox, Sleeper};
use crate::lock_support::{Locker, Section, args, env, log, one_gpu};

#[test]
fn outside_an_environment_the_command_just_runs() {
    let sb = one_gpu();
    let run = sb.run(&["lock", "sh", "-c", "echo hi; exit 7"]);
    assert_eq!(run.code, 7, "{run:?}");
    assert_eq!(run.stdout, "hi\n");
    assert!(
        !sb.file("devices").exists(),
        "no lock file outside an environment"
    );
}

#[test]
fn arguments_pass_through_exactly() {
    let sb = one_gpu();
    let _a = env(&sb, "a", None);
    for prefix in [&[][..], &["--"][..]] {
        let mut argv = vec!["lock"];
        argv.extend_from_slice(prefix);
        argv.extend(["printf", "%s|", "-n", "a b", "--timeout", "-w", "'q'"]);
        let out = sb
            .cmd(&argv)
            .env("GENV_ENVIRONMENT_ID", "a")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "-n|a b|--timeout|-w|'q'|"
        );
    }
    assert!(sb.file("devices/0.lock").exists());
}

#[test]
fn exit_codes_propagate() {
    let sb = one_gpu();
    let _a = env(&sb, "a", None);
    let code = |argv: &[&str]| {
        let mut all = vec!["lock"];
        all.extend_from_slice(argv);
        sb.cmd(&all)
            .env("GENV_ENVIRONMENT_ID", "a")
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(code(&["sh", "-c", "exit 3"]), Some(3));
    assert_eq!(code(&["sh", "-c", "kill -9 $$"]), Some(137));
    assert_eq!(code(&["surely-no-such-program-here"]), Some(127));
    // Without a command: take the locks, give them back, exit 0.
    assert_eq!(code(&[]), Some(0));
}

#[test]
fn bad_options_fail_cleanly() {
    let sb = one_gpu();
    for argv in [
        &["lock", "-w", "soon", "true"][..],
        &["lock", "-w", "-1", "true"][..],
    ] {
        let run = sb.run(argv).fails();
        assert!(run.stderr.contains("seconds"), "{run:?}");
    }
}

#[test]
fn sigterm_reaches_the_command() {
    let sb = one_gpu();
    let _a = env(&sb, "a", None);
    let work = tempfile::tempdir().unwrap();
    crate::lock_support::mkfifo(&work.path().join("ready"));
    // The shell waits on a child it kills in its trap; it says it is ready
    // only once that child runs `sleep` (a signal sent between fork and
    // exec would be lost).
    let script = r#"trap 'echo TERM >> "$1/log"; kill $p; exit 5' TERM
        sleep 100000 >/dev/null 2>&1 & p=$!
        until [ "$(cat /proc/$p/comm 2>/dev/null)" = sleep ]; do :; done
        echo x > "$1/ready"; wait $p"#;
    let dir = work.path().to_string_lossy().into_owned();
    let locker = Locker::spawn(&sb, Some("a"), &["sh", "-c", script, "sh", &dir]);
    let ready = work.path().join("ready");
    crate::lock_support::within("the command to start", move || {
        std::fs::read(ready).unwrap()
    });
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(locker.pid() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let (status, _) = locker.finish();
    assert_eq!(
        status.code(),
        Some(5),
        "genv lock returns the command's code"
    );
    assert_eq!(log(work.path()), ["TERM"]);
}

#[test]
fn nonblock_fails_at_once_naming_the_holder() {
    let sb = one_gpu();
    let _a = env(&sb, "a", None);
    let _b = env(&sb, "b", None);
    let work = tempfile::tempdir().unwrap();
    let sa = Section::new(work.path(), "A");
    let ca = sa.command();
    let a = Locker::spawn(&sb, Some("a"), &args(&[], &ca));
    sa.entered();
    let out = sb
        .cmd(&["lock", "-n", "true"])
        .env("GENV_ENVIRONMENT_ID", "b")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot lock GPU 0") && stderr.contains("environment a"),
        "{stderr}"
    );
    assert!(!stderr.contains("environment b"), "{stderr}");
    let out = sb
        .cmd(&["lock", "-n", "-E", "42", "true"])
        .env("GENV_ENVIRONMENT_ID", "b")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(42));
    // Nothing of b is left in the queue.
    let table = sb
        .run(&["devices", "locks", "--format", "csv", "--no-header"])
        .ok();
    assert!(!table.stdout.contains(",b,"), "{table:?}");
    sa.release();
    assert!(a.finish().0.success());
}

#[test]
fn timeout_gives_up_after_the_time() {
    let sb = one_gpu();
    let _a = env(&sb, "a", None);
    let _b = env(&sb, "b", None);
    let work = tempfile::tempdir().unwrap();
    let sa = Section::new(work.path(), "A");
    let ca = sa.command();
    let a = Locker::spawn(&sb, Some("a"), &args(&[], &ca));
    sa.entered();
    let start = Instant::now();
    let out = sb
        .cmd(&["lock", "-w", "0.3", "sh", "-c", "echo B >> log"])
        .env("GENV_ENVIRONMENT_ID", "b")
        .output()
        .unwrap();
    assert!(start.elapsed().as_secs_f64() >= 0.3);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("timed out after 300ms waiting for GPU 0"),
        "{stderr}"
    );
    let table = sb
        .run(&["devices", "locks", "--format", "csv", "--no-header"])
        .ok();
    assert!(!table.stdout.contains(",b,"), "{table:?}");
    sa.release();
    assert!(a.finish().0.success());
    assert_eq!(log(work.path()), ["in A", "out A"]);
    // With the device free, -w takes it at once.
    let out = sb
        .cmd(&["lock", "-w", "5", "true"])
        .env("GENV_ENVIRONMENT_ID", "b")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

/// Without the environment in the state, the devices come from
/// `CUDA_VISIBLE_DEVICES`, taken whole, as genv 1.4.3 does in a shell.
#[test]
fn cuda_visible_devices_when_the_state_does_not_know_the_environment() {
    let sb = one_gpu();
    let work = tempfile::tempdir().unwrap();
    let sa = Section::new(work.path(), "A");
    let ca = sa.command();
    std::fs::create_dir_all(sb.file("devices")).unwrap();
    let mut holder = std::process::Command::new("flock")
        .arg("-x")
        .arg(sb.file("devices/0.lock"))
        .args(&ca)
        .spawn()
        .unwrap();
    sa.entered();
    let out = sb
        .cmd(&["lock", "-n", "true"])
        .env("GENV_ENVIRONMENT_ID", "ghost")
        .env("CUDA_VISIBLE_DEVICES", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = sb
        .cmd(&["lock", "-n", "true"])
        .env("GENV_ENVIRONMENT_ID", "ghost")
        .env("CUDA_VISIBLE_DEVICES", "-1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    sa.release();
    assert!(holder.wait().unwrap().success());
}

#[test]
fn devices_ps_is_unchanged_and_locks_lists_free_devices() {
    let sb = one_gpu();
    let run = sb.run(&["devices", "locks"]).ok();
    let header =
        "ID      ENV ID      ENV NAME        USER            PID     MODE            STATE\n";
    assert!(run.stdout.starts_with(header), "{run:?}");
    assert_eq!(run.stdout.lines().count(), 2);
    let csv = sb
        .run(&["devices", "locks", "--format", "csv", "--no-header"])
        .ok();
    assert_eq!(csv.stdout, "0,,,,,,\n");
    let ps = sb.run(&["devices"]).ok();
    let row = format!("{:<8}{:<12}{:<16}\n", 0, "", "");
    assert_eq!(
        ps.stdout,
        format!("ID      ENV ID      ENV NAME        ATTACHED\n{row}")
    );
}

/// When the state cannot be read, `genv lock` runs nothing unlocked: with
/// no `CUDA_VISIBLE_DEVICES` to go by it exits 1 with one error (and its
/// hint) and the command never runs.
#[test]
fn unreadable_state_runs_nothing_unlocked() {
    let mut sb = one_gpu();
    let work = tempfile::tempdir().unwrap();
    // A file where the state folder belongs: nothing in it can be read.
    let not_a_folder = work.path().join("state");
    std::fs::write(&not_a_folder, "").unwrap();
    sb.set("GENV_TMPDIR", not_a_folder.to_str().unwrap());
    let marker = work.path().join("ran");
    let script = format!("echo ran > '{}'", marker.display());
    let out = sb
        .cmd(&["lock", "sh", "-c", &script])
        .env("GENV_ENVIRONMENT_ID", "a")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!marker.exists(), "the command ran without its locks");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("genv: error: cannot tell which GPUs environment a uses")
            && lines[0].contains("CUDA_VISIBLE_DEVICES"),
        "{stderr}"
    );
    assert!(lines[1].starts_with("hint: "), "{stderr}");
    // With CUDA_VISIBLE_DEVICES it tries to lock those, and since their
    // lock files cannot be made either, still runs nothing.
    let out = sb
        .cmd(&["lock", "sh", "-c", &script])
        .env("GENV_ENVIRONMENT_ID", "a")
        .env("CUDA_VISIBLE_DEVICES", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!marker.exists(), "the command ran without its locks");
    // CUDA_VISIBLE_DEVICES that hides every GPU: nothing to lock, it runs.
    let out = sb
        .cmd(&["lock", "sh", "-c", &script])
        .env("GENV_ENVIRONMENT_ID", "a")
        .env("CUDA_VISIBLE_DEVICES", "-1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(marker.exists());
}

/// An unreadable `envs.json` (here a folder in its place): the devices
/// `CUDA_VISIBLE_DEVICES` names are locked, so a holder keeps it out.
#[test]
fn unreadable_state_locks_cuda_visible_devices() {
    let sb = one_gpu();
    let _a = env(&sb, "a", None);
    let work = tempfile::tempdir().unwrap();
    let sa = Section::new(work.path(), "A");
    std::fs::create_dir_all(sb.file("devices")).unwrap();
    let mut holder = std::process::Command::new("flock")
        .arg("-x")
        .arg(sb.file("devices/0.lock"))
        .args(sa.command())
        .spawn()
        .unwrap();
    sa.entered();
    std::fs::remove_file(sb.file("envs.json")).unwrap();
    std::fs::create_dir(sb.file("envs.json")).unwrap();
    let out = sb
        .cmd(&["lock", "-n", "sh", "-c", "echo ran"])
        .env("GENV_ENVIRONMENT_ID", "a")
        .env("CUDA_VISIBLE_DEVICES", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The folder in envs.json's place is moved aside (one warning); the
    // environment is then unknown, and CUDA_VISIBLE_DEVICES says what to
    // lock.
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines[0].starts_with("genv: warning: "), "{stderr}");
    assert!(
        lines[1].starts_with("genv: error: cannot lock GPU 0 without waiting (held by pid "),
        "{stderr}"
    );
    sa.release();
    assert!(holder.wait().unwrap().success());
}

/// `-w` against a genv 1.4.3 holder (a plain `flock -x`, which our ledger
/// knows nothing of): gives up after the time, naming it, and exits with
/// `-E`'s code.
#[test]
fn timeout_against_a_genv_1_4_3_holder() {
    let sb = one_gpu();
    let _b = env(&sb, "b", None);
    let work = tempfile::tempdir().unwrap();
    let sa = Section::new(work.path(), "A");
    std::fs::create_dir_all(sb.file("devices")).unwrap();
    let mut holder = std::process::Command::new("flock")
        .arg("-x")
        .arg(sb.file("devices/0.lock"))
        .args(sa.command())
        .spawn()
        .unwrap();
    sa.entered();
    let start = Instant::now();
    let out = sb
        .cmd(&["lock", "-w", "0.3", "-E", "9", "sh", "-c", "echo ran"])
        .env("GENV_ENVIRONMENT_ID", "b")
        .output()
        .unwrap();
    assert!(start.elapsed().as_secs_f64() >= 0.3);
    assert_eq!(out.status.code(), Some(9), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "genv: error: timed out after 300ms waiting for GPU 0 (held by pid {} outside genv, exclusive)\nhint: ",
            holder.id()
        )),
        "{stderr}"
    );
    let table = sb
        .run(&["devices", "locks", "--format", "csv", "--no-header"])
        .ok();
    assert!(!table.stdout.contains(",b,"), "{table:?}");
    sa.release();
    assert!(holder.wait().unwrap().success());
}

/// Alice's environment `a`, attached to the one GPU, and her shell's
/// process that keeps it alive; a first `genv lock` of hers makes
/// `devices/` as it is in use.
fn alice_attached(sb: &Sandbox) -> Sleeper {
    let shell = sleeper_as(ALICE, Path::new("/bin/sleep"), &[]);
    let (uid, pid) = (ALICE.to_string(), shell.pid().to_string());
    sb.run_as(
        ALICE,
        &[
            "envs", "activate", "--eid", "a", "--uid", &uid, "--pid", &pid,
        ],
    )
    .ok();
    sb.run_as(ALICE, &["devices", "attach", "--eid", "a", "--index", "0"])
        .ok();
    sb.run_as_in(ALICE, "a", &["lock", "true"]).ok();
    shell
}

/// `sh -c SCRIPT` as mallory, in the state folder, which must succeed.
#[track_caller]
fn mallory_does(sb: &Sandbox, script: &str) {
    let out = command_as(MALLORY, "sh")
        .args(["-c", script])
        .current_dir(sb.state())
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}: {out:?}");
}

/// A refusal of `genv lock`: a non-zero exit, one error line (and its
/// hint), and the command never ran.
#[track_caller]
fn refused_without_running(run: &Run, mark: &Path) -> Option<String> {
    let errors = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("genv: error: "))
        .count();
    let others = run
        .stderr
        .lines()
        .filter(|l| !l.starts_with("genv: error: ") && !l.starts_with("hint: "))
        .count();
    if run.code == 0 || mark.exists() || errors != 1 || others != 0 {
        return Some(format!(
            "ran: {}, {run:?}",
            if mark.exists() { "yes" } else { "no" }
        ));
    }
    None
}

/// What mallory can leave in the state folder that stops genv from
/// telling which GPUs alice's environment uses: alice's `genv lock --
/// CMD` fails closed, saying so in one line, and CMD never runs.
#[test]
fn a_planted_state_makes_lock_fail_closed() {
    let cases = [
        (
            "devices.json garbage, no good copy",
            "rm -f .devices.json.good && echo garbage > devices.json",
        ),
        (
            "devices.json JSON but not a state file, no good copy",
            "rm -f .devices.json.good && echo '{\"devices\": 0}' > devices.json",
        ),
        (
            "devices.json a FIFO",
            "rm -f devices.json && mkfifo devices.json",
        ),
        (
            "devices.json unreadable, no good copy",
            "rm -f devices.json .devices.json.good && echo '{}' > devices.json && chmod 600 devices.json",
        ),
        (
            "devices/ a plain file",
            "rm -rf devices && echo x > devices",
        ),
    ];
    let mut failures = Vec::new();
    for (what, script) in cases {
        let mut sb = Sandbox::multi_user();
        sb.set("GENV_MOCK_DEVICE_COUNT", "1");
        let _shell = alice_attached(&sb);
        mallory_does(&sb, script);
        let mark = sb.home_of(ALICE).join("ran");
        let touch = format!("touch '{}'", mark.display());
        let run = sb.run_as_in(ALICE, "a", &["lock", "--", "sh", "-c", &touch]);
        if let Some(failure) = refused_without_running(&run, &mark) {
            failures.push(format!("{what}: {failure}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// An entry of `devices.json` that does not parse is set aside when the
/// state is loaded (with a warning); when it was alice's device, what is
/// left does not say which GPU she uses, and `genv lock` fails closed.
#[test]
fn a_damaged_entry_of_the_environment_makes_lock_fail_closed() {
    let mut sb = Sandbox::multi_user();
    sb.set("GENV_MOCK_DEVICE_COUNT", "1");
    let _shell = alice_attached(&sb);
    let forged = r#"{"devices": [{"index": "zero", "attachments": [{"eid": "a"}]}]}"#;
    mallory_does(
        &sb,
        &format!("rm -f devices.json .devices.json.good && echo '{forged}' > devices.json"),
    );
    let mark = sb.home_of(ALICE).join("ran");
    let touch = format!("touch '{}'", mark.display());
    let run = sb.run_as_in(ALICE, "a", &["lock", "--", "sh", "-c", &touch]);
    assert!(!mark.exists(), "the command ran without its locks: {run:?}");
    assert_ne!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stderr
            .lines()
            .filter(|l| l.starts_with("genv: error: "))
            .count(),
        1,
        "{run:?}"
    );
}

/// Alice waits for the GPU another process holds; meanwhile mallory
/// detaches alice's environment. When the GPU frees, alice's command does
/// not run on a device her environment no longer has.
#[test]
fn a_detach_while_waiting_makes_lock_fail_closed() {
    let mut sb = Sandbox::multi_user();
    sb.set("GENV_MOCK_DEVICE_COUNT", "1");
    let _shell = alice_attached(&sb);
    let work = tempfile::tempdir().unwrap();
    let holder_section = Section::new(work.path(), "H");
    let mut holder = std::process::Command::new("flock")
        .arg("-x")
        .arg(sb.file("devices/0.lock"))
        .args(holder_section.command())
        .spawn()
        .unwrap();
    holder_section.entered();
    let mark = sb.home_of(ALICE).join("ran");
    let touch = format!("touch '{}'", mark.display());
    let mut cmd = sb.cmd_as(ALICE, &["lock", "--", "sh", "-c", &touch]);
    cmd.env("GENV_ENVIRONMENT_ID", "a");
    let mut alice = Locker::start(cmd);
    alice.expect_line("waiting for GPU 0");
    sb.run_as(MALLORY, &["devices", "detach", "--eid", "a"])
        .ok();
    holder_section.release();
    assert!(holder.wait().unwrap().success());
    let (status, stdout, stderr) = alice.finish_all();
    assert!(
        !mark.exists(),
        "alice's command ran on a GPU she no longer holds: {stderr:?}"
    );
    assert!(!status.success(), "{stderr:?} {stdout}");
    let errors: Vec<&String> = stderr
        .iter()
        .filter(|l| l.starts_with("genv: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr:?}");
    assert!(errors[0].contains("detached"), "{stderr:?}");
}
