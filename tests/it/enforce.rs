//! `genv enforce` with real processes on simulated GPUs: what each rule
//! terminates and detaches, side by side with genv 1.4.3 on the same
//! state, and that a crafted `envs.json` never gets a process signalled
//! that the kernel does not confirm.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Run, Sandbox, Sleeper};
use crate::shim_support::{SIM, named_sleeper};

/// A sandbox whose GPU processes are this test's processes named `name`
/// (the mock backend and the stand-in both pick processes by name), with
/// the stand-in as `nvidia-smi` for genv 1.4.3.
struct Bed {
    sb: Sandbox,
    name: String,
    /// Holds the environments open, as a shell would.
    holder: Sleeper,
}

fn me() -> (String, String) {
    let out = |flag: &str| {
        let o = Command::new("id").arg(flag).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    (out("-u"), out("-un"))
}

impl Bed {
    fn new(tag: &str) -> Self {
        let mut sb = Sandbox::new();
        // Unique and at most 15 characters, the kernel's limit on names.
        let name = format!("enf{tag}{}", std::process::id() % 100_000);
        assert!(name.len() <= 15, "{name}");
        sb.set("GENV_MOCK_COMPUTE_APPS_PROCESS_NAME", &name);
        let bin = sb.dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(SIM, bin.join("nvidia-smi")).unwrap();
        let holder = Sleeper::new();
        Bed { sb, name, holder }
    }

    /// An environment of the user running the tests, held by `holder`.
    fn env(&self, eid: &str) {
        let (uid, user) = me();
        self.sb
            .run(&[
                "envs",
                "activate",
                "--eid",
                eid,
                "--uid",
                &uid,
                "--username",
                &user,
                "--pid",
                &self.holder.pid().to_string(),
            ])
            .ok();
    }

    /// A GPU process, in environment `eid` (or none), on `gpus`.
    fn gpu(&self, eid: Option<&str>, gpus: &str) -> Sleeper {
        let mut vars = vec![("CUDA_VISIBLE_DEVICES", gpus)];
        if let Some(eid) = eid {
            vars.push(("GENV_ENVIRONMENT_ID", eid));
        }
        let sleeper = named_sleeper(self.sb.dir.path(), &self.name, &vars);
        self.wait_named(&sleeper);
        sleeper
    }

    /// Until the process runs under the test's name (after its exec), so
    /// that the GPU process list sees it.
    fn wait_named(&self, p: &Sleeper) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(format!("/proc/{}/comm", p.pid()))
            .map_or(true, |c| c.trim_end() != self.name)
        {
            assert!(
                Instant::now() < deadline,
                "{} never ran as {}",
                p.pid(),
                self.name
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn enforce(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        let mut cmd = self
            .sb
            .cmd(&[&["enforce", "--interval", "0"], args].concat());
        for (n, v) in vars {
            cmd.env(n, v);
        }
        Run::from(cmd.output().unwrap())
    }

    /// The state folder copied into a fresh one, so that each
    /// implementation acts on the same state.
    fn copy(&self) -> PathBuf {
        let to = tempfile::tempdir().unwrap().keep();
        for name in ["envs.json", "devices.json"] {
            std::fs::copy(self.sb.file(name), to.join(name)).unwrap();
        }
        to
    }

    fn reference_cmd(&self, program: &Path, state: &Path) -> Command {
        let mut cmd = Command::new(program);
        self.sb.apply(&mut cmd);
        cmd.env("GENV_TMPDIR", state).env(
            "PATH",
            format!(
                "{}:{}",
                self.sb.dir.path().join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
        cmd
    }

    /// genv 1.4.3 and ours, each on its own copy of the state, as a dry
    /// run of the terminations: their stdout, line for line in the same
    /// order, and the devices after.
    fn both(&self, args: &[&str]) -> [(Vec<String>, String); 2] {
        let run = |mut cmd: Command, state: &Path| {
            cmd.args(["enforce", "--interval", "0"])
                .args(args)
                .env("GENV_TERMINATE_PROCESSES", "0");
            let run = Run::from(cmd.output().unwrap()).ok();
            let lines: Vec<String> = run.stdout.lines().map(str::to_owned).collect();
            let devices = self
                .sb
                .cmd(&[
                    "devices",
                    "--no-cleanup",
                    "query",
                    "--query",
                    "index",
                    "eids",
                ])
                .env("GENV_TMPDIR", state)
                .output()
                .unwrap();
            (lines, String::from_utf8_lossy(&devices.stdout).into_owned())
        };
        let (theirs, ours) = (self.copy(), self.copy());
        let reference = reference_path();
        [
            run(self.reference_cmd(&reference, &theirs), &theirs),
            run(
                self.reference_cmd(Path::new(crate::common::GENV), &ours),
                &ours,
            ),
        ]
    }
}

fn reference_path() -> PathBuf {
    let path = std::env::var_os("GENV_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/genv-ref/bin/genv")
        });
    assert!(
        path.is_file(),
        "genv 1.4.3 is not installed at {}",
        path.display()
    );
    path
}

fn alive(p: &Sleeper) -> bool {
    // Not reaped yet: a zombie counts as gone.
    std::fs::read_to_string(format!("/proc/{}/stat", p.pid())).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn wait_gone(p: &Sleeper) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !alive(p) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Three environments and four processes on two GPUs:
/// e1 (50mi capacity) on GPU 0 with a process there and one on both GPUs,
/// e2 on GPU 1 with a process there, and a process in no environment.
fn scenario(bed: &Bed) -> Vec<Sleeper> {
    bed.env("e1");
    bed.env("e2");
    bed.sb.config_memory("e1", "50mi").ok();
    bed.sb.attach_index("e1", 0).ok();
    bed.sb.attach_index("e2", 1).ok();
    vec![
        bed.gpu(Some("e1"), "0"),
        bed.gpu(Some("e1"), "0,1"),
        bed.gpu(Some("e2"), "1"),
        bed.gpu(None, "1"),
    ]
}

#[test]
fn each_rule_does_what_genv_1_4_3_does() {
    let bed = Bed::new("r");
    let _procs = scenario(&bed);
    let user = me().1;
    let own_quota = format!("{user}=1");
    for args in [
        &[][..],
        &["--non-env-processes"],
        &["--no-env-devices"],
        &["--no-env-devices", "--no-env-memory"],
        &[
            "--no-env-devices",
            "--no-env-memory",
            "--max-devices-per-user",
            "1",
        ],
        &[
            "--no-env-memory",
            "--max-devices-per-user",
            "5",
            "--max-devices-for-user",
            &own_quota,
        ],
        &["--non-env-processes", "--max-devices-per-user", "0"],
    ] {
        let [theirs, ours] = bed.both(args);
        assert_eq!(ours, theirs, "{args:?}");
        // Every set of rules but the one with none of them on finds something.
        assert_eq!(
            ours.0.is_empty(),
            args == ["--no-env-devices", "--no-env-memory"],
            "{args:?}: {ours:?}"
        );
    }
}

#[test]
fn terminates_exactly_the_offenders_and_leaves_the_others() {
    let bed = Bed::new("t");
    let procs = scenario(&bed);
    let run = bed.enforce(&["--no-env-memory"], &[]).ok();
    let b = procs[1].pid();
    assert_eq!(
        run.stdout,
        format!(
            "Process {b} from environment e1 is using non-attached GPU(s) 1\n\
             Terminating process {b} from environment e1 that is running on GPU(s) 0,1\n"
        )
    );
    assert!(
        run.stderr
            .contains(&format!("sent SIGTERM to process {b} ")),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("cycle 1: 1 process(es) sent SIGTERM"),
        "{run:?}"
    );
    assert!(wait_gone(&procs[1]));
    for (i, p) in procs.iter().enumerate() {
        if i != 1 {
            assert!(alive(p), "process {i} should live");
        }
    }
}

#[test]
fn a_user_over_the_device_quota_is_detached() {
    let bed = Bed::new("q");
    let procs = scenario(&bed);
    let run = bed
        .enforce(
            &[
                "--no-env-devices",
                "--no-env-memory",
                "--max-devices-per-user",
                "1",
            ],
            &[],
        )
        .ok();
    assert!(
        run.stdout
            .contains("devices which is 1 more than the maximum allowed"),
        "{run:?}"
    );
    assert!(
        run.stdout.contains("Detaching environment e1 of user "),
        "{run:?}"
    );
    assert_eq!(bed.sb.find("e1").ok().stdout, "\n");
    assert_eq!(bed.sb.find("e2").ok().stdout, "1\n");
    // e1's processes on GPU 0 go with it; e2's and the others stay.
    assert!(wait_gone(&procs[0]) && wait_gone(&procs[1]));
    assert!(alive(&procs[2]) && alive(&procs[3]));
}

#[test]
fn the_memory_quota_counts_reservations_and_use() {
    let bed = Bed::new("m");
    let procs = scenario(&bed);
    // e1 reserves 50mi on GPU 0 and uses 84mi there; e2 holds all of GPU
    // 1 (no capacity). A 1g quota is exceeded by GPU 1 alone.
    let run = bed
        .enforce(
            &[
                "--no-env-devices",
                "--no-env-memory",
                "--max-memory-per-user",
                "1g",
            ],
            &[("GENV_TERMINATE_PROCESSES", "0")],
        )
        .ok();
    assert!(run.stdout.contains("of GPU memory which is "), "{run:?}");
    assert!(
        run.stdout
            .contains("more than the maximum allowed of 1000m"),
        "{run:?}"
    );
    // Device 0 is freed first: e1 is detached; that is not enough, so GPU 1 too.
    assert_eq!(bed.sb.find("e1").ok().stdout, "\n");
    assert_eq!(bed.sb.find("e2").ok().stdout, "\n");
    assert!(procs.iter().all(alive), "a dry run of the terminations");
}

#[test]
fn a_crafted_state_file_gets_no_one_signalled() {
    let bed = Bed::new("c");
    let (uid, _) = me();
    // A GPU process outside any environment, on GPU 1.
    let victim = bed.gpu(None, "1");
    // A process of another user that claims an environment of ours.
    let other = (uid == "0").then(|| {
        let link = bed.sb.dir.path().join(&bed.name);
        let mut cmd = Command::new(&link);
        cmd.arg("100000")
            .env("GENV_ENVIRONMENT_ID", "mine")
            .env("CUDA_VISIBLE_DEVICES", "1")
            .uid(65534)
            .gid(65534)
            .stdin(Stdio::null());
        let sleeper = Sleeper(cmd.spawn().unwrap());
        bed.wait_named(&sleeper);
        sleeper
    });
    // The positive control: our own process, in our environment, on a
    // GPU it is not attached to.
    bed.env("mine");
    let guilty = bed.gpu(Some("mine"), "1");
    let holder = bed.holder.pid();
    let mut pids = vec![victim.pid().to_string(), holder.to_string()];
    if let Some(o) = &other {
        pids.push(o.pid().to_string());
    }
    let pids = pids.join(", ");
    // Environments that list those pids, as anyone can write them: one
    // of root's (root's processes never count on a listing), one of
    // another uid, one of ours that lists the other user's process.
    let envs = format!(
        r#"{{"envs": [
{{"eid": "mine", "uid": {uid}, "creation": "01/01/2026 00:00:00", "username": null, "config": {{"name": null, "gpu_memory": null, "gpus": null}}, "pids": [{holder}], "kernel_ids": []}},
{{"eid": "root", "uid": 0, "creation": "01/01/2026 00:00:00", "username": "root", "config": {{"name": null, "gpu_memory": null, "gpus": null}}, "pids": [{pids}], "kernel_ids": []}},
{{"eid": "other", "uid": 4242, "creation": "01/01/2026 00:00:00", "username": "x", "config": {{"name": null, "gpu_memory": null, "gpus": null}}, "pids": [{pids}], "kernel_ids": []}}
]}}"#
    );
    bed.sb.write("envs.json", &envs);
    let run = bed.enforce(&[], &[]).ok();
    let g = guilty.pid();
    assert_eq!(
        run.stdout,
        format!(
            "Process {g} from environment mine is using non-attached GPU(s) 1\n\
             Terminating process {g} from environment mine that is running on GPU(s) 1\n"
        ),
        "{run:?}"
    );
    assert!(wait_gone(&guilty));
    drop(guilty);
    assert!(alive(&victim));
    if let Some(o) = &other {
        assert!(alive(o), "another user's process");
        // genv 1.4.3 believes the other user's variable and would
        // terminate it.
        let state = bed.copy();
        let theirs = Run::from(
            bed.reference_cmd(&reference_path(), &state)
                .args(["enforce", "--interval", "0"])
                .env("GENV_TERMINATE_PROCESSES", "0")
                .output()
                .unwrap(),
        );
        assert!(
            theirs
                .stdout
                .contains(&format!("Terminating process {}", o.pid())),
            "{theirs:?}"
        );
    }
}

#[test]
fn sigkill_after_the_grace_period() {
    let bed = Bed::new("k");
    bed.env("e1");
    bed.sb.attach_index("e1", 0).ok();
    // Ignores SIGTERM (an ignored signal stays ignored across exec).
    let link = bed.sb.dir.path().join(&bed.name);
    std::os::unix::fs::symlink("/bin/sleep", &link).ok();
    let stubborn = Sleeper(
        Command::new("sh")
            .arg("-c")
            .arg(format!("trap '' TERM; exec '{}' 100000", link.display()))
            .env("GENV_ENVIRONMENT_ID", "e1")
            .env("CUDA_VISIBLE_DEVICES", "1")
            .spawn()
            .unwrap(),
    );
    bed.wait_named(&stubborn);
    let run = bed.enforce(&["--grace", "0.3"], &[]).ok();
    assert!(run.stderr.contains("sent SIGTERM"), "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("sent SIGKILL to process {}", stubborn.pid())),
        "{run:?}"
    );
    assert!(wait_gone(&stubborn));
}

#[test]
fn dry_run_and_report_touch_nothing() {
    let bed = Bed::new("d");
    let procs = scenario(&bed);
    let before = bed.sb.snapshot_files();
    let args = ["--non-env-processes", "--max-devices-per-user", "0"];
    let dry = bed.enforce(&[&args[..], &["--dry-run"]].concat(), &[]).ok();
    assert!(dry.stdout.contains("Terminating process"), "{dry:?}");
    assert!(dry.stdout.contains("Detaching environment e1"), "{dry:?}");
    let report = bed.enforce(&[&args[..], &["--report"]].concat(), &[]).ok();
    assert!(
        report
            .stderr
            .contains("is not running in a GPU environment"),
        "{report:?}"
    );
    let json: serde_json::Value = serde_json::from_str(&report.stdout).unwrap();
    assert_eq!(json["terminate"]["processes"].as_array().unwrap().len(), 4);
    assert_eq!(json["detach"]["0"]["envs"][0]["eid"], "e1");
    assert_eq!(bed.sb.snapshot_files(), before);
    assert!(procs.iter().all(alive));
    // `genv usage execute` takes the report as it is.
    let mut cmd = bed.sb.cmd(&["usage", "execute"]);
    cmd.env("GENV_TERMINATE_PROCESSES", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), report.stdout.as_bytes()).unwrap();
    let executed = Run::from(child.wait_with_output().unwrap()).ok();
    let mut lines: Vec<&str> = executed.stdout.lines().collect();
    lines.sort_unstable();
    let mut expected: Vec<&str> = dry
        .stdout
        .lines()
        .filter(|l| l.starts_with("Terminating") || l.starts_with("Detaching"))
        .collect();
    expected.sort_unstable();
    assert_eq!(lines, expected);
    assert_eq!(bed.sb.find("e1").ok().stdout, "\n");
}

#[test]
fn stops_cleanly_on_sigterm_between_cycles() {
    let bed = Bed::new("s");
    let mut child = bed
        .sb
        .cmd(&["enforce", "--interval", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(Instant::now() < deadline, "genv enforce did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stopping on SIGTERM after 1 cycle(s)"),
        "{stderr}"
    );
}

#[test]
fn bad_arguments_are_refused() {
    let sb = Sandbox::new();
    let run = sb
        .run(&["enforce", "--max-devices-for-user", "alice"])
        .fails();
    assert!(run.stderr.contains("not a valid spec: alice"), "{run:?}");
    sb.run(&["enforce", "--env-devices", "--no-env-devices"])
        .fails();
    sb.run(&["enforce", "--max-memory-per-user", "lots"])
        .fails();
    sb.run(&["enforce", "--grace", "-1"]).fails();
}

/// genv 1.4.3's own rules over the same state, as a report in the JSON
/// that `genv remote enforce` sends to `genv usage execute`.
const REFERENCE_REPORT: &str = r#"
import asyncio, contextlib, json, sys
import genv
from genv.serialization import JSONEncoder
with contextlib.redirect_stdout(sys.stderr):
    survey = genv.entities.enforce.Survey(asyncio.run(genv.core.snapshot()))
    genv.enforce.rules.non_env_processes(survey)
    genv.enforce.rules.env_devices(survey)
    genv.enforce.rules.env_memory(survey)
    genv.enforce.rules.max_devices_per_user(survey, maximum=1)
print(json.dumps(survey.report, cls=JSONEncoder))
"#;

#[test]
fn the_report_is_genv_1_4_3_s() {
    let bed = Bed::new("j");
    let _procs = scenario(&bed);
    let ours = bed
        .enforce(
            &[
                "--non-env-processes",
                "--max-devices-per-user",
                "1",
                "--report",
            ],
            &[],
        )
        .ok();
    let state = bed.copy();
    let python = reference_path().with_file_name("python");
    let theirs = Run::from(
        bed.reference_cmd(&python, &state)
            .args(["-c", REFERENCE_REPORT])
            .output()
            .unwrap(),
    )
    .ok();
    let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
    let ours = parse(&ours.stdout);
    assert_eq!(ours, parse(&theirs.stdout));
    // All but e2's process; e1 detached from GPU 0.
    assert_eq!(ours["terminate"]["processes"].as_array().unwrap().len(), 3);
    assert_eq!(ours["detach"]["0"]["envs"][0]["eid"], "e1");
}
