//! Who may change what, when `genv daemon` commits a transaction for a
//! client that is not root: the one check every change goes through,
//! whichever verb made it.
//!
//! The rules compare the state as the transaction found it (after
//! cleanup) with the state it is about to write, environment by
//! environment:
//!
//! - an environment belongs to the uid that made it; only that uid (or
//!   root) may make, change or remove it, or attach, detach or change its
//!   devices;
//! - an environment is made only for the uid asking (`envs activate
//!   --uid` names someone else's only as root);
//! - a pid joins an environment only when it is a live process of the
//!   uid asking, as `/proc` says while a pidfd holds that very process
//!   (so a pid reused meanwhile cannot pass as the one checked).

use std::collections::HashMap;

use crate::caller::Peer;
use crate::error::{Error, Result};
use crate::os::procs;

use super::{Devices, Env, Envs};

/// Checks the changes from `before` to `after` against the rules for
/// `peer`. `None` on either side: not changed by this transaction.
pub(crate) fn check(
    peer: Peer,
    envs: Option<(&Envs, &Envs)>,
    devices: Option<(&Devices, &Devices)>,
) -> Result<()> {
    let owners = owners(envs);
    if let Some((before, after)) = envs {
        check_envs(peer, before, after)?;
    }
    if let Some((before, after)) = devices {
        check_devices(peer, &owners, before, after)?;
    }
    Ok(())
}

/// Each environment's owner, before or after (for the devices' check).
fn owners(envs: Option<(&Envs, &Envs)>) -> HashMap<String, i64> {
    let mut owners = HashMap::new();
    if let Some((before, after)) = envs {
        for env in before.envs.iter().chain(after.envs.iter()) {
            owners.entry(env.eid.to_string()).or_insert(env.uid);
        }
    }
    owners
}

fn check_envs(peer: Peer, before: &Envs, after: &Envs) -> Result<()> {
    let old = before.by_eid();
    let new = after.by_eid();
    for (eid, env) in &old {
        match new.get(eid) {
            None => owned(peer, env, "deactivate")?,
            Some(now) if now != env => {
                owned(peer, env, "change")?;
                if now.uid != env.uid {
                    return Err(refused(format!(
                        "environment '{}' cannot be given to another user",
                        shown(eid)
                    )));
                }
                joined(peer, env, now)?;
            }
            Some(_) => {}
        }
    }
    for (eid, env) in &new {
        if old.contains_key(eid) {
            continue;
        }
        if env.uid != i64::from(peer.uid) {
            return Err(refused(format!(
                "only root may make an environment for another user (uid {}); you are uid {}",
                env.uid, peer.uid
            )));
        }
        let empty = Env {
            pids: Vec::new(),
            kernel_ids: Vec::new(),
            ..(*env).clone()
        };
        joined(peer, &empty, env)?;
    }
    Ok(())
}

/// Every pid that joined `now` is a live process of the caller's.
fn joined(peer: Peer, was: &Env, now: &Env) -> Result<()> {
    for &pid in now.pids.iter().filter(|p| !was.pids.contains(p)) {
        let owner = u32::try_from(pid).ok().and_then(owner_of);
        if owner != Some(peer.uid) {
            return Err(refused(match owner {
                Some(uid) => format!(
                    "process {pid} belongs to {}, not to you: only its owner or root may add it to an environment",
                    procs::user_label(uid)
                ),
                None => format!(
                    "process {pid} is not running: only a live process of yours joins an environment"
                ),
            }));
        }
    }
    Ok(())
}

/// The owner of a live process, as `/proc` says while a pidfd holds it:
/// had the process exited and its pid been reused between the two looks,
/// the pidfd would say so.
fn owner_of(pid: u32) -> Option<u32> {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)?;
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()?;
    let owner = procs::owner(pid.as_raw_nonzero().get() as u32).ok()?;
    // Still the process the pidfd names: it has not exited (a pidfd
    // becomes readable when its process exits).
    (!crate::os::readable_now(&fd)).then_some(owner)
}

fn check_devices(
    peer: Peer,
    owners: &HashMap<String, i64>,
    before: &Devices,
    after: &Devices,
) -> Result<()> {
    for device in &after.devices {
        let Some(was) = before.get(device.index) else {
            continue;
        };
        if was.attachments == device.attachments {
            continue;
        }
        let changed = was
            .attachments
            .iter()
            .filter(|a| !device.attachments.contains(a))
            .chain(
                device
                    .attachments
                    .iter()
                    .filter(|a| !was.attachments.contains(a)),
            );
        for attachment in changed {
            let owner = owners.get(attachment.eid.as_str()).copied();
            if owner != Some(i64::from(peer.uid)) {
                return Err(refused(format!(
                    "environment '{}' {}; only its owner or root may attach or detach its devices",
                    shown(&attachment.eid),
                    owner_words(owner)
                )));
            }
        }
    }
    Ok(())
}

fn owned(peer: Peer, env: &Env, what: &str) -> Result<()> {
    if env.uid == i64::from(peer.uid) {
        return Ok(());
    }
    Err(refused(format!(
        "environment '{}' {}; only its owner or root may {what} it",
        shown(&env.eid),
        owner_words(Some(env.uid))
    )))
}

fn owner_words(owner: Option<i64>) -> String {
    match owner.and_then(|u| u32::try_from(u).ok()) {
        Some(uid) => format!("belongs to {}", procs::user_label(uid)),
        None => "belongs to no user you are".to_owned(),
    }
}

fn shown(eid: &str) -> String {
    crate::escape::terminal(eid).into_owned()
}

fn refused(message: String) -> Error {
    Error::Refused(message)
}
