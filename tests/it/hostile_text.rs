//! Text from the shared state is data: names and usernames that another
//! local user wrote are shown escaped on a terminal and in CSV, and values
//! exported into a shell are validated and bounded.

use crate::common::{Run, Sandbox, Sleeper};

/// A name that would clear the screen, forge a table row, hide a NUL and
/// reverse the text after it, if printed raw.
const HOSTILE: &str = "x\\u001b[2J\\nforged row\\u0000,a\\u202egpj";

fn envs_json(name_json: &str, username_json: &str, pid: u32, creation: &str) -> String {
    format!(
        r#"{{"envs": [{{"eid": "e1", "uid": 1000, "creation": "{creation}", "username": {username_json}, "config": {{"name": {name_json}, "gpu_memory": null, "gpus": null}}, "pids": [{pid}], "kernel_ids": []}}]}}"#
    )
}

fn devices_json() -> &'static str {
    r#"{"devices": [{"index": 0, "total_memory": "16384mi", "attachments": [{"eid": "e1", "gpu_memory": null, "time": "24/11/2026 13:05:09"}]}, {"index": 1, "total_memory": "16384mi", "attachments": []}]}"#
}

fn hostile_sandbox(job: &Sleeper) -> Sandbox {
    let sb = Sandbox::new();
    sb.write(
        "envs.json",
        &envs_json(
            &format!("\"{HOSTILE}\""),
            "\"mallory\\u001b]0;owned\\u0007\"",
            job.pid(),
            "24/11/2026 13:05:09",
        ),
    );
    sb.write("devices.json", devices_json());
    sb
}

#[track_caller]
fn assert_inert(run: &Run) {
    for bad in ['\u{1b}', '\0', '\u{202e}', '\u{7}'] {
        assert!(
            !run.stdout.contains(bad),
            "raw {bad:?} reached the terminal: {run:?}"
        );
    }
}

#[test]
fn tables_show_control_characters_escaped() {
    let job = Sleeper::new();
    let sb = hostile_sandbox(&job);
    let run = sb.run(&["envs", "ps", "--timestamp"]).ok();
    assert_inert(&run);
    assert_eq!(run.stdout.lines().count(), 2, "a row was forged: {run:?}");
    assert!(
        run.stdout.contains("x\\u{1b}[2J\\nforged row\\u{0}"),
        "{run:?}"
    );
    assert!(
        run.stdout.contains("mallory\\u{1b}]0;owned\\u{7}(1000)"),
        "{run:?}"
    );

    let run = sb.run(&["devices", "ps", "--timestamp"]).ok();
    assert_inert(&run);
    assert_eq!(run.stdout.lines().count(), 3, "{run:?}");

    let run = sb.run(&["devices", "queue"]).ok();
    assert_inert(&run);
}

#[test]
fn csv_lines_keep_their_field_count() {
    let job = Sleeper::new();
    let sb = hostile_sandbox(&job);
    // The JupyterLab extension splits these on commas: exactly 5 and 4.
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
    assert_inert(&run);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{run:?}");
    assert_eq!(lines[0].split(',').count(), 5, "{run:?}");
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
    assert_inert(&run);
    for line in run.stdout.lines() {
        assert_eq!(line.split(',').count(), 4, "{run:?}");
    }
    let run = sb
        .run(&["envs", "query", "--query", "eid", "config.name", "username"])
        .ok();
    assert_inert(&run);
    assert_eq!(run.stdout.lines().count(), 1, "{run:?}");
    assert_eq!(run.stdout.trim_end().split(',').count(), 3, "{run:?}");
}

#[test]
fn status_of_a_joined_environment_shows_its_name_escaped() {
    let job = Sleeper::new();
    let mut sb = hostile_sandbox(&job);
    sb.set("GENV_ENVIRONMENT_ID", "e1");
    let run = sb.run(&["status"]).ok();
    assert_inert(&run);
    assert!(
        run.stdout.contains("    Name: x\\u{1b}[2J\\nforged row"),
        "{run:?}"
    );
    let run = sb.run(&["config", "name"]).ok();
    assert_inert(&run);
    assert_eq!(run.stdout.lines().count(), 1, "{run:?}");
}

#[test]
fn joining_an_environment_with_oversized_values_exports_none_of_them() {
    let job = Sleeper::new();
    let shell = Sleeper::new();
    let sb = Sandbox::new();
    let huge = "n".repeat(1 << 20);
    let envs = envs_json(
        &format!("\"{huge}\""),
        "null",
        job.pid(),
        "24/11/2026 13:05:09",
    )
    .replace("\"gpu_memory\": null", "\"gpu_memory\": \"lots; rm -rf ~\"")
    .replace("\"gpus\": null", "\"gpus\": -3");
    sb.write("envs.json", &envs);
    let run = sb
        .run(&[
            "activate",
            "--id",
            "e1",
            "--no-attach",
            "--shell",
            &shell.pid().to_string(),
        ])
        .ok();
    assert!(
        run.stdout.len() < 4096,
        "{} bytes exported",
        run.stdout.len()
    );
    assert!(!run.stdout.contains("lots"), "{run:?}");
    assert!(
        run.stdout.contains("__genv_unset GENV_ENVIRONMENT_NAME\n"),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.stderr.matches("genv: warning: not setting").count(),
        3,
        "{run:?}"
    );
}

#[test]
fn an_oversized_name_is_refused_and_nothing_changes() {
    let job = Sleeper::new();
    let sb = Sandbox::new();
    let pid = job.pid().to_string();
    sb.run(&[
        "envs", "activate", "--eid", "e1", "--uid", "1000", "--pid", &pid,
    ])
    .ok();
    let before = sb.snapshot_files();
    let long = "n".repeat(300);
    let run = sb
        .run(&["envs", "config", "--eid", "e1", "name", "--name", &long])
        .fails();
    assert!(
        run.stderr
            .starts_with("genv: error: invalid environment name: it is 300 bytes long\nhint: "),
        "{run:?}"
    );
    assert_eq!(sb.snapshot_files(), before);
}

#[test]
fn a_creation_time_in_the_future_is_shown_as_it_is() {
    let job = Sleeper::new();
    let sb = Sandbox::new();
    sb.write(
        "envs.json",
        &envs_json("\"later\"", "null", job.pid(), "01/01/2099 00:00:00"),
    );
    let run = sb.run(&["envs", "ps", "--no-header"]).ok();
    assert!(run.stdout.contains("01/01/2099 00:00:00"), "{run:?}");
    assert!(!run.stdout.contains('-'), "{run:?}");
}
