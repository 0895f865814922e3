//! The docker shim over a fake docker that prints its arguments.

use crate::shim_support::ShimBed;

const IN_ENV: [(&str, &str); 2] = [
    ("GENV_ENVIRONMENT_ID", "e1"),
    ("CUDA_VISIBLE_DEVICES", "0,2"),
];

fn bed() -> ShimBed {
    let bed = ShimBed::new();
    bed.fake("docker", "");
    bed
}

#[test]
fn gpus_all_becomes_the_attached_devices() {
    let bed = bed();
    bed.run(
        "docker",
        &["run", "--rm", "--gpus", "all", "ubuntu", "nvidia-smi"],
        &IN_ENV,
    )
    .ok();
    assert_eq!(
        bed.args_of("docker"),
        [
            "run",
            "--rm",
            "--gpus",
            "\"device=0,2\"",
            "-e",
            "GENV_ENVIRONMENT_ID=e1",
            "ubuntu",
            "nvidia-smi"
        ]
    );
}

#[test]
fn gpus_count_takes_the_first_attached_devices() {
    let bed = bed();
    bed.run(
        "docker",
        &["container", "create", "-it", "--gpus=1", "img"],
        &IN_ENV,
    )
    .ok();
    assert_eq!(
        bed.args_of("docker"),
        [
            "container",
            "create",
            "-it",
            "--gpus=\"device=0\"",
            "-e",
            "GENV_ENVIRONMENT_ID=e1",
            "img"
        ]
    );
    let run = bed
        .run("docker", &["run", "--gpus", "3", "img"], &IN_ENV)
        .fails();
    assert_eq!(
        run.stderr,
        "Requested 3 devices but only 2 are attached to environment\n"
    );
}

#[test]
fn naming_a_gpu_outside_the_environment_fails() {
    let bed = bed();
    let run = bed
        .run("docker", &["run", "--gpus", "device=1", "img"], &IN_ENV)
        .fails();
    assert!(
        run.stderr
            .contains("GPU 1 is not attached to environment e1 (attached: 0,2)"),
        "{run:?}"
    );
    assert!(bed.args_of("docker").is_empty());
    bed.run("docker", &["run", "--gpus", "\"device=2\"", "img"], &IN_ENV)
        .ok();
    assert_eq!(
        bed.args_of("docker"),
        [
            "run",
            "--gpus",
            "\"device=2\"",
            "-e",
            "GENV_ENVIRONMENT_ID=e1",
            "img"
        ]
    );
}

#[test]
fn detached_environment_gets_no_gpu() {
    let bed = bed();
    let vars = [
        ("GENV_ENVIRONMENT_ID", "e1"),
        ("CUDA_VISIBLE_DEVICES", "-1"),
    ];
    bed.run("docker", &["run", "--gpus", "all", "img"], &vars)
        .ok();
    assert_eq!(
        bed.args_of("docker"),
        ["run", "--gpus", "0", "-e", "GENV_ENVIRONMENT_ID=e1", "img"]
    );
    bed.run("docker", &["run", "--gpus", "1", "img"], &vars)
        .fails();
}

#[test]
fn everything_else_passes_exactly() {
    let bed = bed();
    let tricky = [
        "run",
        "-e",
        "A=$(touch /tmp/x) `id` 'q'",
        "--name",
        "a b",
        "img",
        "sh",
        "-c",
        "echo \"$HOME\"; --gpus all",
    ];
    bed.run("docker", &tricky, &IN_ENV).ok();
    assert_eq!(bed.args_of("docker"), tricky);
    // --gpus after the image belongs to the container's command.
    let after = ["run", "img", "python", "train.py", "--gpus", "2"];
    bed.run("docker", &after, &IN_ENV).ok();
    assert_eq!(bed.args_of("docker"), after);
    for args in [&["ps", "-a"][..], &["build", "."], &["images"]] {
        bed.run("docker", args, &IN_ENV).ok();
        assert_eq!(bed.args_of("docker"), args);
    }
}

#[test]
fn bypass_and_outside_an_environment_pass_through() {
    let bed = bed();
    let args = ["run", "--gpus", "all", "img"];
    let mut vars = IN_ENV.to_vec();
    vars.push(("GENV_BYPASS", "1"));
    bed.run("docker", &args, &vars).ok();
    assert_eq!(bed.args_of("docker"), args);
    bed.run("docker", &args, &[]).ok();
    assert_eq!(bed.args_of("docker"), args);
}

#[test]
fn exit_code_of_docker_is_kept() {
    let bed = ShimBed::new();
    let script = bed.real().join("docker");
    std::fs::write(&script, "#!/bin/sh\necho oops >&2\nexit 125\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = bed.run("docker", &["run", "img"], &IN_ENV);
    assert_eq!((run.code, run.stderr.as_str()), (125, "oops\n"));
}
