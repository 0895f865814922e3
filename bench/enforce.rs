//! The CPU cost of one `genv enforce` cycle beyond the device query: 1,000
//! GPU processes (real `sleep` processes, so that `/proc` is really read)
//! in 200 environments on 8 GPUs, every rule on.
//!
//!     cargo run --release --example enforce [CYCLES]
//!
//! The device query is a stand-in that returns a prepared list at once, so
//! what is measured is genv's own work: loading the state under the lock,
//! reading each process's owner, start time and environment from `/proc`,
//! the rules, the report and acting on it as a dry run (the lines are
//! written, nothing is signalled or detached). CPU time is the process's
//! user + system time (getrusage) around each cycle.

// Benchmarks may set variables and call libc directly; each block says
// why it is sound.
#![allow(unsafe_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use genv::backend::{ComputeProcess, DeviceBackend, GpuInfo};
use genv::enforce::execute::{self, Acting};
use genv::enforce::rules::Quota;
use genv::enforce::{Rules, decide, snapshot};
use genv::state::{Attachment, Config, Device, Devices, Env, Envs, StateDir};

const PROCESSES: usize = 1000;
const ENVS: usize = 200;
const GPUS: u32 = 8;

struct Prepared(Vec<ComputeProcess>);

impl DeviceBackend for Prepared {
    fn devices(&self) -> genv::error::Result<Vec<GpuInfo>> {
        Ok((0..GPUS)
            .map(|index| GpuInfo {
                index,
                uuid: format!("GPU-{index}"),
                name: "stand-in".into(),
                total_memory_mib: 81_920,
            })
            .collect())
    }

    fn processes(&self) -> genv::error::Result<Vec<ComputeProcess>> {
        Ok(self.0.clone())
    }

    fn statuses(&self) -> genv::error::Result<Vec<genv::backend::GpuStatus>> {
        Ok(Vec::new())
    }

    fn fingerprint(&self) -> Option<String> {
        Some("bench".into())
    }
}

fn cpu() -> Duration {
    // SAFETY: getrusage fills the struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

struct Reap(Vec<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn main() {
    let cycles: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let uid = i64::from(genv::os::procs::current_uid());
    let user = genv::os::procs::username(uid as u32);
    let mut children = Reap(Vec::new());
    for i in 0..PROCESSES {
        let child = Command::new("sleep")
            .arg("600")
            .env("GENV_ENVIRONMENT_ID", format!("e{}", i % ENVS))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        children.0.push(child);
    }
    let pids: Vec<u32> = children.0.iter().map(Child::id).collect();
    // Each process on one GPU (a fifth on two), 500 MiB each.
    let mut list = Vec::new();
    for (i, pid) in pids.iter().enumerate() {
        let gpu = (i % ENVS) as u32 % GPUS;
        list.push(ComputeProcess {
            pid: *pid,
            index: gpu,
            used_memory_mib: 500,
        });
        if i % 5 == 0 {
            list.push(ComputeProcess {
                pid: *pid,
                index: (gpu + 1) % GPUS,
                used_memory_mib: 500,
            });
        }
    }
    if std::env::var_os("BENCH_OPS").is_some() {
        for (name, f) in [
            ("stat", "stat"),
            ("status", "status"),
            ("environ", "environ"),
        ] {
            let c0 = cpu();
            for pid in &pids {
                let _ = std::fs::read(format!("/proc/{pid}/{f}"));
            }
            eprintln!(
                "{name}: {:.2} us",
                (cpu() - c0).as_secs_f64() * 1e6 / pids.len() as f64
            );
        }
        let c0 = cpu();
        for pid in &pids {
            let _ = genv::os::procs::environ_lookup(*pid, "GENV_ENVIRONMENT_ID");
        }
        eprintln!(
            "environ_lookup: {:.2} us",
            (cpu() - c0).as_secs_f64() * 1e6 / pids.len() as f64
        );
        let c0 = cpu();
        for pid in &pids {
            let _ = genv::os::procs::identity(*pid);
        }
        eprintln!(
            "identity: {:.2} us",
            (cpu() - c0).as_secs_f64() * 1e6 / pids.len() as f64
        );
        let c0 = cpu();
        for pid in &pids {
            let _ = std::fs::metadata(format!("/proc/{pid}"));
        }
        eprintln!(
            "dir metadata: {:.2} us",
            (cpu() - c0).as_secs_f64() * 1e6 / pids.len() as f64
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let envs = Envs {
        envs: (0..ENVS)
            .map(|e| Env {
                eid: format!("e{e}").into(),
                uid,
                creation: "01/01/2026 00:00:00".into(),
                username: user.clone().map(Into::into),
                config: Config {
                    name: Some(format!("job {e}").into()),
                    gpu_memory: Some("4gi".into()),
                    gpus: Some(1),
                },
                // Each environment's first process stands for its shell.
                pids: vec![i64::from(pids[e])],
                kernel_ids: Vec::new(),
            })
            .collect(),
    };
    let devices = Devices {
        devices: (0..GPUS)
            .map(|index| Device {
                index,
                total_memory: "81920mi".into(),
                attachments: (0..ENVS)
                    .filter(|e| *e as u32 % GPUS == index)
                    .map(|e| Attachment {
                        eid: format!("e{e}"),
                        gpu_memory: Some("4gi".into()),
                        time: "01/01/2026 00:00:00".into(),
                    })
                    .collect(),
            })
            .collect(),
    };
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(
        dir.path().join("envs.json"),
        serde_json::to_vec(&envs).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("devices.json"),
        serde_json::to_vec(&devices).unwrap(),
    )
    .unwrap();
    let state = StateDir::new(dir.path());
    let backend = Prepared(list);
    let rules = Rules {
        non_env_processes: true,
        env_devices: true,
        env_memory: true,
        max_devices: Quota {
            per_user: Some(4),
            ..Quota::default()
        },
        max_memory: Quota {
            per_user: Some(100 << 30),
            ..Quota::default()
        },
    };
    let acting = Acting {
        signal: false,
        detach: false,
        grace: Duration::ZERO,
    };
    let (mut cpu_ms, mut wall_ms) = (Vec::new(), Vec::new());
    let mut lines = 0;
    for _ in 0..cycles {
        let (cpu0, wall0) = (cpu(), Instant::now());
        let snapshot = snapshot::take(&state, &backend).expect("snapshot");
        let t1 = cpu();
        let survey = decide(&snapshot, &rules);
        let report = survey.report();
        let t2 = cpu();
        let mut out = String::new();
        execute::enforce(&report, &snapshot, acting, &state, &mut out).expect("act");
        if std::env::var_os("BENCH_SPLIT").is_some() {
            eprintln!(
                "snapshot {:.2} ms, rules {:.2} ms, acting {:.2} ms",
                (t1 - cpu0).as_secs_f64() * 1e3,
                (t2 - t1).as_secs_f64() * 1e3,
                (cpu() - t2).as_secs_f64() * 1e3
            );
        }
        cpu_ms.push((cpu() - cpu0).as_secs_f64() * 1e3);
        wall_ms.push(wall0.elapsed().as_secs_f64() * 1e3);
        lines = out.lines().count() + survey.lines.len();
        assert_eq!(snapshot.processes.len(), PROCESSES);
    }
    println!(
        "{PROCESSES} GPU processes in {ENVS} environments on {GPUS} GPUs, {cycles} cycles, \
         {lines} lines a cycle: CPU median {:.2} ms (min {:.2}), wall median {:.2} ms",
        median(cpu_ms.clone()),
        cpu_ms.iter().copied().fold(f64::INFINITY, f64::min),
        median(wall_ms)
    );
}
