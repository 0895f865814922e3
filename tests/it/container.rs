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

fn genv_docker(sandbox: &Sandbox, args: &[&str]) -> Run {
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
    insta::assert_snapshot!("container_dry_run_tricky", run.stdout);

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
    assert_eq!(
        got,
        [
            "-H",
            "unix:///run/x.sock",
            "run",
            "--runtime=genv",
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
        ["/opt/genv/shims/nvidia-smi", "/var/tmp/genv/devices"]
    );
}

/// Fails loudly when a tool the end-to-end test needs is missing.
fn need(tool: &str) -> PathBuf {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain(["/usr/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("{tool} is missing: scripts/test installs it (podman, runc, busybox-static)")
    })
}

fn podman(conf: &Path, args: &[&str]) -> Run {
    let run = Command::new(need("podman"))
        .args(args)
        .env("CONTAINERS_CONF", conf)
        .output()
        .unwrap();
    Run::from(run)
}

#[test]
fn a_container_is_an_environment_with_real_podman_and_runc() {
    need("runc");
    let busybox = need("busybox");
    let mut sandbox = Sandbox::new();
    sandbox.set("GENV_MOCK_DEVICE_TOTAL_MEMORY", "16g");
    let work = sandbox.dir.path().to_path_buf();
    // podman refuses default ulimits as root in some sandboxes: none.
    let conf = work.join("containers.conf");
    std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();
    // An image from busybox alone.
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "env", "sleep", "cat"] {
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
    // Engines run runtimes with their own environment: the runtime is
    // given the sandbox's state folder by a wrapper.
    let runtime = work.join("runtime");
    let vars: String = sandbox
        .vars
        .iter()
        .map(|(n, v)| format!("export {n}='{v}'\n"))
        .collect();
    std::fs::write(
        &runtime,
        format!("#!/bin/bash\n{vars}exec -a genv-container-runtime {GENV} \"$@\"\n"),
    )
    .unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&runtime)
        .status()
        .unwrap();
    sandbox.set("GENV_DOCKER", need("podman").to_str().unwrap());
    sandbox.set("GENV_CONTAINER_RUNTIME", runtime.to_str().unwrap());
    sandbox.set("CONTAINERS_CONF", conf.to_str().unwrap());
    let name = format!("genv-test-{}", std::process::id());
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
            "4g",
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
    assert!(devices.contains(&id), "its device: {devices}");
    let inside = podman(&conf, &["exec", &name, "env"]).ok();
    assert!(
        inside.stdout.contains(&format!("GENV_ENVIRONMENT_ID={id}")),
        "{inside:?}"
    );
    assert!(
        inside.stdout.contains("PATH=/opt/genv/shims:"),
        "{inside:?}"
    );
    assert!(inside.stdout.contains("GENV_GPU_MEMORY=4g"), "{inside:?}");
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

    // A failure stops the container's creation and leaves nothing behind.
    let run = genv_docker(&sandbox, &["run", "--rm", "--gpus", "3", image, "true"]).fails();
    assert!(run.stderr.contains("Requested more devices (3)"), "{run:?}");
    assert_eq!(sandbox.envs_csv(), "");
    assert!(
        sandbox.devices_csv().lines().all(|l| l.ends_with(",,,")),
        "{}",
        sandbox.devices_csv()
    );
}

/// Removes the container however the test ends.
fn scopeguard<'a>(conf: &'a Path, name: &'a str) -> impl Drop + 'a {
    struct Guard<'a>(&'a Path, &'a str);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            let _ = podman(self.0, &["rm", "-f", "-t", "0", self.1]);
        }
    }
    Guard(conf, name)
}
