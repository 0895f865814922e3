//! The parts of genv that run away from the user's shell, on a machine
//! whose state `genv daemon` keeps: what `genv remote` runs on a host
//! (over a real `sshd` on loopback), and the container runtime's hook
//! (with real podman and runc). Each goes through the daemon, or for
//! root's own tools under its lock, and leaves the folder root's.

use std::cell::RefCell;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common::daemon::{Daemon, NOT_ANSWERING, RULES_HINT};
use crate::common::users::{ALICE, ROOT, alive};
use crate::common::{GENV, Sandbox};
use crate::container::{genv_docker, podman, podman_bed, scopeguard, static_genv};
use crate::remote::{Fleet, Genv, gpu_process};

/// Owner uid and permission bits of a path (not followed).
fn owner_mode(path: &Path) -> (u32, u32) {
    let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    (meta.uid(), meta.permissions().mode() & 0o7777)
}

/// The folder as the daemon keeps it: root's 0755, its socket there, and
/// the daemon still serving it.
#[track_caller]
fn assert_served(state: &Path, daemon: &Daemon) {
    assert_eq!(owner_mode(state), (ROOT, 0o755), "{state:?}");
    let socket = std::fs::symlink_metadata(state.join("genv.sock")).unwrap();
    assert!(socket.file_type().is_socket(), "genv.sock is a socket");
    assert!(alive(daemon.pid()), "the daemon serves on");
}

/// Every state file root's 0644, whoever wrote it last: no one else may
/// write the state but through the daemon.
#[track_caller]
fn assert_files_root_s(state: &Path) {
    let mut files: Vec<(String, (u32, u32))> = std::fs::read_dir(state)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .map(|name| {
            let got = owner_mode(&state.join(&name));
            (name, got)
        })
        .collect();
    files.sort();
    for name in ["envs.json", "devices.json"] {
        assert!(files.iter().any(|(f, _)| f == name), "{name} in {files:?}");
    }
    let wrong: Vec<String> = files
        .iter()
        .filter(|(_, got)| *got != (ROOT, 0o644))
        .map(|(name, (uid, mode))| format!("{name}: uid {uid}, {mode:o}"))
        .collect();
    assert!(wrong.is_empty(), "not root's 0644: {wrong:?}");
}

/// A host, `served`, whose logins are told of 2 GPUs and whose daemon,
/// started with 3, keeps its state: what `genv remote` sees there is the
/// daemon's. Root logs in, as in remote.rs.
struct ServedHost {
    // First, so that it stops before the fleet's folders go.
    daemon: Daemon,
    fleet: Fleet,
}

fn served_host() -> ServedHost {
    let started = RefCell::new(None);
    let fleet = Fleet::start_with(&[("served", Genv::Ours, 2)], |_, sb| {
        sb.set("GENV_MOCK_DEVICE_COUNT", "3");
        *started.borrow_mut() = Some(Daemon::start(sb));
        sb.set("GENV_MOCK_DEVICE_COUNT", "2");
    });
    let daemon = started.into_inner().expect("the host's daemon");
    ServedHost { daemon, fleet }
}

#[test]
fn genv_remote_on_a_host_goes_through_its_daemon() {
    let ServedHost { mut daemon, fleet } = served_host();
    let host = fleet.host("served");
    let state = host.state();

    let run = fleet.remote(&["-H", "served", "devices", "--format", "csv"], "");
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (
            0,
            "HOST,TOTAL,AVAILABLE\nserved,3,3\n\n\
             Total 3 devices with 3 available on 1 hosts\n",
            ""
        ),
        "the daemon's 3 GPUs: {run:?}"
    );

    // An environment of all 3 GPUs: the host chosen by the daemon's count,
    // the environment made by the login shell's `genv activate` through
    // the daemon. (The login shell's /etc/profile sets PATH anew: genv is
    // put back on it, then its shell integration loaded, as a user's
    // profile does.)
    let genv_bin = Path::new(GENV).parent().unwrap().display().to_string();
    let script = format!(
        "PATH={genv_bin}:$PATH\n\
         eval \"$(genv shell --init)\"\n\
         echo \"eid=$GENV_ENVIRONMENT_ID cuda=$CUDA_VISIBLE_DEVICES\"\n\
         genv envs ps --format csv --no-header | cut -d, -f1,3\n\
         genv devices ps --format csv --no-header | cut -d, -f1,2\n"
    );
    let run = fleet.remote(
        &["-H", "served", "activate", "--gpus", "3", "--name", "wide"],
        &script,
    );
    assert_eq!(run.code, 0, "{run:?}");
    let eid = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("eid="))
        .and_then(|l| l.strip_suffix(" cuda=0,1,2"))
        .unwrap_or_else(|| panic!("activated on 3 GPUs: {run:?}"));
    assert!(!eid.is_empty(), "{run:?}");
    assert!(
        run.stdout.contains(&format!("\n{eid},wide\n")),
        "listed: {run:?}"
    );
    for index in 0..3 {
        assert!(
            run.stdout.contains(&format!("\n{index},{eid}\n")),
            "GPU {index} attached: {run:?}"
        );
    }
    assert_served(&state, &daemon);
    assert_files_root_s(&state);
    // The shell is gone: so is its environment.
    let run = fleet.remote(&["-H", "served", "envs", "--format", "csv"], "");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains(eid), "{run:?}");

    // The daemon stopped, its socket left: the host refuses, writes nothing.
    let before = host.snapshot_files();
    daemon.kill9();
    let run = fleet.remote(&["-H", "served", "devices"], "");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains(NOT_ANSWERING), "{run:?}");
    assert_eq!(host.snapshot_files(), before);
}

/// `genv remote` of genv 1.4.3, run from a machine with the reference
/// installed: what it runs on the host (`genv usage snapshot`) goes
/// through the host's daemon, and what it shows is the daemon's state.
#[test]
fn genv_1_4_3_remote_reads_a_host_through_its_daemon() {
    let ServedHost { daemon, fleet } = served_host();
    let host = fleet.host("served");
    let job = crate::common::Sleeper::new();
    host.activate_env("train", job.pid()).ok();
    host.config_name("train", "train").ok();
    host.attach("train", 1).ok();

    let run = fleet.remote_of_reference(&["-H", "served", "devices"]);
    assert_eq!(run.code, 0, "{run:?}");
    let rows: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.iter().any(|r| r.as_slice() == ["served", "3", "2"]),
        "the daemon's 3 GPUs, one attached: {run:?}"
    );
    let run = fleet.remote_of_reference(&["-H", "served", "envs"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.lines().any(|l| l
            .split_whitespace()
            .collect::<Vec<_>>()
            .starts_with(&["served", "train", "alice", "train"])),
        "alice's environment: {run:?}"
    );
    assert!(
        run.stdout.contains("Total 1 environments on 1 hosts"),
        "{run:?}"
    );
    assert_served(&host.state(), &daemon);
    assert_files_root_s(&host.state());
}

/// Root's enforcement across hosts: each host's snapshot from its daemon,
/// the report executed there by root's `genv usage execute`, which writes
/// under the daemon's lock and must leave the files as the daemon keeps
/// them.
#[test]
fn genv_remote_enforce_on_a_host_keeps_its_files_root_s() {
    let ServedHost { daemon, fleet } = served_host();
    let host = fleet.host("served");
    let holder = crate::common::Sleeper::new();
    host.activate_env("x", holder.pid()).ok();
    host.attach("x", 2).ok();
    let _job = gpu_process(&fleet, "served", "x", "0");
    assert_files_root_s(&host.state());
    let run = fleet.remote(
        &[
            "-H",
            "served",
            "enforce",
            "--interval",
            "0",
            "--max-devices-per-user",
            "1",
        ],
        "",
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("User alice is using 2 devices on 1 hosts which is 1 more"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("[served] Detaching environment x of user alice from device"),
        "{run:?}"
    );
    // Before the daemon is asked anything (it might write them again).
    assert_files_root_s(&host.state());
    assert_served(&host.state(), &daemon);
    let found = host.find("x").ok();
    assert_eq!(found.stdout.lines().count(), 1, "one GPU left: {found:?}");
}

/// A container run as the README says, where a daemon keeps the state
/// folder that genv-docker names to the runtime: the hook, root's,
/// makes its environment and attaches its GPU under the daemon's lock,
/// the daemon's clients see it, alice may not touch it, and at the
/// container's end it is gone.
#[test]
fn a_container_is_an_environment_in_a_daemons_folder() {
    static_genv();
    let mut sandbox = Sandbox::multi_user();
    let (conf, image) = podman_bed(&mut sandbox);
    let daemon = Daemon::start(&sandbox);
    let name = format!("genv-test-daemon-{}", std::process::id());
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
    assert_served(&sandbox.state(), &daemon);
    let ledger = sandbox.state().join(format!("memcap-0-{id}"));
    assert_eq!(owner_mode(&ledger).0, ROOT, "the container's ledger");

    // Inside, genv reads the state files mounted from the daemon's folder.
    let status = podman(&conf, &["exec", &name, "genv", "status"]).ok();
    assert!(
        status
            .stdout
            .contains(&format!("Attached to GPUs at indices {index}\n")),
        "{status:?}"
    );

    // The environment is root's: alice, through the daemon, may not
    // detach it.
    let before = sandbox.snapshot_files();
    let refused = sandbox.run_as(ALICE, &["devices", "detach", "--eid", &id]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains(RULES_HINT), "{refused:?}");
    assert_eq!(sandbox.snapshot_files(), before, "nothing written");

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
    assert_served(&sandbox.state(), &daemon);
}

/// The hook writes the state files of the daemon's folder itself (root's
/// tool, under the daemon's lock): what it leaves must be root's 0644
/// like everything the daemon writes, or any user could write the state
/// past the daemon.
#[test]
fn the_container_hook_leaves_the_daemons_files_root_s() {
    static_genv();
    let mut sandbox = Sandbox::multi_user();
    let (_conf, image) = podman_bed(&mut sandbox);
    let daemon = Daemon::start(&sandbox);
    // The daemon's files first, so that the hook only replaces them.
    sandbox.devices_csv();
    sandbox.envs_csv();
    assert_files_root_s(&sandbox.state());
    genv_docker(&sandbox, &["run", "--rm", "--gpus", "1", image, "true"]).ok();
    // Before the daemon is asked anything (it might write them again).
    assert_files_root_s(&sandbox.state());
    assert_served(&sandbox.state(), &daemon);
    assert_eq!(sandbox.envs_csv(), "", "released");
}
