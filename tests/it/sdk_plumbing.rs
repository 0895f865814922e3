//! `genv sdk`: the hidden plumbing under the Python SDK, one JSON line an
//! answer (the SDK itself is tested by pytest in tests/python).

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use serde_json::{Value, json};

use crate::common::{Sandbox, Sleeper};

fn answer(run: crate::common::Run) -> Value {
    serde_json::from_str(run.ok().stdout.trim()).expect("one line of JSON")
}

#[test]
fn activate_configures_and_attaches_in_one_step() {
    let sb = Sandbox::new();
    let sleeper = Sleeper::new();
    let pid = sleeper.pid().to_string();
    let config = r#"{"name": "train", "gpu_memory": "4g", "gpus": 1}"#;
    let got = answer(sb.run(&[
        "sdk", "activate", "--eid", "e", "--pid", &pid, "--config", config,
    ]));
    // With a capacity, the memory cap library installed next to genv.
    let library = std::path::Path::new(crate::common::GENV)
        .with_file_name("libgenv_memcap.so")
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        got,
        json!({"eid": "e", "config": {"name": "train", "gpu_memory": "4g", "gpus": 1}, "indices": [0], "preload": library})
    );
    assert!(sb.devices_csv().starts_with("0,e,train,"));
    // Joining keeps the configuration and the devices.
    let again = answer(sb.run(&["sdk", "activate", "--eid", "e", "--pid", &pid]));
    assert_eq!(again, got);
    assert_eq!(answer(sb.run(&["sdk", "show", "--eid", "e"])), got);
}

#[test]
fn a_failed_activation_leaves_nothing() {
    let sb = Sandbox::new();
    let sleeper = Sleeper::new();
    let pid = sleeper.pid().to_string();
    let run = sb
        .run(&[
            "sdk",
            "activate",
            "--eid",
            "e",
            "--pid",
            &pid,
            "--config",
            r#"{"gpus": 3}"#,
        ])
        .fails();
    assert_eq!(
        run.stderr,
        "Requested more devices (3) than total available (2)\n"
    );
    assert_eq!(
        sb.run(&["envs", "ps", "--format", "csv", "--no-header"])
            .ok()
            .stdout,
        ""
    );
    let run = sb
        .run(&[
            "sdk",
            "activate",
            "--eid",
            "e",
            "--pid",
            &pid,
            "--config",
            r#"{"gpu_memory": "x"}"#,
        ])
        .fails();
    assert!(run.stderr.contains("invalid memory value 'x'"), "{run:?}");
    let run = sb
        .run(&[
            "sdk", "activate", "--eid", "e", "--pid", &pid, "--config", "[1]",
        ])
        .fails();
    assert!(run.stderr.contains("invalid configuration"), "{run:?}");
}

#[test]
fn configure_replaces_the_whole_configuration() {
    let sb = Sandbox::new();
    let sleeper = Sleeper::new();
    sb.activate_env("e", sleeper.pid()).ok();
    sb.config_name("e", "old").ok();
    sb.attach("e", 1).ok();
    let got = answer(sb.run(&[
        "sdk",
        "configure",
        "--eid",
        "e",
        "--config",
        r#"{"gpu_memory": "2g"}"#,
    ]));
    let library = std::path::Path::new(crate::common::GENV)
        .with_file_name("libgenv_memcap.so")
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        got,
        json!({"eid": "e", "config": {"name": null, "gpu_memory": "2g", "gpus": null}, "indices": [0], "preload": library})
    );
    // The attachment follows the new capacity.
    let devices = sb
        .run(&["devices", "query", "--query", "attachments"])
        .ok()
        .stdout;
    assert!(devices.starts_with("e+2g+"), "{devices}");
    let run = sb
        .run(&["sdk", "configure", "--eid", "nope", "--config", "{}"])
        .fails();
    assert_eq!(run.stderr, "genv: error: Environment nope does not exist\n");
    let shown = answer(sb.run(&["sdk", "show", "--eid", "nope"]));
    assert_eq!(
        shown,
        json!({"eid": "nope", "config": null, "indices": [], "preload": null})
    );
}

#[test]
fn devices_reports_memory_in_bytes() {
    let mut sb = Sandbox::new();
    sb.set("GENV_MOCK_DEVICE_TOTAL_MEMORY", "8gi");
    let got = answer(sb.run(&["sdk", "devices"]));
    let bytes = 8u64 << 30;
    assert_eq!(
        got,
        json!({"devices": [
            {"index": 0, "total_memory": "8192mi", "total_bytes": bytes},
            {"index": 1, "total_memory": "8192mi", "total_bytes": bytes},
        ]})
    );
}

#[test]
fn hold_keeps_the_locks_until_told_or_its_input_closes() {
    let sb = Sandbox::new();
    let sleeper = Sleeper::new();
    sb.activate_env("e", sleeper.pid()).ok();
    sb.attach("e", 1).ok();
    let mut cmd = sb.cmd(&["lock", "--", crate::common::GENV, "sdk", "hold"]);
    cmd.env("GENV_ENVIRONMENT_ID", "e")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut holder = cmd.spawn().expect("spawn genv lock");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "held\n");
    let locks = sb
        .run(&["devices", "locks", "--format", "csv", "--no-header"])
        .ok()
        .stdout;
    assert!(locks.starts_with("0,e,"), "{locks}");
    assert!(locks.contains(",holding"), "{locks}");
    // Told: it lets go even while another process keeps the pipe open.
    let mut stdin = holder.stdin.take().unwrap();
    stdin.write_all(b"release\n").unwrap();
    stdin.flush().unwrap();
    assert!(holder.wait().unwrap().success());
    drop(stdin);
    let locks = sb
        .run(&["devices", "locks", "--format", "csv", "--no-header"])
        .ok()
        .stdout;
    assert!(!locks.contains("holding"), "{locks}");
}

#[test]
fn hidden_from_help() {
    let sb = Sandbox::new();
    let help = sb.run(&["--help"]).ok().stdout;
    assert!(!help.contains("sdk"), "{help}");
}
