//! One look at the machine: the GPUs' status, the environments and their
//! attachments, the compute processes, the device locks and what
//! enforcement has done. `genv monitor` turns it into metrics and
//! `genv top` into a screen; both are pure functions of it.

use std::collections::BTreeMap;

use crate::backend::{self, DeviceBackend, GpuStatus};
use crate::error::Result;
use crate::state::device_locks::{self, Holder};
use crate::state::enforcement::{self, EnforcementCounts};
use crate::state::{Device, Env, LoadOptions, StateDir};

/// A compute process and the GPUs it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    /// Its environment: `GENV_ENVIRONMENT_ID` in its environment, as genv
    /// 1.4.3 finds it, or else the environment that lists its pid.
    pub eid: Option<String>,
    /// (device index, used memory in MiB), in the order the driver lists.
    pub usage: Vec<(u32, u64)>,
}

/// Who holds and who waits for one device's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLocks {
    pub index: u32,
    pub holders: Vec<Holder>,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// What each GPU is doing (from the driver).
    pub gpus: Vec<GpuStatus>,
    pub envs: Vec<Env>,
    /// The devices as recorded, with their attachments.
    pub devices: Vec<Device>,
    pub processes: Vec<Process>,
    /// Devices whose lock someone holds or waits for.
    pub locks: Vec<DeviceLocks>,
    pub enforcement: EnforcementCounts,
}

impl Snapshot {
    /// Looks at the machine. The driver is asked outside the global lock
    /// (it may be slow); the state is read under it and written back only
    /// when cleaning up changed it.
    pub fn take(dir: &StateDir, backend: &dyn DeviceBackend) -> Result<Snapshot> {
        let gpus = backend.statuses()?;
        let compute = backend.processes()?;
        let survey = dir.survey(backend, false)?;
        let mut tx = dir.transaction(LoadOptions::default())?;
        let devices = tx.reconcile(&survey)?.devices.clone();
        let envs = tx.envs()?.envs.clone();
        tx.commit()?;
        let mut processes: Vec<Process> = Vec::new();
        let mut by_pid: BTreeMap<u32, usize> = BTreeMap::new();
        for p in compute {
            match by_pid.get(&p.pid) {
                Some(&i) => processes[i].usage.push((p.index, p.used_memory_mib)),
                None => {
                    by_pid.insert(p.pid, processes.len());
                    let eid = backend::process_eid(p.pid).or_else(|| {
                        envs.iter()
                            .find(|e| e.pids.contains(&i64::from(p.pid)))
                            .map(|e| e.eid.to_string())
                    });
                    processes.push(Process {
                        pid: p.pid,
                        eid,
                        usage: vec![(p.index, p.used_memory_mib)],
                    });
                }
            }
        }
        let envs_for_locks = crate::state::Envs { envs: envs.clone() };
        let locks = device_locks::lockable(dir)
            .into_iter()
            .map(|index| DeviceLocks {
                index,
                holders: device_locks::lock_holders(dir, index, &envs_for_locks),
            })
            .filter(|l| !l.holders.is_empty())
            .collect();
        Ok(Snapshot {
            gpus,
            envs,
            devices,
            processes,
            locks,
            enforcement: enforcement::read(dir),
        })
    }

    /// The devices an environment is attached to.
    pub fn attached(&self, eid: &str) -> impl Iterator<Item = &Device> {
        self.devices.iter().filter(move |d| d.is_attached(eid))
    }

    /// The processes of an environment.
    pub fn processes_of<'a>(&'a self, eid: &'a str) -> impl Iterator<Item = &'a Process> {
        self.processes
            .iter()
            .filter(move |p| p.eid.as_deref() == Some(eid))
    }

    /// The users with environments, by name, sorted (environments without
    /// a username are nobody's, as in genv 1.4.3).
    pub fn usernames(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .envs
            .iter()
            .filter_map(|e| e.username.as_deref())
            .filter(|n| !n.is_empty())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}
