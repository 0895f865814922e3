//! `nvidia-smi-sim`: the project's stand-in for `nvidia-smi` on machines
//! without GPUs. It shows the GPUs of the `GENV_MOCK_*` variables (with
//! genv 1.4.3's defaults) and, as compute processes, the processes that
//! [`MockConfig::compute_processes`] picks (`sleep` by default).

use std::ffi::OsString;
use std::io::Write;

use super::query::{self, CsvFormat};
use super::{Layout, SimGpu, SimProcess, table};
use crate::backend::MockConfig;

const NO_DEVICES: &str = "No devices were found";
/// nvidia-smi's exit code when no GPU matches.
pub const EXIT_NOT_FOUND: i32 = 6;

/// What one run prints and its exit code.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl Output {
    fn ok(stdout: String) -> Self {
        Output {
            stdout,
            ..Output::default()
        }
    }

    fn fail(code: i32, stderr: String) -> Self {
        Output {
            stderr,
            code,
            ..Output::default()
        }
    }
}

/// The command line, resolved.
#[derive(Debug, Default)]
struct Request {
    ids: Option<String>,
    list: bool,
    help: bool,
    query_gpu: Option<String>,
    query_apps: Option<String>,
    format: Option<String>,
    rest: Vec<String>,
}

fn parse(args: &[String]) -> Request {
    let mut request = Request::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with('-') => (name, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = |inline: Option<String>| inline.or_else(|| args.next().cloned());
        match name {
            "-i" | "--id" => request.ids = value(inline),
            "-L" | "--list-gpus" => request.list = true,
            "-h" | "--help" => request.help = true,
            "--query-gpu" => request.query_gpu = value(inline),
            "--query-compute-apps" => request.query_apps = value(inline),
            "--format" => request.format = value(inline),
            _ => request.rest.push(arg.clone()),
        }
    }
    request
}

/// The simulated GPUs, all of them or those `ids` names (indices or
/// UUIDs, comma-separated; `-1` names none).
fn gpus(config: &MockConfig, ids: Option<&str>) -> Vec<SimGpu> {
    let total = MockConfig::mib(&config.total_memory);
    let used = MockConfig::mib(&config.used_memory);
    let all = (0..config.count.min(1024)).map(|index| SimGpu {
        index,
        uuid: MockConfig::uuid(index),
        name: config.name.clone(),
        total_mib: total,
        used_mib: used,
        utilization: config.utilization,
        temperature: config.temperature,
    });
    match ids {
        None => all.collect(),
        Some(ids) => {
            let wanted: Vec<&str> = ids.split(',').map(str::trim).collect();
            all.filter(|gpu| {
                wanted
                    .iter()
                    .any(|id| id.parse::<u32>().ok() == Some(gpu.index) || *id == gpu.uuid)
            })
            .collect()
        }
    }
}

fn processes(config: &MockConfig, gpus: &[SimGpu]) -> Vec<SimProcess> {
    let used = MockConfig::mib(&config.process_memory);
    let mut processes: Vec<SimProcess> = config
        .compute_processes()
        .into_iter()
        .flat_map(|(pid, indices)| {
            let name = crate::os::procs::cmdline_arg0(pid)
                .or_else(|| crate::os::procs::comm(pid))
                .unwrap_or_default();
            indices.into_iter().filter_map(move |index| {
                let gpu = gpus.iter().find(|g| g.index == index)?;
                Some(SimProcess {
                    index,
                    uuid: gpu.uuid.clone(),
                    gpu_name: gpu.name.clone(),
                    pid,
                    name: name.clone(),
                    used_mib: used,
                })
            })
        })
        .collect();
    processes.sort_by_key(|p| (p.index, p.pid));
    processes
}

fn fields(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .collect()
}

/// Runs the stand-in with `args` (without the program name).
pub fn run(args: &[String], config: &MockConfig) -> Output {
    let request = parse(args);
    if request.help {
        return Output::ok(format!(
            "nvidia-smi-sim: genv's stand-in for nvidia-smi, simulating {} GPU(s).\n\
             Supported: (no arguments), -L, -i/--id=LIST, --query-gpu=FIELDS and\n\
             --query-compute-apps=FIELDS with --format=csv[,noheader][,nounits].\n",
            config.count
        ));
    }
    if let Err(e) = config.validate() {
        return Output::fail(1, format!("{e}\n"));
    }
    let unsupported = || {
        Output::fail(
            1,
            format!(
                "nvidia-smi-sim does not support command line '{}'\n",
                args.join(" ")
            ),
        )
    };
    if !request.rest.is_empty() {
        return unsupported();
    }
    let gpus = gpus(config, request.ids.as_deref());
    if gpus.is_empty() {
        return Output {
            stdout: format!("{NO_DEVICES}\n"),
            code: EXIT_NOT_FOUND,
            ..Output::default()
        };
    }
    let format = match request.format.as_deref() {
        None => None,
        Some(value) => match CsvFormat::parse(value) {
            Some(format) => Some(format),
            None => return unsupported(),
        },
    };
    let rendered = match (&request.query_gpu, &request.query_apps, format) {
        (Some(_), Some(_), _) => return unsupported(),
        (Some(list), None, Some(format)) => {
            query::render_gpus(&fields(list), format, &gpus, &config.driver_version)
        }
        (None, Some(list), Some(format)) => {
            query::render_processes(&fields(list), format, &processes(config, &gpus))
        }
        (Some(_), None, None) | (None, Some(_), None) => {
            return Output::fail(
                2,
                "Option --format must be specified with --query-… options.\n".into(),
            );
        }
        (None, None, Some(_)) => return unsupported(),
        (None, None, None) if request.list => Ok(gpus
            .iter()
            .map(|g| format!("GPU {}: {} (UUID: {})\n", g.index, g.name, g.uuid))
            .collect()),
        (None, None, None) => {
            let timestamp = chrono::Local::now()
                .format("%a %b %e %H:%M:%S %Y")
                .to_string();
            Ok(table::render(
                Layout::for_driver(&config.driver_version),
                &timestamp,
                &config.driver_version,
                &config.cuda_version,
                &gpus,
                &processes(config, &gpus),
            ))
        }
    };
    match rendered {
        Ok(stdout) => Output::ok(stdout),
        Err(message) => Output::fail(2, format!("{message}\n")),
    }
}

/// The arguments as text; every option and value the stand-in knows is
/// text, so one that is not ends the run with a message.
fn text_args(args: impl Iterator<Item = OsString>) -> Result<Vec<String>, Output> {
    args.map(|arg| {
        arg.into_string().map_err(|arg| {
            let shown = arg.as_encoded_bytes().escape_ascii();
            Output::fail(
                2,
                format!("nvidia-smi-sim: argument '{shown}' is not valid UTF-8\n"),
            )
        })
    })
    .collect()
}

/// The `nvidia-smi-sim` program.
pub fn main() -> i32 {
    let output = match text_args(std::env::args_os().skip(1)) {
        Ok(args) => run(&args, &MockConfig::with_defaults()),
        Err(output) => output,
    };
    let _ = std::io::stderr().write_all(output.stderr.as_bytes());
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(output.stdout.as_bytes())
        .and_then(|()| stdout.flush());
    output.code
}
