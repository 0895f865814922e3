//! `genv-container-runtime-hook`: the OCI hooks the genv runtime adds.
//!
//! `prestart` reads the container's state on stdin, then in one
//! transaction makes the container's init process an environment,
//! configures it from `GENV_GPUS`/`GENV_GPU_MEMORY` and attaches its
//! devices (`GENV_GPU_INDICES` for given ones, over-subscribing when
//! `GENV_ALLOW_OVER_SUBSCRIPTION=1`); nothing is written when any step
//! fails, and the failure stops the container's creation. It then sets
//! `NVIDIA_VISIBLE_DEVICES` in the bundle's configuration for the NVIDIA
//! hook that runs after it. `poststop` releases the environment at once.
//! Both act on the state folder the bundle names, checked again
//! ([`super::state_folder`]), else on the one the runtime gave them.

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;

use super::spec::Spec;
use serde_json::Value;

use super::env_get;
use crate::context::{Context, Exit, LazyBackend};
use crate::env_vars as ev;
use crate::error::{Error, Result};
use crate::provision::{self, Activation, Attach, Configure};
use crate::state::{Config, LoadOptions, StateDir};

pub(crate) const PROGRAM: &str = "genv-container-runtime-hook";

/// What the runtime says of the container on the hook's stdin.
struct State {
    id: String,
    pid: Option<i64>,
    bundle: PathBuf,
    /// The OCI lifecycle's `status`: `creating`, `created`, `running` or
    /// `stopped`.
    status: String,
}

/// Runs the hook stage `args` names (without `argv[0]`). The state folder
/// is the one the bundle names, else the context's (the runtime's).
///
/// Registered as genv 1.4.3's hook was, a `prestart` hook with no
/// argument, the stage is the one the container's state says: `stopped`
/// after it ran, before it runs otherwise.
pub(crate) fn main(args: Vec<OsString>, ctx: &mut Context) -> Result<Exit> {
    let state = read_state()?;
    let stage = match args.first() {
        Some(stage) => stage.to_str().unwrap_or_default(),
        None if state.status == "stopped" => "poststop",
        None => "prestart",
    };
    match stage {
        "prestart" | "createRuntime" => prestart(&state, &ctx.dir)?,
        "poststop" => poststop(&state, &ctx.dir)?,
        _ => {
            return Err(Error::hinted(
                format!("unknown hook stage '{}'", crate::escape::terminal(stage)),
                "genv's hooks are 'prestart' and 'poststop'",
            ));
        }
    }
    Ok(Exit::SUCCESS)
}

fn read_state() -> Result<State> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).map_err(|e| {
        Error::new(format!(
            "could not read the container's state on stdin: {e}"
        ))
    })?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| Error::new(format!("the container's state on stdin is not JSON: {e}")))?;
    let field = |name: &str| json.get(name).and_then(Value::as_str).map(str::to_owned);
    Ok(State {
        id: field("id").unwrap_or_default(),
        pid: json.get("pid").and_then(Value::as_i64).filter(|&p| p > 0),
        bundle: field("bundle").map_or_else(|| PathBuf::from("."), PathBuf::from),
        status: field("status").unwrap_or_default(),
    })
}

/// The environment identifier the runtime gave the hook, else the one in
/// the configuration, else the container's id.
fn environment_id(env: &[String], state: &State) -> String {
    crate::session::eid()
        .or_else(|| env_get(env, ev::GENV_ENVIRONMENT_ID).map(str::to_owned))
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| state.id.clone())
}

fn prestart(state: &State, given: &StateDir) -> Result<()> {
    let config_path = state.bundle.join("config.json");
    let (mut json, spec): (Value, Spec) = super::runtime::read(&config_path)?;
    let env = spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    if env_get(&env, ev::GENV_ACTIVATE) == Some("0") {
        return Ok(());
    }
    let dir = state_dir(&spec, state, given)?;
    let pid = state
        .pid
        .ok_or_else(|| Error::new("the container's state names no pid to activate"))?;
    let eid = environment_id(&env, state);
    let config = Config {
        name: None,
        gpus: match env_get(&env, ev::GENV_GPUS).filter(|g| !g.is_empty()) {
            Some(gpus) => Some(gpus.parse().map_err(|_| {
                Error::new(format!(
                    "{}={} is not a count of devices",
                    ev::GENV_GPUS,
                    crate::escape::terminal(gpus)
                ))
            })?),
            None => None,
        },
        gpu_memory: env_get(&env, ev::GENV_GPU_MEMORY)
            .filter(|m| !m.is_empty())
            .map(crate::memory::validate)
            .transpose()?
            .map(Into::into),
    };
    let indices = match env_get(&env, ev::GENV_GPU_INDICES).filter(|i| !i.is_empty()) {
        Some(list) => Some(
            list.split(',')
                .map(|i| i.trim().parse::<u32>())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| {
                    Error::new(format!(
                        "{}={list} is not a list of device indices",
                        ev::GENV_GPU_INDICES
                    ))
                })?,
        ),
        None => None,
    };
    let attach = env_get(&env, ev::GENV_ATTACH) != Some("0");
    // One transaction: the environment made (or joined) with the
    // container's pid, configured and attached, or nothing written at all.
    let activation = Activation {
        eid: &eid,
        pid,
        config: Configure::Replace(config),
        attach: match indices {
            _ if !attach => Attach::No,
            Some(indices) => Attach::Indices(indices),
            None => Attach::Configured { wait: None },
        },
        over_subscribe: env_get(&env, ev::GENV_ALLOW_OVER_SUBSCRIPTION) == Some("1"),
        // The devices the container names must be known.
        survey_always: true,
    };
    let activated =
        provision::activate(&dir, &LazyBackend::default(), activation).map_err(|e| {
            Error::hinted(
                format!(
                    "genv could not make container {} an environment: {e}",
                    crate::escape::terminal(&state.id)
                ),
                e.hint()
                    .unwrap_or_else(|| "see 'genv devices' and 'genv envs'".to_owned()),
            )
        })?;
    let attached = attach.then_some(activated.indices);
    if let Some(indices) = &attached {
        let list: Vec<String> = indices.iter().map(u32::to_string).collect();
        // Read by the NVIDIA hook, which runs after this one; the last
        // entry of a variable is the one that counts.
        let entry = format!(
            "{}={}",
            ev::NVIDIA_VISIBLE_DEVICES,
            if list.is_empty() {
                "void".to_owned()
            } else {
                list.join(",")
            }
        );
        if let Some(Value::Array(items)) = json.pointer_mut("/process/env") {
            items.push(Value::String(entry));
        }
    }
    // The environment exists from here on: any failure releases it, so a
    // refused container leaves nothing behind.
    let mounted = super::runtime::write(&config_path, &json)
        .and_then(|()| mount_state_files(&dir, state, &spec, &env, &eid, pid, attached.as_deref()));
    if let Err(e) = mounted {
        let _ = release(&dir, &eid, Some(pid), &spec);
        return Err(e);
    }
    Ok(())
}

/// The host's state folder: the one the bundle names (checked again: it
/// may have changed since the runtime looked), else the one the runtime
/// gave the hook.
fn state_dir(spec: &Spec, state: &State, given: &StateDir) -> Result<StateDir> {
    Ok(
        match super::state_folder::from_bundle(spec, &state.bundle)? {
            Some(folder) => StateDir::new(folder),
            None => given.clone(),
        },
    )
}

/// Mounts the attached devices' lock files and, when the environment has
/// a capacity, the memory cap's ledger into the container's state folder.
fn mount_state_files(
    dir: &StateDir,
    state: &State,
    spec: &Spec,
    env: &[String],
    eid: &str,
    pid: i64,
    attached: Option<&[u32]>,
) -> Result<()> {
    let mut files = Vec::new();
    if env_get(env, ev::GENV_MOUNT_DEVICE_LOCKS) != Some("0") {
        for &index in attached.unwrap_or_default() {
            files.push(super::inject::File {
                fd: crate::state::device_locks::open_lock_file(dir, index)?,
                name: format!("devices/{index}.lock"),
            });
        }
    }
    if env_get(env, ev::GENV_GPU_MEMORY).is_some_and(|m| !m.is_empty()) {
        let (inside, outside) = container_uid(spec);
        files.push(super::inject::File {
            fd: dir.memcap_ledger(outside, eid)?,
            name: crate::memcap::ledger_name(inside, eid),
        });
    }
    if files.is_empty() {
        return Ok(());
    }
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .ok_or_else(|| {
            Error::hinted(
                "the container's configuration names no root",
                "the engine gave genv's hook an unusual bundle",
            )
        })?;
    let root = if root.is_absolute() {
        root
    } else {
        state.bundle.join(root)
    };
    super::inject::mount(pid, &root, files)
}

/// The uid of the container's process, inside the container and as the
/// host sees it (through the user namespace's mappings, if any).
fn container_uid(spec: &Spec) -> (u32, u32) {
    let inside = spec.process().as_ref().map_or(0, |p| p.user().uid());
    let mappings = spec
        .linux()
        .as_ref()
        .and_then(|l| l.uid_mappings().clone())
        .unwrap_or_default();
    if mappings.is_empty() {
        return (inside, inside);
    }
    let outside = mappings.iter().find_map(|m| {
        let offset = inside.checked_sub(m.container_id())?;
        (offset < m.size()).then(|| m.host_id().checked_add(offset))?
    });
    // Unmapped: the overflow uid, which owns no ledger of any user.
    (inside, outside.unwrap_or(65534))
}

/// Releases the container's environment: its init process leaves it, and
/// an environment left without processes goes with its devices.
fn poststop(state: &State, given: &StateDir) -> Result<()> {
    // An unreadable configuration still releases the environment, named
    // after the container.
    let spec = std::fs::read(state.bundle.join("config.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Spec>(&bytes).ok())
        .unwrap_or_default();
    let env = spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    if env_get(&env, ev::GENV_ACTIVATE) == Some("0") {
        return Ok(());
    }
    let eid = environment_id(&env, state);
    release(&state_dir(&spec, state, given)?, &eid, state.pid, &spec)
}

/// The container's process leaves its environment; an environment left
/// without processes goes with its devices and its memory cap ledger.
fn release(dir: &StateDir, eid: &str, pid: Option<i64>, spec: &Spec) -> Result<()> {
    let ctx = Context::new(dir.clone());
    let survey = ctx.dir.survey(ctx.backend.get(), false)?;
    let mut tx = ctx.dir.transaction(LoadOptions::default())?;
    tx.reconcile(&survey)?;
    let envs = tx.envs_mut()?;
    if let Some(pid) = pid {
        envs.remove_pid(eid, pid);
    }
    let gone = !envs.contains(eid);
    if gone {
        provision::detach(tx.devices_mut()?, eid, None);
    }
    tx.commit()?;
    if gone {
        dir.remove_memcap_ledger(container_uid(spec).1, eid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_container_uid_as_the_host_sees_it() {
        let plain =
            spec(r#"{"ociVersion":"1.0.2","process":{"user":{"uid":7,"gid":0},"cwd":"/"}}"#);
        assert_eq!(container_uid(&plain), (7, 7));
        let mapped = spec(
            r#"{"ociVersion":"1.0.2","process":{"user":{"uid":7,"gid":0},"cwd":"/"},
                "linux":{"uidMappings":[{"containerID":0,"hostID":100000,"size":65536}]}}"#,
        );
        assert_eq!(container_uid(&mapped), (7, 100_007));
        let unmapped = spec(
            r#"{"ociVersion":"1.0.2","process":{"user":{"uid":7,"gid":0},"cwd":"/"},
                "linux":{"uidMappings":[{"containerID":0,"hostID":4294967295,"size":1}]}}"#,
        );
        assert_eq!(container_uid(&unmapped), (7, 65534));
    }
}
