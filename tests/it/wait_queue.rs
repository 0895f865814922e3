//! `--wait`: requests wait in line for GPUs, first come first served.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::users::{ALICE, MALLORY, command_as, sleeper_as};
use crate::common::{Sandbox, Sleeper};

/// Kills the waiters if a test hangs, so it fails instead of blocking CI.
struct Watchdog(Arc<Mutex<Vec<u32>>>);

impl Watchdog {
    fn new() -> Self {
        let pids = Arc::new(Mutex::new(Vec::<u32>::new()));
        let shared = pids.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(60));
            for pid in shared.lock().unwrap().iter() {
                // SAFETY: kill(2) only sends a signal; no memory is involved.
                unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
            }
        });
        Watchdog(pids)
    }

    fn guard(&self, child: &Child) {
        self.0.lock().unwrap().push(child.id());
    }
}

fn env(sb: &Sandbox, eid: &str, holder: &Sleeper) {
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

/// Starts a waiting attach and returns once it has said it is in line.
fn waiter(sb: &Sandbox, eid: &str, extra: &[&str], dog: &Watchdog) -> (Child, String) {
    let mut args = vec!["devices", "attach", "--eid", eid, "--count", "1"];
    args.extend_from_slice(extra);
    let mut child = sb
        .cmd(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    dog.guard(&child);
    let mut line = String::new();
    BufReader::new(child.stderr.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

fn queued(sb: &Sandbox) -> Vec<String> {
    let text = sb.read("queue.json");
    if text.is_empty() {
        return Vec::new();
    }
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["waiters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["eid"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_dozen_waiters_are_served_in_order_of_arrival() {
    let mut sb = Sandbox::new();
    sb.set("GENV_MOCK_DEVICE_COUNT", "1");
    let dog = Watchdog::new();
    let holder = Sleeper::new();
    env(&sb, "h", &holder);
    sb.run(&["devices", "attach", "--eid", "h", "--count", "1"])
        .ok();
    let mut waiters = Vec::new();
    for i in 0..12 {
        let eid = format!("w{i}");
        env(&sb, &eid, &holder);
        let (child, line) = waiter(&sb, &eid, &["--wait"], &dog);
        assert!(line.starts_with("genv: waiting for 1 device ("), "{line}");
        let place = ["1st", "2nd", "3rd"]
            .get(i)
            .map_or(format!("{}th", i + 1), |s| s.to_string());
        assert!(line.contains(&format!("({place} in line")), "{line}");
        waiters.push((eid, child));
    }
    let expected: Vec<String> = (0..12).map(|i| format!("w{i}")).collect();
    assert_eq!(queued(&sb), expected);

    let mut previous = "h".to_owned();
    for (i, (eid, mut child)) in waiters.into_iter().enumerate() {
        sb.run(&["devices", "detach", "--eid", &previous]).ok();
        let output = {
            let status = child.wait().unwrap();
            assert!(status.success(), "{eid} failed");
            let mut out = String::new();
            std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
            out
        };
        assert_eq!(output, "0\n", "{eid}");
        assert_eq!(
            sb.run(&["devices", "query", "--query", "eids"]).ok().stdout,
            format!("{eid}\n")
        );
        assert_eq!(queued(&sb), expected[i + 1..].to_vec());
        previous = eid;
    }
}

#[test]
fn a_killed_waiter_leaves_the_line() {
    let mut sb = Sandbox::new();
    sb.set("GENV_MOCK_DEVICE_COUNT", "1");
    let dog = Watchdog::new();
    let holder = Sleeper::new();
    for eid in ["h", "a", "b"] {
        env(&sb, eid, &holder);
    }
    sb.run(&["devices", "attach", "--eid", "h", "--count", "1"])
        .ok();
    let (mut a, _) = waiter(&sb, "a", &["--wait"], &dog);
    let (mut b, line) = waiter(&sb, "b", &["--wait"], &dog);
    assert!(line.contains("2nd in line"), "{line}");
    a.kill().unwrap();
    a.wait().unwrap();
    sb.run(&["devices", "detach", "--eid", "h"]).ok();
    assert!(b.wait().unwrap().success());
    assert_eq!(
        sb.run(&["devices", "find", "--eid", "b"]).ok().stdout,
        "0\n"
    );
    assert_eq!(queued(&sb), Vec::<String>::new());
}

#[test]
fn ctrl_c_leaves_no_trace() {
    let mut sb = Sandbox::new();
    sb.set("GENV_MOCK_DEVICE_COUNT", "1");
    let dog = Watchdog::new();
    let holder = Sleeper::new();
    env(&sb, "h", &holder);
    env(&sb, "a", &holder);
    sb.run(&["devices", "attach", "--eid", "h", "--count", "1"])
        .ok();
    let (mut a, _) = waiter(&sb, "a", &["--wait"], &dog);
    assert_eq!(queued(&sb), ["a"]);
    // SAFETY: kill(2) only sends a signal; no memory is involved.
    unsafe { libc::kill(a.id() as i32, libc::SIGINT) };
    let status = a.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(queued(&sb), Vec::<String>::new());
    assert_eq!(sb.run(&["devices", "find", "--eid", "a"]).ok().stdout, "\n");
}

#[test]
fn a_wait_with_a_limit_times_out_cleanly() {
    let mut sb = Sandbox::new();
    sb.set("GENV_MOCK_DEVICE_COUNT", "1");
    let holder = Sleeper::new();
    env(&sb, "h", &holder);
    env(&sb, "a", &holder);
    sb.run(&["devices", "attach", "--eid", "h", "--count", "1"])
        .ok();
    let run = sb
        .run(&[
            "devices",
            "attach",
            "--eid",
            "a",
            "--count",
            "1",
            "--wait=0.2",
        ])
        .fails();
    assert!(
        run.stderr
            .ends_with("Timed out after 0.2 s waiting for 1 device\n"),
        "{run:?}"
    );
    assert_eq!(queued(&sb), Vec::<String>::new());
}

#[test]
fn a_request_that_can_never_be_met_fails_at_once() {
    let sb = Sandbox::new();
    let holder = Sleeper::new();
    env(&sb, "a", &holder);
    let run = sb
        .run(&["devices", "attach", "--eid", "a", "--count", "5", "--wait"])
        .fails();
    assert_eq!(
        run.stderr,
        "Requested more devices (5) than total available (2)\n"
    );
    let run = sb
        .run(&["devices", "attach", "--eid", "a", "--index", "9", "--wait"])
        .fails();
    assert!(
        run.stderr
            .starts_with("genv: error: Device 9 does not exist"),
        "{run:?}"
    );
}

#[test]
fn a_free_device_is_taken_without_waiting() {
    let sb = Sandbox::new();
    let holder = Sleeper::new();
    env(&sb, "a", &holder);
    let run = sb
        .run(&["devices", "attach", "--eid", "a", "--count", "1", "--wait"])
        .ok();
    assert_eq!(run.stdout, "0\n");
    assert_eq!(run.stderr, "");
}

#[test]
fn bad_wait_values_are_refused() {
    let sb = Sandbox::new();
    let run = sb
        .run(&["devices", "attach", "--eid", "a", "--wait=soon"])
        .fails();
    assert!(
        run.stderr.contains("invalid number of seconds 'soon'"),
        "{run:?}"
    );
}

#[test]
fn genv_attach_waits_too() {
    let mut sb = Sandbox::new();
    sb.set("GENV_MOCK_DEVICE_COUNT", "1");
    let dog = Watchdog::new();
    let holder = Sleeper::new();
    env(&sb, "h", &holder);
    env(&sb, "a", &holder);
    sb.run(&["devices", "attach", "--eid", "h", "--count", "1"])
        .ok();
    let mut child = sb
        .cmd(&["attach", "--count", "1", "--wait=30"])
        .env("GENV_ENVIRONMENT_ID", "a")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    dog.guard(&child);
    let mut line = String::new();
    BufReader::new(child.stderr.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("genv: waiting for 1 device (1st in line, for up to 30 s)"),
        "{line}"
    );
    sb.run(&["devices", "detach", "--eid", "h"]).ok();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        sb.run(&["devices", "find", "--eid", "a"]).ok().stdout,
        "0\n"
    );
}

#[test]
fn a_wait_too_long_to_measure_is_refused_not_a_crash() {
    let sb = Sandbox::new();
    let run = sb
        .run(&["devices", "attach", "--eid", "a", "--wait=1e30"])
        .fails();
    assert!(
        run.stderr.contains("invalid number of seconds '1e30'"),
        "{run:?}"
    );
}

/// A `queue.json` that mallory wrote, with one waiter asking for every
/// GPU in the name of `pid`, holding `ticket`.
fn forged_line(pid: u32, ticket: u64) -> String {
    serde_json::json!({"waiters": [{
        "ticket": ticket, "eid": "m", "pid": pid, "uid": ALICE,
        "since": "02/12/2026 10:00:00", "count": 2, "index": null,
        "over_subscribe": false
    }]})
    .to_string()
}

/// Forged entries in the line (pid 1, a dead pid, a live process of
/// alice's that is not waiting, a ticket of 4294967295) neither keep alice
/// waiting while both GPUs are free nor fill the line: `genv devices
/// attach --wait` and `genv attach --wait` attach at once.
#[test]
fn forged_waiters_do_not_jam_the_line() {
    let dead = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    };
    let mut failures = Vec::new();
    for verb in ["devices attach", "attach"] {
        let sb = Sandbox::multi_user();
        let alice = sleeper_as(ALICE, Path::new("/bin/sleep"), &[]);
        let (uid, pid) = (ALICE.to_string(), alice.pid().to_string());
        sb.run_as(
            ALICE,
            &[
                "envs", "activate", "--eid", "a", "--uid", &uid, "--pid", &pid,
            ],
        )
        .ok();
        let forgeries = [
            ("pid 1", forged_line(1, 1)),
            ("a dead pid", forged_line(dead, 1)),
            ("alice's idle process", forged_line(alice.pid(), 1)),
            (
                "ticket u32::MAX",
                forged_line(alice.pid(), u64::from(u32::MAX)),
            ),
        ];
        for (what, line) in forgeries {
            let path = sb.file("queue.json");
            let out = command_as(MALLORY, "sh")
                .args(["-c", "rm -f \"$1\" && printf %s \"$2\" > \"$1\"", "sh"])
                .arg(&path)
                .arg(&line)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            let start = Instant::now();
            let args: Vec<&str> = match verb {
                "attach" => vec!["attach", "--count", "2", "--wait=8"],
                _ => vec![
                    "devices", "attach", "--eid", "a", "--count", "2", "--wait=8",
                ],
            };
            let run = sb.run_as_in(ALICE, "a", &args);
            let took = start.elapsed();
            if run.code != 0 || took > Duration::from_secs(4) {
                failures.push(format!("{verb}, {what}: after {took:?}: {run:?}"));
            }
            sb.run_as(ALICE, &["devices", "detach", "--eid", "a"]).ok();
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A waiter that really waits (its process holds the line's guard, as its
/// owner) but whose ticket is the last one there is: the next request is
/// still taken into the line, which is renumbered, instead of failing with
/// "the line is full".
#[test]
fn a_ticket_at_the_end_of_the_range_does_not_fill_the_line() {
    let sb = Sandbox::multi_user();
    let alice = sleeper_as(ALICE, Path::new("/bin/sleep"), &[]);
    let (uid, pid) = (ALICE.to_string(), alice.pid().to_string());
    sb.run_as(
        ALICE,
        &[
            "envs", "activate", "--eid", "a", "--uid", &uid, "--pid", &pid,
        ],
    )
    .ok();
    // Mallory's process holds a shared lock on the guard, as a waiter of
    // hers would, and her entry asks for every GPU with the last ticket.
    let guard = sb.file("queue.guard");
    // One process that takes the lock and keeps it (`flock(1)` would leave
    // its command running after it is killed).
    let mut holder = command_as(MALLORY, "/usr/bin/python3");
    holder
        .args([
            "-c",
            "import fcntl, sys, time\nf = open(sys.argv[1], 'a')\nfcntl.flock(f, fcntl.LOCK_SH)\ntime.sleep(100000)",
        ])
        .arg(&guard)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let holder = Sleeper(holder.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(&holder.pid().to_string()))
    {
        assert!(Instant::now() < deadline, "flock never took the guard");
        std::thread::yield_now();
    }
    let line = serde_json::json!({"waiters": [{
        "ticket": u64::from(u32::MAX), "eid": "m", "pid": holder.pid(), "uid": MALLORY,
        "since": "02/12/2026 10:00:00", "count": 2, "index": null,
        "over_subscribe": false
    }]})
    .to_string();
    let out = command_as(MALLORY, "sh")
        .args(["-c", "printf %s \"$2\" > \"$1\"", "sh"])
        .arg(sb.file("queue.json"))
        .arg(&line)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Alice waits behind mallory's real waiter (the line is fair) and
    // times out; she is never told the line is full.
    let run = sb.run_as_in(
        ALICE,
        "a",
        &[
            "devices", "attach", "--eid", "a", "--count", "1", "--wait=1",
        ],
    );
    assert!(!run.stderr.contains("full"), "{run:?}");
    let queue: serde_json::Value = serde_json::from_str(&sb.read("queue.json")).unwrap();
    let tickets: Vec<u64> = queue["waiters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["ticket"].as_u64())
        .collect();
    assert!(
        !tickets.is_empty() && tickets.iter().all(|&t| t < u64::from(u32::MAX)),
        "{tickets:?}"
    );
}
