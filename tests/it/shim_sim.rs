//! The stand-in for nvidia-smi: the real tool's layouts, column for column,
//! and the queries genv and genv 1.4.3 make.

use std::process::Command;

use crate::common::{Run, Sandbox, fixture};
use crate::shim_support::{SIM, ShimBed, bars, named_sleeper};

fn sim(sandbox: &Sandbox, args: &[&str], vars: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(SIM);
    cmd.args(args);
    sandbox.apply(&mut cmd);
    for (n, v) in vars {
        cmd.env(n, v);
    }
    Run::from(cmd.output().unwrap())
}

/// Where `needle` is in `line`, for the columns that must line up.
fn at(line: &str, needle: &str) -> Option<usize> {
    line.find(needle)
}

fn assert_same_columns(ours: &str, published: &str) {
    let ours: Vec<&str> = ours.lines().collect();
    let theirs: Vec<&str> = published.lines().collect();
    // The header and the first GPU block, line for line.
    for i in 1..12 {
        assert_eq!(
            bars(ours[i]),
            bars(theirs[i]),
            "line {i}:\n{}\n{}",
            ours[i],
            theirs[i]
        );
        for needle in [
            "MiB /",
            "MiB |",
            "%      Default",
            "Driver Version:",
            "CUDA Version:",
            "00000000:",
        ] {
            if let (Some(a), Some(b)) = (at(ours[i], needle), at(theirs[i], needle)) {
                assert_eq!(a, b, "{needle:?} in line {i}:\n{}\n{}", ours[i], theirs[i]);
            }
        }
    }
    // The processes table: headers and a row.
    let start = |lines: &[&str]| {
        lines
            .iter()
            .position(|l| l.contains("| Processes:"))
            .unwrap()
    };
    let (a, b) = (start(&ours), start(&theirs));
    for k in 0..6 {
        let (x, y) = (ours[a + k], theirs[b + k]);
        assert_eq!(bars(x), bars(y), "processes line {k}:\n{x}\n{y}");
        for needle in [
            "MiB |",
            "N/A  N/A",
            "GPU Memory",
            "      C   ",
            "      G   ",
        ] {
            if let (Some(p), Some(q)) = (at(x, needle), at(y, needle)) {
                assert_eq!(p, q, "{needle:?}:\n{x}\n{y}");
            }
        }
    }
    // The pid column ends where the driver's does.
    let pid_end =
        |line: &str| line[..line.find("      C   ").or(line.find("      G   ")).unwrap()].len();
    assert_eq!(pid_end(ours[a + 5]), pid_end(theirs[b + 5]));
}

fn table(driver: &str, process_name: &str) -> String {
    let sandbox = Sandbox::new();
    let run = sim(
        &sandbox,
        &[],
        &[
            ("GENV_MOCK_DRIVER_VERSION", driver),
            ("GENV_MOCK_COMPUTE_APPS_PROCESS_NAME", process_name),
        ],
    );
    run.ok().stdout
}

#[test]
fn wide_layout_matches_a_published_550_table() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("sw{}", std::process::id() % 100000);
    let _job = named_sleeper(dir.path(), &name, &[]);
    let ours = table("550.54.15", &name);
    let published = std::fs::read_to_string(fixture("nvidia-smi/550-rtx4090.txt")).unwrap();
    assert_same_columns(&ours, &published);
    assert!(ours.contains("| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.0     |"), "{ours}");
}

#[test]
fn narrow_layout_matches_a_published_470_table() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("sn{}", std::process::id() % 100000);
    let _job = named_sleeper(dir.path(), &name, &[]);
    let ours = table("470.182.03", &name);
    let published = std::fs::read_to_string(fixture("nvidia-smi/470-v100.txt")).unwrap();
    assert_same_columns(&ours, &published);
    assert!(ours.contains("|   0  NVIDIA GeForce ...  Off  |"), "{ours}");
}

#[test]
fn no_processes_and_no_devices() {
    let ours = table("550.54.15", "no-such-process-name");
    assert!(ours.contains("|  No running processes found                                                             |\n"), "{ours}");
    let sandbox = Sandbox::new();
    let run = sim(&sandbox, &["--id=-1"], &[]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (6, "No devices were found\n")
    );
    let run = sim(&sandbox, &["-L"], &[("GENV_MOCK_DEVICE_COUNT", "0")]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (6, "No devices were found\n")
    );
}

#[test]
fn queries_of_genv_and_of_genv_1_4_3() {
    let sandbox = Sandbox::new();
    let run = sim(
        &sandbox,
        &[
            "--query-gpu=index,uuid,memory.total,name",
            "--format=csv,noheader,nounits",
        ],
        &[],
    )
    .ok();
    assert_eq!(
        run.stdout,
        "0, GPU-00000000-0000-0000-0000-000000000000, 15258, NVIDIA GeForce RTX 2080 Ti\n\
         1, GPU-00000000-0000-0000-0000-000000000001, 15258, NVIDIA GeForce RTX 2080 Ti\n"
    );
    let run = sim(
        &sandbox,
        &[
            "--query-gpu=driver_version,index,uuid,memory.total,memory.used,name,temperature.gpu,utilization.gpu",
            "--format=csv",
            "--id=1",
        ],
        &[("GENV_MOCK_DEVICE_TOTAL_MEMORY", "80gi"), ("GENV_MOCK_DEVICE_NAME", "NVIDIA H100 80GB HBM3")],
    )
    .ok();
    assert_eq!(
        run.stdout,
        "driver_version, index, uuid, memory.total [MiB], memory.used [MiB], name, temperature.gpu, utilization.gpu [%]\n\
         525.147.05, 1, GPU-00000000-0000-0000-0000-000000000001, 81920 MiB, 10 MiB, NVIDIA H100 80GB HBM3, 38, 93 %\n"
    );
    let run = sim(
        &sandbox,
        &["--query-gpu=uuid,index", "--format=csv,noheader,nounits"],
        &[("GENV_MOCK_DEVICE_COUNT", "1")],
    )
    .ok();
    assert_eq!(run.stdout, "GPU-00000000-0000-0000-0000-000000000000, 0\n");
    let run = sim(&sandbox, &["--query-gpu=bogus", "--format=csv"], &[]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("\"bogus\" is not a valid field"),
        "{run:?}"
    );
    let run = sim(&sandbox, &["-L", "-i", "0"], &[]).ok();
    assert_eq!(
        run.stdout,
        "GPU 0: NVIDIA GeForce RTX 2080 Ti (UUID: GPU-00000000-0000-0000-0000-000000000000)\n"
    );
    sim(&sandbox, &["pmon"], &[]).fails();
}

#[test]
fn compute_apps_follow_cuda_visible_devices() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("sc{}", std::process::id() % 100000);
    let one = named_sleeper(dir.path(), &name, &[("CUDA_VISIBLE_DEVICES", "1")]);
    let both = named_sleeper(dir.path(), &name, &[]);
    let sandbox = Sandbox::new();
    let run = sim(
        &sandbox,
        &[
            "--query-compute-apps=gpu_uuid,pid,used_gpu_memory",
            "--format=csv,noheader,nounits",
        ],
        &[("GENV_MOCK_COMPUTE_APPS_PROCESS_NAME", &name)],
    )
    .ok();
    let mut expected = [
        format!(
            "GPU-00000000-0000-0000-0000-000000000000, {}, 42",
            both.pid()
        ),
        format!(
            "GPU-00000000-0000-0000-0000-000000000001, {}, 42",
            one.pid()
        ),
        format!(
            "GPU-00000000-0000-0000-0000-000000000001, {}, 42",
            both.pid()
        ),
    ];
    expected[1..].sort_by_key(|l| l.split(", ").nth(1).unwrap().parse::<u32>().unwrap());
    assert_eq!(run.stdout, expected.join("\n") + "\n");
}

#[test]
fn genv_reads_the_stand_in_through_its_nvidia_smi_backend() {
    let bed = ShimBed::new();
    bed.real_is_sim();
    let mut cmd = bed
        .sandbox
        .cmd(&["devices", "ps", "--format", "csv", "--no-header"]);
    cmd.env_remove("GENV_MOCK_DEVICE_COUNT");
    // The shims first on PATH, as in an activated shell: genv's own calls
    // bypass them.
    cmd.env(
        "PATH",
        format!(
            "{}:{}:/usr/bin:/bin",
            bed.shims().display(),
            bed.real().display()
        ),
    );
    cmd.env("GENV_ENVIRONMENT_ID", "e1")
        .env("CUDA_VISIBLE_DEVICES", "1");
    let run = Run::from(cmd.output().unwrap());
    // On a machine with an NVIDIA driver, NVML answers instead.
    if std::path::Path::new("/proc/driver/nvidia").exists() {
        return;
    }
    let run = run.ok();
    assert_eq!(run.stdout.lines().count(), 2, "{run:?}");
}

#[test]
fn compute_apps_read_cuda_visible_devices_as_cuda_does() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("sv{}", std::process::id() % 100000);
    // CUDA stops at index 7 (the machine has two GPUs), takes a UUID, and
    // shows no GPU at all to a list that names one twice.
    let stops = named_sleeper(dir.path(), &name, &[("CUDA_VISIBLE_DEVICES", "1,7,0")]);
    let by_uuid = named_sleeper(
        dir.path(),
        &name,
        &[(
            "CUDA_VISIBLE_DEVICES",
            " GPU-00000000-0000-0000-0000-000000000001",
        )],
    );
    let _twice = named_sleeper(dir.path(), &name, &[("CUDA_VISIBLE_DEVICES", "0,1,0")]);
    let sandbox = Sandbox::new();
    let run = sim(
        &sandbox,
        &["--query-compute-apps=gpu_uuid,pid", "--format=csv,noheader"],
        &[("GENV_MOCK_COMPUTE_APPS_PROCESS_NAME", &name)],
    )
    .ok();
    let mut pids = [stops.pid(), by_uuid.pid()];
    pids.sort_unstable();
    let expected: String = pids
        .iter()
        .map(|pid| format!("GPU-00000000-0000-0000-0000-000000000001, {pid}\n"))
        .collect();
    assert_eq!(run.stdout, expected);
}
