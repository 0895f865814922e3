//! The command line as genv 1.4.3's users type it: unambiguous prefixes of
//! long options, and arguments that are not UTF-8.

use std::os::unix::ffi::OsStrExt;

use crate::common::{Run, Sandbox, Sleeper};

#[test]
fn unambiguous_prefixes_of_long_options_are_accepted() {
    let job = Sleeper::new();
    let sb = Sandbox::new();
    sb.activate_env("e1", job.pid());
    let full = sb
        .run(&[
            "envs",
            "ps",
            "--format",
            "csv",
            "--no-header",
            "--timestamp",
        ])
        .ok();
    let short = sb
        .run(&["envs", "ps", "--form", "csv", "--no-h", "--time"])
        .ok();
    assert_eq!(short.stdout, full.stdout);
    assert!(short.stdout.starts_with("e1,"), "{short:?}");
    let run = sb
        .run(&["devices", "attach", "--e", "e1", "--cou", "1"])
        .ok();
    assert_eq!(run.stdout, "0\n");
}

#[test]
fn an_ambiguous_prefix_is_refused_and_nothing_changes() {
    let sb = Sandbox::new();
    let before = sb.snapshot_files();
    // --no: --no-prompt, --no-attach or --no-load?
    let run = sb.run(&["activate", "--shell", "1", "--no"]).fails();
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .starts_with("genv: error: unexpected argument '--no'"),
        "{run:?}"
    );
    assert_eq!(sb.snapshot_files(), before);
}

#[test]
fn arguments_that_are_not_utf8_get_one_error_not_a_panic() {
    let sb = Sandbox::new();
    for args in [
        vec![&b"\xff"[..]],
        vec![
            &b"envs"[..],
            &b"config"[..],
            &b"--eid"[..],
            &b"e\xff"[..],
            &b"name"[..],
            &b"--name"[..],
            &b"x"[..],
        ],
        vec![&b"activate"[..], &b"--name"[..], &b"\xfe"[..]],
    ] {
        let mut cmd = sb.cmd(&[]);
        cmd.args(args.iter().map(|a| std::ffi::OsStr::from_bytes(a)));
        let run = Run::from(cmd.output().expect("run genv")).fails();
        assert!(run.stderr.contains("error:"), "{run:?}");
    }
}
