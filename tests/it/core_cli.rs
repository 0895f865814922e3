//! The query and state commands of `genv envs`, `genv devices`, `genv
//! usage`, `genv home` and `genv version`, through the real binary.

use crate::common::{Run, Sandbox, Sleeper};

#[test]
fn genv_alone_prints_help_and_exits_0() {
    let run = Sandbox::new().run(&[]).ok();
    assert!(run.stdout.contains("Usage: genv"), "{run:?}");
    assert!(run.stdout.contains("envs"));
}

#[test]
fn version_is_the_compatible_release() {
    let run = Sandbox::new().run(&["version"]).ok();
    assert_eq!(run.stdout, "1.4.3\n");
}

#[test]
fn envs_table_csv_and_query() {
    let sb = Sandbox::new();
    let job = Sleeper::new();
    sb.activate_env("aaa", job.pid()).ok();
    sb.config_name("aaa", "my env").ok();
    sb.config_gpus("aaa", 2).ok();
    sb.config_memory("aaa", "4g").ok();

    let table = sb.run(&["envs"]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        "ID      USER            NAME            CREATED              PID(S)"
    );
    let expected = format!(
        "aaa     alice(1000)     my env          {:<21}{}",
        "0 second ago",
        job.pid()
    );
    // A second may pass between activation and listing.
    assert!(
        lines[1] == expected || lines[1].contains("1 second ago"),
        "{table}"
    );

    let csv = sb.envs_csv();
    let fields: Vec<&str> = csv.trim_end().split(',').collect();
    assert_eq!(fields.len(), 5, "{csv}");
    assert_eq!(fields[0], "aaa");
    assert_eq!(fields[1], "alice(1000)");
    assert_eq!(fields[2], "my env");
    assert!(
        chrono::NaiveDateTime::parse_from_str(fields[3], "%d/%m/%Y %H:%M:%S").is_ok(),
        "{csv}"
    );
    assert_eq!(fields[4], job.pid().to_string());

    let query = sb
        .run(&[
            "envs",
            "query",
            "--query",
            "eid",
            "config.name",
            "config.gpus",
            "config.gpu_memory",
            "pids",
        ])
        .ok();
    assert_eq!(query.stdout, format!("aaa,my env,2,4g,{}\n", job.pid()));
    assert_eq!(
        sb.run(&["envs", "find", "--pid", &job.pid().to_string()])
            .ok()
            .stdout,
        "aaa\n"
    );
}

#[test]
fn dead_processes_end_their_environment() {
    let sb = Sandbox::new();
    let job = Sleeper::new();
    sb.activate_env("aaa", job.pid()).ok();
    sb.attach("aaa", 1).ok();
    drop(job);
    assert_eq!(sb.run(&["envs", "ps", "--no-header"]).ok().stdout, "");
    assert_eq!(
        sb.run(&["devices", "ps", "--format", "csv", "--no-header"])
            .ok()
            .stdout,
        "0,,,\n1,,,\n"
    );
}

#[test]
fn deactivate_drops_one_pid() {
    let sb = Sandbox::new();
    let (a, b) = (Sleeper::new(), Sleeper::new());
    sb.activate_env("aaa", a.pid()).ok();
    sb.activate_env("aaa", b.pid()).ok();
    sb.run(&["envs", "deactivate", "--pid", &a.pid().to_string()])
        .ok();
    let pids = sb.run(&["envs", "query", "--query", "pids"]).ok().stdout;
    assert_eq!(pids, format!("{}\n", b.pid()));
    sb.run(&["envs", "deactivate", "--pid", &b.pid().to_string()])
        .ok();
    assert_eq!(sb.run(&["envs", "query", "--query", "eid"]).ok().stdout, "");
}

#[test]
fn devices_attach_detach_and_find() {
    let sb = Sandbox::new();
    let (a, b) = (Sleeper::new(), Sleeper::new());
    sb.activate_env("aaa", a.pid()).ok();
    sb.activate_env("bbb", b.pid()).ok();
    assert_eq!(sb.attach("aaa", 1).ok().stdout, "0\n");
    assert_eq!(sb.attach("bbb", 1).ok().stdout, "1\n");
    let full = sb.attach("bbb", 2).fails();
    assert_eq!(full.stderr, "No available devices\n");
    let too_many = sb.attach("bbb", 5).fails();
    assert_eq!(
        too_many.stderr,
        "Requested more devices (5) than total available (2)\n"
    );
    let taken = sb.attach_index("bbb", 0).fails();
    assert_eq!(taken.stderr, "Device 0 is not available\n");
    assert_eq!(sb.attach_shared("bbb", 0).ok().stdout, "0,1\n");
    assert_eq!(sb.find("bbb").ok().stdout, "0,1\n");
    let query = sb
        .run(&[
            "devices",
            "query",
            "--query",
            "index",
            "eids",
            "total_memory",
        ])
        .ok()
        .stdout;
    assert_eq!(query, "0,aaa bbb,15258mi\n1,bbb,15258mi\n");
    assert_eq!(sb.detach_index("bbb", 0).ok().stdout, "1\n");
    assert_eq!(sb.detach("bbb").ok().stdout, "\n");
    assert_eq!(
        sb.run(&["devices", "detach", "--eid", "aaa", "--quiet"])
            .ok()
            .stdout,
        ""
    );
    assert_eq!(sb.find("aaa").ok().stdout, "\n");
}

#[test]
fn attach_uses_the_configured_count_and_detaches_the_surplus() {
    let sb = Sandbox::new();
    let a = Sleeper::new();
    sb.activate_env("aaa", a.pid()).ok();
    sb.config_gpus("aaa", 2).ok();
    assert_eq!(
        sb.run(&["devices", "attach", "--eid", "aaa"]).ok().stdout,
        "0,1\n"
    );
    assert_eq!(sb.attach("aaa", 1).ok().stdout, "0\n");
}

#[test]
fn memory_fractions_share_a_device() {
    let sb = Sandbox::new();
    let (a, b, c) = (Sleeper::new(), Sleeper::new(), Sleeper::new());
    sb.activate_env_as("a", 1, None, a.pid()).ok();
    sb.activate_env_as("b", 1, None, b.pid()).ok();
    sb.activate_env_as("c", 1, None, c.pid()).ok();
    for eid in ["a", "b", "c"] {
        sb.config_memory(eid, "7gi").ok();
    }
    assert_eq!(sb.attach_index("a", 0).ok().stdout, "0\n");
    assert_eq!(sb.attach_index("b", 0).ok().stdout, "0\n");
    sb.attach_index("c", 0).fails();
    let attachments = sb
        .run(&["devices", "query", "--query", "attachments"])
        .ok()
        .stdout;
    assert!(attachments.starts_with("a+7gi+"), "{attachments}");
}

#[test]
fn devices_table() {
    let sb = Sandbox::new();
    let a = Sleeper::new();
    sb.activate_env("aaa", a.pid()).ok();
    sb.config_name("aaa", "train").ok();
    sb.attach_index("aaa", 1).ok();
    let table = sb.run(&["devices"]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "ID      ENV ID      ENV NAME        ATTACHED");
    assert_eq!(lines[1], "0                                   ");
    assert!(
        lines[2].starts_with("1       aaa         train           "),
        "{table}"
    );
    assert!(lines[2].ends_with("second ago"), "{table}");
}

#[test]
fn json_format_for_scripts() {
    let sb = Sandbox::new();
    let a = Sleeper::new();
    sb.activate_env("aaa", a.pid()).ok();
    sb.attach("aaa", 1).ok();
    let envs: serde_json::Value =
        serde_json::from_str(&sb.run(&["envs", "ps", "--format", "json"]).ok().stdout).unwrap();
    assert_eq!(envs["envs"][0]["eid"], "aaa");
    let devices: serde_json::Value =
        serde_json::from_str(&sb.run(&["devices", "ps", "--format", "json"]).ok().stdout).unwrap();
    assert_eq!(devices["devices"][0]["attachments"][0]["eid"], "aaa");
    assert_eq!(
        devices["devices"][1]["attachments"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn usage_snapshot_shapes() {
    let mut sb = Sandbox::new();
    sb.set("GENV_MOCK_COMPUTE_APPS_PROCESS_NAME", "genvtestproc");
    let a = Sleeper::new();
    sb.activate_env("aaa", a.pid()).ok();
    sb.attach("aaa", 1).ok();
    let full: serde_json::Value =
        serde_json::from_str(&sb.run(&["usage", "snapshot"]).ok().stdout).unwrap();
    let keys: Vec<&String> = full.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["processes", "envs", "devices"]);
    assert_eq!(full["processes"]["processes"], serde_json::json!([]));
    assert_eq!(full["envs"]["envs"][0]["eid"], "aaa");
    assert_eq!(
        full["devices"]["devices"][0]["attachments"][0]["eid"],
        "aaa"
    );
    for kind in ["envs", "devices", "processes"] {
        let one: serde_json::Value =
            serde_json::from_str(&sb.run(&["usage", "snapshot", "--type", kind]).ok().stdout)
                .unwrap();
        assert!(one.get(kind).is_some(), "{kind}: {one}");
    }
}

#[test]
fn usage_snapshot_reports_simulated_processes_with_their_environment() {
    let sb = Sandbox::new();
    let a = Sleeper::with_env(&[
        ("GENV_ENVIRONMENT_ID", "aaa"),
        ("CUDA_VISIBLE_DEVICES", "1"),
    ]);
    let run = sb.run(&["usage", "snapshot", "--type", "processes"]).ok();
    let value: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let ours: Vec<&serde_json::Value> = value["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["pid"] == a.pid())
        .collect();
    assert_eq!(ours.len(), 1, "{value} {}", run.stderr);
    assert_eq!(ours[0]["eid"], "aaa");
    assert_eq!(
        ours[0]["used_gpu_memory"],
        serde_json::json!([{"index": 1, "gpu_memory": "42mi"}])
    );
}

#[test]
fn usage_execute_detaches_and_terminates() {
    let mut sb = Sandbox::new();
    let a = Sleeper::new();
    // Another user's: root's processes outside environments are never
    // signalled.
    let mut victim = crate::common::users::sleeper_as(
        crate::common::users::ALICE,
        std::path::Path::new("/bin/sleep"),
        &[],
    );
    sb.activate_env("aaa", a.pid()).ok();
    sb.attach("aaa", 2).ok();
    let report = serde_json::json!({
        "terminate": {"processes": [{"pid": victim.pid(), "used_gpu_memory": [{"index": 0, "gpu_memory": "42mi"}], "eid": null}]},
        "detach": {"1": {"envs": [{"eid": "aaa", "uid": 1000, "creation": "01/01/2024 00:00:00", "username": "alice",
            "config": {"name": null, "gpu_memory": null, "gpus": null}, "pids": [], "kernel_ids": []}]}}
    });
    sb.set("GENV_TERMINATE_PROCESSES", "1");
    let run = sb
        .run_stdin(&["usage", "execute"], &report.to_string())
        .ok();
    assert_eq!(
        run.stdout,
        format!(
            "Terminating process {} from environment N/A that is running on GPU(s) 0\nDetaching environment aaa of user alice from device 1\n",
            victim.pid()
        )
    );
    let status = victim.0.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(15)
    );
    assert_eq!(sb.find("aaa").ok().stdout, "0\n");
}

#[test]
fn usage_execute_never_signals_process_groups() {
    let sb = Sandbox::new();
    let report = r#"{"terminate": {"processes": [{"pid": 0, "used_gpu_memory": [], "eid": null},
        {"pid": -1, "used_gpu_memory": [], "eid": null}]}, "detach": {}}"#;
    let run = sb.run_stdin(&["usage", "execute"], report).ok();
    assert!(
        run.stderr
            .contains("genv: error: refusing to terminate invalid pid 0"),
        "{run:?}"
    );
    assert!(
        run.stderr
            .contains("genv: error: refusing to terminate invalid pid -1"),
        "{run:?}"
    );
}

#[test]
fn home_finds_dot_genv() {
    let sb = Sandbox::new();
    let work = sb.dir.path().join("project");
    std::fs::create_dir_all(work.join(".genv")).unwrap();
    let mut cmd = sb.cmd(&["home"]);
    cmd.current_dir(&work).env("HOME", sb.dir.path());
    let run = Run::from(cmd.output().unwrap()).ok();
    assert_eq!(run.stdout, format!("{}\n", work.join(".genv").display()));

    let mut cmd = sb.cmd(&["home"]);
    cmd.current_dir(sb.dir.path()).env("HOME", sb.dir.path());
    let run = Run::from(cmd.output().unwrap()).fails();
    assert!(
        run.stderr
            .starts_with("Could not find any Genv configuration directory."),
        "{run:?}"
    );
    let mut cmd = sb.cmd(&["home", "--quiet"]);
    cmd.current_dir(sb.dir.path()).env("HOME", sb.dir.path());
    assert_eq!(Run::from(cmd.output().unwrap()).ok().stdout, "");
}

#[test]
fn bad_input_is_one_line_and_changes_nothing() {
    let sb = Sandbox::new();
    let a = Sleeper::new();
    sb.activate_env("aaa", a.pid()).ok();
    sb.attach("aaa", 1).ok();
    let before = sb.snapshot_files();
    for args in [
        vec![
            "envs",
            "config",
            "--eid",
            "aaa",
            "gpu-memory",
            "--gpu-memory",
            "4x",
        ],
        vec![
            "envs",
            "config",
            "--eid",
            "aaa",
            "gpu-memory",
            "--gpu-memory",
            "-1",
        ],
        vec![
            "envs",
            "config",
            "--eid",
            "aaa",
            "gpu-memory",
            "--gpu-memory",
            "99999999999999999999g",
        ],
        vec![
            "envs",
            "config",
            "--eid",
            "aaa",
            "gpu-memory",
            "--gpu-memory",
            "",
        ],
        vec!["envs", "config", "--eid", "aaa", "gpus", "--count", "x"],
        vec!["envs", "config", "--eid", "aaa", "gpus", "--count", "-2"],
        vec!["devices", "attach", "--eid", "aaa", "--index", "99"],
        vec!["devices", "attach", "--eid", "aaa", "--count", "9"],
        vec!["envs", "ps", "--format", "xml"],
        vec!["envs", "query", "--query", "nope"],
        vec!["nosuchcommand"],
    ] {
        let run = sb.run(&args).fails();
        assert!(!run.stderr.trim().is_empty(), "{args:?}: {run:?}");
        assert_eq!(sb.snapshot_files(), before, "{args:?} changed the state");
    }
    let bad_memory = sb.config_memory("aaa", "4x").fails();
    assert_eq!(bad_memory.stderr.lines().count(), 1, "{bad_memory:?}");
    assert!(bad_memory.stderr.contains("'4x'"), "{bad_memory:?}");
    let missing = sb.attach_index("aaa", 99).fails();
    assert_eq!(missing.stderr.lines().count(), 1, "{missing:?}");
}

#[test]
fn config_of_an_unknown_environment_is_a_no_op() {
    let sb = Sandbox::new();
    sb.config_name("nobody", "x").ok();
    assert_eq!(sb.run(&["envs", "query", "--query", "eid"]).ok().stdout, "");
}

#[test]
fn changing_the_capacity_updates_the_attachments() {
    let sb = Sandbox::new();
    let a = Sleeper::new();
    sb.activate_env("aaa", a.pid()).ok();
    sb.config_memory("aaa", "4g").ok();
    sb.attach("aaa", 1).ok();
    sb.config_memory("aaa", "2g").ok();
    let attachments = sb
        .run(&["devices", "query", "--query", "attachments"])
        .ok()
        .stdout;
    assert!(attachments.starts_with("aaa+2g+"), "{attachments}");
    sb.run(&["envs", "config", "--eid", "aaa", "gpu-memory", "--clear"])
        .ok();
    let attachments = sb
        .run(&["devices", "query", "--query", "attachments"])
        .ok()
        .stdout;
    assert!(attachments.starts_with("aaa++"), "{attachments}");
}

#[test]
fn without_a_driver_says_so_and_how_to_simulate() {
    let mut sb = Sandbox::new();
    sb.unset("GENV_MOCK_DEVICE_COUNT");
    sb.set("PATH", "/usr/bin:/bin");
    let run = sb.run(&["devices"]).fails();
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(run.stderr.contains("no NVIDIA driver found"), "{run:?}");
    assert!(run.stderr.contains("GENV_MOCK_DEVICE_COUNT"), "{run:?}");
    // Environments need no GPU.
    sb.run(&["envs"]).ok();
}
