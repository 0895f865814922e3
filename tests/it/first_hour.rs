//! What a newcomer meets first: which build runs, the shell initialisation
//! as jupyterlab-genv asks for it, help where help goes, and no silent
//! success when nothing was done.

use std::process::Command;

use crate::common::{Run, Sandbox, Sleeper};

/// `script` in a real bash, the built genv first on `PATH`; it must succeed.
fn bash(sb: &Sandbox, script: &str) -> Run {
    let mut bash = Command::new("bash");
    bash.arg("-c").arg(script);
    sb.apply(&mut bash);
    let genv = std::path::Path::new(crate::common::GENV);
    bash.env(
        "PATH",
        format!(
            "{}:{}",
            genv.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    Run::from(bash.output().unwrap()).ok()
}

#[test]
fn version_flags_name_this_build_and_genv_version_stays_1_4_3() {
    let sb = Sandbox::new();
    for flag in ["--version", "-V"] {
        let run = sb.run(&[flag]).ok();
        assert!(
            run.stdout.starts_with("genv 1.4.3.1 (")
                && run.stdout.ends_with("; compatible with genv 1.4.3)\n"),
            "{run:?}"
        );
        assert!(run.stdout.contains("commit "), "{run:?}");
        assert_eq!(run.stderr, "");
    }
    // What the IDE extensions read.
    assert_eq!(sb.run(&["version"]).ok().stdout, "1.4.3\n");
}

#[test]
fn genv_init_dash_is_the_shell_initialisation() {
    let sb = Sandbox::new();
    for (init, shell) in [
        (vec!["init", "-"], vec!["shell", "--init"]),
        (vec!["init"], vec!["shell", "--init"]),
        (vec!["init", "fish"], vec!["shell", "--init", "fish"]),
        (vec!["init", "zsh"], vec!["shell", "--init", "zsh"]),
    ] {
        let a = sb.run(&init).ok();
        let b = sb.run(&shell).ok();
        assert_eq!(a.stdout, b.stdout, "{init:?}");
        assert!(!a.stdout.is_empty());
    }
    let run = sb.run(&["init", "tcsh"]).fails();
    assert!(
        run.stderr
            .starts_with("genv: error: cannot initialise the shell 'tcsh'\nhint: "),
        "{run:?}"
    );

    // As jupyterlab-genv's terminal does it, in a real bash.
    let run = bash(
        &sb,
        "eval \"$(genv init -)\" && genv activate --id jl --no-prompt && echo \"$GENV_ENVIRONMENT_ID\" && genv deactivate",
    );
    assert_eq!(run.stdout, "jl\n", "{run:?}");
}

#[test]
fn activate_help_goes_to_stdout_unless_a_shell_function_evaluates_it() {
    let sb = Sandbox::new();
    for verb in ["activate", "deactivate"] {
        let run = sb.run(&[verb, "--help"]).ok();
        assert!(
            run.stdout.contains(&format!("Usage: genv {verb}")),
            "{run:?}"
        );
        assert_eq!(run.stderr, "");
        // An older shell function evals stdout: help goes to stderr there.
        let run = sb.run(&[verb, "--shell", "1", "--help"]).ok();
        assert_eq!(run.stdout, "", "{run:?}");
        assert!(
            run.stderr.contains(&format!("Usage: genv {verb}")),
            "{run:?}"
        );
    }
    // Today's shell function runs help itself, so it can be piped.
    let run = bash(
        &sb,
        "eval \"$(genv shell --init bash)\" && genv activate --help | grep -c '^Usage: genv activate'",
    );
    assert_eq!(run.stdout, "1\n", "{run:?}");
}

#[test]
fn detaching_a_gpu_that_is_not_attached_says_so_and_changes_nothing() {
    let sb = Sandbox::new();
    let shell = Sleeper::new();
    sb.activate_env("e1", shell.pid()).ok();
    sb.attach_index("e1", 0).ok();
    let before = sb.snapshot_files();
    let run = sb.run_in("e1", &["detach", "--index", "1"]).fails();
    assert_eq!(
        run.stderr,
        "genv: error: this environment is not attached to GPU 1\nhint: 'genv status' names the GPUs it is attached to\n"
    );
    assert_eq!(sb.snapshot_files(), before);
    sb.run_in("e1", &["detach", "--index", "0"]).ok();
    assert_eq!(sb.devices_csv().matches("e1").count(), 0);
}

#[test]
fn config_save_without_a_genv_folder_fails_before_changing_anything() {
    let sb = Sandbox::new();
    let shell = Sleeper::new();
    sb.activate_env("e1", shell.pid()).ok();
    let home = tempfile::tempdir().unwrap();
    let before = sb.snapshot_files();
    let mut cmd = sb.cmd(&["config", "gpus", "1", "--save"]);
    cmd.env("GENV_ENVIRONMENT_ID", "e1")
        .env("HOME", home.path())
        .current_dir(home.path());
    let run = Run::from(cmd.output().unwrap()).fails();
    assert!(
        run.stderr.starts_with(
            "genv: error: no .genv folder in the working directory or in $HOME to save the configuration to; nothing was changed\n"
        ),
        "{run:?}"
    );
    assert_eq!(sb.snapshot_files(), before);
}

#[test]
fn activating_an_unknown_id_says_that_a_new_environment_is_made() {
    let sb = Sandbox::new();
    let (first, second) = (Sleeper::new(), Sleeper::new());
    let pid = first.pid().to_string();
    let run = sb
        .run(&["activate", "--shell", &pid, "--id", "TYPO", "--no-prompt"])
        .ok();
    assert_eq!(
        run.stderr,
        "genv: made a new environment 'TYPO' (no active environment has that identifier)\n"
    );
    // Joining it from another shell is quiet, and so is an activation
    // that names no identifier.
    let pid = second.pid().to_string();
    let run = sb
        .run(&["activate", "--shell", &pid, "--id", "TYPO", "--no-prompt"])
        .ok();
    assert_eq!(run.stderr, "");
    let third = Sleeper::new();
    let pid = third.pid().to_string();
    let run = sb.run(&["activate", "--shell", &pid, "--no-prompt"]).ok();
    assert_eq!(run.stderr, "");
}

#[test]
fn intervals_say_what_is_allowed() {
    let sb = Sandbox::new();
    let run = sb.run(&["enforce", "--interval", "-1"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains(
            "expected a whole number of seconds between cycles, or 0 to run one cycle: -1"
        ),
        "{run:?}"
    );
    let run = sb.run(&["monitor", "--interval", "0"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("expected a whole number of seconds between collections, 1 or more: 0"),
        "{run:?}"
    );
}

#[test]
fn debug_lines_only_with_verbose() {
    let mut sb = Sandbox::new();
    sb.set("GENV_TERMINATE_PROCESSES", "1");
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let report = serde_json::json!({
        "terminate": {"processes": [{"pid": gone.id(), "used_gpu_memory": [], "eid": null}]},
        "detach": {}
    })
    .to_string();
    let debug = format!("[DEBUG] Process {} already terminated", gone.id());
    let quiet = sb.run_stdin(&["usage", "execute"], &report);
    assert!(!quiet.stderr.contains("[DEBUG]"), "{quiet:?}");
    let verbose = sb.run_stdin(&["usage", "execute", "--verbose"], &report);
    assert!(verbose.stderr.contains(&debug), "{verbose:?}");
}
