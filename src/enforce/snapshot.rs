//! What one enforcement cycle sees: the GPU processes with their owners as
//! the kernel tells them, the environments and the devices. Taking it
//! reads `/proc`; everything after it (the rules) is pure.

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::rc::Rc;

use crate::backend::{ComputeProcess, DeviceBackend};
use crate::env_vars;
use crate::error::Result;
use crate::error::reference::log;
use crate::memory;
use crate::os::procs::{self, Identity, ProcError};
use crate::state::{Devices, Envs, LoadOptions, StateDir};

/// A GPU process as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuProcess {
    pub pid: i64,
    /// Memory used on each GPU, in GPU order of the driver's list.
    pub usage: Vec<(u32, u64)>,
    /// The environment the process runs in, when the kernel confirms it
    /// (see [`membership`]); `None` for a process outside environments.
    pub eid: Option<String>,
    /// Owner and start time when the snapshot was taken; `None` when
    /// `/proc` could not tell (the process is never signalled then).
    pub identity: Option<Identity>,
}

impl GpuProcess {
    pub fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.usage.iter().map(|(index, _)| *index)
    }

    pub fn bytes_on(&self, index: u32) -> u64 {
        self.usage
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, b)| *b)
            .sum()
    }

    pub fn uses(&self, index: u32) -> bool {
        self.usage.iter().any(|(i, _)| *i == index)
    }
}

/// Whose an environment is, for the per-user quotas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub name: String,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub processes: Vec<GpuProcess>,
    pub envs: Envs,
    pub devices: Devices,
    /// Environment id to its owner.
    pub owners: HashMap<String, Owner>,
    /// Uid to user name, for processes' owners.
    pub names: BTreeMap<u32, String>,
    /// A pidfd for each process opened while taking the snapshot: a
    /// signal through it reaches that process or none, whatever became of
    /// its pid.
    pub pidfds: HashMap<i64, Rc<OwnedFd>>,
    /// Environment id to the host it runs on, when the snapshot is made
    /// of many hosts' (`genv remote enforce`); empty for one machine.
    pub hosts: HashMap<String, usize>,
    /// Environment id to the positions of its processes, made on first use.
    by_env: OnceCell<HashMap<String, Vec<usize>>>,
}

impl Snapshot {
    pub fn new(processes: Vec<GpuProcess>, envs: Envs, devices: Devices) -> Self {
        Snapshot {
            processes,
            envs,
            devices,
            ..Snapshot::default()
        }
    }

    /// The processes of an environment, in the driver's order.
    pub fn processes_of<'s>(&'s self, eid: &str) -> impl Iterator<Item = &'s GpuProcess> + 's {
        let index = self.by_env.get_or_init(|| {
            let mut index: HashMap<String, Vec<usize>> = HashMap::new();
            for (i, p) in self.processes.iter().enumerate() {
                if let Some(eid) = &p.eid {
                    index.entry(eid.clone()).or_default().push(i);
                }
            }
            index
        });
        index
            .get(eid)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|&i| &self.processes[i])
    }

    pub fn owner(&self, eid: &str) -> Option<&Owner> {
        self.owners.get(eid)
    }

    /// The name a uid goes by: its login name, else the number.
    pub fn user_name(&self, uid: u32) -> String {
        self.names
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }
}

/// What `/proc` says about one process, as [`membership`] needs it.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// With a pidfd, the start time is not read (0): the pidfd pins the
    /// process.
    pub identity: Result<Identity, ProcError>,
    /// Its `GENV_ENVIRONMENT_ID`.
    pub claim: Result<Option<String>, ProcError>,
    pub pidfd: Option<Rc<OwnedFd>>,
}

/// The environment a process belongs to, or `None`.
///
/// Only the process's own `GENV_ENVIRONMENT_ID` (set by its shell before
/// it started, readable only through the kernel) names it, and the
/// environment must exist and belong to the process's owner (its uid in
/// `envs.json`). A pid listed in `envs.json` proves nothing: any user can
/// write an environment with another user's uid that lists another user's
/// process, and root's enforcement would then act on that process for it.
/// A process that joined only through such a list (as genv 1.4.3's SDK
/// registers one) is outside environments here, as it is for 1.4.3.
pub fn membership(inspection: &Inspection, envs: &Envs) -> Option<String> {
    let identity = inspection.identity.as_ref().ok()?;
    let Ok(Some(eid)) = &inspection.claim else {
        return None;
    };
    envs.get(eid)
        .filter(|env| env.uid >= 0 && env.uid == i64::from(identity.uid))
        .map(|_| eid.clone())
}

/// [`membership`], and where `genv daemon` keeps the state (`attested`):
/// the environment of the process's owner that lists its pid, as the
/// daemon added it only for its owner (genv 1.4.3's SDK registers a
/// process so, without setting its variable). A pid reused since by
/// another user's process is not that user's environment's.
pub fn membership_attested(
    pid: u32,
    inspection: &Inspection,
    envs: &Envs,
    attested: bool,
) -> Option<String> {
    if let Some(eid) = membership(inspection, envs) {
        return Some(eid);
    }
    if !attested {
        return None;
    }
    let identity = inspection.identity.as_ref().ok()?;
    envs.envs
        .iter()
        .find(|env| env.uid == i64::from(identity.uid) && env.pids.contains(&i64::from(pid)))
        .map(|env| env.eid.to_string())
}

/// The order in which CPython 3 iterates a `set` of the given pids added
/// in this order: genv 1.4.3 lists GPU processes by iterating such a set,
/// and `--env-memory` terminates them greedily in that order. (An int's
/// hash is itself; open addressing with 9 linear probes then perturbed
/// steps; the table starts with 8 slots and grows to hold 4 times what it
/// holds once 3/5 full.)
pub fn python_set_order(pids: &[u32]) -> Vec<u32> {
    const LINEAR_PROBES: usize = 9;
    fn insert(table: &mut [Option<u32>], key: u32) -> bool {
        let mask = table.len() - 1;
        let mut perturb = key as usize;
        let mut i = key as usize & mask;
        loop {
            let probes = if i + LINEAR_PROBES <= mask {
                LINEAR_PROBES
            } else {
                0
            };
            for slot in &mut table[i..=i + probes] {
                match slot {
                    None => {
                        *slot = Some(key);
                        return true;
                    }
                    Some(k) if *k == key => return false,
                    Some(_) => {}
                }
            }
            perturb >>= 5;
            i = (i.wrapping_mul(5).wrapping_add(1).wrapping_add(perturb)) & mask;
        }
    }
    let mut table: Vec<Option<u32>> = vec![None; 8];
    let mut used = 0usize;
    for &pid in pids {
        if !insert(&mut table, pid) {
            continue;
        }
        used += 1;
        let mask = table.len() - 1;
        if used * 5 >= mask * 3 {
            let minused = if used > 50_000 { used * 2 } else { used * 4 };
            let mut size = 8;
            while size <= minused {
                size <<= 1;
            }
            let old = std::mem::replace(&mut table, vec![None; size]);
            for key in old.into_iter().flatten() {
                insert(&mut table, key);
            }
        }
    }
    table.into_iter().flatten().collect()
}

/// Groups per-GPU rows by pid, in genv 1.4.3's order (see
/// [`python_set_order`]).
pub fn group(list: &[ComputeProcess]) -> Vec<(u32, Vec<(u32, u64)>)> {
    let mut grouped: Vec<(u32, Vec<(u32, u64)>)> = Vec::new();
    let mut at: HashMap<u32, usize> = HashMap::new();
    for p in list {
        let usage = (p.index, p.used_memory_mib << 20);
        match at.get(&p.pid) {
            Some(&i) => grouped[i].1.push(usage),
            None => {
                at.insert(p.pid, grouped.len());
                grouped.push((p.pid, vec![usage]));
            }
        }
    }
    let order = python_set_order(&grouped.iter().map(|(pid, _)| *pid).collect::<Vec<_>>());
    let mut by_pid: HashMap<u32, Vec<(u32, u64)>> = grouped.into_iter().collect();
    order
        .into_iter()
        .filter_map(|pid| by_pid.remove(&pid).map(|usage| (pid, usage)))
        .collect()
}

/// The owners of the environments: the uid `envs.json` records, named by
/// the password database (or the recorded name, or the number).
fn owners(envs: &Envs, names: &mut BTreeMap<u32, String>) -> HashMap<String, Owner> {
    let mut owners = HashMap::new();
    for env in &envs.envs {
        let Ok(uid) = u32::try_from(env.uid) else {
            continue;
        };
        let name = names
            .entry(uid)
            .or_insert_with(|| {
                procs::username(uid)
                    .or_else(|| {
                        env.username
                            .as_deref()
                            .filter(|n| !n.is_empty())
                            .map(str::to_owned)
                    })
                    .unwrap_or_else(|| uid.to_string())
            })
            .clone();
        owners.insert(env.eid.to_string(), Owner { uid, name });
    }
    owners
}

/// Builds a snapshot from the parts, inspecting each process with
/// `inspect` (`/proc` in [`take`], a table in tests).
pub fn assemble(
    list: &[ComputeProcess],
    envs: Envs,
    devices: Devices,
    attested: bool,
    mut inspect: impl FnMut(u32) -> Inspection,
) -> Snapshot {
    let mut names = BTreeMap::new();
    let mut pidfds = HashMap::new();
    let owners = owners(&envs, &mut names);
    let processes = group(list)
        .into_iter()
        .map(|(pid, usage)| {
            let inspection = inspect(pid);
            let eid = membership_attested(pid, &inspection, &envs, attested);
            if let Some(pidfd) = inspection.pidfd {
                pidfds.insert(i64::from(pid), pidfd);
            }
            let identity = inspection.identity.ok();
            if let Some(identity) = identity {
                names.entry(identity.uid).or_insert_with(|| {
                    procs::username(identity.uid).unwrap_or_else(|| identity.uid.to_string())
                });
            }
            GpuProcess {
                pid: pid.into(),
                usage,
                eid,
                identity,
            }
        })
        .collect();
    Snapshot {
        owners,
        names,
        pidfds,
        ..Snapshot::new(processes, envs, devices)
    }
}

/// What `/proc` says about a process. A process that cannot be inspected
/// gets genv 1.4.3's warning, once per snapshot.
pub fn inspect(pid: u32) -> Inspection {
    // A pidfd first, then the owner: while the pidfd's process lives, its
    // pid is its own. Without pidfds (before Linux 5.3), the start time.
    let pidfd = i32::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .and_then(rustix::process::Pid::from_raw)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok())
        .map(Rc::new);
    let identity = match pidfd {
        Some(_) => procs::owner(pid).map(|uid| Identity { uid, start_time: 0 }),
        None => procs::identity(pid),
    };
    let claim = match identity {
        Ok(_) => procs::environ_lookup(pid, env_vars::GENV_ENVIRONMENT_ID),
        Err(e) => Err(e),
    };
    match (&identity, &claim) {
        (_, Err(ProcError::Denied)) => log::no_permission_to_query(pid),
        (_, Err(ProcError::Gone)) => log::already_terminated(pid),
        _ => {}
    }
    Inspection {
        identity,
        claim,
        pidfd,
    }
}

/// Takes a snapshot: the GPU processes (the device query), then, under the
/// global lock, the environments and devices as every genv command sees
/// them (dead ones dropped).
pub fn take(dir: &StateDir, backend: &dyn DeviceBackend) -> Result<Snapshot> {
    let list = backend.processes()?;
    procs::raise_open_files_limit();
    let survey = dir.survey(backend, false)?;
    let mut tx = dir.transaction(LoadOptions::default())?;
    tx.reconcile(&survey)?;
    let envs = tx.envs()?.clone();
    let devices = tx.devices()?.clone();
    tx.commit()?;
    // Where the daemon owns the state, the pids it lists were checked.
    let attested = dir.daemon_socket().is_some();
    Ok(assemble(&list, envs, devices, attested, inspect))
}

/// Memory in bytes, as genv 1.4.3 reads a memory string; `None` when it
/// is not one.
pub fn bytes(value: &str) -> Option<u64> {
    memory::to_bytes(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::rules::test_support::*;

    fn inspection(uid: u32, claim: Option<&str>) -> Inspection {
        Inspection {
            identity: Ok(identity(uid)),
            claim: Ok(claim.map(str::to_owned)),
            pidfd: None,
        }
    }

    #[test]
    fn a_claim_counts_only_for_an_existing_environment_of_the_owner() {
        let envs = envs_of(&[env("a", 1000, &[10]), env("r", 0, &[11])]);
        assert_eq!(
            membership(&inspection(1000, Some("a")), &envs).as_deref(),
            Some("a")
        );
        // Another user's environment, or one that does not exist.
        assert_eq!(membership(&inspection(1001, Some("a")), &envs), None);
        assert_eq!(membership(&inspection(1000, Some("zz")), &envs), None);
        // Root's own claim on root's environment.
        assert_eq!(
            membership(&inspection(0, Some("r")), &envs).as_deref(),
            Some("r")
        );
    }

    #[test]
    fn a_listed_pid_never_makes_a_process_an_environments() {
        // `envs.json` lists pid 10 for alice's environment: a list anyone
        // can write, so the process without a claim of its own is outside.
        let envs = envs_of(&[env("a", 1000, &[10]), env("r", 0, &[11])]);
        assert_eq!(membership(&inspection(1000, None), &envs), None);
        assert_eq!(membership(&inspection(1001, None), &envs), None);
        assert_eq!(membership(&inspection(0, None), &envs), None);
        // A process that could not be inspected belongs nowhere.
        let unknown = Inspection {
            identity: Err(ProcError::Denied),
            claim: Err(ProcError::Denied),
            pidfd: None,
        };
        assert_eq!(membership(&unknown, &envs), None);
    }

    #[test]
    fn pids_in_the_order_of_a_python_set() {
        // As genv 1.4.3 listed them (`list(set([...]))` in CPython 3.11).
        assert_eq!(
            python_set_order(&[19303, 19304, 19305]),
            [19304, 19305, 19303]
        );
        assert_eq!(python_set_order(&[3, 11, 3, 19]), [11, 19, 3]);
        assert_eq!(
            python_set_order(&[7, 1, 9, 2, 100, 64]),
            [64, 1, 2, 100, 7, 9]
        );
        // Through several resizes, against CPython 3.11's output.
        for (n, first, checksum) in [
            (5, [1396804, 1000, 47853, 2698902, 1349951], 13593216),
            (20, [235265, 282118, 2698902, 2745755, 2792608], 201734671),
            (100, [282118, 3776521, 375824, 3870227, 469530], 99726223),
            (1000, [1566721, 2113539, 2945030, 276486, 3776521], 7903609),
            (
                5000,
                [3866672, 3407928, 3670073, 2949184, 3211329],
                468059713,
            ),
        ] {
            let pids: Vec<u32> = (0..n as u64)
                .map(|i| ((i * 7919 * 104729) % 4_000_000 + 1000) as u32)
                .collect();
            let order = python_set_order(&pids);
            assert_eq!(order[..5], first, "{n}");
            let sum = order
                .iter()
                .enumerate()
                .map(|(i, v)| i as u64 * u64::from(*v))
                .sum::<u64>()
                % 1_000_000_007;
            assert_eq!(sum, checksum, "{n}");
        }
    }

    #[test]
    fn rows_are_grouped_by_pid_in_python_set_order() {
        let list = [compute(7, 1, 100), compute(3, 0, 10), compute(7, 0, 5)];
        // A Python set of 7 and 3 iterates 3 first.
        assert_eq!(
            group(&list),
            vec![
                (3, vec![(0, 10 << 20)]),
                (7, vec![(1, 100 << 20), (0, 5 << 20)])
            ]
        );
    }
}
