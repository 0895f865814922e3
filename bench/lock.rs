//! The hand-over latency of `genv lock`: from the moment one holder's
//! command finishes to the moment the next waiter's command starts, through
//! the real binary, for whole-device (exclusive) and fractional locks.
//!
//!     cargo build --release && cargo run --release --example lock [ROUNDS]
//!
//! Each round: environment A runs `genv lock <this> hold …`, which says it
//! is inside and blocks on a fifo; environment B runs `genv lock <this>
//! stamp …` and is seen waiting (its stderr line); the fifo releases A,
//! whose command writes the time as its last act; B's command writes the
//! time as its first. The latency includes A's `genv lock` reaping its
//! command and letting go, B waking and taking the lock, and starting B's
//! command (a process start of this small program).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn genv_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("GENV_BIN") {
        return path.into();
    }
    // target/<profile>/examples/lock → target/<profile>/genv
    let me = std::env::current_exe().expect("current exe");
    me.parent()
        .and_then(Path::parent)
        .map(|p| p.join("genv"))
        .expect("genv next to the examples folder")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        // As the locked command: say we are in, wait, stamp the end.
        Some("hold") => {
            std::fs::write(&args[2], b"in\n").expect("in fifo");
            let mut s = String::new();
            let _ = std::fs::File::open(&args[3]).and_then(|mut f| f.read_to_string(&mut s));
            std::fs::write(&args[4], now_ns().to_string()).expect("stamp");
            return;
        }
        // As the waiting command: stamp the start.
        Some("stamp") => {
            std::fs::write(&args[2], now_ns().to_string()).expect("stamp");
            return;
        }
        _ => {}
    }
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    let genv = genv_binary();
    println!("| lock | rounds | median | p90 | min |");
    println!("|---|---|---|---|---|");
    for (label, memory) in [
        ("exclusive (whole device)", None),
        ("fractional (10gi + 10gi on 16g)", Some("10gi")),
    ] {
        let mut samples = measure(&genv, rounds, memory);
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        let ms = |ns: u128| format!("{:.3} ms", ns as f64 / 1e6);
        println!(
            "| {label} | {rounds} | {} | {} | {} |",
            ms(at(0.5)),
            ms(at(0.9)),
            ms(samples[0])
        );
    }
}

fn measure(genv: &Path, rounds: usize, memory: Option<&str>) -> Vec<u128> {
    let work = std::env::temp_dir().join(format!("genv-lock-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    let state = work.join("state");
    let me = std::env::current_exe().expect("current exe");
    let pid = std::process::id().to_string();
    let genv_cmd = |args: &[&str]| {
        let mut cmd = Command::new(genv);
        cmd.args(args)
            .env("GENV_TMPDIR", &state)
            .env("GENV_MOCK_DEVICE_COUNT", "1")
            .env_remove("GENV_ENVIRONMENT_ID")
            .env_remove("CUDA_VISIBLE_DEVICES");
        cmd
    };
    for eid in ["a", "b"] {
        let ok =
            |mut c: Command| assert!(c.stdout(Stdio::null()).status().expect("genv").success());
        ok(genv_cmd(&[
            "envs", "activate", "--eid", eid, "--uid", "0", "--pid", &pid,
        ]));
        if let Some(m) = memory {
            ok(genv_cmd(&[
                "envs",
                "config",
                "--eid",
                eid,
                "gpu-memory",
                "--gpu-memory",
                m,
            ]));
        }
        ok(genv_cmd(&[
            "devices",
            "attach",
            "--eid",
            eid,
            "--index",
            "0",
            "--allow-over-subscription",
        ]));
    }
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let path = |name: &str| work.join(format!("{name}{round}"));
        let (fifo_in, fifo_out, end, start) = (path("in"), path("out"), path("end"), path("start"));
        for fifo in [&fifo_in, &fifo_out] {
            assert!(
                Command::new("mkfifo")
                    .arg(fifo)
                    .status()
                    .expect("mkfifo")
                    .success()
            );
        }
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let mut holder = genv_cmd(&["lock"])
            .arg(&me)
            .args(["hold", &s(&fifo_in), &s(&fifo_out), &s(&end)])
            .env("GENV_ENVIRONMENT_ID", "a")
            .spawn()
            .expect("holder");
        let mut entered = String::new();
        std::fs::File::open(&fifo_in)
            .and_then(|mut f| f.read_to_string(&mut entered))
            .expect("holder in");
        let mut waiter = genv_cmd(&["lock"])
            .arg(&me)
            .args(["stamp", &s(&start)])
            .env("GENV_ENVIRONMENT_ID", "b")
            .stderr(Stdio::piped())
            .spawn()
            .expect("waiter");
        let stderr = BufReader::new(waiter.stderr.take().expect("stderr"));
        let mut lines = stderr.lines().map_while(Result::ok);
        assert!(
            lines.any(|l| l.contains("waiting")),
            "the waiter should wait"
        );
        // Keep draining what follows, so the waiter never blocks on stderr.
        std::thread::spawn(move || lines.for_each(|l| eprintln!("{l}")));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&fifo_out)
            .and_then(|mut f| f.write_all(b"go\n"))
            .expect("release");
        assert!(holder.wait().expect("holder").success());
        assert!(waiter.wait().expect("waiter").success());
        let read = |p: &Path| -> u128 {
            std::fs::read_to_string(p)
                .expect("stamp")
                .trim()
                .parse()
                .expect("number")
        };
        samples.push(read(&start).saturating_sub(read(&end)));
    }
    let _ = std::fs::remove_dir_all(&work);
    samples
}
