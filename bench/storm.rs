//! The attach storm at the level of the state store: 64 processes, each
//! attaching and detaching in a loop through genv's own transactions, so
//! the number is the store's throughput under contention (flock hand-over,
//! load, cleanup, save) without the cost of starting a process per step.
//!
//!     cargo run --release --example storm [WORKERS] [CYCLES]

use std::process::Command;
use std::time::Instant;

use genv::backend::{MockBackend, MockConfig};
use genv::provision::{Request, attach_env, detach};
use genv::state::{LoadOptions, StateDir};

fn main() {
    let mut args = std::env::args().skip(1);
    let workers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let cycles: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let backend = MockBackend::new(MockConfig::with_defaults());

    if let Ok(worker) = std::env::var("STORM_WORKER") {
        let dir = StateDir::from_env();
        let eid = format!("s{worker}");
        for _ in 0..cycles {
            let mut tx = dir.transaction(LoadOptions::default()).expect("lock");
            let request = Request {
                count: Some(1),
                ..Request::default()
            };
            // Most attempts find both GPUs taken; that is a transaction too.
            tx.reconcile(&dir.survey(&backend, false).expect("survey"))
                .expect("devices");
            let _ = attach_env(&mut tx, &eid, request);
            tx.commit().expect("commit");
            let mut tx = dir.transaction(LoadOptions::default()).expect("lock");
            detach(tx.devices_mut().expect("devices"), &eid, None);
            tx.commit().expect("commit");
        }
        return;
    }

    let state = std::env::temp_dir().join(format!("genv-storm-{}", std::process::id()));
    let dir = StateDir::new(&state);
    {
        let mut tx = dir.transaction(LoadOptions::default()).expect("lock");
        let now = tx.now();
        let envs = tx.envs_mut().expect("envs");
        for w in 0..workers {
            envs.activate(&format!("s{w}"), 1000, None, now.clone());
            envs.get_mut(&format!("s{w}"))
                .unwrap()
                .pids
                .push(std::process::id().into());
        }
        tx.commit().expect("commit");
    }
    let exe = std::env::current_exe().expect("own path");
    let start = Instant::now();
    let children: Vec<_> = (0..workers)
        .map(|w| {
            Command::new(&exe)
                .args([workers.to_string(), cycles.to_string()])
                .env("GENV_TMPDIR", &state)
                .env("GENV_MOCK_DEVICE_COUNT", "2")
                .env("STORM_WORKER", w.to_string())
                .spawn()
                .expect("spawn worker")
        })
        .collect();
    for mut child in children {
        assert!(child.wait().expect("wait").success());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let transactions = workers * cycles * 2;
    println!(
        "{workers} processes x {cycles} attach/detach cycles = {transactions} transactions in {elapsed:.2} s: {:.0} transactions/s",
        transactions as f64 / elapsed
    );
    let _ = std::fs::remove_dir_all(&state);
}
