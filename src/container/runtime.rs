//! `genv-container-runtime`: an OCI runtime in front of the real one. On
//! `create` (and `run`) it adds genv to the bundle's `config.json`: the
//! container's environment identifier, the shims first on `PATH`, the shim
//! and the device locks mounted, and genv's `prestart` and `poststop`
//! hooks, given the state folder the bundle names once it is checked
//! ([`super::state_folder`]); on `exec` it adds the same variables to the
//! process JSON. Then it becomes the real runtime with the arguments as
//! given, so the exit code is the real runtime's.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::spec::{Process, Spec};

use super::{MEMCAP_IN_CONTAINER, SHIMS_IN_CONTAINER, STATE_IN_CONTAINER, env_get};
use crate::context::{Context, Exit};
use crate::env_vars as ev;
use crate::error::{Error, Result};
use crate::os::exec;

pub(crate) const PROGRAM: &str = "genv-container-runtime";

/// The real runtimes, in the order they are looked for on `PATH`.
const REAL_RUNTIMES: [&str; 3] = ["nvidia-container-runtime", "runc", "crun"];

/// Global options of runc and crun that take a value.
const GLOBAL_WITH_VALUE: [&str; 6] = [
    "--log",
    "--log-format",
    "--root",
    "--criu",
    "--rootless",
    "--cgroup-manager",
];

/// Runs the runtime with `args` (without `argv[0]`); returns only when it
/// did not replace itself with the real runtime. Its state folder is the
/// one the bundle names, not the context's.
pub(crate) fn main(args: Vec<OsString>, _: &mut Context) -> Result<Exit> {
    let text: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    prepare(&text)?;
    for name in REAL_RUNTIMES {
        if let Some(real) = find_runtime(name) {
            return Err(exec::exec(&real, &args));
        }
    }
    Err(Error::hinted(
        "genv-container-runtime found no OCI runtime to run (nvidia-container-runtime, runc or crun) on PATH",
        "install runc, or the NVIDIA Container Toolkit",
    ))
}

/// The real runtime `name`: on `PATH` (genv itself skipped), else in the
/// system's folders, since engines call runtimes with a reduced `PATH`.
fn find_runtime(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    exec::find_real(name).ok().or_else(|| {
        SYSTEM_PATH
            .split(':')
            .map(|dir| Path::new(dir).join(name))
            .find(|p| {
                p.metadata()
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    })
}

/// Where runtimes are installed, looked in when `PATH` has none.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Changes the bundle or the process file that the command names.
fn prepare(args: &[String]) -> Result<()> {
    let Some(at) = command_at(args) else {
        return Ok(());
    };
    let id = args.last().filter(|_| args.len() > at + 1);
    match (args[at].as_str(), id) {
        ("create" | "run", Some(id)) => {
            let bundle = option(&args[at + 1..], "--bundle", "-b").unwrap_or_else(|| ".".into());
            rewrite_config(&PathBuf::from(bundle).join("config.json"), id)
        }
        ("exec", Some(id)) => match option(&args[at + 1..], "--process", "-p") {
            Some(process) => rewrite_process(Path::new(&process), id),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Where the command (`create`, `exec`, …) is, after the global options.
fn command_at(args: &[String]) -> Option<usize> {
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        if GLOBAL_WITH_VALUE.contains(&arg) {
            i += 2;
        } else if arg.starts_with('-') {
            i += 1;
        } else {
            return Some(i);
        }
    }
    None
}

/// The value of `--long VALUE`, `--long=VALUE` or `-s VALUE`.
fn option(args: &[String], long: &str, short: &str) -> Option<String> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == long || arg == short {
            return iter.next().cloned();
        }
        if let Some(value) = arg.strip_prefix(long).and_then(|v| v.strip_prefix('=')) {
            return Some(value.to_owned());
        }
    }
    None
}

/// The variables genv adds to a container's process: `GENV_CONTAINER=1`,
/// the environment identifier (the container's id unless given), the
/// shims first on `PATH`, and the memory cap library in `LD_PRELOAD` when
/// the container gets it (`preload`).
fn process_env(mut env: Vec<String>, id: &str, preload: bool) -> Vec<String> {
    let active = env_get(&env, ev::GENV_ACTIVATE) != Some("0");
    let eid_given = env_get(&env, ev::GENV_ENVIRONMENT_ID).is_some_and(|e| !e.is_empty());
    let shims = env_get(&env, ev::GENV_MOUNT_SHIMS) != Some("0");
    env.push(format!("{}=1", ev::GENV_CONTAINER));
    if active && !eid_given {
        env.push(format!("{}={id}", ev::GENV_ENVIRONMENT_ID));
    }
    if shims {
        let path = env_get(&env, "PATH").map(str::to_owned);
        env.retain(|entry| !entry.starts_with("PATH="));
        env.push(match path {
            // `exec` gets the container's variables, already changed.
            Some(path) if path.split(':').next() == Some(SHIMS_IN_CONTAINER) => {
                format!("PATH={path}")
            }
            Some(path) if !path.is_empty() => format!("PATH={SHIMS_IN_CONTAINER}:{path}"),
            _ => format!("PATH={SHIMS_IN_CONTAINER}:{SYSTEM_PATH}"),
        });
    }
    if preload {
        let preload = env_get(&env, ev::LD_PRELOAD).unwrap_or_default().to_owned();
        if !preload
            .split([' ', ':'])
            .any(|entry| entry == MEMCAP_IN_CONTAINER)
        {
            env.retain(|entry| !entry.starts_with("LD_PRELOAD="));
            env.push(if preload.is_empty() {
                format!("{}={MEMCAP_IN_CONTAINER}", ev::LD_PRELOAD)
            } else {
                format!("{}={MEMCAP_IN_CONTAINER}:{preload}", ev::LD_PRELOAD)
            });
        }
    }
    env
}

/// Whether the container's environment has a memory capacity to enforce.
fn capped(env: &[String]) -> bool {
    env_get(env, ev::GENV_ACTIVATE) != Some("0")
        && env_get(env, ev::GENV_GPU_MEMORY).is_some_and(|m| !m.is_empty())
}

/// Adds genv to a bundle's `config.json`. The configuration is read as a
/// [`Spec`] (so a malformed one is refused before anything changes), and
/// genv's changes go into the JSON as read, so every field genv does not
/// read is kept. Refused, with the bundle untouched, when something to
/// mount is not installed.
pub(crate) fn rewrite_config(path: &Path, id: &str) -> Result<()> {
    let (mut json, spec): (Value, Spec) = read(path)?;
    let given = spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    let bundle = path.parent().unwrap_or(Path::new("."));
    let preload = capped(&given) && has_glibc(bundle, &spec);
    if capped(&given) && !preload {
        crate::messages::warn_hint(
            format_args!(
                "container {}: the image has no glibc, so the memory cap library is not preloaded; its GPU memory capacity is enforced by `genv enforce` only",
                crate::escape::terminal(id)
            ),
            "run genv enforce on the host, or use an image with glibc (every CUDA image has it)",
        );
    }
    let env = process_env(given, id, preload);
    let mut mounts = Vec::new();
    if env_get(&env, ev::GENV_MOUNT_SHIMS) != Some("0") {
        let genv = super::static_genv()?;
        for name in [crate::smi::PROGRAM, "genv"] {
            mounts.push(bind(&genv, &format!("{SHIMS_IN_CONTAINER}/{name}"), "ro")?);
        }
    }
    if preload {
        let library = crate::memcap::library().ok_or_else(|| {
            Error::hinted(
                format!(
                    "the container's GPU memory capacity cannot be enforced: {} is not installed next to genv",
                    crate::memcap::LIBRARY
                ),
                "install it next to the genv binary (README, Install), or run the container without --gpu-memory",
            )
        })?;
        mounts.push(bind(&library, MEMCAP_IN_CONTAINER, "ro")?);
    }
    let locks = env_get(&env, ev::GENV_MOUNT_DEVICE_LOCKS) != Some("0")
        && env_get(&env, ev::GENV_ACTIVATE) != Some("0");
    if locks || capped(&env) {
        // The hook mounts the attached devices' locks and the ledger in it.
        mounts.push(state_tmpfs());
    }
    json["process"]["env"] = serde_json::to_value(&env).map_err(|e| Error::new(e.to_string()))?;
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    if env_get(&env, ev::GENV_ACTIVATE) != Some("0") {
        let state = super::state_folder::from_bundle(&spec, bundle)?;
        let eid = env_get(&env, ev::GENV_ENVIRONMENT_ID).unwrap_or(id);
        for stage in ["prestart", "poststop"] {
            let hook = hook(&exe, stage, eid, state.as_deref())?;
            push(&mut json, &["hooks", stage], hook);
        }
    }
    for mount in mounts {
        push(&mut json, &["mounts"], mount);
    }
    write(path, &json)
}

/// glibc's dynamic loader in an image, where each architecture puts it.
const GLIBC_LOADERS: [&str; 4] = [
    "lib64/ld-linux-x86-64.so.2",
    "lib/ld-linux-aarch64.so.1",
    "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
];

/// Whether the container's image has glibc's dynamic loader. The memory
/// cap library is built against glibc, and another loader (musl's) may
/// refuse to start a program whose preloaded library it cannot link. The
/// image is looked at only through its root, links resolved inside it.
fn has_glibc(bundle: &Path, spec: &Spec) -> bool {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let Some(root) = spec.root().as_ref().map(|r| r.path().clone()) else {
        return false;
    };
    let root = if root.is_absolute() {
        root
    } else {
        bundle.join(root)
    };
    let flags = OFlags::PATH | OFlags::CLOEXEC;
    let Ok(root) = rustix::fs::open(&root, flags | OFlags::DIRECTORY, Mode::empty()) else {
        return false;
    };
    GLIBC_LOADERS.iter().any(|loader| {
        rustix::fs::openat2(
            &root,
            *loader,
            flags,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
        .is_ok()
    })
}

/// The container's own state folder, a small tmpfs.
fn state_tmpfs() -> Value {
    json!({
        "destination": STATE_IN_CONTAINER,
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "nodev", "noexec", "mode=1777", "size=1m"],
    })
}

/// Adds genv's variables to the process JSON of `exec`.
pub(crate) fn rewrite_process(path: &Path, id: &str) -> Result<()> {
    let (mut json, process): (Value, Process) = read(path)?;
    // The container's variables come with the process: `LD_PRELOAD` is
    // there when the container has the library.
    let env = process_env(process.env().clone().unwrap_or_default(), id, false);
    json["env"] = serde_json::to_value(&env).map_err(|e| Error::new(e.to_string()))?;
    write(path, &json)
}

/// genv's hook for `stage`: this executable run as the hook, with the
/// variables that say where the state is (a runtime gives hooks no
/// environment of its own): the runtime's own `PATH` and `GENV_*` (what
/// the engine's configuration gives it), and the state folder the bundle
/// names, `state`, before the runtime's own.
fn hook(exe: &Path, stage: &str, eid: &str, state: Option<&Path>) -> Result<Value> {
    let mut env: Vec<String> = std::env::vars()
        .filter(|(name, _)| name == "PATH" || name.starts_with("GENV_"))
        .filter(|(name, _)| name != ev::GENV_SHIM_DEPTH && name != ev::GENV_ENVIRONMENT_ID)
        .filter(|(name, _)| state.is_none() || name != ev::GENV_TMPDIR)
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    if let Some(state) = state {
        env.push(format!("{}={}", ev::GENV_TMPDIR, state.display()));
    }
    env.push(format!("{}={eid}", ev::GENV_ENVIRONMENT_ID));
    Ok(json!({
        "path": utf8(exe)?,
        "args": [super::HOOK_PROGRAM, stage],
        "env": env,
    }))
}

/// A bind mount of `source` at `destination`, `ro` or `rw`.
fn bind(source: &Path, destination: &str, mode: &str) -> Result<Value> {
    Ok(json!({
        "destination": destination,
        "type": "bind",
        "source": utf8(source)?,
        "options": ["rbind", mode, "nosuid", "nodev"],
    }))
}

/// A path as JSON text, which OCI paths are.
fn utf8(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| {
        Error::new(format!(
            "{} cannot be named in an OCI configuration: it is not UTF-8",
            path.display()
        ))
    })
}

/// Appends `item` to the array at `keys`, creating what is missing.
fn push(json: &mut Value, keys: &[&str], item: Value) {
    let mut at = json;
    for key in keys {
        if at.get(*key).is_none_or(Value::is_null) {
            at[*key] = if *key == keys[keys.len() - 1] {
                Value::Array(Vec::new())
            } else {
                Value::Object(Default::default())
            };
        }
        at = &mut at[*key];
    }
    if let Value::Array(items) = at {
        items.push(item);
    }
}

/// A JSON file as a value and as the typed form that checks it.
pub(crate) fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Result<(Value, T)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let invalid = |e: serde_json::Error| {
        Error::new(format!("{} is not a valid OCI file: {e}", path.display()))
    };
    let json: Value = serde_json::from_slice(&bytes).map_err(invalid)?;
    let typed = serde_json::from_value(json.clone()).map_err(invalid)?;
    Ok((json, typed))
}

/// Replaces `path` with `json`: a new file beside it renamed over it.
pub(crate) fn write(path: &Path, json: &Value) -> Result<()> {
    let bytes = serde_json::to_vec(json).map_err(|e| Error::new(e.to_string()))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.genv-{}", std::process::id()));
    std::fs::write(&temporary, bytes).map_err(|e| Error::io(&temporary, e))?;
    std::fs::rename(&temporary, path).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        Error::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_and_its_options_are_found() {
        let args: Vec<String> = ["--root", "/r", "--log", "l", "create", "--bundle=/b", "cid"]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(command_at(&args), Some(4));
        assert_eq!(option(&args[5..], "--bundle", "-b").as_deref(), Some("/b"));
    }

    #[test]
    fn the_process_gets_genv() {
        let env = process_env(vec!["PATH=/bin".into()], "cid", false);
        assert_eq!(
            env,
            [
                "GENV_CONTAINER=1",
                "GENV_ENVIRONMENT_ID=cid",
                "PATH=/opt/genv/shims:/bin"
            ]
        );
        let given = process_env(
            vec![
                "GENV_ENVIRONMENT_ID=mine".into(),
                "GENV_MOUNT_SHIMS=0".into(),
            ],
            "cid",
            false,
        );
        assert_eq!(env_get(&given, "GENV_ENVIRONMENT_ID"), Some("mine"));
        // Again on `exec`: nothing doubled.
        let again = process_env(env.clone(), "cid", false);
        assert_eq!(env_get(&again, "PATH"), Some("/opt/genv/shims:/bin"));
        let capped = process_env(vec!["GENV_GPU_MEMORY=1g".into()], "cid", true);
        let again = process_env(capped.clone(), "cid", true);
        assert_eq!(
            env_get(&again, "LD_PRELOAD"),
            Some("/opt/genv/lib/libgenv_memcap.so")
        );
        assert_eq!(env_get(&given, "PATH"), None);
    }
}
