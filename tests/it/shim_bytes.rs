//! Arguments that are not UTF-8: the shims pass them on byte for byte where
//! they leave them alone, and say so in one line where they cannot; the
//! stand-in refuses them with a message. Nothing panics.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;

use crate::common::{Run, Sandbox};
use crate::shim_support::{SIM, ShimBed};

const IN_ENV: [(&str, &str); 2] = [
    ("GENV_ENVIRONMENT_ID", "e1"),
    ("CUDA_VISIBLE_DEVICES", "0,2"),
];

fn bytes(arg: &[u8]) -> &OsStr {
    OsStr::from_bytes(arg)
}

/// Runs the shim `program` with `args` in the environment of [`IN_ENV`].
fn shim(bed: &ShimBed, program: &str, args: &[&OsStr]) -> Run {
    let mut cmd = bed.cmd(program, &[]);
    cmd.args(args);
    cmd.envs(IN_ENV);
    Run::from(cmd.output().unwrap())
}

/// What the fake `name` was given, byte for byte, one argument a line.
fn args_given(bed: &ShimBed, name: &str) -> Option<Vec<Vec<u8>>> {
    let text = std::fs::read(bed.path(&format!("{name}.args"))).ok()?;
    Some(
        text.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect(),
    )
}

#[test]
fn the_stand_in_names_the_argument_and_fails() {
    let sandbox = Sandbox::new();
    let mut cmd = Command::new(SIM);
    cmd.arg("-i").arg(bytes(b"0\xff"));
    sandbox.apply(&mut cmd);
    let run = Run::from(cmd.output().unwrap()).fails();
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr,
        "nvidia-smi-sim: argument '0\\xff' is not valid UTF-8\n"
    );
    assert_eq!(run.stdout, "");
}

#[test]
fn nvidia_smi_passes_a_file_name_as_given() {
    let bed = ShimBed::new();
    bed.fake("nvidia-smi", "");
    shim(
        &bed,
        "nvidia-smi",
        &[bytes(b"-q"), bytes(b"-f"), bytes(b"/tmp/r\xe9sum\xe9")],
    )
    .ok();
    assert_eq!(
        args_given(&bed, "nvidia-smi").unwrap(),
        [&b"--id=0,2"[..], b"-q", b"-f", b"/tmp/r\xe9sum\xe9"]
    );
}

#[test]
fn nvidia_smi_refuses_what_it_would_have_to_rewrite() {
    let bed = ShimBed::new();
    bed.fake("nvidia-smi", "");
    let run = shim(
        &bed,
        "nvidia-smi",
        &[
            bytes(b"--query-compute-apps=pid\xff"),
            bytes(b"--format=csv"),
        ],
    )
    .fails();
    assert_eq!(
        run.stderr,
        "genv: error: argument '--query-compute-apps=pid\\xff' is not valid UTF-8\n\
         hint: pass it as text, or set GENV_BYPASS=1 to run the real program untouched\n"
    );
    assert_eq!(args_given(&bed, "nvidia-smi"), None, "the real one ran");
}

#[test]
fn nvidia_smi_with_an_unreadable_id_finds_no_device() {
    let bed = ShimBed::new();
    bed.fake("nvidia-smi", "");
    let run = shim(
        &bed,
        "nvidia-smi",
        &[bytes(b"-i"), bytes(b"\xff"), bytes(b"-L")],
    );
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (6, "No devices were found\n")
    );
    assert_eq!(args_given(&bed, "nvidia-smi"), None, "the real one ran");
}

#[test]
fn docker_passes_the_container_command_as_given() {
    let bed = ShimBed::new();
    bed.fake("docker", "");
    shim(
        &bed,
        "docker",
        &[
            bytes(b"run"),
            bytes(b"--gpus"),
            bytes(b"all"),
            bytes(b"img"),
            bytes(b"cat"),
            bytes(b"/data/\xff"),
        ],
    )
    .ok();
    assert_eq!(
        args_given(&bed, "docker").unwrap(),
        [
            &b"run"[..],
            b"--gpus",
            b"\"device=0,2\"",
            b"-e",
            b"GENV_ENVIRONMENT_ID=e1",
            b"img",
            b"cat",
            b"/data/\xff"
        ]
    );
}

#[test]
fn docker_refuses_a_gpus_value_that_is_not_text() {
    let bed = ShimBed::new();
    bed.fake("docker", "");
    let run = shim(
        &bed,
        "docker",
        &[
            bytes(b"run"),
            bytes(b"--gpus"),
            bytes(b"\xff"),
            bytes(b"img"),
        ],
    )
    .fails();
    assert_eq!(run.stderr, "Unsupported value for '--gpus' (\u{FFFD})\n");
    assert_eq!(args_given(&bed, "docker"), None, "the real one ran");
}
