//! The rules: pure functions from a snapshot to decisions in a
//! [`Survey`](super::survey::Survey), one file each. The first four are
//! genv 1.4.3's, with its messages; the memory quota is new.

mod env_devices;
mod env_memory;
mod max_devices_per_user;
mod max_memory_per_user;
mod non_env_processes;

pub use env_devices::env_devices;
pub use env_memory::env_memory;
pub use max_devices_per_user::max_devices_per_user;
pub use max_memory_per_user::max_memory_per_user;
pub use non_env_processes::non_env_processes;

use std::collections::BTreeMap;

/// A quota for every user, and for some users one of their own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quota<T> {
    pub per_user: Option<T>,
    pub for_user: BTreeMap<String, T>,
}

impl<T: Copy> Quota<T> {
    pub fn is_set(&self) -> bool {
        self.per_user.is_some() || !self.for_user.is_empty()
    }

    pub fn of(&self, user: &str) -> Option<T> {
        self.for_user.get(user).copied().or(self.per_user)
    }
}

/// genv 1.4.3's `bytes_to_memory(bytes, "m")`: whole megabytes.
pub fn megabytes(bytes: u64) -> String {
    format!("{}m", bytes / 1_000_000)
}

#[cfg(test)]
pub mod test_support {
    //! Snapshots written out by hand, for the rules' tests.

    use crate::backend::ComputeProcess;
    use crate::enforce::snapshot::{GpuProcess, Owner, Snapshot};
    use crate::os::procs::Identity;
    use crate::state::{Attachment, Config, Device, Devices, Env, Envs};

    pub fn identity(uid: u32) -> Identity {
        Identity { uid, start_time: 1 }
    }

    pub fn env(eid: &str, uid: i64, pids: &[i64]) -> Env {
        Env {
            eid: eid.into(),
            uid,
            creation: "01/01/2026 00:00:00".into(),
            username: Some(compact_str::format_compact!("u{uid}")),
            config: Config::default(),
            pids: pids.to_vec(),
            kernel_ids: Vec::new(),
        }
    }

    pub fn envs_of(list: &[Env]) -> Envs {
        Envs {
            envs: list.to_vec(),
        }
    }

    pub fn compute(pid: u32, index: u32, mib: u64) -> ComputeProcess {
        ComputeProcess {
            pid,
            index,
            used_memory_mib: mib,
        }
    }

    /// A process of `uid` in `eid` (or none), using `mib` MiB on each
    /// listed device.
    pub fn process(pid: i64, uid: u32, eid: Option<&str>, on: &[(u32, u64)]) -> GpuProcess {
        GpuProcess {
            pid,
            usage: on.iter().map(|(i, mib)| (*i, mib << 20)).collect(),
            eid: eid.map(str::to_owned),
            identity: Some(identity(uid)),
        }
    }

    /// `n` devices of 16 GiB with `attached[i]` = (index, eid, capacity).
    pub fn devices(n: u32, attached: &[(u32, &str, Option<&str>)]) -> Devices {
        let mut devices: Vec<Device> = (0..n).map(|i| Device::new(i, 16384)).collect();
        for (index, eid, memory) in attached {
            devices[*index as usize].attachments.push(Attachment {
                eid: (*eid).into(),
                gpu_memory: memory.map(str::to_owned),
                time: "01/01/2026 00:00:00".into(),
            });
        }
        Devices { devices }
    }

    pub fn snapshot(processes: Vec<GpuProcess>, envs: Vec<Env>, devices: Devices) -> Snapshot {
        let mut snapshot = Snapshot::new(processes, envs_of(&envs), devices);
        for env in &envs {
            let uid = env.uid as u32;
            let name = env.username.clone().unwrap();
            snapshot.names.insert(uid, name.to_string());
            snapshot.owners.insert(
                env.eid.to_string(),
                Owner {
                    uid,
                    name: name.to_string(),
                },
            );
        }
        snapshot
    }

    pub fn with_memory(mut env: Env, memory: &str) -> Env {
        env.config.gpu_memory = Some(memory.into());
        env
    }

    /// The pids a survey terminates, and the (index, eids) it detaches.
    pub fn outcome(
        survey: &crate::enforce::survey::Survey,
    ) -> (Vec<i64>, Vec<(String, Vec<String>)>) {
        let report = survey.report();
        (
            report.terminate.processes.iter().map(|p| p.pid).collect(),
            report
                .detach
                .iter()
                .map(|(i, envs)| {
                    (
                        i.clone(),
                        envs.envs.iter().map(|e| e.eid.to_string()).collect(),
                    )
                })
                .collect(),
        )
    }
}
