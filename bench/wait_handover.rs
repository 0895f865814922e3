//! Hand-over latency of the wait queue: the time from one environment's
//! detach (its commit returning) to the waiting `genv devices attach
//! --wait` printing the device it got.
//!
//!     cargo build --release && cargo run --release --example wait_handover [ROUNDS]

// Benchmarks may set variables and call libc directly; each block says
// why it is sound.
#![allow(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use genv::backend::{MockBackend, MockConfig};
use genv::provision::{Request, attach_env, detach};
use genv::state::{LoadOptions, StateDir};

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let genv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/genv");
    let state = std::env::temp_dir().join(format!("genv-handover-{}", std::process::id()));
    // SAFETY: single-threaded so far; the children and the library read it.
    unsafe {
        std::env::set_var("GENV_TMPDIR", &state);
        std::env::set_var("GENV_MOCK_DEVICE_COUNT", "1");
    }
    let dir = StateDir::new(&state);
    let backend = MockBackend::new(MockConfig::with_defaults());
    {
        let mut tx = dir.transaction(LoadOptions::default()).unwrap();
        let now = tx.now();
        let envs = tx.envs_mut().unwrap();
        for eid in ["a", "b"] {
            envs.activate(eid, 1000, None, now.clone());
            envs.get_mut(eid)
                .unwrap()
                .pids
                .push(std::process::id().into());
        }
        tx.commit().unwrap();
    }
    let one = Request {
        count: Some(1),
        ..Request::default()
    };
    let mut latencies = Vec::new();
    for _ in 0..rounds {
        let mut tx = dir.transaction(LoadOptions::default()).unwrap();
        tx.reconcile(&dir.survey(&backend, false).unwrap()).unwrap();
        attach_env(&mut tx, "a", one).unwrap();
        tx.commit().unwrap();
        let mut waiter = Command::new(&genv)
            .args(["devices", "attach", "--eid", "b", "--count", "1", "--wait"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run genv");
        let mut line = String::new();
        BufReader::new(waiter.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("waiting"), "{line}");
        let mut tx = dir.transaction(LoadOptions::default()).unwrap();
        detach(tx.devices_mut().unwrap(), "a", None);
        tx.commit().unwrap();
        let released = Instant::now();
        let mut got = String::new();
        BufReader::new(waiter.stdout.take().unwrap())
            .read_line(&mut got)
            .unwrap();
        latencies.push(released.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(got, "0\n");
        waiter.wait().unwrap();
        let mut tx = dir.transaction(LoadOptions::default()).unwrap();
        detach(tx.devices_mut().unwrap(), "b", None);
        tx.commit().unwrap();
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let median = latencies[latencies.len() / 2];
    let p90 = latencies[latencies.len() * 9 / 10];
    println!(
        "wait queue hand-over over {rounds} rounds: median {median:.2} ms, p90 {p90:.2} ms, max {:.2} ms",
        latencies[latencies.len() - 1]
    );
    let _ = std::fs::remove_dir_all(&state);
}
