//! `genv status` and `genv devices queue` say who holds a device's lock and
//! who waits in line.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use crate::common::{Sandbox, Sleeper};

#[test]
fn status_names_the_holder_of_a_device_lock() {
    let sb = Sandbox::new();
    let holder = Sleeper::new();
    for eid in ["a", "b"] {
        sb.run(&[
            "envs",
            "activate",
            "--eid",
            eid,
            "--uid",
            "1000",
            "--username",
            "alice",
            "--pid",
            &holder.pid().to_string(),
        ])
        .ok();
        sb.run(&[
            "devices",
            "attach",
            "--eid",
            eid,
            "--index",
            "0",
            "--allow-over-subscription",
        ])
        .ok();
    }
    let plain = {
        let mut cmd = sb.cmd(&["status"]);
        cmd.env("GENV_ENVIRONMENT_ID", "b");
        crate::common::Run::from(cmd.output().unwrap()).ok().stdout
    };
    assert!(plain.ends_with("GPU memory capacity: N/A\n\n"), "{plain}");
    assert!(!plain.contains("Device locks"));

    let mut locked = sb
        .cmd(&["lock", "sh", "-c", "echo in; read x"])
        .env("GENV_ENVIRONMENT_ID", "a")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(locked.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "in\n");
    let mut cmd = sb.cmd(&["status"]);
    cmd.env("GENV_ENVIRONMENT_ID", "b");
    let status = crate::common::Run::from(cmd.output().unwrap()).ok().stdout;
    assert!(status.starts_with(&plain), "{status}");
    assert!(
        // The holder's user is its process's owner, not what envs.json says.
        status.contains("Device locks\n    GPU 0: held by environment a (root(0), pid "),
        "{status}"
    );
    locked.stdin.take().unwrap().write_all(b"done\n").unwrap();
    assert!(locked.wait().unwrap().success());
}

#[test]
fn devices_queue_lists_the_line() {
    let mut sb = Sandbox::new();
    sb.set("GENV_MOCK_DEVICE_COUNT", "1");
    let holder = Sleeper::new();
    for eid in ["h", "w"] {
        sb.run(&[
            "envs",
            "activate",
            "--eid",
            eid,
            "--uid",
            "1000",
            "--pid",
            &holder.pid().to_string(),
        ])
        .ok();
    }
    sb.run(&["envs", "config", "--eid", "w", "name", "--name", "waiter"])
        .ok();
    sb.run(&["devices", "attach", "--eid", "h", "--count", "1"])
        .ok();
    let mut waiter = sb
        .cmd(&["devices", "attach", "--eid", "w", "--count", "1", "--wait"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(waiter.stderr.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let queue = sb.run(&["devices", "queue"]).ok().stdout;
    let lines: Vec<&str> = queue.lines().collect();
    assert_eq!(lines.len(), 2, "{queue}");
    assert!(
        lines[0].starts_with("PLACE   ENV ID      ENV NAME"),
        "{queue}"
    );
    assert!(
        lines[1].starts_with("1       w           waiter          1000            "),
        "{queue}"
    );
    assert!(lines[1].contains("1 device(s)"), "{queue}");
    let mut cmd = sb.cmd(&["status"]);
    cmd.env("GENV_ENVIRONMENT_ID", "w");
    let status = crate::common::Run::from(cmd.output().unwrap()).ok().stdout;
    assert!(
        status.contains("Waiting for GPUs\n    place 1 in line (pid "),
        "{status}"
    );
    sb.run(&["devices", "detach", "--eid", "h"]).ok();
    assert!(waiter.wait().unwrap().success());
    assert_eq!(sb.run(&["devices", "queue"]).ok().stdout.lines().count(), 1);
}

/// A program that genv 1.4.3's `genv.sdk.activate()` registered in
/// `envs.json` `pids` has no `GENV_ENVIRONMENT_ID` in its environment; the
/// locks it takes (here `flock(1)`, as the SDK's `fcntl.flock`) are
/// credited to that environment, holding and waiting alike.
#[test]
fn locks_of_a_registered_process_are_credited_to_its_environment() {
    use crate::lock_support::{Locker, Section, one_gpu};
    let sb = one_gpu();
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(sb.file("devices")).unwrap();
    let flock = |section: &Section| {
        std::process::Command::new("flock")
            .arg("-x")
            .arg(sb.file("devices/0.lock"))
            .args(section.command())
            .env_remove("GENV_ENVIRONMENT_ID")
            .spawn()
            .expect("flock(1) from util-linux")
    };
    let register = |eid: &str, pid: u32| {
        let pid = pid.to_string();
        sb.run(&[
            "envs",
            "activate",
            "--eid",
            eid,
            "--uid",
            "1000",
            "--username",
            "alice",
            "--pid",
            &pid,
        ])
        .ok();
        sb.run(&[
            "envs",
            "config",
            "--eid",
            eid,
            "name",
            "--name",
            &format!("job-{eid}"),
        ])
        .ok();
        sb.run(&[
            "devices",
            "attach",
            "--eid",
            eid,
            "--index",
            "0",
            "--allow-over-subscription",
        ])
        .ok();
    };
    let (sa, sc) = (
        Section::new(work.path(), "A"),
        Section::new(work.path(), "C"),
    );
    let mut holder = flock(&sa);
    register("a", holder.id());
    sa.entered();
    let mut waiter = flock(&sc);
    register("c", waiter.id());
    // Shows as waiting once the kernel lists it blocked.
    let table = crate::lock_support::within("the waiter to block", {
        let sb_cmd = sb.cmd(&["devices", "locks", "--format", "csv", "--no-header"]);
        let pid = waiter.id();
        move || {
            let mut cmd = sb_cmd;
            loop {
                let out = String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned();
                if out.contains(&pid.to_string()) {
                    return out;
                }
            }
        }
    });
    assert!(
        table.contains(&format!(
            "0,a,job-a,root(0),{},exclusive,holding",
            holder.id()
        )),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "0,c,job-c,root(0),{},exclusive,waiting",
            waiter.id()
        )),
        "{table}"
    );

    let mut status = sb.cmd(&["status"]);
    status.env("GENV_ENVIRONMENT_ID", "c");
    let status = crate::common::Run::from(status.output().unwrap())
        .ok()
        .stdout;
    assert!(
        status.contains(&format!(
            "Device locks\n    GPU 0: held by environment a (root(0), pid {}, exclusive); waiting: environment c (root(0), pid {}, exclusive)\n",
            holder.id(),
            waiter.id()
        )),
        "{status}"
    );

    // A genv lock of ours in a third environment names the holder (the
    // kernel, not a line, decides between flock waiters).
    let keep_b = Sleeper::new();
    register("b", keep_b.pid());
    let mut b = Locker::spawn(&sb, Some("b"), &["true"]);
    let line = b.expect_line("waiting for GPU 0");
    assert_eq!(
        line,
        format!(
            "genv: waiting for GPU 0 (held by environment a (job-a), root(0), pid {}, exclusive)",
            holder.id()
        )
    );
    sa.release();
    sc.entered();
    sc.release();
    assert!(holder.wait().unwrap().success());
    assert!(waiter.wait().unwrap().success());
    assert!(b.finish().0.success());
}

/// Names and usernames are data from the shared state: shown escaped in
/// `genv devices locks`, `genv status` and `genv lock`'s messages, so an
/// escape sequence cannot drive a terminal and a newline cannot forge a
/// row.
#[test]
fn state_text_is_escaped_in_lock_tables_and_messages() {
    use crate::lock_support::{Locker, Section, args, env, one_gpu};
    let sb = one_gpu();
    let _a = env(&sb, "a", None);
    let _b = env(&sb, "b", None);
    let mut envs: serde_json::Value = serde_json::from_str(&sb.read("envs.json")).unwrap();
    for env in envs["envs"].as_array_mut().unwrap() {
        if env["eid"] == "a" {
            env["config"]["name"] = "evil\u{1b}[2J\n0,z,forged".into();
            env["username"] = "al\u{202e}ice".into();
        }
    }
    sb.write("envs.json", &envs.to_string());
    let work = tempfile::tempdir().unwrap();
    let sa = Section::new(work.path(), "A");
    let ca = sa.command();
    let a = Locker::spawn(&sb, Some("a"), &args(&[], &ca));
    sa.entered();
    let mut b = Locker::spawn(&sb, Some("b"), &["true"]);
    let line = b.expect_line("waiting for GPU 0");
    assert!(
        line.contains("environment a (evil\\u{1b}[2J\\n0,z,forged), root(0), pid "),
        "{line:?}"
    );
    for args in [
        &["devices", "locks"][..],
        &["devices", "locks", "--format", "csv", "--no-header"][..],
    ] {
        let table = sb.run(args).ok().stdout;
        assert!(
            !table.contains('\u{1b}') && !table.contains('\u{202e}'),
            "{table:?}"
        );
        let rows = table.lines().filter(|l| l.starts_with("0")).count();
        assert_eq!(rows, 2, "{table:?}");
    }
    let mut status = sb.cmd(&["status"]);
    status.env("GENV_ENVIRONMENT_ID", "b");
    let status = crate::common::Run::from(status.output().unwrap())
        .ok()
        .stdout;
    assert!(
        // The user shown is the holding process's owner (the kernel's
        // word), so envs.json's hostile username never reaches it.
        status.contains("held by environment a (root(0), pid ")
            && !status.contains('\u{1b}')
            && !status.contains('\u{202e}'),
        "{status:?}"
    );
    sa.release();
    assert!(a.finish().0.success());
    assert!(b.finish().0.success());
}

/// Mallory's process holds GPU 0's lock claiming alice's environment:
/// `genv devices locks` names mallory, the owner of the holding process as
/// the kernel says, not the user of the environment it claims.
#[test]
fn a_lock_holder_is_named_by_the_owner_of_its_process() {
    use crate::common::users::{ALICE, MALLORY, sleeper_as};
    let mut sb = Sandbox::multi_user();
    sb.set("GENV_MOCK_DEVICE_COUNT", "1");
    let shell = sleeper_as(ALICE, std::path::Path::new("/bin/sleep"), &[]);
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
    let mut locked = sb
        .cmd_as(MALLORY, &["lock", "sh", "-c", "echo in; read x"])
        .env("GENV_ENVIRONMENT_ID", "a")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(locked.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "in\n");
    let table = sb
        .run_as(
            ALICE,
            &["devices", "locks", "--format", "csv", "--no-header"],
        )
        .ok()
        .stdout;
    let user = |uid: u32| name_of(uid).map_or(uid.to_string(), |n| format!("{n}({uid})"));
    assert_eq!(
        table,
        format!("0,a,,{},{},exclusive,holding\n", user(MALLORY), locked.id()),
        "{table}"
    );
    locked.stdin.take().unwrap().write_all(b"done\n").unwrap();
    assert!(locked.wait().unwrap().success());
}

/// A user's login name from the password database, if it has one (the
/// test users usually have none).
fn name_of(uid: u32) -> Option<String> {
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let found = fields.nth(1)?.parse::<u32>().ok()? == uid;
            found.then(|| name.to_owned())
        })
}
