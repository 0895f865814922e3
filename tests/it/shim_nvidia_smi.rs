//! The nvidia-smi shim over published nvidia-smi outputs (a fake real
//! nvidia-smi prints a fixture) and over the stand-in.

use crate::common::{Sleeper, fixture};
use crate::shim_support::{ShimBed, bars, named_sleeper, put_pid};

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(&format!("nvidia-smi/{name}"))).unwrap()
}

fn ours() -> Sleeper {
    Sleeper::with_env(&[("GENV_ENVIRONMENT_ID", "e1")])
}

fn theirs() -> Sleeper {
    Sleeper::with_env(&[("GENV_ENVIRONMENT_ID", "e2")])
}

const IN_ENV: [(&str, &str); 2] = [
    ("GENV_ENVIRONMENT_ID", "e1"),
    ("CUDA_VISIBLE_DEVICES", "0,1"),
];

/// Every line of the output that is also a table line of the input keeps
/// its length: no column moved.
fn assert_widths_kept(input: &str, output: &str) {
    let width = input.lines().map(str::len).max().unwrap();
    for line in output.lines().filter(|l| l.starts_with(['|', '+'])) {
        assert_eq!(line.len(), width, "width changed: {line:?}\n{output}");
    }
}

fn line_with<'a>(output: &'a str, needle: &str) -> Vec<&'a str> {
    output.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn wide_layout_keeps_only_the_environment() {
    let bed = ShimBed::new();
    let (mine, other, xorg) = (ours(), theirs(), Sleeper::new());
    let mut text = read("550-rtx4090.txt");
    text = put_pid(&text, "812345", mine.pid());
    text = put_pid(&text, "812346", other.pid());
    text = put_pid(&text, "2480", xorg.pid());
    bed.fake("nvidia-smi", &text);
    let run = bed.run("nvidia-smi", &[], &IN_ENV).ok();
    assert_eq!(bed.args_of("nvidia-smi"), ["--id=0,1"]);
    let out = &run.stdout;
    assert_widths_kept(&text, out);
    let memory = line_with(out, "MiB /");
    assert_eq!(memory.len(), 2, "{out}");
    assert!(memory[0].contains("|     500MiB /  24564MiB |"), "{out}");
    assert!(memory[1].contains("|       0MiB /  24564MiB |"), "{out}");
    assert_eq!(
        line_with(out, &format!(" {} ", mine.pid())).len(),
        1,
        "{out}"
    );
    assert!(
        line_with(out, &format!(" {} ", other.pid())).is_empty(),
        "{out}"
    );
    assert!(line_with(out, "Xorg").is_empty(), "{out}");
    assert!(!out.contains("WARNING"), "{out}");
    // The rest of the table is as printed.
    for line in text.lines().take(9) {
        assert!(out.contains(line), "missing {line:?}\n{out}");
    }
}

#[test]
fn memory_cap_replaces_the_total_and_warns_when_exceeded() {
    let bed = ShimBed::new();
    let mine = ours();
    let text = put_pid(&read("550-rtx4090.txt"), "812345", mine.pid());
    bed.fake("nvidia-smi", &text);
    let mut vars = IN_ENV.to_vec();
    vars.push(("GENV_GPU_MEMORY", "4g"));
    let out = bed.run("nvidia-smi", &[], &vars).ok().stdout;
    assert!(out.contains("|     500MiB /   3814MiB |"), "{out}");
    assert!(!out.contains("WARNING"), "{out}");
    vars.pop();
    vars.push(("GENV_GPU_MEMORY", "100mi"));
    let out = bed.run("nvidia-smi", &[], &vars).ok().stdout;
    assert!(out.contains("|     500MiB /    100MiB |"), "{out}");
    assert!(out.contains(
        "\nWARNING: The GPU memory usage for this environment has exceeded the set capacity of 100mi\n"
    ));
    assert_widths_kept(&text, &out);
}

#[test]
fn no_process_of_the_environment_says_so() {
    let bed = ShimBed::new();
    let other = theirs();
    let text = put_pid(&read("470-v100.txt"), "23824", other.pid());
    let text = put_pid(&text, "33724", other.pid());
    bed.fake("nvidia-smi", &text);
    let out = bed.run("nvidia-smi", &[], &IN_ENV).ok().stdout;
    assert_widths_kept(&text, &out);
    assert!(out.contains(
        "|=============================================================================|\n|  No running processes found                                                 |\n"
    ), "{out}");
    assert!(out.contains("|      0MiB / 16160MiB |"), "{out}");
    assert!(!out.contains("python"), "{out}");
}

#[test]
fn narrow_layout_sums_the_environment_per_gpu() {
    let bed = ShimBed::new();
    let mine = ours();
    let text = put_pid(&read("470-v100.txt"), "33724", mine.pid());
    bed.fake("nvidia-smi", &text);
    let out = bed.run("nvidia-smi", &[], &IN_ENV).ok().stdout;
    assert_widths_kept(&text, &out);
    let memory = line_with(&out, "MiB /");
    assert!(memory[0].contains("|      0MiB / 16160MiB |"), "{out}");
    assert!(memory[1].contains("|  12247MiB / 16160MiB |"), "{out}");
    assert!(out.contains("tritonserver"), "{out}");
}

#[test]
fn missing_process_information_warns() {
    let bed = ShimBed::new();
    // In a container without the host's pid namespace the table is empty.
    let text: String = read("470-v100.txt")
        .lines()
        .filter(|l| !l.contains("MiB |") || l.contains("MiB /"))
        .map(|l| format!("{l}\n"))
        .collect();
    bed.fake("nvidia-smi", &text);
    let out = bed.run("nvidia-smi", &[], &IN_ENV).ok().stdout;
    assert_widths_kept(&text, &out);
    assert_eq!(line_with(&out, "     N/A / 16160MiB |").len(), 2, "{out}");
    assert!(
        out.contains("\nWARNING: Missing information about running processes."),
        "{out}"
    );
    assert!(out.contains("'--pid host'"), "{out}");
}

#[test]
fn idle_driver_570_table_is_kept() {
    let bed = ShimBed::new();
    let text = read("570-l4-idle.txt");
    bed.fake("nvidia-smi", &text);
    let out = bed.run("nvidia-smi", &[], &IN_ENV).ok().stdout;
    assert_eq!(out, text);
}

#[test]
fn mig_rows_are_left_alone() {
    let bed = ShimBed::new();
    let (mine, other) = (ours(), theirs());
    let mut text = read("510-a100-mig.txt");
    text = put_pid(&text, "34965", mine.pid());
    for pid in ["23824", "33724", "42152", "46505"] {
        text = put_pid(&text, pid, other.pid());
    }
    bed.fake("nvidia-smi", &text);
    let out = bed.run("nvidia-smi", &[], &IN_ENV).ok().stdout;
    assert_widths_kept(&text, &out);
    // The MIG devices table is printed as the driver printed it.
    let mig: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("MIG devices:"))
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(mig.len() > 5);
    assert!(out.contains(&mig.join("\n")), "{out}");
    let memory = line_with(&out, "MiB /");
    assert!(memory[0].contains("|      0MiB / 81920MiB |"), "{out}");
    assert!(memory[1].contains("|  14195MiB / 81920MiB |"), "{out}");
    let rows = line_with(&out, "      C   ");
    assert_eq!(rows.len(), 1, "{out}");
    assert!(rows[0].contains("    1    3    0"), "{out}");
}

#[test]
fn detached_environment_sees_no_devices() {
    let bed = ShimBed::new();
    bed.fake("nvidia-smi", "should not run\n");
    let run = bed.run(
        "nvidia-smi",
        &[],
        &[
            ("GENV_ENVIRONMENT_ID", "e1"),
            ("CUDA_VISIBLE_DEVICES", "-1"),
        ],
    );
    assert_eq!(run.code, 6);
    assert_eq!(run.stdout, "No devices were found\n");
    assert!(bed.args_of("nvidia-smi").is_empty());
}

#[test]
fn queries_get_the_id_and_other_modes_run_untouched() {
    let bed = ShimBed::new();
    bed.fake("nvidia-smi", "0, 16384\n");
    let vars = [("GENV_ENVIRONMENT_ID", "e1"), ("CUDA_VISIBLE_DEVICES", "1")];
    let run = bed
        .run(
            "nvidia-smi",
            &[
                "--query-gpu=index,memory.total",
                "--format=csv,noheader,nounits",
            ],
            &vars,
        )
        .ok();
    assert_eq!(run.stdout, "0, 16384\n");
    assert_eq!(
        bed.args_of("nvidia-smi"),
        [
            "--id=1",
            "--query-gpu=index,memory.total",
            "--format=csv,noheader,nounits"
        ]
    );
    for args in [
        &["pmon", "-c", "1"][..],
        &["topo", "-m"],
        &["nvlink", "-s"],
        &["dmon"],
        &["-h"],
    ] {
        bed.run("nvidia-smi", args, &vars).ok();
        assert_eq!(bed.args_of("nvidia-smi"), args, "{args:?}");
    }
    // An id of the environment narrows; one outside it finds nothing.
    bed.run(
        "nvidia-smi",
        &["-i", "1", "-q"],
        &[
            ("GENV_ENVIRONMENT_ID", "e1"),
            ("CUDA_VISIBLE_DEVICES", "0,1"),
        ],
    )
    .ok();
    assert_eq!(bed.args_of("nvidia-smi"), ["--id=1", "-q"]);
    let run = bed.run("nvidia-smi", &["--id=0", "-L"], &vars);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (6, "No devices were found\n")
    );
}

#[test]
fn bypass_and_outside_an_environment_run_untouched() {
    let bed = ShimBed::new();
    let text = read("550-rtx4090.txt");
    bed.fake("nvidia-smi", &text);
    let mut vars = IN_ENV.to_vec();
    vars.push(("GENV_BYPASS", "1"));
    let run = bed.run("nvidia-smi", &["-L"], &vars).ok();
    assert_eq!(run.stdout, text);
    assert_eq!(bed.args_of("nvidia-smi"), ["-L"]);
    let run = bed
        .run("nvidia-smi", &[], &[("CUDA_VISIBLE_DEVICES", "0")])
        .ok();
    assert_eq!(run.stdout, text);
    assert!(bed.args_of("nvidia-smi").is_empty());
}

#[test]
fn attached_devices_come_from_the_state_without_cuda_visible_devices() {
    let bed = ShimBed::new();
    let terminal = Sleeper::new();
    bed.sandbox
        .run(&[
            "envs",
            "activate",
            "--eid",
            "e1",
            "--uid",
            "0",
            "--pid",
            &terminal.pid().to_string(),
        ])
        .ok();
    bed.sandbox
        .run(&["devices", "attach", "--eid", "e1", "--index", "1"])
        .ok();
    bed.fake("nvidia-smi", "");
    bed.run("nvidia-smi", &["-q"], &[("GENV_ENVIRONMENT_ID", "e1")])
        .ok();
    assert_eq!(bed.args_of("nvidia-smi"), ["--id=1", "-q"]);
    // Another environment, attached to nothing.
    let run = bed.run("nvidia-smi", &["-q"], &[("GENV_ENVIRONMENT_ID", "e9")]);
    assert_eq!(run.code, 6);
}

#[test]
fn compute_apps_keep_the_environment_over_the_stand_in() {
    let bed = ShimBed::new();
    bed.real_is_sim();
    let dir = bed.sandbox.dir.path();
    let name = format!("gq{}", std::process::id() % 100000);
    let mine = named_sleeper(
        dir,
        &name,
        &[("GENV_ENVIRONMENT_ID", "e1"), ("CUDA_VISIBLE_DEVICES", "1")],
    );
    let _other = named_sleeper(dir, &name, &[("GENV_ENVIRONMENT_ID", "e2")]);
    let mut vars = IN_ENV.to_vec();
    vars.push(("GENV_MOCK_COMPUTE_APPS_PROCESS_NAME", &name));
    let run = bed
        .run(
            "nvidia-smi",
            &[
                "--query-compute-apps=gpu_uuid,used_gpu_memory",
                "--format=csv",
            ],
            &vars,
        )
        .ok();
    assert_eq!(
        run.stdout,
        "gpu_uuid, used_gpu_memory [MiB]\nGPU-00000000-0000-0000-0000-000000000001, 42 MiB\n"
    );
    let run = bed
        .run(
            "nvidia-smi",
            &["--query-compute-apps=pid,gpu_uuid", "--format=csv,noheader"],
            &vars,
        )
        .ok();
    assert_eq!(
        run.stdout,
        format!("{}, GPU-00000000-0000-0000-0000-000000000001\n", mine.pid())
    );
    // The table over the stand-in: only our process, its memory on GPU 1.
    let out = bed.run("nvidia-smi", &[], &vars).ok().stdout;
    let memory = line_with(&out, "MiB /");
    assert!(memory[0].contains("|       0MiB /  15258MiB |"), "{out}");
    assert!(memory[1].contains("|      42MiB /  15258MiB |"), "{out}");
    assert_eq!(line_with(&out, &name).len(), 1, "{out}");
    for line in out.lines().filter(|l| l.starts_with(['|', '+'])) {
        assert_eq!(bars(line).last(), Some(&90), "{line}");
    }
}

#[test]
fn the_real_program_is_never_the_shim_itself() {
    let bed = ShimBed::new();
    // Only the shims on PATH: a clear error, no loop.
    let run = crate::common::Run::from(
        bed.cmd("nvidia-smi", &[])
            .env("PATH", bed.shims())
            .output()
            .unwrap(),
    )
    .fails();
    assert!(
        run.stderr.contains("could not find the real nvidia-smi"),
        "{run:?}"
    );
    // A second folder of links to genv is skipped too.
    let more = bed.path("more-shims");
    std::fs::create_dir_all(&more).unwrap();
    std::os::unix::fs::symlink(crate::common::GENV, more.join("docker")).unwrap();
    let run = crate::common::Run::from(
        bed.cmd("docker", &["ps"])
            .env(
                "PATH",
                format!("{}:{}", bed.shims().display(), more.display()),
            )
            .output()
            .unwrap(),
    )
    .fails();
    assert!(
        run.stderr.contains("could not find the real docker"),
        "{run:?}"
    );
    // A copy of genv as the real program: stopped, with a message.
    std::fs::copy(crate::common::GENV, bed.real().join("nvidia-smi")).unwrap();
    let copy2 = bed.path("copy2");
    std::fs::create_dir_all(&copy2).unwrap();
    std::fs::copy(crate::common::GENV, copy2.join("nvidia-smi")).unwrap();
    let run = crate::common::Run::from(
        bed.cmd("nvidia-smi", &["-q"])
            .env(
                "PATH",
                format!(
                    "{}:{}:{}",
                    bed.shims().display(),
                    bed.real().display(),
                    copy2.display()
                ),
            )
            .output()
            .unwrap(),
    )
    .fails();
    assert!(run.stderr.contains("in a loop"), "{run:?}");
}

#[test]
fn cuda_visible_devices_is_read_as_cuda_reads_it() {
    let bed = ShimBed::new();
    bed.fake("nvidia-smi", "");
    for (visible, ids) in [("0,2,-1,1", "--id=0,2"), (" 1gpu , 0", "--id=1,0")] {
        bed.run(
            "nvidia-smi",
            &["-q"],
            &[
                ("GENV_ENVIRONMENT_ID", "e1"),
                ("CUDA_VISIBLE_DEVICES", visible),
            ],
        )
        .ok();
        assert_eq!(bed.args_of("nvidia-smi"), [ids, "-q"], "{visible}");
    }
    // A GPU named twice: CUDA shows none.
    let run = bed.run(
        "nvidia-smi",
        &["-q"],
        &[
            ("GENV_ENVIRONMENT_ID", "e1"),
            ("CUDA_VISIBLE_DEVICES", "0,1,0"),
        ],
    );
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (6, "No devices were found\n")
    );
}
