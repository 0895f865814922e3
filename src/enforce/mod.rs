//! Enforcement. The reports say what to do; [`execute`] is the one place
//! that sends signals.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backend::{self, ComputeProcess};
use crate::env_vars;
use crate::state::{Envs, Transaction};

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

/// Terminates and detaches as the report says, printing each action as
/// genv 1.4.3 does. `GENV_TERMINATE_PROCESSES=0` only reports.
pub fn execute(
    report: &Report,
    tx: &mut Transaction<'_>,
    out: &mut String,
) -> crate::error::Result<()> {
    let terminate =
        env_vars::get(env_vars::GENV_TERMINATE_PROCESSES).is_none_or(|v| v.trim() != "0");
    // What was done, for `genv monitor`'s counters.
    let (mut terminated, mut detached) = (0u64, 0u64);
    for process in &report.terminate.processes {
        let indices: Vec<String> = process
            .used_gpu_memory
            .iter()
            .map(|u| u.index.to_string())
            .collect();
        out.push_str(&format!(
            "Terminating process {} from environment {} that is running on GPU(s) {}\n",
            process.pid,
            process.eid.as_deref().unwrap_or("N/A"),
            indices.join(",")
        ));
        if !terminate {
            continue;
        }
        // Never 0 or negative: kill() would signal whole process groups.
        let pid = i32::try_from(process.pid).ok().filter(|&p| p > 0);
        let Some(pid) = pid.and_then(rustix::process::Pid::from_raw) else {
            eprintln!("[ERROR] Refusing to terminate invalid pid {}", process.pid);
            continue;
        };
        match rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
            Ok(()) => terminated += 1,
            Err(rustix::io::Errno::PERM) => {
                eprintln!(
                    "[ERROR] Not enough permissions to terminate process {}",
                    process.pid
                )
            }
            Err(_) => eprintln!("[DEBUG] Process {} already terminated", process.pid),
        }
    }
    let devices = tx.devices_mut()?;
    for (index, envs) in &report.detach {
        let Ok(index) = index.parse::<u32>() else {
            eprintln!("[ERROR] Invalid device index {index:?} in the report");
            continue;
        };
        for env in &envs.envs {
            out.push_str(&format!(
                "Detaching environment {} of user {} from device {index}\n",
                env.eid,
                env.username.as_deref().unwrap_or("N/A")
            ));
            if let Some(device) = devices.get_mut(index)
                && device.detach(&env.eid)
            {
                detached += 1;
            }
        }
    }
    crate::state::enforcement::record(tx, terminated, detached)
}
