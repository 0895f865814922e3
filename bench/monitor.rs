//! `genv monitor` under load: 200 environments and 1,000 GPU processes.
//!
//!     cargo build --release && cargo run --release --example monitor [SCRAPES]
//!
//! Starts 1,000 real processes (`sleep` under a name of its own, which the
//! simulated driver counts as compute processes, five per environment, on
//! 8 simulated GPUs), registers 200 environments through the real binary,
//! starts the real `genv monitor` and times whole scrapes over HTTP
//! (connect, request, the full body read). Then, in this process, times one
//! collection: `Snapshot::take` (state, driver, /proc) and the pure
//! metrics function with its encoding.

// Benchmarks may set variables and call libc directly; each block says
// why it is sound.
#![allow(unsafe_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use genv::backend::{MockBackend, MockConfig};
use genv::monitor::{Snapshot, metrics};
use genv::state::StateDir;

const ENVS: usize = 200;
const PER_ENV: usize = 5;
const GPUS: usize = 8;
const NAME: &str = "genv-bench-gpu";

fn genv_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("GENV_BIN") {
        return path.into();
    }
    let me = std::env::current_exe().expect("current exe");
    me.parent()
        .and_then(Path::parent)
        .map(|p| p.join("genv"))
        .expect("genv next to the examples folder")
}

fn scrape(port: u16) -> (Duration, String) {
    let start = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    (start.elapsed(), response)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn main() {
    let scrapes: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let genv = genv_binary();
    let dir = std::env::temp_dir().join(format!("genv-bench-monitor-{}", std::process::id()));
    let state = dir.join("state");
    std::fs::create_dir_all(&dir).expect("bench folder");
    let program = dir.join(NAME);
    std::os::unix::fs::symlink("/bin/sleep", &program).expect("link sleep");
    let vars = [
        (
            "GENV_TMPDIR",
            state.to_str().expect("utf-8 path").to_owned(),
        ),
        ("GENV_MOCK_DEVICE_COUNT", GPUS.to_string()),
        ("GENV_MOCK_COMPUTE_APPS_PROCESS_NAME", NAME.to_owned()),
    ];
    let genv_cmd = |args: &[&str]| {
        let mut cmd = Command::new(&genv);
        cmd.args(args)
            .envs(vars.iter().map(|(n, v)| (*n, v.as_str())));
        cmd
    };

    eprintln!(
        "starting {} processes in {ENVS} environments",
        ENVS * PER_ENV
    );
    let mut children = Children(Vec::new());
    for e in 0..ENVS {
        let eid = format!("e{e:03}");
        for p in 0..PER_ENV {
            let child = Command::new(&program)
                .arg("100000")
                .env("GENV_ENVIRONMENT_ID", &eid)
                .env("CUDA_VISIBLE_DEVICES", ((e + p) % GPUS).to_string())
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn");
            children.0.push(child);
        }
        let pid = children.0[e * PER_ENV].id().to_string();
        let uid = (1000 + e % 20).to_string();
        let user = format!("user{}", e % 20);
        let ok = genv_cmd(&[
            "envs",
            "activate",
            "--eid",
            &eid,
            "--uid",
            &uid,
            "--username",
            &user,
            "--pid",
            &pid,
        ])
        .status()
        .expect("genv envs activate")
        .success()
            && genv_cmd(&[
                "envs",
                "config",
                "--eid",
                &eid,
                "gpu-memory",
                "--gpu-memory",
                "1g",
            ])
            .status()
            .expect("genv envs config")
            .success()
            && genv_cmd(&[
                "devices",
                "attach",
                "--eid",
                &eid,
                "--index",
                &(e % GPUS).to_string(),
                "--allow-over-subscription",
            ])
            .stdout(Stdio::null())
            .status()
            .expect("genv devices attach")
            .success();
        assert!(ok, "setting up environment {eid} failed");
    }

    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let monitor = genv_cmd(&[
        "monitor",
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--interval",
        "1",
        "--config-dir",
        dir.join("metrics").to_str().expect("utf-8 path"),
    ])
    .stderr(Stdio::null())
    .spawn()
    .expect("genv monitor");
    children.0.push(monitor);
    let expected = format!("genv_processes_total {}.0", ENVS * PER_ENV);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let body = loop {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
            let mut response = String::new();
            let _ = stream.read_to_string(&mut response);
            if response.contains(&expected) && response.contains("genv_environments_total 200.0") {
                break response;
            }
            last = response;
        }
        assert!(
            Instant::now() < deadline,
            "the monitor never showed every process; its last answer's totals: {:?}",
            last.lines()
                .filter(|l| l.starts_with("genv_") && l.contains("_total "))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let series = body.lines().filter(|l| !l.starts_with('#')).count();

    let mut times: Vec<Duration> = (0..scrapes).map(|_| scrape(port).0).collect();
    times.sort();
    println!(
        "scrape over HTTP ({scrapes} scrapes, {ENVS} environments, {} processes, {series} series, {} KiB):",
        ENVS * PER_ENV,
        body.len() / 1024
    );
    println!(
        "  median {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.9)),
        ms(percentile(&times, 0.99)),
        ms(times[times.len() - 1])
    );

    // One collection, in this process, on the same machine and state.
    let dir_state = StateDir::new(&state);
    // SAFETY: this program has no other threads yet, so nothing reads the
    // environment while it changes.
    unsafe {
        std::env::set_var("GENV_MOCK_COMPUTE_APPS_PROCESS_NAME", NAME);
        std::env::set_var("GENV_MOCK_DEVICE_COUNT", GPUS.to_string());
    }
    let backend = MockBackend::new(MockConfig::with_defaults());
    let mut takes = Vec::new();
    let mut encodes = Vec::new();
    let mut collects = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let snapshot = Snapshot::take(&dir_state, &backend).expect("snapshot");
        takes.push(start.elapsed());
        assert_eq!(snapshot.processes.len(), ENVS * PER_ENV);
        let start = Instant::now();
        let families = metrics::collect(&snapshot);
        collects.push(start.elapsed());
        let start = Instant::now();
        let text = metrics::encode(families, metrics::Format::Text);
        encodes.push(start.elapsed());
        assert!(text.contains(&expected));
    }
    takes.sort();
    collects.sort();
    encodes.sort();
    println!(
        "collection (20 runs, medians): snapshot {:.2} ms (state, simulated driver, /proc), metrics {:.2} ms, text encoding {:.2} ms",
        ms(percentile(&takes, 0.5)),
        ms(percentile(&collects, 0.5)),
        ms(percentile(&encodes, 0.5))
    );
    drop(children);
    let _ = std::fs::remove_dir_all(&dir);
}
