//! The state folder under hostile conditions: links, damaged files, umasks,
//! and the layouts of older genv releases.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;

use crate::common::{Run, Sandbox, Sleeper};

#[test]
fn a_state_file_that_is_a_link_is_moved_aside_and_not_followed() {
    let sb = Sandbox::new();
    let job = Sleeper::new();
    std::fs::create_dir_all(sb.state()).unwrap();
    let victim = sb.dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, sb.file("envs.json")).unwrap();
    let run = sb.run(&["envs", "ps"]).ok();
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(run.stderr.contains("symbolic link"), "{run:?}");
    assert!(run.stderr.contains("moved it aside"), "{run:?}");
    // Other users carry on.
    sb.run(&[
        "envs",
        "activate",
        "--eid",
        "a",
        "--uid",
        "1",
        "--pid",
        &job.pid().to_string(),
    ])
    .ok();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(sb.read("envs.json").contains("\"eid\": \"a\""));
}

#[test]
fn a_planted_temporary_link_is_replaced_not_written_through() {
    let sb = Sandbox::new();
    let job = Sleeper::new();
    std::fs::create_dir_all(sb.state()).unwrap();
    let victim = sb.dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, sb.file(".envs.json.tmp")).unwrap();
    sb.run(&[
        "envs",
        "activate",
        "--eid",
        "a",
        "--uid",
        "1",
        "--pid",
        &job.pid().to_string(),
    ])
    .ok();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(!sb.file("envs.json").is_symlink());
    assert!(sb.read("envs.json").contains("\"eid\": \"a\""));
}

#[test]
fn a_damaged_file_is_moved_aside_with_one_warning() {
    let sb = Sandbox::new();
    sb.write("envs.json", "{\"envs\": [{\"eid\": \"a\", \"ui");
    let run = sb.run(&["envs", "ps", "--no-header"]).ok();
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(run.stderr.starts_with("genv: warning: "), "{run:?}");
    let aside: Vec<_> = std::fs::read_dir(sb.state())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("envs.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(
        std::fs::read_to_string(aside[0].path()).unwrap(),
        "{\"envs\": [{\"eid\": \"a\", \"ui"
    );
    // The next command is quiet.
    assert_eq!(sb.run(&["envs", "ps", "--no-header"]).ok().stderr, "");
}

#[test]
fn an_empty_file_left_by_an_in_place_writer_is_recovered() {
    let sb = Sandbox::new();
    sb.write("devices.json", "");
    let run = sb
        .run(&["devices", "ps", "--format", "csv", "--no-header"])
        .ok();
    assert_eq!(run.stdout, "0,,,\n1,,,\n");
    assert!(run.stderr.contains("devices.json"), "{run:?}");
}

#[test]
fn folder_0777_and_files_0666_whatever_the_umask() {
    let sb = Sandbox::new();
    let job = Sleeper::new();
    let mut cmd = sb.cmd(&[
        "envs",
        "activate",
        "--eid",
        "a",
        "--uid",
        "1",
        "--pid",
        &job.pid().to_string(),
    ]);
    // SAFETY: umask(2) is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
    Run::from(cmd.output().unwrap()).ok();
    let mut cmd = sb.cmd(&["devices", "attach", "--eid", "a", "--count", "1"]);
    // SAFETY: umask(2) is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
    Run::from(cmd.output().unwrap()).ok();
    let folder = std::fs::metadata(sb.state()).unwrap();
    assert_eq!(
        folder.permissions().mode() & 0o7777,
        0o777,
        "no sticky bit, open to all"
    );
    for name in ["envs.json", "devices.json", "genv.lock"] {
        let meta = std::fs::metadata(sb.file(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o666, "{name}");
        assert_eq!(meta.nlink(), 1);
    }
}

#[test]
fn legacy_envs_layout_is_converted() {
    let sb = Sandbox::new();
    let job = Sleeper::new();
    let pid = job.pid();
    sb.write(
        "envs.json",
        &format!(
            r#"{{"envs": {{"old1": {{"eid": "old1", "uid": 1000, "creation": "01/02/2023 10:00:00",
                "config": {{"name": "legacy"}}, "pids": [{pid}]}}}}}}"#
        ),
    );
    let run = sb
        .run(&[
            "envs",
            "ps",
            "--format",
            "csv",
            "--no-header",
            "--timestamp",
        ])
        .ok();
    assert_eq!(
        run.stdout,
        format!("old1,1000,legacy,01/02/2023 10:00:00,{pid}\n")
    );
    let written: serde_json::Value = serde_json::from_str(&sb.read("envs.json")).unwrap();
    let env = &written["envs"][0];
    let keys: Vec<&String> = env.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "eid",
            "uid",
            "creation",
            "username",
            "config",
            "pids",
            "kernel_ids"
        ]
    );
    assert_eq!(
        env["config"],
        serde_json::json!({"name": "legacy", "gpu_memory": null, "gpus": null})
    );
}

#[test]
fn legacy_devices_layout_is_converted() {
    let sb = Sandbox::new();
    let job = Sleeper::new();
    let pid = job.pid();
    sb.write(
        "envs.json",
        &format!(
            r#"{{"envs": [{{"eid": "e1", "uid": 1, "creation": "01/02/2023 10:00:00", "username": null,
                "config": {{"name": null, "gpu_memory": null, "gpus": null}}, "pids": [{pid}], "kernel_ids": []}}]}}"#
        ),
    );
    sb.write(
        "devices.json",
        r#"{"devices": {"0": {"eids": {"e1": {"eid": "e1", "gpu_memory": "2g", "attached": "01/02/2023 10:05:00"}},
            "total_memory": "15258mi"}, "1": {"eids": {}, "total_memory": "15258mi"}}}"#,
    );
    let run = sb
        .run(&[
            "devices",
            "ps",
            "--format",
            "csv",
            "--no-header",
            "--timestamp",
        ])
        .ok();
    assert_eq!(run.stdout, "0,e1,,01/02/2023 10:05:00\n1,,,\n");
    let written: serde_json::Value = serde_json::from_str(&sb.read("devices.json")).unwrap();
    assert_eq!(
        written["devices"][0]["attachments"][0],
        serde_json::json!({"eid": "e1", "gpu_memory": "2g", "time": "01/02/2023 10:05:00"})
    );
}

#[test]
fn read_only_commands_leave_the_files_untouched() {
    let sb = Sandbox::new();
    let job = Sleeper::new();
    sb.run(&[
        "envs",
        "activate",
        "--eid",
        "a",
        "--uid",
        "1",
        "--pid",
        &job.pid().to_string(),
    ])
    .ok();
    sb.run(&["devices", "attach", "--eid", "a", "--count", "1"])
        .ok();
    let inode = std::fs::metadata(sb.file("envs.json")).unwrap().ino();
    sb.run(&["envs"]).ok();
    sb.run(&["devices"]).ok();
    assert_eq!(
        std::fs::metadata(sb.file("envs.json")).unwrap().ino(),
        inode
    );
}

#[test]
fn a_gpu_that_appears_is_added_and_one_that_goes_is_dropped_with_a_warning() {
    let mut sb = Sandbox::new();
    let job = Sleeper::new();
    sb.run(&[
        "envs",
        "activate",
        "--eid",
        "a",
        "--uid",
        "1",
        "--pid",
        &job.pid().to_string(),
    ])
    .ok();
    sb.set("GENV_MOCK_DEVICE_COUNT", "3");
    let run = sb
        .run(&["devices", "attach", "--eid", "a", "--index", "2"])
        .ok();
    assert_eq!(run.stdout, "2\n");
    sb.set("GENV_MOCK_DEVICE_COUNT", "2");
    let run = sb
        .run(&["devices", "ps", "--format", "csv", "--no-header"])
        .ok();
    assert_eq!(run.stdout, "0,,,\n1,,,\n");
    assert_eq!(
        run.stderr,
        "genv: warning: GPU 2 is no longer present; environment(s) a lose it\n"
    );
}

#[test]
fn reset_starts_from_the_hardware() {
    let sb = Sandbox::new();
    sb.write(
        "devices.json",
        r#"{"devices": [{"index": 7, "total_memory": "1mi", "attachments": []}]}"#,
    );
    let run = sb
        .run(&[
            "devices",
            "--reset",
            "query",
            "--query",
            "index",
            "total_memory",
        ])
        .ok();
    assert_eq!(run.stdout, "0,15258mi\n1,15258mi\n");
}

/// A devices.json in genv 0.8's layout on a machine where the driver
/// cannot be asked: the recorded devices are shown (converted), not an
/// error about the missing driver.
#[test]
fn a_legacy_devices_layout_needs_no_driver() {
    let mut sb = Sandbox::new();
    sb.unset("GENV_MOCK_DEVICE_COUNT");
    sb.set("PATH", "/nonexistent");
    sb.write(
        "devices.json",
        r#"{"devices": {"0": {"eids": {}, "total_memory": "15258mi"}}}"#,
    );
    let run = sb
        .run(&["devices", "ps", "--format", "csv", "--no-header"])
        .ok();
    assert_eq!(run.stdout, "0,,,\n");
    assert!(sb.read("devices.json").contains("\"attachments\": []"));
}
