//! The container toolkit: `genv-docker`'s command lines (snapshots of
//! `--dry-run`, and the arguments an engine really gets), the runtime's
//! changes to a bundle, and a container run end to end with real podman
//! and runc (installed by scripts/test).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{GENV, Run, Sandbox};

/// `genv` linked under `name` in a folder of the sandbox.
fn linked(sandbox: &Sandbox, name: &str) -> PathBuf {
    let bin = sandbox.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join(name);
    if !link.exists() {
        std::os::unix::fs::symlink(GENV, &link).unwrap();
    }
    link
}

pub fn genv_docker(sandbox: &Sandbox, args: &[&str]) -> Run {
    let mut cmd = Command::new(linked(sandbox, "genv-docker"));
    cmd.args(args);
    sandbox.apply(&mut cmd);
    Run::from(cmd.output().unwrap())
}

const TRICKY: [&str; 22] = [
    "-H",
    "unix:///run/x.sock",
    "run",
    "--gpus",
    "2",
    "--gpu-memory=4g",
    "--eid",
    "my env",
    "--no-shims",
    "--rm",
    "-e",
    "A=it's",
    "-it",
    "--name",
    "--gpus",
    "img",
    "sh",
    "-c",
    "echo \"a b\" $HOME; `x`",
    "--gpus",
    "1",
    "--dry-run",
];

#[test]
fn dry_run_prints_the_command_with_arguments_quoted() {
    let sandbox = Sandbox::new();
    let mut args = TRICKY.to_vec();
    // `--dry-run` among the options of run, before the image.
    args.retain(|a| *a != "--dry-run");
    args.insert(3, "--dry-run");
    let run = genv_docker(&sandbox, &args).ok();
    let state = sandbox.state();
    let stdout = run.stdout.replace(state.to_str().unwrap(), "[STATE]");
    insta::assert_snapshot!("container_dry_run_tricky", stdout);
    assert!(!state.exists(), "a dry run makes nothing");

    let mut sandbox = Sandbox::new();
    sandbox.set("GENV_ALLOW_OVER_SUBSCRIPTION", "1");
    sandbox.set("GENV_DOCKER", "podman");
    let run = genv_docker(
        &sandbox,
        &[
            "container",
            "run",
            "--dry-run",
            "--gpus",
            "device=1,3",
            "--no-activate",
            "img",
        ],
    )
    .ok();
    insta::assert_snapshot!("container_dry_run_devices", run.stdout);
}

#[test]
fn the_engine_gets_every_other_argument_exactly() {
    let mut sandbox = Sandbox::new();
    let engine = sandbox.dir.path().join("engine");
    std::fs::write(&engine, "#!/bin/sh\nprintf '%s\\n' \"$@\"\nexit 7\n").unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&engine)
        .status()
        .unwrap();
    sandbox.set("GENV_DOCKER", engine.to_str().unwrap());
    let mut args = TRICKY.to_vec();
    args.pop();
    let run = genv_docker(&sandbox, &args);
    assert_eq!(run.code, 7, "{run:?}");
    let got: Vec<&str> = run.stdout.lines().collect();
    // The state folder, made as every genv command makes it, is handed to
    // the runtime in the bundle (engines give runtimes none of the
    // caller's variables).
    let state = std::fs::canonicalize(sandbox.state()).unwrap();
    let annotation = format!("io.genv.tmpdir={}", state.display());
    assert_eq!(
        got,
        [
            "-H",
            "unix:///run/x.sock",
            "run",
            "--runtime=genv",
            "--annotation",
            &annotation,
            "-e",
            "GENV_GPUS=2",
            "-e",
            "GENV_GPU_MEMORY=4g",
            "-e",
            "GENV_ENVIRONMENT_ID=my env",
            "-e",
            "GENV_MOUNT_SHIMS=0",
            "--rm",
            "-e",
            "A=it's",
            "-it",
            "--name",
            "--gpus",
            "img",
            "sh",
            "-c",
            "echo \"a b\" $HOME; `x`",
            "--gpus",
            "1",
        ]
    );
    // A relative GENV_TMPDIR names a folder of the caller's working folder.
    let mut cmd = Command::new(linked(&sandbox, "genv-docker"));
    cmd.args(["run", "img"]);
    sandbox.apply(&mut cmd);
    cmd.env("GENV_TMPDIR", "relative")
        .current_dir(sandbox.dir.path());
    let run = Run::from(cmd.output().unwrap());
    assert_eq!(run.code, 7, "{run:?}");
    let relative = std::fs::canonicalize(sandbox.dir.path().join("relative")).unwrap();
    assert!(
        run.stdout
            .contains(&format!("\nio.genv.tmpdir={}\n", relative.display())),
        "{run:?}"
    );
    // Other commands pass through untouched; `genv docker` is the same.
    let run = Run::from(
        sandbox
            .cmd(&["docker", "ps", "--gpus", "x"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.stdout, "ps\n--gpus\nx\n");
}

#[test]
fn bad_values_are_refused_before_the_engine_runs() {
    let sandbox = Sandbox::new();
    let run = genv_docker(&sandbox, &["run", "--gpus", "all", "img"]).fails();
    assert!(
        run.stderr.contains("Invalid value for '--gpus' (all)"),
        "{run:?}"
    );
    let run = genv_docker(&sandbox, &["run", "--gpu-memory", "4x", "img"]).fails();
    assert!(run.stderr.contains("'--gpu-memory' (4x)"), "{run:?}");
}

#[test]
fn the_runtime_rewrites_the_bundle_then_runs_the_real_runtime() {
    let mut sandbox = Sandbox::new();
    let runtime = linked(&sandbox, "genv-container-runtime");
    let bin = runtime.parent().unwrap().to_path_buf();
    let real = bin.join("runc");
    std::fs::write(
        &real,
        "#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/args\"\nexit 3\n",
    )
    .unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&real)
        .status()
        .unwrap();
    sandbox.set("PATH", &format!("{}:/usr/bin:/bin", bin.display()));
    let bundle = sandbox.dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let config = r#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"cwd":"/","args":["sh"],"env":["PATH=/bin","GENV_GPUS=1"]},"root":{"path":"rootfs"},"linux":{"namespaces":[{"type":"mount"}]},"x-unknown":{"kept":true}}"#;
    std::fs::write(bundle.join("config.json"), config).unwrap();
    let mut cmd = Command::new(&runtime);
    cmd.args(["--root", "/run/r", "create", "--bundle"])
        .arg(&bundle)
        .arg("cid");
    sandbox.apply(&mut cmd);
    let run = Run::from(cmd.output().unwrap());
    assert_eq!(run.code, 3, "the real runtime's exit code: {run:?}");
    let args = std::fs::read_to_string(bin.join("args")).unwrap();
    assert_eq!(
        args,
        format!("--root /run/r create --bundle {} cid\n", bundle.display())
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let env: Vec<&str> = json["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        env,
        [
            "GENV_GPUS=1",
            "GENV_CONTAINER=1",
            "GENV_ENVIRONMENT_ID=cid",
            "PATH=/opt/genv/shims:/bin"
        ]
    );
    assert_eq!(json["x-unknown"]["kept"], true);
    for stage in ["prestart", "poststop"] {
        let hook = &json["hooks"][stage][0];
        assert_eq!(hook["args"][0], "genv-container-runtime-hook");
        assert_eq!(hook["args"][1], stage);
        assert!(
            hook["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e == "GENV_ENVIRONMENT_ID=cid")
        );
    }
    let mounts: Vec<&str> = json["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    assert_eq!(
        mounts,
        [
            "/opt/genv/shims/nvidia-smi",
            "/opt/genv/shims/genv",
            "/var/tmp/genv"
        ]
    );
    // The statically linked genv is what is mounted, never the host's
    // dynamically linked one.
    let static_genv = static_genv();
    assert_eq!(json["mounts"][0]["source"], static_genv.to_str().unwrap());
    assert_eq!(json["mounts"][2]["type"], "tmpfs");
    assert!(!env.iter().any(|e| e.starts_with("LD_PRELOAD=")));

    // With a capacity, in an image without glibc: no library, a warning.
    let config = r#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"cwd":"/","args":["sh"],"env":["PATH=/bin","GENV_GPU_MEMORY=4g","LD_PRELOAD=/usr/lib/libx.so"]},"root":{"path":"rootfs"}}"#;
    std::fs::write(bundle.join("config.json"), config).unwrap();
    let mut cmd = Command::new(&runtime);
    cmd.args(["create", "--bundle"]).arg(&bundle).arg("cid");
    sandbox.apply(&mut cmd);
    let run = Run::from(cmd.output().unwrap());
    assert_eq!(run.code, 3);
    assert!(run.stderr.contains("the image has no glibc"), "{run:?}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let text = json.to_string();
    assert!(text.contains("LD_PRELOAD=/usr/lib/libx.so\""), "{text}");
    assert!(!text.contains("libgenv_memcap"), "{text}");

    // In a glibc image: the memory cap library, read-only, in LD_PRELOAD
    // (before what the image preloads).
    let loader = bundle.join("rootfs/lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&loader).unwrap();
    std::fs::write(loader.join("ld-linux-x86-64.so.2"), "").unwrap();
    std::fs::create_dir_all(bundle.join("rootfs/lib64")).unwrap();
    // As Debian links it: absolute, so only right inside the image's root.
    std::os::unix::fs::symlink(
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        bundle.join("rootfs/lib64/ld-linux-x86-64.so.2"),
    )
    .unwrap();
    std::fs::write(bundle.join("config.json"), config).unwrap();
    let mut cmd = Command::new(&runtime);
    cmd.args(["create", "--bundle"]).arg(&bundle).arg("cid");
    sandbox.apply(&mut cmd);
    let run = Run::from(cmd.output().unwrap());
    assert_eq!(run.code, 3);
    assert!(!run.stderr.contains("glibc"), "{run:?}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let env = &json["process"]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e == "LD_PRELOAD=/opt/genv/lib/libgenv_memcap.so:/usr/lib/libx.so"),
        "{env}"
    );
    let library = json["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/opt/genv/lib/libgenv_memcap.so")
        .unwrap_or_else(|| panic!("the library's mount: {json}"));
    assert!(
        library["source"]
            .as_str()
            .unwrap()
            .ends_with("/libgenv_memcap.so")
    );
    assert!(
        library["options"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "ro")
    );
}

/// `genv-container-runtime` in front of a fake `runc` that records its
/// arguments in `args` beside it and exits 3.
fn fake_runc(sandbox: &mut Sandbox) -> (PathBuf, PathBuf) {
    let runtime = linked(sandbox, "genv-container-runtime");
    let bin = runtime.parent().unwrap().to_path_buf();
    let real = bin.join("runc");
    std::fs::write(
        &real,
        "#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/args\"\nexit 3\n",
    )
    .unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&real)
        .status()
        .unwrap();
    sandbox.set("PATH", &format!("{}:/usr/bin:/bin", bin.display()));
    (runtime, bin.join("args"))
}

/// A bundle whose configuration names `state` as the state folder.
fn bundle_naming(sandbox: &Sandbox, state: &str, env: &[&str]) -> (PathBuf, String) {
    let bundle = sandbox.dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"user": {"uid": 0, "gid": 0}, "cwd": "/", "args": ["sh"], "env": env},
        "root": {"path": "rootfs"},
        "annotations": {"io.genv.tmpdir": state},
    })
    .to_string();
    std::fs::write(bundle.join("config.json"), &config).unwrap();
    (bundle, config)
}

/// The runtime runs as root and the bundle's state folder is written by
/// whoever ran the engine: it takes only an absolute path, without `..`,
/// to a real folder that neither is nor lies under one that another user
/// controls, and hands that to its hooks; anything else stops the
/// container, with one line, before the real runtime runs and with the
/// bundle untouched.
#[test]
fn the_runtime_takes_the_state_folder_from_the_bundle_and_checks_it() {
    use crate::common::users::{MALLORY, command_as};
    let mut sandbox = Sandbox::multi_user();
    let (runtime, args) = fake_runc(&mut sandbox);
    let top = sandbox.dir.path().to_path_buf();
    let state = sandbox.state();
    let mallorys = sandbox.home_of(MALLORY).join("state");
    assert!(
        command_as(MALLORY, "mkdir")
            .arg(&mallorys)
            .status()
            .unwrap()
            .success()
    );
    // Root's folder, in a folder of mallory's: she can put another there.
    let beneath = sandbox.home_of(MALLORY).join("roots");
    std::fs::create_dir(&beneath).unwrap();
    let link = top.join("link");
    std::os::unix::fs::symlink(&state, &link).unwrap();
    let text = |p: &Path| p.to_str().unwrap().to_owned();
    for (value, why) in [
        ("genv".to_owned(), "is not an absolute path"),
        (format!("{}/../genv", text(&state)), "'..'"),
        (text(&link), "a symbolic link"),
        (format!("{}/genv", text(&link)), "a symbolic link"),
        (text(&top.join("missing")), "does not exist"),
        (text(&mallorys), "belongs to uid 47102"),
        (text(&beneath), "belongs to uid 47102"),
    ] {
        let (bundle, config) = bundle_naming(&sandbox, &value, &["GENV_GPUS=1"]);
        let mut cmd = Command::new(&runtime);
        cmd.args(["create", "--bundle"]).arg(&bundle).arg("cid");
        sandbox.apply(&mut cmd);
        let run = Run::from(cmd.output().unwrap());
        assert_eq!(run.code, 1, "{value}: {run:?}");
        assert!(
            run.stderr.starts_with("genv: error: ") && run.stderr.contains(why),
            "{value}: {run:?}"
        );
        assert_eq!(
            run.stderr.lines().filter(|l| l.contains("error")).count(),
            1
        );
        assert!(!args.exists(), "{value}: the real runtime ran");
        assert_eq!(
            std::fs::read_to_string(bundle.join("config.json")).unwrap(),
            config
        );
    }
    // Root's own folder: the hooks get it, whatever the runtime's
    // environment says.
    let (bundle, _) = bundle_naming(&sandbox, &text(&state), &["GENV_GPUS=1"]);
    let mut cmd = Command::new(&runtime);
    cmd.args(["create", "--bundle"]).arg(&bundle).arg("cid");
    sandbox.apply(&mut cmd);
    cmd.env("GENV_TMPDIR", "/nonexistent/elsewhere");
    let run = Run::from(cmd.output().unwrap());
    assert_eq!(run.code, 3, "the real runtime ran: {run:?}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    for stage in ["prestart", "poststop"] {
        let env = &json["hooks"][stage][0]["env"];
        let tmpdirs: Vec<&str> = env
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e.as_str()?.strip_prefix("GENV_TMPDIR="))
            .collect();
        assert_eq!(tmpdirs, [text(&state)], "{stage}: {env}");
    }
}

/// The hook finds the state folder in the bundle too, and checks it again
/// (the folder may have changed since `create`): a folder of another user
/// is refused with nothing written anywhere; root's own is where the
/// container's environment is made and released, whatever the hook's
/// environment names.
#[test]
fn the_hook_acts_on_the_state_folder_the_bundle_names() {
    use crate::common::users::{MALLORY, command_as};
    let sandbox = Sandbox::multi_user();
    let mallorys = sandbox.home_of(MALLORY).join("state");
    assert!(
        command_as(MALLORY, "mkdir")
            .arg(&mallorys)
            .status()
            .unwrap()
            .success()
    );
    let other = sandbox.dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let init = crate::common::Sleeper::new();
    let hook = |stage: &str, bundle: &Path| {
        run_hook(&sandbox, Some(stage), "cid", "created", init.pid(), bundle)
    };
    let env = ["GENV_GPUS=1", "GENV_MOUNT_DEVICE_LOCKS=0"];
    let (bundle, _) = bundle_naming(&sandbox, mallorys.to_str().unwrap(), &env);
    let run = hook("prestart", &bundle).fails();
    assert!(run.stderr.contains("belongs to uid 47102"), "{run:?}");
    assert_eq!(std::fs::read_dir(&mallorys).unwrap().count(), 0);
    assert_eq!(sandbox.envs_csv(), "");

    let (bundle, _) = bundle_naming(&sandbox, other.to_str().unwrap(), &env);
    hook("prestart", &bundle).ok();
    assert_eq!(sandbox.envs_csv(), "", "not in the hook's GENV_TMPDIR");
    let mut in_other = sandbox.cmd(&["devices", "ps", "--format", "csv", "--no-header"]);
    in_other.env("GENV_TMPDIR", &other);
    let devices = Run::from(in_other.output().unwrap()).ok().stdout;
    assert!(devices.lines().any(|l| l.contains(",cid,")), "{devices}");
    hook("poststop", &bundle).ok();
    let devices = Run::from(in_other.output().unwrap()).ok().stdout;
    assert!(!devices.contains("cid"), "released: {devices}");
}

/// Registered as genv 1.4.3 registered its hook (a `prestart` hook with no
/// argument), the hook takes its stage from the container's state: it
/// makes the environment while the container is `created`, and releases
/// it once it is `stopped`.
#[test]
fn a_hook_without_a_stage_argument_takes_it_from_the_containers_state() {
    let sandbox = Sandbox::new();
    let folder = sandbox.dir.path().join("named");
    std::fs::create_dir(&folder).unwrap();
    let init = crate::common::Sleeper::new();
    let hook = |status: &str, bundle: &Path| {
        run_hook(&sandbox, None, "old-style", status, init.pid(), bundle)
    };
    let (bundle, _) = bundle_naming(
        &sandbox,
        folder.to_str().unwrap(),
        &["GENV_GPUS=1", "GENV_MOUNT_DEVICE_LOCKS=0"],
    );
    let mut devices = sandbox.cmd(&["devices", "ps", "--format", "csv", "--no-header"]);
    devices.env("GENV_TMPDIR", &folder);
    hook("created", &bundle).ok();
    let attached = Run::from(devices.output().unwrap()).ok().stdout;
    assert!(
        attached.lines().any(|l| l.contains(",old-style,")),
        "{attached}"
    );
    hook("stopped", &bundle).ok();
    let released = Run::from(devices.output().unwrap()).ok().stdout;
    assert!(!released.contains("old-style"), "released: {released}");
}

/// The hook run as the runtime runs it: `stage` as its argument (none, as
/// genv 1.4.3 registered it), the container's state on stdin.
fn run_hook(
    sandbox: &Sandbox,
    stage: Option<&str>,
    id: &str,
    status: &str,
    pid: u32,
    bundle: &Path,
) -> Run {
    let mut cmd = Command::new(linked(sandbox, "genv-container-runtime-hook"));
    cmd.args(stage);
    sandbox.apply(&mut cmd);
    let state = serde_json::json!({
        "ociVersion": "1.0.2", "id": id, "status": status,
        "pid": pid, "bundle": bundle,
    });
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(state.to_string().as_bytes())
        .unwrap();
    Run::from(child.wait_with_output().unwrap())
}

/// The statically linked genv that scripts/test builds next to genv.
pub fn static_genv() -> PathBuf {
    let path = Path::new(GENV).with_file_name("genv-static");
    assert!(
        path.is_file(),
        "{} is missing: scripts/test builds it (scripts/build-static)",
        path.display()
    );
    path
}

#[test]
fn without_a_static_genv_the_container_is_refused_and_the_bundle_untouched() {
    let mut sandbox = Sandbox::new();
    // A genv (dynamically linked) with no genv-static beside it.
    let bin = sandbox.dir.path().join("alone");
    std::fs::create_dir_all(&bin).unwrap();
    let runtime = bin.join("genv-container-runtime");
    if std::fs::hard_link(GENV, &runtime).is_err() {
        std::fs::copy(GENV, &runtime).unwrap();
    }
    sandbox.set("PATH", "/usr/bin:/bin");
    let bundle = sandbox.dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let config = r#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"cwd":"/","args":["sh"],"env":["PATH=/bin"]},"root":{"path":"rootfs"}}"#;
    std::fs::write(bundle.join("config.json"), config).unwrap();
    let mut cmd = Command::new(&runtime);
    cmd.args(["create", "--bundle"]).arg(&bundle).arg("cid");
    sandbox.apply(&mut cmd);
    let run = Run::from(cmd.output().unwrap());
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("no statically linked genv to mount into the container"),
        "{run:?}"
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("config.json")).unwrap(),
        config
    );
}

/// Fails loudly when a tool the end-to-end test needs is missing.
pub fn need(tool: &str) -> PathBuf {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain(["/usr/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("{tool} is missing: scripts/test installs it (podman, runc, busybox-static)")
    })
}

pub fn podman(conf: &Path, args: &[&str]) -> Run {
    let run = Command::new(need("podman"))
        .args(args)
        .env("CONTAINERS_CONF", conf)
        .output()
        .unwrap();
    Run::from(run)
}

#[test]
fn a_container_is_an_environment_with_real_podman_and_runc() {
    static_genv();
    let sim = Path::new(GENV).with_file_name("nvidia-smi-sim-static");
    assert!(
        sim.is_file(),
        "{} is missing: scripts/test builds it",
        sim.display()
    );
    let mut sandbox = Sandbox::new();
    let (conf, image) = podman_bed(&mut sandbox);
    let name = format!("genv-test-{}", std::process::id());
    // The stand-in nvidia-smi (static too) where the NVIDIA hook would put
    // the real one, seeing the one GPU that hook would expose.
    let sim_mount = format!("{}:/usr/bin/nvidia-smi:ro", sim.display());
    let run = genv_docker(
        &sandbox,
        &[
            "run",
            "-d",
            "--name",
            &name,
            "--gpus",
            "1",
            "--gpu-memory",
            "4gi",
            "-e",
            "GENV_MOCK_DEVICE_COUNT=1",
            "-e",
            "GENV_MOCK_DEVICE_TOTAL_MEMORY=16g",
            "-v",
            &sim_mount,
            image,
            "sleep",
            "1000",
        ],
    )
    .ok();
    let id = run.stdout.trim().to_owned();
    let cleanup = scopeguard(&conf, &name);
    let envs = sandbox.envs_csv();
    assert!(envs.contains(&id), "the container's environment: {envs}");
    let devices = sandbox.devices_csv();
    let mine: Vec<&str> = devices.lines().filter(|l| l.contains(&id)).collect();
    assert_eq!(mine.len(), 1, "one device: {devices}");
    let index = mine[0].split(',').next().unwrap().to_owned();
    let inside = podman(&conf, &["exec", &name, "env"]).ok();
    assert!(
        inside.stdout.contains(&format!("GENV_ENVIRONMENT_ID={id}")),
        "{inside:?}"
    );
    assert!(
        inside.stdout.contains("PATH=/opt/genv/shims:"),
        "{inside:?}"
    );
    assert!(inside.stdout.contains("GENV_GPU_MEMORY=4gi"), "{inside:?}");
    // `exec` keeps genv's entries once each.
    assert_eq!(
        inside.stdout.matches("/opt/genv/shims").count(),
        1,
        "{inside:?}"
    );

    // nvidia-smi in the container: the static shim in front of the
    // stand-in, one GPU, capped at 4 GiB.
    let smi = podman(&conf, &["exec", &name, "nvidia-smi"]).ok();
    let rows = smi
        .stdout
        .lines()
        .filter(|l| {
            l.strip_prefix('|').map(str::trim_start).is_some_and(|l| {
                l.starts_with(|c: char| c.is_ascii_digit()) && l.contains("NVIDIA")
            })
        })
        .count();
    assert_eq!(rows, 1, "{}", smi.stdout);
    assert!(smi.stdout.contains("MiB /   4096MiB |"), "{}", smi.stdout);

    // A busybox image has no glibc: the memory cap library is not
    // preloaded into its processes (`genv enforce` is the backstop).
    let pid = podman(&conf, &["inspect", "-f", "{{.State.Pid}}", &name])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        !environ.windows(10).any(|w| w == b"LD_PRELOAD"),
        "{}",
        String::from_utf8_lossy(&environ)
    );
    // Only the attached device's lock and the ledger in its state folder.
    let listed = podman(
        &conf,
        &[
            "exec",
            &name,
            "ls",
            "/var/tmp/genv/devices",
            "/var/tmp/genv",
        ],
    )
    .ok();
    assert!(
        listed
            .stdout
            .ends_with(&format!("/var/tmp/genv/devices:\n{index}.lock\n")),
        "{listed:?}"
    );
    assert!(
        listed.stdout.contains(&format!("memcap-0-{id}")),
        "{listed:?}"
    );
    let ledger = sandbox.state().join(format!("memcap-0-{id}"));
    assert!(ledger.is_file(), "the host's ledger");

    // genv lock in the container locks the environment's device, and
    // excludes a host genv lock on it; and the other way round.
    let host = |args: &[&str]| {
        let mut all = vec!["lock"];
        all.extend_from_slice(args);
        let mut cmd = sandbox.cmd(&all);
        cmd.env("GENV_ENVIRONMENT_ID", "host-side")
            .env("CUDA_VISIBLE_DEVICES", &index);
        cmd
    };
    let lock_inside = |args: &[&str]| {
        let mut all = vec!["exec", &name, "genv", "lock"];
        all.extend_from_slice(args);
        podman(&conf, &all)
    };
    let holder = Holder::start(
        Command::new(need("podman"))
            .args(["exec", "-i", &name, "genv", "lock", "sh", "-c", HOLD])
            .env("CONTAINERS_CONF", &conf),
    );
    let busy = format!("cannot lock GPU {index} without waiting");
    let run = Run::from(host(&["-n", "true"]).output().unwrap()).fails();
    assert!(run.stderr.contains(&busy), "{run:?}");
    drop(holder);
    Run::from(host(&["-n", "true"]).output().unwrap()).ok();
    let holder = Holder::start(&mut host(&["sh", "-c", HOLD]));
    let run = lock_inside(&["-n", "true"]).fails();
    assert!(run.stderr.contains(&busy), "{run:?}");
    drop(holder);
    lock_inside(&["-n", "true"]).ok();

    // The SDK's plumbing reads the mounted locks: the host's index.
    let sdk = podman(&conf, &["exec", &name, "genv", "sdk", "attached"]).ok();
    assert_eq!(sdk.stdout, format!("{{\"indices\":[{index}]}}\n"));
    // And the Python SDK itself, in a container whose root is the host's
    // (an overlay over it, so Python and glibc are there), through the
    // mounted genv: it gets its device (a fraction of 2 GiB, which may
    // share the first container's); and with a capacity, the
    // memory cap library is in its LD_PRELOAD, mounted read-only.
    let pythonpath = format!("PYTHONPATH={}/python", env!("CARGO_MANIFEST_DIR"));
    let python = genv_docker(
        &sandbox,
        &[
            "run",
            "--rm",
            "--gpus",
            "1",
            "--gpu-memory",
            "2gi",
            "-e",
            &pythonpath,
            "-e",
            "GENV_SDK_BINARY=/opt/genv/shims/genv",
            "--rootfs",
            "/:O",
            "python3",
            "-c",
            PYTHON_IN_CONTAINER,
        ],
    )
    .ok();
    let (devices, rest) = python.stdout.split_once('\n').unwrap();
    assert!(devices == "[0]" || devices == "[1]", "{python:?}");
    assert_eq!(
        rest, "/opt/genv/lib/libgenv_memcap.so\nread-only\n",
        "{python:?}"
    );

    podman(&conf, &["rm", "-f", "-t", "0", &name]).ok();
    drop(cleanup);
    assert!(
        !sandbox.envs_csv().contains(&id),
        "released: {}",
        sandbox.envs_csv()
    );
    assert!(
        !sandbox.devices_csv().contains(&id),
        "freed: {}",
        sandbox.devices_csv()
    );
    assert!(!ledger.exists(), "the ledger goes with the environment");

    // A failure stops the container's creation and leaves nothing behind.
    let run = genv_docker(&sandbox, &["run", "--rm", "--gpus", "3", image, "true"]).fails();
    // The engine folds the hook's words into its own line: the part that
    // failed, the reason and the hint stay together on it.
    assert!(
        run.stderr.lines().any(|l| l
            .contains("genv-container-runtime-hook: genv could not make container")
            && l.contains("Requested more devices (3)")
            && l.contains("(hint: ")),
        "{run:?}"
    );
    assert!(!run.stderr.contains("\\nhint:"), "{run:?}");
    assert_eq!(sandbox.envs_csv(), "");
    assert!(
        sandbox.devices_csv().lines().all(|l| l.ends_with(",,,")),
        "{}",
        sandbox.devices_csv()
    );
}

/// The README's one-command check, with the runtime registered as a user
/// registers it: podman hands the runtime none of the caller's variables,
/// so the state folder (`GENV_TMPDIR`) reaches it only in the bundle, from
/// genv-docker. The container's environment is in the caller's state, and
/// takes the GPU that another environment there leaves free; the default
/// state folder gets nothing; inside, `genv status` names the GPU.
#[test]
fn the_container_is_in_the_callers_state_folder() {
    static_genv();
    let mut sandbox = Sandbox::new();
    let (conf, image) = podman_bed(&mut sandbox);
    // Another environment of the caller's state holds GPU 0.
    let holder = crate::common::Sleeper::new();
    sandbox.activate_env("holder", holder.pid()).ok();
    sandbox.attach_index("holder", 0).ok();
    let name = format!("genv-test-state-{}", std::process::id());
    let default_state = |file: &str| std::fs::read_to_string(Path::new("/var/tmp/genv").join(file));
    let run = genv_docker(
        &sandbox,
        &[
            "run", "-d", "--name", &name, "--gpus", "1", image, "sleep", "60",
        ],
    )
    .ok();
    let id = run.stdout.trim().to_owned();
    let _cleanup = scopeguard(&conf, &name);
    let envs = sandbox.envs_csv();
    assert!(envs.contains(&id), "the container's environment: {envs}");
    let devices = sandbox.devices_csv();
    let gpu = |index: &str| {
        devices
            .lines()
            .find(|l| l.starts_with(&format!("{index},")))
            .unwrap_or_default()
    };
    assert!(
        gpu("1").contains(&id),
        "GPU 1 is the container's: {devices}"
    );
    assert!(
        gpu("0").contains("holder") && !gpu("0").contains(&id),
        "GPU 0 stays the holder's: {devices}"
    );
    for file in ["envs.json", "devices.json"] {
        let text = default_state(file).unwrap_or_default();
        assert!(!text.contains(&id), "/var/tmp/genv/{file}: {text}");
    }
    let status = podman(&conf, &["exec", &name, "genv", "status"]).ok();
    assert!(
        status.stdout.contains("Attached to GPUs at indices 1\n"),
        "{status:?}"
    );
    podman(&conf, &["rm", "-f", "-t", "0", &name]).ok();
    assert!(!sandbox.envs_csv().contains(&id), "released");
    let devices = sandbox.devices_csv();
    assert!(!devices.contains(&id), "GPU 1 is free again: {devices}");
    drop(holder);
}

/// A sandbox set up for podman with genv's runtime: a busybox image (no
/// Python, no glibc) imported as `image`, the runtime registered in
/// podman's configuration, `genv-docker` running podman. Returns podman's
/// configuration file and the image.
pub fn podman_bed(sandbox: &mut Sandbox) -> (PathBuf, &'static str) {
    need("runc");
    let busybox = need("busybox");
    sandbox.set("GENV_MOCK_DEVICE_TOTAL_MEMORY", "16g");
    let work = sandbox.dir.path().to_path_buf();
    let conf = work.join("containers.conf");
    std::fs::write(&conf, containers_conf(sandbox)).unwrap();
    // An image from busybox alone: no Python, no glibc.
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "env", "sleep", "cat", "ls", "true"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let tar = work.join("rootfs.tar");
    assert!(
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap()
            .success()
    );
    let image = "localhost/genv-test-busybox:latest";
    podman(&conf, &["import", tar.to_str().unwrap(), image]).ok();
    sandbox.set("GENV_DOCKER", need("podman").to_str().unwrap());
    sandbox.set("CONTAINERS_CONF", conf.to_str().unwrap());
    (conf, image)
}

/// podman's configuration as a user writes it: the runtime registered
/// under the name genv-docker gives (`[engine.runtimes]`, as the README
/// says), nothing that hands the runtime the caller's variables. The
/// simulated GPUs stand in for the machine's own, which the runtime finds
/// whoever runs it; `GENV_TMPDIR` is deliberately not among them: the
/// state folder reaches the runtime in the bundle, from genv-docker.
fn containers_conf(sandbox: &Sandbox) -> String {
    let runtime = linked(sandbox, "genv-container-runtime");
    format!(
        "[containers]\n\
         # podman refuses default ulimits as root in some sandboxes: none.\n\
         default_ulimits = []\n\
         [engine]\n\
         conmon_env_vars = [\"GENV_MOCK_DEVICE_COUNT=2\", \"GENV_MOCK_DEVICE_TOTAL_MEMORY=16g\"]\n\
         [engine.runtimes]\n\
         genv = [\"{}\"]\n",
        runtime.display()
    )
}

#[test]
fn files_in_the_state_folder_that_are_not_genv_s_are_never_mounted() {
    static_genv();
    let mut sandbox = Sandbox::new();
    let (conf, image) = podman_bed(&mut sandbox);
    let _ = conf;
    // Another file of the machine linked in place of every device lock.
    let secret = sandbox.dir.path().join("secret");
    std::fs::write(&secret, "not genv's").unwrap();
    let devices = sandbox.state().join("devices");
    std::fs::create_dir_all(&devices).unwrap();
    for index in 0..2 {
        std::fs::hard_link(&secret, devices.join(format!("{index}.lock"))).unwrap();
    }
    let run = genv_docker(
        &sandbox,
        &[
            "run",
            "--rm",
            "--gpus",
            "1",
            image,
            "cat",
            "/var/tmp/genv/devices/0.lock",
        ],
    )
    .fails();
    assert!(
        run.stderr.contains("genv: error: ") && run.stderr.contains("links: not mounting it"),
        "{run:?}"
    );
    assert!(!run.stdout.contains("not genv's"), "{run:?}");
    assert_eq!(sandbox.envs_csv(), "", "the environment is released");
    assert!(
        sandbox.devices_csv().lines().all(|l| l.ends_with(",,,")),
        "{}",
        sandbox.devices_csv()
    );
    // A link in place of the memory cap ledger.
    std::os::unix::fs::symlink(&secret, sandbox.state().join("memcap-0-hostile")).unwrap();
    let run = genv_docker(
        &sandbox,
        &[
            "run",
            "--rm",
            "--eid",
            "hostile",
            "--no-device-locks",
            "--gpus",
            "1",
            "--gpu-memory",
            "1g",
            image,
            "true",
        ],
    )
    .fails();
    assert!(
        run.stderr
            .contains("genv/memcap-0-hostile: a symbolic link: not used"),
        "{run:?}"
    );
    assert_eq!(sandbox.envs_csv(), "");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "not genv's");
}

/// What the Python container prints: its devices, its `LD_PRELOAD`, and
/// whether the library there is mounted read-only.
const PYTHON_IN_CONTAINER: &str = "
import os, genv.sdk
print(genv.sdk.attached())
library = os.environ.get('LD_PRELOAD')
print(library)
print('read-only' if os.statvfs(library).f_flag & os.ST_RDONLY else 'writable')
";

/// Says it holds, then holds until its stdin closes.
const HOLD: &str = "echo held; read -r line";

/// A process holding a lock: started and waited for until it says
/// `held`; dropping it closes its stdin, and waits for it to end.
struct Holder(std::process::Child);

impl Holder {
    fn start(cmd: &mut Command) -> Holder {
        use std::io::BufRead;
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "held\n");
        Holder(child)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// Removes the container however the test ends.
pub fn scopeguard<'a>(conf: &'a Path, name: &'a str) -> impl Drop + 'a {
    struct Guard<'a>(&'a Path, &'a str);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            let _ = podman(self.0, &["rm", "-f", "-t", "0", self.1]);
        }
    }
    Guard(conf, name)
}
