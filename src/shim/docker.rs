//! The `docker` shim: `docker run`/`docker create` get only the
//! environment's GPUs (`--gpus all` and `--gpus N` become the attached
//! devices) and `GENV_ENVIRONMENT_ID` inside the container.

use std::ffi::OsString;

use super::Attached;

pub const PROGRAM: &str = "docker";

/// Docker's global options that take a value (`docker -H host run …`).
pub(crate) const GLOBAL_WITH_VALUE: [&str; 10] = [
    "--config",
    "-c",
    "--context",
    "-H",
    "--host",
    "-l",
    "--log-level",
    "--tlscacert",
    "--tlscert",
    "--tlskey",
];

/// Options of `docker run`/`create` that take no value; every other option
/// without `=` takes the next argument.
const RUN_BOOLEAN_LONG: [&str; 15] = [
    "--detach",
    "--interactive",
    "--tty",
    "--rm",
    "--init",
    "--privileged",
    "--read-only",
    "--publish-all",
    "--no-healthcheck",
    "--oom-kill-disable",
    "--sig-proxy",
    "--disable-content-trust",
    "--quiet",
    "--help",
    "--use-api-socket",
];
const RUN_BOOLEAN_SHORT: [char; 5] = ['d', 'i', 't', 'P', 'q'];

/// Where the options of `run`/`create` start, or `None` for other commands.
fn run_options_start(args: &[String]) -> Option<usize> {
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        if GLOBAL_WITH_VALUE.contains(&arg) {
            i += 2;
        } else if arg.starts_with('-') {
            i += 1;
        } else {
            break;
        }
    }
    match args.get(i).map(String::as_str)? {
        "run" | "create" => Some(i + 1),
        "container" => match args.get(i + 1).map(String::as_str)? {
            "run" | "create" => Some(i + 2),
            _ => None,
        },
        _ => None,
    }
}

/// How many arguments an option of `run`/`create` spans: 1 when it takes
/// no value or holds it (`--name=x`, `-eX=1`), 2 when its value follows.
pub(crate) fn option_width(arg: &str) -> usize {
    if let Some(long) = arg.strip_prefix("--") {
        if long.contains('=') || RUN_BOOLEAN_LONG.contains(&arg) {
            1
        } else {
            2
        }
    } else {
        let letters: Vec<char> = arg.chars().skip(1).collect();
        match letters.iter().position(|c| !RUN_BOOLEAN_SHORT.contains(c)) {
            // A value option last (`-it -e`, `-e`) takes the next
            // argument; one with letters after it (`-eX=1`) has its value.
            Some(at) if at == letters.len() - 1 => 2,
            _ => 1,
        }
    }
}

/// The `--gpus` option among the options of `run`/`create` (never one after
/// the image, which belongs to the container's command): the index of its
/// value and whether it is written `--gpus=VALUE`.
fn find_gpus(args: &[String], start: usize) -> Option<(usize, bool)> {
    let mut i = start;
    while i < args.len() {
        let arg = args[i].as_str();
        if arg == "--" || !arg.starts_with('-') || arg == "-" {
            return None;
        }
        if arg == "--gpus" {
            return (i + 1 < args.len()).then_some((i + 1, false));
        }
        if arg.starts_with("--gpus=") {
            return Some((i, true));
        }
        i += option_width(arg);
    }
    None
}

/// The arguments to run the real docker with, or the error to print.
pub fn rewrite(
    args: &[String],
    eid: &str,
    attached: impl FnOnce() -> Attached,
) -> Result<Vec<String>, String> {
    let Some(start) = run_options_start(args) else {
        return Ok(args.to_vec());
    };
    let Some((at, inline)) = find_gpus(args, start) else {
        return Ok(args.to_vec());
    };
    let raw = if inline {
        &args[at]["--gpus=".len()..]
    } else {
        args[at].as_str()
    };
    let value = raw.trim_matches(|c| c == '"' || c == '\'');
    let devices = match attached() {
        Attached::Devices(devices) => devices,
        Attached::Unknown => {
            return Err(format!(
                "Cannot tell which GPUs are attached to environment {eid}; run 'genv attach' first, or set GENV_BYPASS=1 to run docker untouched"
            ));
        }
    };
    let chosen: Vec<String> = if value == "all" {
        devices
    } else if let Ok(count) = value.parse::<usize>() {
        if count > devices.len() {
            return Err(format!(
                "Requested {count} devices but only {} are attached to environment",
                devices.len()
            ));
        }
        devices[..count].to_vec()
    } else if let Some(list) = value.strip_prefix("device=") {
        for device in list.split(',').map(str::trim) {
            if !devices.iter().any(|d| d == device) {
                let attached = if devices.is_empty() {
                    "none".to_owned()
                } else {
                    devices.join(",")
                };
                return Err(format!(
                    "GPU {device} is not attached to environment {eid} (attached: {attached})"
                ));
            }
        }
        list.split(',').map(|d| d.trim().to_owned()).collect()
    } else {
        return Err(format!("Unsupported value for '--gpus' ({raw})"));
    };
    let new_value = if chosen.is_empty() {
        "0".to_owned()
    } else {
        // Quoted, so that docker's CSV parsing keeps the commas in the list.
        format!("\"device={}\"", chosen.join(","))
    };
    let mut out = args.to_vec();
    out[at] = if inline {
        format!("--gpus={new_value}")
    } else {
        new_value
    };
    out.splice(
        at + 1..at + 1,
        ["-e".to_owned(), format!("GENV_ENVIRONMENT_ID={eid}")],
    );
    Ok(out)
}

/// The shim's entry point.
pub fn run(args: Vec<OsString>) -> i32 {
    let real = match super::find_real(PROGRAM) {
        Ok(real) => real,
        Err(e) => return super::fail(&e),
    };
    let (Some(eid), false) = (super::environment_id(), super::bypass()) else {
        return super::exec(&real, &args);
    };
    let args = super::Args::new(args);
    match rewrite(args.text(), &eid, || super::attached(&eid)) {
        Ok(new_args) => match args.given(&new_args) {
            Ok(new_args) => super::exec(&real, &new_args),
            Err(e) => super::fail(&e),
        },
        Err(message) => {
            eprintln!("{message}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split(' ').map(str::to_owned).collect()
    }

    fn devices(list: &[&str]) -> impl FnOnce() -> Attached {
        let list = list.iter().map(|s| s.to_string()).collect();
        move || Attached::Devices(list)
    }

    #[test]
    fn all_becomes_the_attached_devices() {
        let out = rewrite(
            &args("run --rm --gpus all img nvidia-smi"),
            "e1",
            devices(&["0", "2"]),
        )
        .unwrap();
        assert_eq!(
            out,
            args("run --rm --gpus \"device=0,2\" -e GENV_ENVIRONMENT_ID=e1 img nvidia-smi")
        );
    }

    #[test]
    fn inline_count_and_global_options() {
        let out = rewrite(
            &args("-H tcp://x container run -it --gpus=1 img"),
            "e1",
            devices(&["3", "4"]),
        )
        .unwrap();
        assert_eq!(
            out,
            args("-H tcp://x container run -it --gpus=\"device=3\" -e GENV_ENVIRONMENT_ID=e1 img")
        );
    }

    #[test]
    fn errors() {
        let err = rewrite(&args("run --gpus 3 img"), "e1", devices(&["0"])).unwrap_err();
        assert_eq!(
            err,
            "Requested 3 devices but only 1 are attached to environment"
        );
        let err = rewrite(&args("run --gpus device=1 img"), "e1", devices(&["0"])).unwrap_err();
        assert!(err.contains("GPU 1 is not attached"), "{err}");
        assert!(rewrite(&args("run --gpus bogus img"), "e1", devices(&["0"])).is_err());
    }

    #[test]
    fn untouched() {
        for line in [
            "ps --gpus all",
            "run img python train.py --gpus 2",
            "run -e X --name n img --gpus all",
            "build .",
        ] {
            assert_eq!(
                rewrite(&args(line), "e1", devices(&["0"])).unwrap(),
                args(line)
            );
        }
    }

    #[test]
    fn detached_gets_none() {
        let out = rewrite(&args("create --gpus all img"), "e1", devices(&[])).unwrap();
        assert_eq!(out, args("create --gpus 0 -e GENV_ENVIRONMENT_ID=e1 img"));
        let ok = rewrite(&args("run --gpus device=0 img"), "e1", devices(&["0", "1"])).unwrap();
        assert_eq!(
            ok,
            args("run --gpus \"device=0\" -e GENV_ENVIRONMENT_ID=e1 img")
        );
    }
}
