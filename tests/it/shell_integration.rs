//! The shell integration in real bash, zsh and fish: the same scenario in
//! each, hostile names that must stay data, and the scripts checked by the
//! shells' own linters.

use std::path::Path;
use std::process::Command;

use crate::common::{Run, Sandbox};

#[derive(Clone, Copy, Debug)]
enum Sh {
    Bash,
    Zsh,
    Fish,
}

impl Sh {
    fn program(self) -> &'static str {
        match self {
            Sh::Bash => "bash",
            Sh::Zsh => "zsh",
            Sh::Fish => "fish",
        }
    }

    fn command(self, script: &str) -> Command {
        let mut cmd = Command::new(self.program());
        match self {
            Sh::Bash => cmd.args(["--norc", "--noprofile", "-c", script]),
            Sh::Zsh => cmd.args(["-f", "-c", script]),
            Sh::Fish => cmd.args(["--no-config", "-c", script]),
        };
        cmd
    }

    fn init(self) -> &'static str {
        match self {
            Sh::Fish => "genv shell --init fish | source",
            Sh::Bash => "eval \"$(genv shell --init bash)\"",
            Sh::Zsh => "eval \"$(genv shell --init zsh)\"",
        }
    }
}

/// Runs a script in a shell with `genv` on `PATH` and the sandbox's state.
fn run(sb: &Sandbox, sh: Sh, script: &str) -> Run {
    let mut cmd = sh.command(script);
    sb.apply(&mut cmd);
    let bin = Path::new(crate::common::GENV).parent().unwrap();
    cmd.env(
        "PATH",
        format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display()),
    );
    cmd.env("HOME", sb.dir.path());
    cmd.env("OUT", sb.dir.path());
    cmd.env_remove("XDG_CACHE_HOME");
    let run = Run::from(cmd.output().unwrap_or_else(|e| {
        panic!(
            "{} is not installed ({e}); scripts/test installs it",
            sh.program()
        )
    }));
    assert!(!run.stderr.contains("panicked"), "{run:?}");
    run
}

fn read(sb: &Sandbox, name: &str) -> String {
    std::fs::read_to_string(sb.dir.path().join(name))
        .unwrap_or_else(|_| panic!("{name} was not written"))
}

/// Saves a variable's value exactly (or `<unset>`) to `$OUT/<file>`.
fn save(sh: Sh, var: &str, file: &str) -> String {
    match sh {
        Sh::Fish => format!(
            "if set -q {var}; printf '%s' \"${var}\" > $OUT/{file}; else; printf '<unset>' > $OUT/{file}; end\n"
        ),
        _ => format!(
            "if [ -n \"${{{var}+x}}\" ]; then printf '%s' \"${var}\" > \"$OUT/{file}\"; else printf '<unset>' > \"$OUT/{file}\"; fi\n"
        ),
    }
}

/// The whole environment, one `NAME=value` per line (values with newlines
/// are not among ours), sorted, without what the shell itself changes.
fn dump(sh: Sh, file: &str) -> String {
    let filter = "grep -v -e '^_=' -e '^SHLVL=' -e '^PWD=' -e '^OLDPWD=' | sort";
    match sh {
        Sh::Fish => format!("env | {filter} > $OUT/{file}\n"),
        _ => format!("env | {filter} > \"$OUT/{file}\"\n"),
    }
}

fn scenario(sh: Sh) {
    let mut sb = Sandbox::new();
    sb.set("CUDA_VISIBLE_DEVICES", "7");
    let hostile = match sh {
        Sh::Fish => "x; touch $OUT/pwned (touch $OUT/pwned) 'q' \\\\ \"d\" ☕",
        _ => "x;touch${IFS}$OUT/pwned $(touch $OUT/pwned) `touch $OUT/pwned` 'q' \\\\ ☕",
    };
    let fail = match sh {
        Sh::Fish => "; or exit 1",
        _ => " || exit 1",
    };
    let mut script = String::new();
    script += &format!("{}{fail}\n", sh.init());
    script += &dump(sh, "before");
    script += &save(sh, "PS1", "ps1-before");
    script += &format!("genv activate --name train --gpus 1{fail}\n");
    script += &save(sh, "GENV_ENVIRONMENT_ID", "eid");
    script += &save(sh, "GENV_ENVIRONMENT_NAME", "name");
    script += &save(sh, "GENV_GPUS", "gpus");
    script += &save(sh, "CUDA_VISIBLE_DEVICES", "cvd-activated");
    script += &save(sh, "GENV_SHELL", "genv-shell");
    script += &save(sh, "PS1", "ps1-active");
    // A second terminal joins the environment by id, and leaves.
    let join = "eval \"$(genv shell --init bash)\"; genv activate --id \"$1\" --no-prompt || exit 1; printf %s \"$CUDA_VISIBLE_DEVICES\" > \"$OUT/cvd-second\"; genv deactivate";
    script += &match sh {
        Sh::Fish => format!(
            "env -u GENV_ENVIRONMENT_ID -u GENV_SHELL bash --norc -c '{join}' _ $GENV_ENVIRONMENT_ID{fail}\n"
        ),
        _ => format!(
            "env -u GENV_ENVIRONMENT_ID -u GENV_SHELL bash --norc -c '{join}' _ \"$GENV_ENVIRONMENT_ID\"{fail}\n"
        ),
    };
    script += &format!("genv attach --count 2{fail}\n");
    script += &save(sh, "CUDA_VISIBLE_DEVICES", "cvd-two");
    script += &format!("genv detach --index 1{fail}\n");
    script += &save(sh, "CUDA_VISIBLE_DEVICES", "cvd-one");
    script += &format!("genv attach --count 2{fail}\n");
    script += &format!("genv detach{fail}\n");
    script += &save(sh, "CUDA_VISIBLE_DEVICES", "cvd-none");
    let quoted = match sh {
        Sh::Fish => format!("'{}'", hostile.replace('\\', "\\\\").replace('\'', "\\'")),
        _ => format!("'{}'", hostile.replace('\'', "'\\''")),
    };
    script += &format!("genv config name {quoted}{fail}\n");
    script += &format!("genv config gpu-memory 4g{fail}\n");
    script += &save(sh, "GENV_ENVIRONMENT_NAME", "hostile");
    script += &save(sh, "GENV_GPU_MEMORY", "memory");
    script += &match sh {
        Sh::Fish => "genv status > $OUT/status\n".to_owned(),
        _ => "genv status > \"$OUT/status\"\n".to_owned(),
    };
    script += &format!("genv deactivate{fail}\n");
    script += &dump(sh, "after");
    script += &save(sh, "PS1", "ps1-after");
    let run = run(&sb, sh, &script);
    assert_eq!(run.code, 0, "{sh:?}: {run:?}");

    let eid = read(&sb, "eid");
    assert!(!eid.is_empty());
    assert_eq!(read(&sb, "name"), "train");
    assert_eq!(read(&sb, "gpus"), "1");
    assert_eq!(read(&sb, "genv-shell"), "1");
    assert_eq!(read(&sb, "cvd-activated"), "0");
    assert_eq!(
        read(&sb, "cvd-second"),
        "0",
        "the second terminal sees the same GPUs"
    );
    assert_eq!(read(&sb, "cvd-two"), "0,1");
    assert_eq!(read(&sb, "cvd-one"), "0");
    assert_eq!(read(&sb, "cvd-none"), "-1");
    // The name was given in single quotes, so `$OUT` and the backslashes
    // are text: the shell's variable holds exactly the characters typed.
    assert_eq!(read(&sb, "hostile"), hostile, "{sh:?}");
    assert!(
        !sb.dir.path().join("pwned").exists(),
        "{sh:?}: a name ran as code"
    );
    assert_eq!(read(&sb, "memory"), "4g");
    let status = read(&sb, "status");
    assert!(
        status.starts_with(&format!(
            "Environment is active ({eid})\nDetached from GPUs\n"
        )),
        "{status}"
    );
    assert!(status.contains("    GPU memory capacity: 4g\n"), "{status}");
    if !matches!(sh, Sh::Fish) {
        assert_eq!(
            read(&sb, "ps1-active"),
            format!("(genv) {}", read(&sb, "ps1-before").replace("<unset>", ""))
        );
        assert_eq!(read(&sb, "ps1-after"), read(&sb, "ps1-before"));
    }
    assert_eq!(
        read(&sb, "after"),
        read(&sb, "before"),
        "{sh:?}: the environment changed"
    );
    // The environment ended with its last terminal.
    assert_eq!(sb.run(&["envs", "query", "--query", "eid"]).ok().stdout, "");
}

#[test]
fn bash_scenario() {
    scenario(Sh::Bash);
}

#[test]
fn zsh_scenario() {
    scenario(Sh::Zsh);
}

#[test]
fn fish_scenario() {
    scenario(Sh::Fish);
}

/// Another user names a shared environment; joining it runs nothing.
fn join_hostile(sh: Sh) {
    let sb = Sandbox::new();
    let owner = crate::common::Sleeper::new();
    let out = sb.dir.path().to_str().unwrap().to_owned();
    sb.activate_env_as("shared", 1001, None, owner.pid()).ok();
    let names = [
        format!("x;touch${{IFS}}{out}/pwned"),
        format!("$(touch {out}/pwned)"),
        format!("`touch {out}/pwned`"),
        format!("(touch {out}/pwned)"),
        format!("'; touch {out}/pwned; echo '"),
        format!("a\ntouch {out}/pwned\n"),
        format!("\\'; touch {out}/pwned #"),
    ];
    for name in names {
        sb.config_name("shared", &name).ok();
        let fail = if matches!(sh, Sh::Fish) {
            "; or exit 1"
        } else {
            " || exit 1"
        };
        let mut script = format!("{}{fail}\ngenv activate --id shared{fail}\n", sh.init());
        script += &save(sh, "GENV_ENVIRONMENT_NAME", "name");
        script += &format!("genv deactivate{fail}\n");
        let run = run(&sb, sh, &script);
        assert_eq!(run.code, 0, "{sh:?} {name:?}: {run:?}");
        assert!(
            !sb.dir.path().join("pwned").exists(),
            "{sh:?}: {name:?} ran as code"
        );
        assert_eq!(read(&sb, "name"), name, "{sh:?}");
    }
}

#[test]
fn bash_joining_a_hostile_name_runs_nothing() {
    join_hostile(Sh::Bash);
}

#[test]
fn zsh_joining_a_hostile_name_runs_nothing() {
    join_hostile(Sh::Zsh);
}

#[test]
fn fish_joining_a_hostile_name_runs_nothing() {
    join_hostile(Sh::Fish);
}

#[test]
fn preactivate_at_init() {
    for sh in [Sh::Bash, Sh::Zsh, Sh::Fish] {
        let mut sb = Sandbox::new();
        sb.set("GENV_PREACTIVATE", "1");
        sb.set("GENV_PREACTIVATE_GPUS", "1");
        sb.set("GENV_PREACTIVATE_ENVIRONMENT_NAME", "from remote; x");
        sb.set("GENV_PREACTIVATE_PROMPT", "0");
        let mut script = format!("{}\n", sh.init());
        script += &save(sh, "GENV_ENVIRONMENT_NAME", "name");
        script += &save(sh, "CUDA_VISIBLE_DEVICES", "cvd");
        script += &save(sh, "PS1", "ps1");
        let run = run(&sb, sh, &script);
        assert_eq!(run.code, 0, "{sh:?}: {run:?}");
        assert_eq!(read(&sb, "name"), "from remote; x", "{sh:?}");
        assert_eq!(read(&sb, "cvd"), "0", "{sh:?}");
        assert!(!read(&sb, "ps1").starts_with("(genv)"), "{sh:?}");
    }
}

#[test]
fn activate_and_deactivate_need_the_shell_function() {
    let sb = Sandbox::new();
    let run = sb.run(&["activate"]).fails();
    assert!(
        run.stderr
            .starts_with("Your shell is not properly initialized"),
        "{run:?}"
    );
    assert_eq!(run.stdout, "");
    let run = sb.run(&["deactivate"]).fails();
    assert!(
        run.stderr
            .starts_with("Your shell is not properly initialized"),
        "{run:?}"
    );
    // Help called by a shell function (`--shell`) is printed where the
    // function does not eval it.
    let run = sb.run(&["activate", "--shell", "1", "--help"]).ok();
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("--gpu-memory"), "{run:?}");
}

#[test]
fn errors_outside_or_inside_an_environment() {
    let mut sb = Sandbox::new();
    for args in [
        vec!["attach"],
        vec!["detach"],
        vec!["config"],
        vec!["shell", "--reattach"],
    ] {
        let run = sb.run(&args).fails();
        assert_eq!(
            run.stderr, "Not running in an active environment\n",
            "{args:?}"
        );
    }
    assert_eq!(
        sb.run(&["status"]).ok().stdout,
        "Environment is not active\n"
    );
    sb.set("GENV_ENVIRONMENT_ID", "e1");
    let run = sb.run(&["activate", "--shell", "1"]).fails();
    assert_eq!(run.stderr, "Already running in an active environment\n");
}

#[test]
fn a_failed_activation_leaves_no_trace() {
    let sb = Sandbox::new();
    let before = sb.snapshot_files();
    let run = sb
        .run(&[
            "activate",
            "--shell",
            &std::process::id().to_string(),
            "--gpus",
            "3",
        ])
        .fails();
    assert_eq!(
        run.stderr,
        "Requested more devices (3) than total available (2)\n"
    );
    assert_eq!(run.stdout, "");
    let after: Vec<_> = sb
        .snapshot_files()
        .into_iter()
        .filter(|(n, _)| n.ends_with(".json") && n != "hardware.json")
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .filter(|(n, _)| n.ends_with(".json"))
        .collect();
    assert!(
        after
            .iter()
            .all(|(n, c)| n != "envs.json" || String::from_utf8_lossy(c).contains("\"envs\": []")),
        "{after:?} {before:?}"
    );
    let run = sb
        .run(&["activate", "--shell", "1", "--gpu-memory", "4x"])
        .fails();
    assert!(run.stderr.contains("'4x'"), "{run:?}");
}

#[test]
fn config_prints_fields_and_loads_and_saves_dot_genv() {
    let sb = Sandbox::new();
    let home = sb.dir.path();
    std::fs::create_dir_all(home.join(".genv")).unwrap();
    std::fs::write(home.join(".genv/name"), "from-disk\n").unwrap();
    std::fs::write(home.join(".genv/gpus"), "1").unwrap();
    let script = "eval \"$(genv shell --init bash)\"\ngenv activate || exit 1\ngenv config > \"$OUT/all\"\ngenv config name > \"$OUT/one\"\ngenv config gpu-memory 2g --save || exit 1\nprintf %s \"$CUDA_VISIBLE_DEVICES\" > \"$OUT/cvd\"\ngenv deactivate\n";
    let run = run(&sb, Sh::Bash, script);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(read(&sb, "all"), "gpus: 1\nname: from-disk\n");
    assert_eq!(read(&sb, "one"), "from-disk\n");
    assert_eq!(read(&sb, "cvd"), "0", "gpus loaded from .genv are attached");
    assert_eq!(
        std::fs::read_to_string(home.join(".genv/gpu-memory")).unwrap(),
        "2g"
    );
}

#[test]
fn config_gpus_detaches_the_surplus_at_once_and_says_so() {
    let sb = Sandbox::new();
    // Attached to two without a configured count, then `config gpus 1`:
    // the surplus goes at once (the shell's CUDA_VISIBLE_DEVICES with it),
    // not at a later, unrelated `config gpu-memory`.
    let script = "eval \"$(genv shell --init bash)\"\n\
        genv activate --no-load || exit 1\n\
        genv attach --count 2 || exit 1\n\
        genv config gpus 1 || exit 1\n\
        printf %s \"$CUDA_VISIBLE_DEVICES\" > \"$OUT/after-gpus\"\n\
        genv attach --index 1 || exit 1\n\
        genv config gpu-memory 4g 2> \"$OUT/memory-stderr\" || exit 1\n\
        printf %s \"$CUDA_VISIBLE_DEVICES\" > \"$OUT/after-memory\"\n\
        genv config gpus 1 2> \"$OUT/same-stderr\" || exit 1\n\
        printf %s \"$CUDA_VISIBLE_DEVICES\" > \"$OUT/after-same\"\n\
        genv config gpus 0 || exit 1\n\
        printf %s \"$CUDA_VISIBLE_DEVICES\" > \"$OUT/after-zero\"\n\
        genv deactivate\n";
    let run = run(&sb, Sh::Bash, script);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(read(&sb, "after-gpus"), "0");
    assert_eq!(
        run.stderr,
        "genv: detached from GPU 1 (the environment is configured for 1 GPU)\n\
         genv: detached from GPU 0 (the environment is configured for 0 GPUs)\n",
        "{run:?}"
    );
    // Only a count set by `config` detaches: another field leaves the
    // devices attached since (by hand, beyond the count) alone.
    assert_eq!(read(&sb, "memory-stderr"), "");
    assert_eq!(read(&sb, "after-memory"), "0,1");
    // Setting the count again, even to the same value, applies it.
    assert_eq!(
        read(&sb, "same-stderr"),
        "genv: detached from GPU 1 (the environment is configured for 1 GPU)\n"
    );
    assert_eq!(read(&sb, "after-same"), "0");
    assert_eq!(read(&sb, "after-zero"), "-1");
}

#[test]
fn scripts_pass_the_shells_own_checks() {
    let sb = Sandbox::new();
    let dir = sb.dir.path();
    for (shell, file) in [
        ("bash", "init.bash"),
        ("zsh", "init.zsh"),
        ("fish", "init.fish"),
    ] {
        let script = sb.run(&["shell", "--init", shell]).ok().stdout;
        std::fs::write(dir.join(file), &script).unwrap();
    }
    let check = |program: &str, args: &[&str]| {
        let output = Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("{program} is not installed ({e}); scripts/test installs it")
            });
        assert!(
            output.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let p = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    check(
        "shellcheck",
        &[
            "--shell=bash",
            "--enable=all",
            "--exclude=SC2250,SC2312",
            &p("init.bash"),
        ],
    );
    check("bash", &["-n", &p("init.bash")]);
    check("zsh", &["-n", &p("init.zsh")]);
    check("fish", &["--no-execute", &p("init.fish")]);
    check("fish_indent", &["--check", &p("init.fish")]);
    for shell in ["bash", "zsh", "fish"] {
        let completions = sb.run(&["shell", "--completions", shell]).ok().stdout;
        assert!(completions.contains("activate"), "{shell}");
    }
}

#[test]
fn the_projects_own_scripts_pass_shellcheck() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        root.join("scripts/test"),
        root.join("scripts/test-summary"),
        root.join("scripts/try"),
        root.join(".ci/run"),
    ];
    files.push(root.join("tests/fixtures/ref/capture.sh"));
    for entry in std::fs::read_dir(root.join("bench")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sh") {
            files.push(path);
        }
    }
    let output = Command::new("shellcheck")
        .args(&files)
        .output()
        .expect("shellcheck is not installed; scripts/test installs it");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// `scripts/test`'s closing line from the runners' own output: libtest's
/// `test result:` line of each test binary and pytest's last line.
#[test]
fn the_suites_closing_line_counts_rust_and_python_tests() {
    let dir = tempfile::tempdir().unwrap();
    let summary = |rust: &str, rust_status: &str, python: &str, python_status: &str| {
        std::fs::write(dir.path().join("rust.log"), rust).unwrap();
        std::fs::write(dir.path().join("python.log"), python).unwrap();
        let output =
            Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-summary"))
                .arg(dir.path().join("rust.log"))
                .arg(rust_status)
                .arg(dir.path().join("python.log"))
                .arg(python_status)
                .arg("9m58s")
                .output()
                .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let rust = "running 120 tests\n....\n\
        test result: ok. 120 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 1.00s\n\n\
        running 0 tests\n\n\
        test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\n\
        running 308 tests\n....\n\
        test result: ok. 308 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 500.00s\n";
    let python = "..........                  [100%]\n41 passed, 1 skipped in 75.20s (0:01:15)\n";
    assert_eq!(
        summary(rust, "0", python, "0"),
        (
            Some(0),
            "scripts/test: all 469 tests passed (428 Rust, 41 Python) in 9m58s\n".to_owned()
        )
    );
    let rust_failed = rust.replace(
        "test result: ok. 308 passed; 0 failed",
        "failures:\n\n---- shell_integration::bash_scenario stdout ----\npanicked\n\n\
         failures:\n    shell_integration::bash_scenario\n\n\
         test result: FAILED. 307 passed; 1 failed",
    );
    let python_failed = "....F.....                  [100%]\n\
        =========================== short test summary info ============================\n\
        FAILED tests/python/test_sdk.py::test_thing - AssertionError: x\n\
        1 failed, 40 passed, 1 skipped in 75.20s (0:01:15)\n";
    assert_eq!(
        summary(&rust_failed, "101", python_failed, "1"),
        (
            Some(1),
            "scripts/test: 2 of 469 tests failed (428 Rust, 41 Python) in 9m58s: \
             shell_integration::bash_scenario tests/python/test_sdk.py::test_thing\n"
                .to_owned()
        )
    );
    // A runner that failed without a failing test (a build error, a crash).
    assert_eq!(
        summary(rust, "101", python, "0"),
        (
            Some(1),
            "scripts/test: 469 tests passed (428 Rust, 41 Python) in 9m58s, \
             but cargo test exited with 101 (see above)\n"
                .to_owned()
        )
    );
}

#[test]
fn status_prints_n_a_as_python_truthiness_does() {
    let mut sb = Sandbox::new();
    let job = crate::common::Sleeper::new();
    sb.activate_env_as("z", 1000, None, job.pid()).ok();
    sb.config_name("z", "0").ok();
    sb.config_gpus("z", 0).ok();
    sb.set("GENV_ENVIRONMENT_ID", "z");
    let status = sb.run(&["status"]).ok().stdout;
    assert!(
        status.contains("    Name: 0\n    Device count: N/A\n    GPU memory capacity: N/A\n"),
        "{status}"
    );
}
