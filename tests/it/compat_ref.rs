//! Both directions with genv 1.4.3: files it really wrote
//! (`tests/fixtures/ref/`, made by `capture.sh`) are read and rewritten by
//! us byte for byte, and files we write are read by genv 1.4.3 itself.

use std::path::PathBuf;
use std::process::Command;

use crate::common::{Run, Sandbox, fixture};

fn sandbox_with_reference_state() -> Sandbox {
    let mut sb = Sandbox::new();
    // The capture ran on two 16 GiB GPUs.
    sb.set("GENV_MOCK_DEVICE_TOTAL_MEMORY", "16gi");
    for name in ["envs.json", "devices.json"] {
        sb.write(
            name,
            &std::fs::read_to_string(fixture(&format!("ref/state/{name}"))).unwrap(),
        );
    }
    sb
}

fn expected(name: &str) -> String {
    std::fs::read_to_string(fixture(&format!("ref/{name}"))).unwrap()
}

#[test]
fn prints_what_the_reference_prints_for_its_own_files() {
    let sb = sandbox_with_reference_state();
    let cases = [
        (
            vec![
                "envs",
                "--no-cleanup",
                "ps",
                "--format",
                "csv",
                "--timestamp",
            ],
            "envs-ps.csv",
        ),
        (
            vec![
                "devices",
                "--no-cleanup",
                "ps",
                "--format",
                "csv",
                "--timestamp",
            ],
            "devices-ps.csv",
        ),
        (
            vec![
                "envs",
                "--no-cleanup",
                "query",
                "--query",
                "eid",
                "creation",
                "uid",
                "username",
                "config.name",
                "config.gpus",
                "config.gpu_memory",
                "pids",
                "kernel_ids",
            ],
            "envs-query.csv",
        ),
        (
            vec![
                "devices",
                "--no-cleanup",
                "query",
                "--query",
                "index",
                "eids",
                "total_memory",
                "attachments",
            ],
            "devices-query.csv",
        ),
    ];
    for (args, file) in cases {
        assert_eq!(sb.run(&args).ok().stdout, expected(file), "{args:?}");
    }
}

#[test]
fn rewrites_the_reference_files_byte_for_byte() {
    let sb = sandbox_with_reference_state();
    sb.run(&[
        "envs",
        "--no-cleanup",
        "config",
        "--eid",
        "bob1",
        "name",
        "--name",
        "renamed",
    ])
    .ok();
    sb.run(&[
        "devices",
        "--no-cleanup",
        "detach",
        "--eid",
        "bob1",
        "--index",
        "1",
    ])
    .ok();
    for name in ["envs.json", "devices.json"] {
        assert_eq!(sb.read(name), expected(&format!("after/{name}")), "{name}");
    }
}

/// genv 1.4.3, installed by `scripts/test` in a virtual environment.
fn reference() -> PathBuf {
    let path = std::env::var_os("GENV_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/genv-ref/bin/genv")
        });
    assert!(
        path.is_file(),
        "genv 1.4.3 is not installed at {} (scripts/test installs it: python3 -m venv target/genv-ref && target/genv-ref/bin/pip install genv==1.4.3 psutil)",
        path.display()
    );
    path
}

#[test]
fn the_reference_reads_what_we_write() {
    let sb = Sandbox::new();
    let job = crate::common::Sleeper::new();
    let pid = job.pid().to_string();
    sb.activate_env("ours", &pid).ok();
    sb.config_name("ours", "naïve \"name\" ☕").ok();
    sb.config_memory("ours", "2g").ok();
    sb.attach("ours", 1).ok();
    let theirs = |args: &[&str]| {
        let mut cmd = Command::new(reference());
        cmd.args(args);
        sb.apply(&mut cmd);
        Run::from(cmd.output().unwrap()).ok()
    };
    let envs = theirs(&[
        "envs",
        "--no-cleanup",
        "ps",
        "--format",
        "csv",
        "--no-header",
        "--timestamp",
    ]);
    let ours = sb
        .run(&[
            "envs",
            "--no-cleanup",
            "ps",
            "--format",
            "csv",
            "--no-header",
            "--timestamp",
        ])
        .ok();
    assert_eq!(envs.stdout, ours.stdout);
    assert!(
        envs.stdout
            .starts_with("ours,alice(1000),naïve \"name\" ☕,"),
        "{envs:?}"
    );
    let devices = theirs(&[
        "devices",
        "--no-cleanup",
        "query",
        "--query",
        "index",
        "eids",
        "attachments",
    ]);
    let ours = sb
        .run(&[
            "devices",
            "--no-cleanup",
            "query",
            "--query",
            "index",
            "eids",
            "attachments",
        ])
        .ok();
    assert_eq!(devices.stdout, ours.stdout);
    assert!(devices.stdout.starts_with("0,ours,ours+2g+"), "{devices:?}");
    // And what it writes back, we read.
    theirs(&[
        "envs",
        "--no-cleanup",
        "config",
        "--eid",
        "ours",
        "gpus",
        "--count",
        "1",
    ]);
    assert_eq!(
        sb.run(&["envs", "query", "--query", "config.gpus", "config.name"])
            .ok()
            .stdout,
        "1,naïve \"name\" ☕\n"
    );
}
