//! Every command line the VS Code extension (vscode-genv 0.3) and the
//! JupyterLab extension (jupyterlab_genv 0.4) run, through `/bin/sh` as
//! they do, and the fields they parse out of the answers.

use std::process::Command;

use crate::common::{Run, Sandbox, Sleeper};

/// Runs a command line through `/bin/sh -c` with `genv` on `PATH`.
fn sh(sb: &Sandbox, line: &str) -> Run {
    let bin = std::path::Path::new(crate::common::GENV).parent().unwrap();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(line);
    sb.apply(&mut cmd);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    cmd.env("PATH", path);
    Run::from(cmd.output().unwrap())
}

#[test]
fn vscode_extension_command_lines() {
    let sb = Sandbox::new();
    let terminal = Sleeper::new();
    let p = terminal.pid();
    assert!(sh(&sb, "genv").ok().stdout.contains("Usage"));
    sh(
        &sb,
        &format!("genv envs activate --pid {p} --eid vs1 --uid 1000 --username alice"),
    )
    .ok();
    sh(
        &sb,
        "genv envs config --eid vs1 name --name \"my notebook\"",
    )
    .ok();
    sh(&sb, "genv envs config --eid vs1 gpus --count 1").ok();

    let envs = sh(&sb, "genv envs ps --format csv --no-header --timestamp")
        .ok()
        .stdout;
    let fields: Vec<&str> = envs.trim_end().split(',').collect();
    assert_eq!(fields.len(), 5, "{envs}");
    assert_eq!(
        (fields[0], fields[1], fields[2]),
        ("vs1", "alice(1000)", "my notebook")
    );
    assert_eq!(fields[4], p.to_string());

    assert_eq!(
        sh(&sb, "genv devices attach --eid vs1 --count 1")
            .ok()
            .stdout,
        "0\n"
    );
    assert_eq!(
        sh(&sb, "genv devices attach --eid vs1 --index 1")
            .ok()
            .stdout,
        "0,1\n"
    );
    sh(
        &sb,
        "genv envs activate --pid $$ --eid other --uid 1001 --username bob",
    )
    .ok();
    let shared = sh(&sb, &format!("genv envs activate --pid {p} --eid vs2 --uid 1000 && genv devices attach --eid vs2 --index 1 --allow-over-subscription")).ok();
    assert_eq!(shared.stdout, "1\n");

    let devices = sh(&sb, "genv devices ps --format csv --no-header --timestamp")
        .ok()
        .stdout;
    let rows: Vec<Vec<&str>> = devices.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 3, "{devices}");
    assert!(rows.iter().all(|r| r.len() == 4), "{devices}");
    assert_eq!(
        (rows[0][0], rows[0][1], rows[0][2]),
        ("0", "vs1", "my notebook")
    );
    assert_eq!((rows[2][0], rows[2][1], rows[2][2]), ("1", "vs2", ""));

    assert_eq!(
        sh(&sb, "genv devices detach --eid vs1 --index 0")
            .ok()
            .stdout,
        "1\n"
    );
    assert_eq!(sh(&sb, "genv devices detach --eid vs1").ok().stdout, "\n");
}

#[test]
fn jupyterlab_extension_command_lines() {
    let sb = Sandbox::new();
    let runtime = sb.dir.path().join("jupyter-runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::write(runtime.join("kernel-k-123.json"), "{}").unwrap();
    let mut sb = sb;
    sb.set("JUPYTER_RUNTIME_DIR", runtime.to_str().unwrap());

    sh(
        &sb,
        "genv envs activate --eid nb1 --uid 1000 --kernel-id k-123",
    )
    .ok();
    assert_eq!(
        sh(&sb, "genv envs find --kernel-id k-123").ok().stdout,
        "nb1\n"
    );
    sh(&sb, "genv envs config --eid nb1 gpus --count 1").ok();
    assert_eq!(sh(&sb, "genv devices attach --eid nb1").ok().stdout, "0\n");
    assert_eq!(sh(&sb, "genv devices find --eid nb1").ok().stdout, "0\n");

    let envs = sh(&sb, "genv envs ps --format csv --no-header --timestamp")
        .ok()
        .stdout;
    for line in envs.lines() {
        assert_eq!(line.split(',').count(), 5, "{envs}");
    }
    assert!(envs.starts_with("nb1,1000,,"), "{envs}");
    let devices = sh(&sb, "genv devices ps --format csv --no-header --timestamp")
        .ok()
        .stdout;
    for line in devices.lines() {
        assert_eq!(line.split(',').count(), 4, "{devices}");
    }

    // The kernel ends: its connection file goes, and so does the environment.
    std::fs::remove_file(runtime.join("kernel-k-123.json")).unwrap();
    assert_eq!(sh(&sb, "genv envs find --kernel-id k-123").ok().stdout, "");
    assert_eq!(sh(&sb, "genv devices find --eid nb1").ok().stdout, "\n");
}

#[test]
fn vscode_extension_terminal_lines() {
    let sb = Sandbox::new();
    let window = Sleeper::new();
    sh(
        &sb,
        &format!(
            "genv envs activate --pid {} --eid vs1 --uid 1000 --username alice",
            window.pid()
        ),
    )
    .ok();
    sh(
        &sb,
        "genv envs config --eid vs1 name --name \"my notebook\"",
    )
    .ok();
    sh(&sb, "genv devices attach --eid vs1 --index 1").ok();
    let out = sb.dir.path().display().to_string();
    let script = format!(
        "eval \"$(genv shell --init)\"
genv activate --id vs1 --no-load --no-attach --no-prompt || exit 1
genv attach --refresh || exit 1
genv config --refresh || exit 1
printf '%s|%s|%s' \"$GENV_ENVIRONMENT_ID\" \"$GENV_ENVIRONMENT_NAME\" \"$CUDA_VISIBLE_DEVICES\" > {out}/vars
printf '%s' \"${{PS1-}}\" > {out}/ps1
genv deactivate"
    );
    let mut cmd = Command::new("bash");
    cmd.args(["--norc", "--noprofile", "-c", &script]);
    sb.apply(&mut cmd);
    let bin = std::path::Path::new(crate::common::GENV).parent().unwrap();
    cmd.env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("HOME", sb.dir.path());
    let run = Run::from(cmd.output().unwrap()).ok();
    assert_eq!(run.stderr, "");
    assert_eq!(
        std::fs::read_to_string(sb.dir.path().join("vars")).unwrap(),
        "vs1|my notebook|1"
    );
    assert!(
        !std::fs::read_to_string(sb.dir.path().join("ps1"))
            .unwrap()
            .contains("(genv)")
    );
    // The window still holds the environment.
    assert_eq!(sh(&sb, "genv devices find --eid vs1").ok().stdout, "1\n");
}
