//! The `docker` shim: `docker run`/`docker create` get only the
//! environment's GPUs (`--gpus all` and `--gpus N` become the attached
//! devices) and `GENV_ENVIRONMENT_ID` inside the container.

use std::ffi::OsString;

use super::Attached;
use crate::context::{Context, Exit};
use crate::docker_args::{GLOBAL_WITH_VALUE, option_width};
use crate::error::reference;
use crate::error::{Error, Result};
use crate::os::exec;

pub(crate) const PROGRAM: &str = "docker";

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
pub(crate) fn rewrite(
    args: &[String],
    eid: &str,
    attached: impl FnOnce() -> Attached,
) -> Result<Vec<String>> {
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
            return Err(Error::hinted(
                format!("cannot tell which GPUs are attached to environment {eid}"),
                "run 'genv attach' first, or set GENV_BYPASS=1 to run docker untouched",
            ));
        }
    };
    let chosen: Vec<String> = if value == "all" {
        devices
    } else if let Ok(count) = value.parse::<usize>() {
        if count > devices.len() {
            return Err(reference::docker_more_devices_than_attached(
                count,
                devices.len(),
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
                return Err(Error::new(format!(
                    "GPU {device} is not attached to environment {eid} (attached: {attached})"
                )));
            }
        }
        list.split(',').map(|d| d.trim().to_owned()).collect()
    } else {
        return Err(reference::docker_unsupported_gpus(raw));
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

/// The shim's entry point: returns only when the real docker could not
/// be run, or the command line not rewritten.
pub(crate) fn run(args: Vec<OsString>, ctx: &mut Context) -> Result<Exit> {
    let real = exec::find_real(PROGRAM)?;
    let (Some(eid), false) = (super::environment_id(), super::bypass()) else {
        return Err(exec::exec(&real, &args));
    };
    let args = super::Args::new(args);
    let new_args = rewrite(args.text(), &eid, || super::attached(&ctx.dir, &eid))?;
    Err(exec::exec(&real, &args.given(&new_args)?))
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
        let err = rewrite(&args("run --gpus 3 img"), "e1", devices(&["0"]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "Requested 3 devices but only 1 are attached to environment"
        );
        let err = rewrite(&args("run --gpus device=1 img"), "e1", devices(&["0"]))
            .unwrap_err()
            .to_string();
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
