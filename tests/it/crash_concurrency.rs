//! Writers killed at random moments, and many writers at once.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{Run, Sandbox};

/// A small deterministic generator: the kill moments differ run to run
/// only through the seed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn big_state(sb: &Sandbox, count: usize) {
    // Every environment is held by this test process, so cleanup keeps it.
    let pid = std::process::id();
    let envs: Vec<serde_json::Value> = (0..count)
        .map(|i| {
            serde_json::json!({"eid": format!("e{i}"), "uid": 1000, "creation": "01/01/2026 00:00:00",
                "username": "alice", "config": {"name": null, "gpu_memory": null, "gpus": null},
                "pids": [pid], "kernel_ids": []})
        })
        .collect();
    sb.write(
        "envs.json",
        &serde_json::to_string_pretty(&serde_json::json!({ "envs": envs })).unwrap(),
    );
}

fn names(sb: &Sandbox) -> BTreeMap<String, String> {
    // The file itself must parse, not only what genv makes of it.
    let text = sb.read("envs.json");
    let value: serde_json::Value = serde_json::from_str(&text).expect("envs.json parses");
    value["envs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["eid"].as_str()?.to_owned(),
                e["config"]["name"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

#[test]
fn kill_9_at_random_moments_never_loses_a_confirmed_update() {
    let sb = Sandbox::new();
    big_state(&sb, 10_000);
    let update = |i: usize| {
        let mut cmd = sb.cmd(&[
            "envs",
            "config",
            "--eid",
            &format!("e{i}"),
            "name",
            "--name",
            &format!("n{i}"),
        ]);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        cmd
    };
    // How long one update takes (the median of seven, so that one slow
    // run on a loaded machine does not stretch it), so that the kills land
    // anywhere in it.
    let mut times: Vec<Duration> = (0..7)
        .map(|i| {
            let start = Instant::now();
            Run::from(update(i % 3).output().unwrap()).ok();
            start.elapsed()
        })
        .collect();
    times.sort();
    let typical = times[3];
    let mut rng = Lcg(std::process::id() as u64);
    let mut confirmed = Vec::new();
    let mut killed = 0;
    // 500 writers, and more (up to 1,500) while fewer than 150 were killed
    // mid-way: other tests' load changes how long a writer takes.
    for i in 3..1503 {
        if i >= 503 && killed >= 150 {
            break;
        }
        let mut child = update(i).spawn().unwrap();
        let delay = Duration::from_micros(rng.next() % (typical.as_micros() as u64 * 6 / 5 + 1));
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() {
            confirmed.push(i);
        } else {
            killed += 1;
        }
        if i % 100 == 0 {
            names(&sb);
        }
    }
    let names = names(&sb);
    assert_eq!(
        sb.run(&["envs", "query", "--query", "eid"])
            .ok()
            .stdout
            .lines()
            .count(),
        10_000
    );
    for i in 0..3 {
        assert_eq!(names.get(&format!("e{i}")), Some(&format!("n{i}")));
    }
    for i in &confirmed {
        assert_eq!(
            names.get(&format!("e{i}")),
            Some(&format!("n{i}")),
            "confirmed update {i} lost"
        );
    }
    assert!(
        killed > 100,
        "too few writers were killed mid-way ({killed}) for the test to mean much"
    );
    // Nothing damaged was ever moved aside.
    let aside = std::fs::read_dir(sb.state())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("corrupt")
        })
        .count();
    assert_eq!(aside, 0);
}

#[test]
fn sixty_four_concurrent_writers_lose_nothing_and_never_share_an_exclusive_gpu() {
    const WORKERS: usize = 64;
    const CYCLES: usize = 50;
    let sb = Sandbox::new();
    big_state(&sb, WORKERS);
    let violations = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for w in 0..WORKERS {
            let sb = &sb;
            let violations = &violations;
            scope.spawn(move || {
                let eid = format!("e{w}");
                for cycle in 0..CYCLES {
                    let attach = sb.attach(&eid, 1);
                    if attach.code == 0 {
                        let index = attach.stdout.trim().to_owned();
                        // While attached, the device is ours alone.
                        let query = sb
                            .run(&["devices", "query", "--query", "index", "eids"])
                            .ok();
                        for line in query.stdout.lines() {
                            let (i, eids) = line.split_once(',').unwrap();
                            if i == index && eids != eid {
                                violations
                                    .lock()
                                    .unwrap()
                                    .push(format!("GPU {i} held by {eids:?} while {eid} had it"));
                            }
                        }
                        sb.run(&["devices", "detach", "--eid", &eid, "--quiet"])
                            .ok();
                    } else {
                        assert_eq!(attach.stderr, "No available devices\n");
                    }
                    sb.config_gpus(&eid, cycle).ok();
                }
            });
        }
    });
    assert_eq!(violations.into_inner().unwrap(), Vec::<String>::new());
    let gpus = sb
        .run(&["envs", "query", "--query", "eid", "config.gpus"])
        .ok()
        .stdout;
    assert_eq!(gpus.lines().count(), WORKERS);
    for line in gpus.lines() {
        assert!(
            line.ends_with(&format!(",{}", CYCLES - 1)),
            "lost update: {line}"
        );
    }
    assert_eq!(
        sb.run(&["devices", "query", "--query", "eids"]).ok().stdout,
        "\n\n"
    );
}
