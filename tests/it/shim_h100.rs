//! The nvidia-smi shim over what a real H100 printed on driver 580
//! (tests/fixtures/nvidia-smi/580-h100, captured by scripts/capture-gpu).

use crate::common::{Sleeper, fixture};
use crate::shim_support::{ShimBed, put_pid};

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(&format!("nvidia-smi/580-h100/{name}"))).unwrap()
}

#[test]
fn a_process_registered_only_in_envs_json_counts_as_the_environments() {
    // genv 1.4.3's genv.sdk.activate() registers the process's pid in
    // envs.json; the process has no GENV_ENVIRONMENT_ID of its own.
    let bed = ShimBed::new();
    let python = Sleeper::new();
    bed.sandbox.activate_env("gpu1", python.pid()).ok();
    let text = put_pid(&read("table-busy.txt"), "707", python.pid());
    bed.fake("nvidia-smi", &text);
    let vars = [
        ("GENV_ENVIRONMENT_ID", "gpu1"),
        ("CUDA_VISIBLE_DEVICES", "0"),
        ("GENV_GPU_MEMORY", "4g"),
    ];
    let run = bed.run("nvidia-smi", &[], &vars).ok();
    let out = &run.stdout;
    assert!(out.contains("|    1542MiB /   3814MiB |"), "{out}");
    let row = format!(" {}      C   python3 ", python.pid());
    assert_eq!(out.lines().filter(|l| l.contains(&row)).count(), 1, "{out}");
    assert!(!out.contains("No running processes found"), "{out}");

    // Another environment does not see it.
    let run = bed
        .run(
            "nvidia-smi",
            &[],
            &[
                ("GENV_ENVIRONMENT_ID", "other"),
                ("CUDA_VISIBLE_DEVICES", "0"),
            ],
        )
        .ok();
    assert!(run.stdout.contains("No running processes found"), "{run:?}");
    assert!(run.stdout.contains("|       0MiB /  81559MiB |"), "{run:?}");
}

#[test]
fn list_gpus_is_filtered_not_given_an_id() {
    // Driver 580 answers `-L --id=0` with "Option --id=0 is not valid".
    let bed = ShimBed::new();
    bed.fake("nvidia-smi", &read("list.txt"));
    let vars = [
        ("GENV_ENVIRONMENT_ID", "gpu1"),
        ("CUDA_VISIBLE_DEVICES", "0"),
    ];
    let run = bed.run("nvidia-smi", &["-L"], &vars).ok();
    assert_eq!(bed.args_of("nvidia-smi"), ["-L"]);
    assert_eq!(run.stdout, read("list.txt"));
    let vars = [
        ("GENV_ENVIRONMENT_ID", "gpu1"),
        ("CUDA_VISIBLE_DEVICES", ""),
    ];
    let run = bed.run("nvidia-smi", &["-L"], &vars);
    assert_eq!(run.stdout, "No devices were found\n", "{run:?}");
}

#[test]
fn the_stand_in_prints_driver_580s_layout() {
    let bed = ShimBed::new();
    let probe = crate::shim_support::named_sleeper(bed.sandbox.dir.path(), "h100probe", &[]);
    let vars = [
        ("GENV_MOCK_DEVICE_COUNT", "1"),
        ("GENV_MOCK_DEVICE_NAME", "NVIDIA H100 80GB HBM3"),
        ("GENV_MOCK_DEVICE_TOTAL_MEMORY", "81559mi"),
        ("GENV_MOCK_DRIVER_VERSION", "580.159.04"),
        ("GENV_MOCK_CUDA_VERSION", "13.0"),
        ("GENV_MOCK_COMPUTE_APPS_PROCESS_NAME", "h100probe"),
    ];
    let mut cmd = std::process::Command::new(crate::shim_support::SIM);
    bed.sandbox.apply(&mut cmd);
    cmd.envs(vars);
    let run = crate::common::Run::from(cmd.output().unwrap()).ok();
    let real = read("table-busy.txt");
    let (sim, real): (Vec<&str>, Vec<&str>) =
        (run.stdout.lines().collect(), real.lines().collect());
    assert_eq!(sim.len(), real.len(), "{}", run.stdout);
    for (s, r) in sim.iter().zip(&real).skip(1) {
        assert_eq!(
            crate::shim_support::bars(s),
            crate::shim_support::bars(r),
            "\nsim:  {s:?}\nreal: {r:?}"
        );
        // Headers and rules are the driver's, character for character.
        if !r.contains("MiB")
            && !r.contains("NVIDIA")
            && !r.contains("C ")
            && !r.contains("Disabled")
        {
            assert_eq!(s, r);
        }
    }
    let row = sim
        .iter()
        .find(|l| l.contains(&probe.pid().to_string()))
        .expect("process row");
    assert!(row.contains("      C   "), "{row}");
}
