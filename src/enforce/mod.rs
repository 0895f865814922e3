//! Enforcement: `genv enforce` and `genv usage execute`.
//!
//! A cycle takes a [`snapshot`] (GPU processes with their owners as the
//! kernel tells them, environments, devices), runs the [`rules`], pure
//! functions that record their decisions in a [`survey`], and hands the
//! resulting [`Report`] to [`execute`], the one module that sends signals
//! or detaches.

pub mod execute;
pub mod rules;
pub mod snapshot;
pub(crate) mod survey;

pub use execute::execute;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backend::{self, ComputeProcess};
use crate::state::Envs;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub index: u32,
    pub gpu_memory: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: i64,
    pub used_gpu_memory: Vec<Usage>,
    #[serde(default)]
    pub eid: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Processes {
    pub processes: Vec<Process>,
}

/// What `genv usage execute` reads on stdin.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub terminate: Processes,
    /// Device index (a string in JSON) to the environments to detach.
    pub detach: BTreeMap<String, Envs>,
}

/// Groups per-GPU compute processes by pid, with each one's environment.
pub fn processes(list: Vec<ComputeProcess>) -> Processes {
    let mut processes: Vec<Process> = Vec::new();
    for p in list {
        let usage = Usage {
            index: p.index,
            gpu_memory: format!("{}mi", p.used_memory_mib),
        };
        match processes.iter_mut().find(|q| q.pid == i64::from(p.pid)) {
            Some(q) => q.used_gpu_memory.push(usage),
            None => processes.push(Process {
                pid: p.pid.into(),
                used_gpu_memory: vec![usage],
                eid: backend::process_eid(p.pid),
            }),
        }
    }
    Processes { processes }
}

/// Which rules a cycle runs, as the command line chose them.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub non_env_processes: bool,
    pub env_devices: bool,
    pub env_memory: bool,
    pub max_devices: rules::Quota<u64>,
    /// In bytes.
    pub max_memory: rules::Quota<u64>,
}

/// Runs the rules over a snapshot, in genv 1.4.3's order.
pub fn decide<'a>(snapshot: &'a snapshot::Snapshot, chosen: &Rules) -> survey::Survey<'a> {
    let mut survey = survey::Survey::new(snapshot);
    if chosen.non_env_processes {
        rules::non_env_processes(&mut survey);
    }
    if chosen.env_devices {
        rules::env_devices(&mut survey);
    }
    if chosen.env_memory {
        rules::env_memory(&mut survey);
    }
    if chosen.max_devices.is_set() {
        rules::max_devices_per_user(&mut survey, &chosen.max_devices);
    }
    if chosen.max_memory.is_set() {
        rules::max_memory_per_user(&mut survey, &chosen.max_memory);
    }
    survey
}
