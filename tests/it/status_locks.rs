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
        status.contains("Device locks\n    GPU 0: held by environment a (alice(1000), pid "),
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
