//! What the rules decided in one cycle: the processes to terminate, the
//! environments to detach from each device, and the lines they printed.
//! Decisions only; nothing here acts.

use std::collections::{BTreeMap, BTreeSet};

use super::snapshot::Snapshot;
use super::{Process, Processes, Report, Usage};
use crate::state::Envs;

pub struct Survey<'a> {
    pub snapshot: &'a Snapshot,
    pids: BTreeSet<i64>,
    /// Device index to environments, in the order the rules detached them.
    detach: Vec<(u32, BTreeSet<String>)>,
    /// What the rules said, one line each, as genv 1.4.3 prints them.
    pub lines: Vec<String>,
}

impl<'a> Survey<'a> {
    pub fn new(snapshot: &'a Snapshot) -> Self {
        Survey {
            snapshot,
            pids: BTreeSet::new(),
            detach: Vec::new(),
            lines: Vec::new(),
        }
    }

    pub fn say(&mut self, line: String) {
        self.lines.push(line);
    }

    pub fn terminate(&mut self, pid: i64) {
        self.pids.insert(pid);
    }

    /// Detaches environments from a device, and terminates their
    /// processes on it.
    pub fn detach(&mut self, index: u32, eids: &[&str]) {
        let pids: Vec<i64> = eids
            .iter()
            .flat_map(|eid| self.snapshot.processes_of(eid))
            .filter(|p| p.uses(index))
            .map(|p| p.pid)
            .collect();
        match self.detach.iter_mut().find(|(i, _)| *i == index) {
            Some((_, set)) => set.extend(eids.iter().map(|e| (*e).to_owned())),
            None => self
                .detach
                .push((index, eids.iter().map(|e| (*e).to_owned()).collect())),
        }
        self.pids.extend(pids);
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty() && self.detach.is_empty()
    }

    /// The report, as `genv usage execute` reads it: the processes in the
    /// snapshot's order, the environments of each device in the state's.
    pub fn report(&self) -> Report {
        let processes = self
            .snapshot
            .processes
            .iter()
            .filter(|p| self.pids.contains(&p.pid))
            .map(|p| Process {
                pid: p.pid,
                used_gpu_memory: p
                    .usage
                    .iter()
                    .map(|(index, bytes)| Usage {
                        index: *index,
                        gpu_memory: format!("{}mi", bytes >> 20),
                    })
                    .collect(),
                eid: p.eid.clone(),
            })
            .collect();
        let mut detach = BTreeMap::new();
        for (index, eids) in &self.detach {
            let envs = self
                .snapshot
                .envs
                .envs
                .iter()
                .filter(|env| eids.contains(env.eid.as_str()))
                .cloned()
                .collect();
            detach.insert(index.to_string(), Envs { envs });
        }
        Report {
            terminate: Processes { processes },
            detach,
        }
    }
}
