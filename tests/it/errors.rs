//! What users see when something goes wrong, in every program genv is
//! (`genv`, the `nvidia-smi` and `docker` shims, `genv-docker`, the
//! container runtime and its hook): exit code, stdout and stderr snapshot
//! together, so that every error line reads `genv: error: …` (with its
//! `hint:`), or is genv 1.4.3's own text word for word.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::common::{GENV, Run, Sandbox};
use crate::lock_support::{Locker, Section, args, env, one_gpu};

/// Exit code, stdout and stderr as one text, the sandbox's folder and the
/// given pids replaced by placeholders.
fn show(sb: &Sandbox, run: &Run, pids: &[u32]) -> String {
    let mut text = format!(
        "exit code: {}\n----- stdout -----\n{}----- stderr -----\n{}",
        run.code, run.stdout, run.stderr
    );
    text = text.replace(sb.dir.path().to_str().unwrap(), "[SANDBOX]");
    for pid in pids {
        text = text.replace(&format!("pid {pid}"), "pid [PID]");
    }
    text
}

/// `genv` linked as `name` in the sandbox's `bin` folder.
fn linked(sb: &Sandbox, name: &str) -> PathBuf {
    let bin = sb.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join(name);
    if !link.exists() {
        std::os::unix::fs::symlink(GENV, &link).unwrap();
    }
    link
}

/// `genv` run as `program` with `args`, `PATH` only the sandbox's `bin`
/// (and `more`), stdin `input`.
fn program(sb: &Sandbox, program: &str, args: &[&str], vars: &[(&str, &str)], input: &str) -> Run {
    let mut cmd = Command::new(linked(sb, program));
    cmd.args(args);
    sb.apply(&mut cmd);
    cmd.env("PATH", sb.dir.path().join("bin"));
    for (name, value) in vars {
        cmd.env(name, value);
    }
    run_with_input(cmd, input)
}

fn genv(sb: &Sandbox, args: &[&str], vars: &[(&str, &str)], input: &str) -> Run {
    let mut cmd = sb.cmd(args);
    for (name, value) in vars {
        cmd.env(name, value);
    }
    run_with_input(cmd, input)
}

fn run_with_input(mut cmd: Command, input: &str) -> Run {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A program that does not read its stdin closes it: not an error here.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    Run::from(child.wait_with_output().unwrap())
}

/// A stand-in for a real program in the sandbox's `real` folder.
fn real(sb: &Sandbox, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = sb.dir.path().join("real");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, "#!/bin/sh\necho \"real $0 $*\"\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn shims_without_the_real_program() {
    let sb = Sandbox::new();
    let run = program(&sb, "nvidia-smi", &[], &[], "");
    insta::assert_snapshot!("shim_nvidia_smi_without_real", show(&sb, &run, &[]));
    let run = program(&sb, "docker", &["ps"], &[], "");
    insta::assert_snapshot!("shim_docker_without_real", show(&sb, &run, &[]));
}

#[test]
fn shims_in_a_loop() {
    let sb = Sandbox::new();
    let dir = real(&sb, "nvidia-smi");
    let mut cmd = Command::new(linked(&sb, "nvidia-smi"));
    sb.apply(&mut cmd);
    cmd.env("PATH", dir).env("GENV_SHIM_DEPTH", "8");
    let run = run_with_input(cmd, "");
    insta::assert_snapshot!("shim_loop", show(&sb, &run, &[]));
}

#[test]
fn docker_shim_refuses_what_it_cannot_narrow() {
    let sb = Sandbox::new();
    let dir = real(&sb, "docker");
    let path = format!("{}:{}", sb.dir.path().join("bin").display(), dir.display());
    let vars = [
        ("PATH", path.as_str()),
        ("GENV_ENVIRONMENT_ID", "e1"),
        ("CUDA_VISIBLE_DEVICES", "0"),
    ];
    linked(&sb, "docker");
    let docker = |args: &[&str]| {
        let mut cmd = Command::new(linked(&sb, "docker"));
        cmd.args(args);
        sb.apply(&mut cmd);
        for (name, value) in vars {
            cmd.env(name, value);
        }
        run_with_input(cmd, "")
    };
    // genv 1.4.3's words.
    let run = docker(&["run", "--gpus", "3", "img"]);
    insta::assert_snapshot!("shim_docker_more_than_attached", show(&sb, &run, &[]));
    let run = docker(&["run", "--gpus", "bogus", "img"]);
    insta::assert_snapshot!("shim_docker_unsupported_gpus", show(&sb, &run, &[]));
    // genv's own.
    let run = docker(&["run", "--gpus", "device=1", "img"]);
    insta::assert_snapshot!("shim_docker_not_attached", show(&sb, &run, &[]));
}

#[test]
fn genv_docker_refuses_bad_options() {
    let sb = Sandbox::new();
    let run = program(
        &sb,
        "genv-docker",
        &["run", "--gpus", "all", "img"],
        &[],
        "",
    );
    insta::assert_snapshot!("genv_docker_bad_gpus", show(&sb, &run, &[]));
    let run = program(
        &sb,
        "genv-docker",
        &["run", "--gpu-memory", "4x", "img"],
        &[],
        "",
    );
    insta::assert_snapshot!("genv_docker_bad_memory", show(&sb, &run, &[]));
}

#[test]
fn runtime_and_hook_refuse_bad_input() {
    let sb = Sandbox::new();
    let missing = sb.dir.path().join("no-bundle");
    let run = program(
        &sb,
        "genv-container-runtime",
        &["create", "--bundle", missing.to_str().unwrap(), "c1"],
        &[],
        "",
    );
    insta::assert_snapshot!("runtime_missing_bundle", show(&sb, &run, &[]));
    let run = program(
        &sb,
        "genv-container-runtime-hook",
        &["prestart"],
        &[],
        "not json",
    );
    insta::assert_snapshot!("hook_state_not_json", show(&sb, &run, &[]));
    let run = program(&sb, "genv-container-runtime-hook", &["bogus"], &[], "{}");
    insta::assert_snapshot!("hook_unknown_stage", show(&sb, &run, &[]));
}

/// A snapshot's name, genv's arguments, variables and stdin.
type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn verbs_refuse_bad_values() {
    let sb = Sandbox::new();
    let cases: [Case; 8] = [
        (
            "activate_empty_id",
            &["activate", "--shell", "1", "--id", ""],
            &[],
            "",
        ),
        ("activate_without_shell", &["activate"], &[], ""),
        (
            "usage_execute_bad_report",
            &["usage", "execute"],
            &[],
            "garbage",
        ),
        (
            "config_bad_memory",
            &["config", "gpu-memory", "4x"],
            &[("GENV_ENVIRONMENT_ID", "e1")],
            "",
        ),
        (
            "config_bad_gpus",
            &["config", "gpus", "two"],
            &[("GENV_ENVIRONMENT_ID", "e1")],
            "",
        ),
        (
            "attach_outside_an_environment",
            &["attach", "--count", "1"],
            &[],
            "",
        ),
        (
            "attach_more_than_there_are",
            &["devices", "attach", "--eid", "e1", "--count", "5"],
            &[],
            "",
        ),
        (
            "enforce_bad_interval",
            &["enforce", "--interval", "abc"],
            &[],
            "",
        ),
    ];
    for (name, args, vars, input) in cases {
        let run = genv(&sb, args, vars, input);
        insta::assert_snapshot!(name, show(&sb, &run, &[]));
    }
}

#[test]
fn home_not_found() {
    let sb = Sandbox::new();
    let run = Run::from(
        sb.cmd(&["home"])
            .env("HOME", sb.dir.path().join("nowhere"))
            .current_dir(sb.dir.path())
            .output()
            .unwrap(),
    );
    insta::assert_snapshot!("home_not_found", show(&sb, &run, &[]));
}

#[test]
fn lock_errors() {
    let sb = one_gpu();
    // A file where the state folder belongs: nothing runs unlocked.
    let mut broken = Sandbox::new();
    let not_a_folder = broken.dir.path().join("state");
    std::fs::write(&not_a_folder, "").unwrap();
    broken.set("GENV_TMPDIR", not_a_folder.to_str().unwrap());
    let run = genv(
        &broken,
        &["lock", "true"],
        &[("GENV_ENVIRONMENT_ID", "a")],
        "",
    );
    insta::assert_snapshot!("lock_unreadable_state", show(&broken, &run, &[]));
    // A device held by another environment, without waiting: its own exit
    // code.
    let a_job = env(&sb, "a", None);
    let _b_job = env(&sb, "b", None);
    let work = tempfile::tempdir().unwrap();
    let section = Section::new(work.path(), "A");
    let holder = Locker::spawn(&sb, Some("a"), &args(&[], &section.command()));
    section.entered();
    let run = genv(
        &sb,
        &["lock", "-n", "-E", "42", "true"],
        &[("GENV_ENVIRONMENT_ID", "b")],
        "",
    );
    let pids = [holder.pid(), a_job.pid()];
    insta::assert_snapshot!("lock_busy", show(&sb, &run, &pids));
    section.release();
    assert!(holder.finish().0.success());
}
