//! What genv believes from the kernel and what from the shared state
//! folder: every test here runs as real, different uids (`setpriv`), an
//! attacker (mallory) writing into the folder, a victim (alice) with
//! environments and jobs of her own, and root running what root runs.

use crate::common::Sandbox;
use crate::common::users::{ALICE, MALLORY, ROOT, alive, sleeper_as};

#[test]
fn each_user_runs_genv_as_herself() {
    let sb = Sandbox::multi_user();
    sb.run_as(
        ALICE,
        &[
            "envs",
            "activate",
            "--eid",
            "a1",
            "--uid",
            &ALICE.to_string(),
            "--pid",
            "1",
        ],
    )
    .ok();
    let out = sb.run_as(MALLORY, &["envs", "ps", "--format", "csv"]).ok();
    assert!(out.stdout.contains("a1"), "{out:?}");
}

/// A link to `sleep` named `name`, the simulated GPUs' compute processes
/// (picked by name), and the sandbox set to see only those.
fn gpu_program(sb: &mut Sandbox, tag: &str) -> std::path::PathBuf {
    let name = format!("gpu{tag}{}", std::process::id() % 100_000);
    assert!(name.len() <= 15, "{name}");
    sb.set("GENV_MOCK_COMPUTE_APPS_PROCESS_NAME", &name);
    let link = sb.dir.path().join(&name);
    std::os::unix::fs::symlink("/bin/sleep", &link).unwrap();
    link
}

/// Alice's environment `eid`, registered by her, held by a process of
/// hers (returned: the environment lives while it does).
fn alice_env(sb: &Sandbox, eid: &str) -> crate::common::Sleeper {
    let shell = sleeper_as(ALICE, std::path::Path::new("/bin/sleep"), &[]);
    let (uid, pid) = (ALICE.to_string(), shell.pid().to_string());
    sb.run_as(
        ALICE,
        &[
            "envs", "activate", "--eid", eid, "--uid", &uid, "--pid", &pid,
        ],
    )
    .ok();
    shell
}

/// Mallory's environment `eid`, written with alice's uid and name and
/// listing `pid` as its own, attached to nothing.
fn forge_env_of_alice(sb: &Sandbox, eid: &str, pid: u32) {
    let (uid, pid) = (ALICE.to_string(), pid.to_string());
    sb.run_as(
        MALLORY,
        &[
            "envs",
            "activate",
            "--eid",
            eid,
            "--uid",
            &uid,
            "--username",
            "alice",
            "--pid",
            &pid,
        ],
    )
    .ok();
}

#[test]
fn root_enforce_spares_a_job_that_a_forged_environment_lists() {
    let mut sb = Sandbox::multi_user();
    let program = gpu_program(&mut sb, "fe");
    // Alice's plain GPU job, in no environment, on GPU 0.
    let job = sleeper_as(ALICE, &program, &[("CUDA_VISIBLE_DEVICES", "0")]);
    forge_env_of_alice(&sb, "forgeB", job.pid());
    let run = sb.run_as(ROOT, &["enforce", "--interval", "0"]).ok();
    assert!(alive(job.pid()), "alice's job was terminated: {run:?}");
    assert!(!run.stdout.contains("forgeB"), "{run:?}");
}

#[test]
fn root_memory_quota_never_terminates_for_a_forged_reservation() {
    let mut sb = Sandbox::multi_user();
    let program = gpu_program(&mut sb, "fq");
    // Alice's job uses 42 MiB of GPU 0, far below her quota.
    let job = sleeper_as(ALICE, &program, &[("CUDA_VISIBLE_DEVICES", "0")]);
    // Mallory reserves both whole GPUs in alice's name.
    forge_env_of_alice(&sb, "forgeQ", job.pid());
    sb.run_as(
        MALLORY,
        &["devices", "attach", "--eid", "forgeQ", "--count", "2"],
    )
    .ok();
    let run = sb
        .run_as(
            ROOT,
            &["enforce", "--interval", "0", "--max-memory-per-user", "1g"],
        )
        .ok();
    assert!(alive(job.pid()), "alice's job was terminated: {run:?}");
}

#[test]
fn usage_execute_never_signals_pid_1_or_roots_processes_outside_environments() {
    let sb = Sandbox::multi_user();
    let roots = crate::common::Sleeper::new();
    let report = format!(
        r#"{{"terminate": {{"processes": [
            {{"pid": 1, "used_gpu_memory": [{{"index": 0, "gpu_memory": "1mi"}}], "eid": null}},
            {{"pid": {}, "used_gpu_memory": [{{"index": 0, "gpu_memory": "1mi"}}], "eid": "x"}}
        ]}}, "detach": {{}}}}"#,
        roots.pid()
    );
    let mut cmd = sb.cmd_as(ROOT, &["usage", "execute"]);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(report.as_bytes())
        .unwrap();
    let run = crate::common::Run::from(child.wait_with_output().unwrap());
    assert!(alive(roots.pid()), "root's process was signalled: {run:?}");
    assert!(
        run.stderr.contains("genv: error: refusing to terminate"),
        "{run:?}"
    );
}

/// A sandbox whose GPUs come from the `nvidia-smi` stand-in on `PATH`, as
/// on a machine where `/proc/driver/nvidia` is not visible (a container):
/// nothing cheap tells genv that the GPUs changed.
fn driver_without_proc(sb: &mut Sandbox) {
    assert!(
        !std::path::Path::new("/proc/driver/nvidia/gpus").exists(),
        "this test simulates a machine without /proc/driver/nvidia; run it on one"
    );
    let bin = sb.dir.path().join("driver-bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(crate::shim_support::SIM, bin.join("nvidia-smi")).unwrap();
    sb.unset("GENV_MOCK_DEVICE_COUNT");
    sb.set("PATH", &format!("{}:/usr/bin:/bin", bin.display()));
}

#[test]
fn a_configuration_change_before_any_survey_records_no_devices() {
    let mut sb = Sandbox::multi_user();
    driver_without_proc(&mut sb);
    let _shell = alice_env(&sb, "e1");
    sb.run_as(
        ALICE,
        &[
            "envs",
            "config",
            "--eid",
            "e1",
            "gpu-memory",
            "--gpu-memory",
            "4g",
        ],
    )
    .ok();
    let attach = sb.run_as(ALICE, &["devices", "attach", "--eid", "e1", "--count", "1"]);
    assert_eq!(attach.ok().stdout, "0\n");
    // And again through the shell, as the issue's user typed it.
    let script = r#"eval "$(genv shell --init)"
        genv activate --id e2 --no-prompt && genv config gpu-memory 4g && genv attach --count 1 && genv status"#;
    let mut cmd = crate::common::users::command_as(ALICE, "bash");
    cmd.args(["-c", script]);
    sb.apply(&mut cmd);
    let bin = std::path::Path::new(crate::common::GENV).parent().unwrap();
    let path = sb.vars.iter().find(|(n, _)| n == "PATH").unwrap().1.clone();
    cmd.env("PATH", format!("{}:{path}", bin.display()))
        .env("HOME", sb.home_of(ALICE))
        .current_dir(sb.home_of(ALICE));
    let run = crate::common::Run::from(cmd.output().unwrap()).ok();
    assert!(
        run.stdout.contains("Attached to GPUs at indices "),
        "{run:?}"
    );
}

#[test]
fn an_empty_device_list_that_was_never_surveyed_is_surveyed() {
    // What an earlier genv left behind on such a machine.
    let mut sb = Sandbox::multi_user();
    driver_without_proc(&mut sb);
    sb.write("devices.json", "{\"devices\": []}");
    let _shell = alice_env(&sb, "e1");
    let attach = sb.run_as(ALICE, &["devices", "attach", "--eid", "e1", "--count", "1"]);
    assert_eq!(attach.ok().stdout, "0\n");
}

#[test]
fn a_planted_state_folder_is_refused() {
    let mut sb = Sandbox::multi_user();
    // Mallory gets there before genv: the state folder is her link to a
    // folder of hers.
    std::fs::remove_dir(sb.state()).unwrap();
    let target = sb.home_of(MALLORY).join("catch");
    let mut mkdir = crate::common::users::command_as(MALLORY, "mkdir");
    assert!(
        mkdir
            .arg("-m")
            .arg("777")
            .arg(&target)
            .status()
            .unwrap()
            .success()
    );
    let mut ln = crate::common::users::command_as(MALLORY, "ln");
    assert!(
        ln.arg("-s")
            .arg(&target)
            .arg(sb.state())
            .status()
            .unwrap()
            .success()
    );
    for uid in [ROOT, ALICE] {
        let run = sb.run_as(uid, &["devices"]).fails();
        assert!(
            run.stderr.starts_with("genv: error: the state folder "),
            "{run:?}"
        );
        assert!(run.stderr.contains("is a symbolic link"), "{run:?}");
    }
    let run = sb.run_as(ROOT, &["enforce", "--interval", "0"]).fails();
    assert!(run.stderr.contains("is a symbolic link"), "{run:?}");
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        0,
        "written through the link"
    );

    // Her own real folder: root and alice refuse it; she may use it.
    std::fs::remove_file(sb.state()).unwrap();
    let mut mkdir = crate::common::users::command_as(MALLORY, "mkdir");
    assert!(
        mkdir
            .arg("-m")
            .arg("777")
            .arg(sb.state())
            .status()
            .unwrap()
            .success()
    );
    for uid in [ROOT, ALICE] {
        let run = sb.run_as(uid, &["envs"]).fails();
        assert!(
            run.stderr.contains(&format!("belongs to uid {MALLORY}")),
            "{run:?}"
        );
        assert!(run.stderr.contains("hint: "), "{run:?}");
    }
    sb.run_as(MALLORY, &["envs"]).ok();

    // The same for a GENV_TMPDIR that is a link.
    let link = sb.dir.path().join("tmpdir-link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    sb.set("GENV_TMPDIR", link.to_str().unwrap());
    let run = sb.run_as(ALICE, &["envs"]).fails();
    assert!(run.stderr.contains("is a symbolic link"), "{run:?}");
}

#[test]
fn a_huge_state_file_costs_root_little_and_nobody_their_environments() {
    let mut sb = Sandbox::multi_user();
    // No GPU processes: only the state is read.
    sb.set("GENV_MOCK_COMPUTE_APPS_PROCESS_NAME", "no-such-gpu-job");
    let _shell = alice_env(&sb, "a1");
    // 300 MB of nothing, sparse: no disk, all memory for whoever reads it.
    let mut truncate = crate::common::users::command_as(MALLORY, "truncate");
    truncate.args(["-s", "300M"]).arg(sb.file("envs.json"));
    assert!(truncate.status().unwrap().success());
    // Root's enforcement under a 256 MiB address space: it reads no more
    // than the limit, says so once, and carries on from the good copy.
    let mut cmd = crate::common::users::command_as(ROOT, "prlimit");
    cmd.args([
        "--as=268435456",
        "--",
        crate::common::GENV,
        "enforce",
        "--interval",
        "0",
    ]);
    sb.apply(&mut cmd);
    let run = crate::common::Run::from(cmd.output().unwrap()).ok();
    assert!(
        run.stderr.contains("larger than genv's 64 MiB limit"),
        "{run:?}"
    );
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    let envs = sb
        .run_as(ALICE, &["envs", "ps", "--format", "csv", "--no-header"])
        .ok();
    assert!(envs.stdout.starts_with("a1,"), "{envs:?}");
}

/// `script` in bash as `uid`, in folder `cwd`, after genv's shell
/// initialisation; killed after 20 seconds (a hang is a failure).
fn shell_as(sb: &Sandbox, uid: u32, cwd: &std::path::Path, script: &str) -> crate::common::Run {
    let mut cmd = crate::common::users::command_as(uid, "timeout");
    cmd.args(["20", "bash", "-c"])
        .arg(format!("eval \"$(genv shell --init)\"\n{script}"));
    sb.apply(&mut cmd);
    let bin = std::path::Path::new(crate::common::GENV).parent().unwrap();
    cmd.env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("HOME", sb.home_of(uid))
        .current_dir(cwd);
    crate::common::Run::from(cmd.output().unwrap())
}

#[test]
fn genv_folders_in_a_shared_working_folder_are_read_and_written_safely() {
    let sb = Sandbox::multi_user();
    // A project folder everyone writes to, and mallory's `.genv` in it.
    let work = sb.dir.path().join("project");
    std::fs::create_dir(&work).unwrap();
    std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let planted = work.join(".genv");
    let as_mallory = |args: &[&str]| {
        let mut cmd = crate::common::users::command_as(MALLORY, args[0]);
        cmd.args(&args[1..]).current_dir(&work);
        assert!(cmd.status().unwrap().success(), "{args:?}");
    };
    as_mallory(&["mkdir", "-m", "777", ".genv"]);
    as_mallory(&["mkfifo", "-m", "666", ".genv/name"]);
    let run = shell_as(&sb, ALICE, &work, "genv activate --id w1 --no-prompt");
    assert_ne!(run.code, 124, "activation hung on a FIFO: {run:?}");
    assert!(run.stderr.contains("not a regular file"), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");

    std::fs::remove_file(planted.join("name")).unwrap();
    as_mallory(&["ln", "-s", "/dev/zero", ".genv/gpu-memory"]);
    let run = shell_as(&sb, ALICE, &work, "genv activate --id w2 --no-prompt");
    assert_ne!(run.code, 124, "activation hung on /dev/zero: {run:?}");
    assert!(run.stderr.contains("a symbolic link"), "{run:?}");

    // Saving replaces a planted link instead of writing into alice's file.
    std::fs::remove_file(planted.join("gpu-memory")).unwrap();
    let precious = sb.home_of(ALICE).join("precious");
    let mut write = crate::common::users::command_as(ALICE, "sh");
    write
        .arg("-c")
        .arg(format!("echo keep > {}", precious.display()));
    assert!(write.status().unwrap().success());
    as_mallory(&["ln", "-s", precious.to_str().unwrap(), ".genv/name"]);
    let run = shell_as(
        &sb,
        ALICE,
        &work,
        "genv activate --id w3 --no-prompt --no-load && genv config name mine --save",
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep\n");
    let name = planted.join("name");
    assert!(!name.symlink_metadata().unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&name).unwrap(), "mine");
}

#[test]
fn a_sticky_state_folder_is_named_as_the_cause_of_a_failed_write() {
    let sb = Sandbox::multi_user();
    std::fs::set_permissions(
        sb.state(),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let shell = alice_env(&sb, "a1");
    let (pid, mallory) = (shell.pid().to_string(), MALLORY.to_string());
    let before = sb.read("envs.json");
    let run = sb
        .run_as(
            MALLORY,
            &[
                "envs", "activate", "--eid", "m1", "--uid", &mallory, "--pid", &pid,
            ],
        )
        .fails();
    assert!(run.stderr.contains("sticky bit"), "{run:?}");
    assert!(run.stderr.contains("hint: "), "{run:?}");
    assert_eq!(sb.read("envs.json"), before);
}
