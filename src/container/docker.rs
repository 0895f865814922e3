//! `genv-docker`: `docker run` (or `podman run`) for a container that is
//! its own environment. genv's options among those of `run` become
//! `--runtime=genv` and `-e GENV_*=…` for the genv container runtime, and
//! the caller's state folder becomes the annotation
//! [`ANNOTATION`](super::state_folder::ANNOTATION) (engines hand runtimes
//! none of the caller's variables); every other argument reaches the engine
//! exactly as given (the engine is executed, never a shell).

use std::ffi::{OsStr, OsString};

use super::state_folder::ANNOTATION;
use crate::context::{Context, Exit};
use crate::docker_args::{GLOBAL_WITH_VALUE, option_width};
use crate::env_vars::{self as ev, get};
use crate::error::{Error, Result};
use crate::os::exec;
use crate::state::StateDir;

pub(crate) const PROGRAM: &str = "genv-docker";

/// The runtime name `--runtime=` gets unless `GENV_CONTAINER_RUNTIME` says.
const RUNTIME_NAME: &str = "genv";

/// What genv-docker runs: the engine, its arguments, and what to do first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub engine: OsString,
    pub args: Vec<OsString>,
    /// Print the command instead of running it.
    pub dry_run: bool,
    /// Print genv's options before the engine's help.
    pub help: bool,
}

/// The devices asked for with `--gpus`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Gpus {
    Count(String),
    Indices(String),
}

/// genv's options of `run`, with genv 1.4.3's defaults.
#[derive(Debug)]
struct Options {
    gpus: Option<Gpus>,
    gpu_memory: Option<String>,
    eid: Option<OsString>,
    activate: bool,
    attach: bool,
    shims: bool,
    device_locks: bool,
    over_subscribe: bool,
}

/// Runs genv-docker with `args` (without `argv[0]`); returns only when it
/// did not replace itself with the engine.
pub(crate) fn main(args: Vec<OsString>, ctx: &mut Context) -> Result<Exit> {
    let engine = std::env::var_os(ev::GENV_DOCKER)
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "docker".into());
    let runtime = get(ev::GENV_CONTAINER_RUNTIME)
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| RUNTIME_NAME.to_owned());
    let over_subscribe = get(ev::GENV_ALLOW_OVER_SUBSCRIPTION).as_deref() == Some("1");
    let dir = &ctx.dir;
    let plan = plan(args, engine, &runtime, over_subscribe, |look_only| {
        caller_state(dir, look_only)
    })?;
    if plan.help {
        ctx.out.push_str(usage());
    }
    if plan.dry_run {
        ctx.out.push_str(&command_line(&plan));
        ctx.out.push('\n');
        return Ok(Exit::SUCCESS);
    }
    // Help first, then the engine's own.
    let _ = ctx.flush();
    Err(exec::exec(std::path::Path::new(&plan.engine), &plan.args))
}

/// The caller's state folder, as the runtime gets it: absolute, links
/// resolved (the runtime takes none), and made as every genv command makes
/// it, unless `look_only` (a dry run, which makes nothing).
fn caller_state(dir: &StateDir, look_only: bool) -> Result<String> {
    if !look_only {
        dir.root_dir()?;
    }
    let given = dir.root();
    let absolute = std::path::absolute(given).map_err(|e| Error::io(given, e))?;
    let real = std::fs::canonicalize(&absolute).unwrap_or(absolute);
    real.into_os_string().into_string().map_err(|path| {
        Error::hinted(
            format!(
                "the state folder {} is not UTF-8, which an annotation for the runtime cannot hold",
                crate::escape::terminal(&path.to_string_lossy())
            ),
            "set GENV_TMPDIR to a folder whose path is UTF-8",
        )
    })
}

/// The command for `args`: genv's options of `run` taken out and turned
/// into the runtime and its variables, with the state folder (from
/// `state`, told whether to look only) for a container that is an
/// environment; everything else as given.
pub(crate) fn plan(
    args: Vec<OsString>,
    engine: OsString,
    runtime: &str,
    over_subscribe: bool,
    state: impl FnOnce(bool) -> Result<String>,
) -> Result<Plan> {
    let text: Vec<&str> = args
        .iter()
        .map(|a| a.to_str().unwrap_or("\u{FFFD}"))
        .collect();
    let Some(start) = run_options_start(&text) else {
        return Ok(Plan {
            engine,
            args,
            dry_run: false,
            help: false,
        });
    };
    let mut options = Options {
        gpus: None,
        gpu_memory: None,
        eid: None,
        activate: true,
        attach: true,
        shims: true,
        device_locks: true,
        over_subscribe,
    };
    let (mut dry_run, mut help) = (false, false);
    let mut rest: Vec<OsString> = Vec::new();
    let mut i = start;
    while i < args.len() {
        let arg = text[i];
        if arg == "--" || arg == "-" || !arg.starts_with('-') {
            // The image and the container's command: never genv's.
            rest.extend(args[i..].iter().cloned());
            break;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value)),
            _ => (arg, None),
        };
        let value = |i: &mut usize| -> Result<OsString> {
            if let Some(value) = inline {
                return Ok(value.into());
            }
            *i += 1;
            args.get(*i).cloned().ok_or_else(|| {
                Error::hinted(
                    format!("option '{name}' needs a value"),
                    "see 'genv-docker run --help'",
                )
            })
        };
        let toggle = |on: bool| inline.is_none().then_some(on);
        match name {
            "--gpus" => options.gpus = Some(parse_gpus(&value(&mut i)?)?),
            "--gpu-memory" => options.gpu_memory = Some(parse_gpu_memory(&value(&mut i)?)?),
            "--eid" => options.eid = Some(value(&mut i)?),
            "--activate" | "--no-activate" if toggle(true).is_some() => {
                options.activate = name == "--activate";
            }
            "--attach" | "--no-attach" if toggle(true).is_some() => {
                options.attach = name == "--attach";
            }
            "--shims" | "--no-shims" if toggle(true).is_some() => {
                options.shims = name == "--shims";
            }
            "--device-locks" | "--no-device-locks" if toggle(true).is_some() => {
                options.device_locks = name == "--device-locks";
            }
            "--over-subscribe" | "--no-over-subscribe" if toggle(true).is_some() => {
                options.over_subscribe = name == "--over-subscribe";
            }
            "--dry-run" if inline.is_none() => dry_run = true,
            _ => {
                help |= arg == "--help";
                let width = option_width(arg).min(args.len() - i);
                rest.extend(args[i..i + width].iter().cloned());
                i += width;
                continue;
            }
        }
        i += 1;
    }
    let mut planned: Vec<OsString> = args[..start].to_vec();
    planned.push(format!("--runtime={runtime}").into());
    if options.activate {
        planned.push("--annotation".into());
        // Asking for the engine's help makes nothing either.
        planned.push(format!("{ANNOTATION}={}", state(dry_run || help)?).into());
    }
    planned.extend(variables(&options));
    planned.extend(rest);
    Ok(Plan {
        engine,
        args: planned,
        dry_run,
        help,
    })
}

/// `-e NAME=value` for each of genv's settings that is not the runtime's
/// default.
fn variables(options: &Options) -> Vec<OsString> {
    let mut set: Vec<OsString> = Vec::new();
    match &options.gpus {
        Some(Gpus::Count(n)) => set.push(format!("{}={n}", ev::GENV_GPUS).into()),
        Some(Gpus::Indices(list)) => set.push(format!("{}={list}", ev::GENV_GPU_INDICES).into()),
        None => {}
    }
    if let Some(memory) = &options.gpu_memory {
        set.push(format!("{}={memory}", ev::GENV_GPU_MEMORY).into());
    }
    if let Some(eid) = &options.eid {
        let mut entry = OsString::from(format!("{}=", ev::GENV_ENVIRONMENT_ID));
        entry.push(eid);
        set.push(entry);
    }
    for (on, name) in [
        (options.activate, ev::GENV_ACTIVATE),
        (options.attach, ev::GENV_ATTACH),
        (options.shims, ev::GENV_MOUNT_SHIMS),
        (options.device_locks, ev::GENV_MOUNT_DEVICE_LOCKS),
    ] {
        if !on {
            set.push(format!("{name}=0").into());
        }
    }
    if options.over_subscribe {
        set.push(format!("{}=1", ev::GENV_ALLOW_OVER_SUBSCRIPTION).into());
    }
    set.into_iter()
        .flat_map(|entry| [OsString::from("-e"), entry])
        .collect()
}

/// Where the options of `run` start (`run`, or `container run`, after the
/// engine's global options), or `None` for every other command.
fn run_options_start(args: &[&str]) -> Option<usize> {
    let mut i = 0;
    while i < args.len() {
        let arg = args[i];
        if GLOBAL_WITH_VALUE.contains(&arg) {
            i += 2;
        } else if arg.starts_with('-') {
            i += 1;
        } else {
            break;
        }
    }
    match *args.get(i)? {
        "run" => Some(i + 1),
        "container" if args.get(i + 1) == Some(&"run") => Some(i + 2),
        _ => None,
    }
}

/// `--gpus N`, or `--gpus device=1,3` for given devices.
fn parse_gpus(value: &OsStr) -> Result<Gpus> {
    let text = value.to_str().unwrap_or_default();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(text) {
        return Ok(Gpus::Count(text.to_owned()));
    }
    if let Some(list) = text.strip_prefix("device=")
        && list.split(',').all(digits)
    {
        return Ok(Gpus::Indices(list.to_owned()));
    }
    Err(Error::hinted(
        format!(
            "Invalid value for '--gpus' ({})",
            crate::escape::terminal(&value.to_string_lossy())
        ),
        "give a count (--gpus 2) or devices by index (--gpus device=1,3)",
    ))
}

/// `--gpu-memory`: a number of bytes with an optional unit, as genv 1.4.3
/// accepts it.
fn parse_gpu_memory(value: &OsStr) -> Result<String> {
    let text = value.to_str().unwrap_or_default();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let unit = &text[digits..];
    if digits > 0 && ["", "b", "k", "ki", "m", "mi", "g", "gi"].contains(&unit) {
        return Ok(text.to_owned());
    }
    Err(Error::hinted(
        format!(
            "Invalid value for '--gpu-memory' ({})",
            crate::escape::terminal(&value.to_string_lossy())
        ),
        "give bytes with an optional unit: b, k, ki, m, mi, g or gi (e.g. 4g, 42mi)",
    ))
}

/// The command as one line a POSIX shell reads back as the same words.
pub(crate) fn command_line(plan: &Plan) -> String {
    std::iter::once(&plan.engine)
        .chain(&plan.args)
        .map(|word| shell_word(&word.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `word` as is when nothing in it is special to a shell, single-quoted
/// otherwise.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        crate::shell::Shell::Bash.quote(word)
    }
}

/// genv's options of `run`, printed before the engine's own help.
pub(crate) fn usage() -> &'static str {
    "\
Genv Usage: genv-docker run ...

Configuration:
  --gpus          Configure the environment device count (or devices by index: device=1,3)
  --gpu-memory    Configure the environment memory capacity (e.g. 3g, 42mi, 44040192)
                    b - bytes (default)
                    k - kilobytes    ki - kibibytes
                    m - megabytes    mi - mebibytes
                    g - gigabytes    gi - gibibytes
  --eid           Configure the environment identifier

Options:
  --[no-]activate         Activate environment for the container; default: 1
  --[no-]attach           Attach devices to the environment; default: 1
  --[no-]shims            Mount shims to the container; default: 1
  --[no-]device-locks     Mount device locks to the container; default: 1
  --[no-]over-subscribe   Attach unavailable devices if needed; default: 0

Extra Options:
  --help          Show this help message and exit
  --dry-run       Show the raw 'docker' command without actually executing it

"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(args: &[&str]) -> Vec<String> {
        let args = args.iter().map(OsString::from).collect();
        plan(args, "docker".into(), "genv", false, |_| Ok("/s".into()))
            .unwrap()
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn options_after_the_image_belong_to_the_container() {
        assert_eq!(
            planned(&["run", "--rm", "-e", "A=1", "img", "--gpus", "1"]),
            [
                "run",
                "--runtime=genv",
                "--annotation",
                "io.genv.tmpdir=/s",
                "--rm",
                "-e",
                "A=1",
                "img",
                "--gpus",
                "1"
            ]
        );
    }

    #[test]
    fn genv_options_become_variables() {
        assert_eq!(
            planned(&[
                "-H",
                "h",
                "run",
                "--gpus=2",
                "--no-shims",
                "--gpu-memory",
                "4g",
                "img"
            ]),
            [
                "-H",
                "h",
                "run",
                "--runtime=genv",
                "--annotation",
                "io.genv.tmpdir=/s",
                "-e",
                "GENV_GPUS=2",
                "-e",
                "GENV_GPU_MEMORY=4g",
                "-e",
                "GENV_MOUNT_SHIMS=0",
                "img"
            ]
        );
        assert_eq!(planned(&["ps", "--gpus", "1"]), ["ps", "--gpus", "1"]);
        // A container that is no environment needs no state folder.
        assert_eq!(
            planned(&["run", "--no-activate", "img"]),
            ["run", "--runtime=genv", "-e", "GENV_ACTIVATE=0", "img"]
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for args in [["run", "--gpus", "all"], ["run", "--gpu-memory", "4x"]] {
            let args = args.iter().map(OsString::from).collect();
            assert!(plan(args, "docker".into(), "genv", false, |_| Ok("/s".into())).is_err());
        }
    }
}
