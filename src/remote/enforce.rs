//! `genv remote enforce`: the rules of `genv enforce` over the snapshots
//! of many hosts, and a report for each host to execute.
//!
//! The rules about one host's processes and environments (non-environment
//! processes, attached devices, memory capacity) run on each host's own
//! snapshot, their lines prefixed with `[host]`. The per-user quotas (of
//! devices and of memory) run once, on one snapshot made of all the
//! hosts': devices renumbered one after another, environment ids and pids
//! made distinct per host, users matched by name (a uid means nothing on
//! another machine). What they decide is mapped back to each host. The
//! rules themselves are the local ones, unchanged.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use crate::enforce::snapshot::{GpuProcess, Owner, Snapshot, bytes};
use crate::enforce::{self, Process, Processes, Report, Rules, rules::Quota};
use crate::os::procs::Identity;
use crate::state::{Devices, Envs};

/// What `genv usage snapshot` (no `--type`) answers, ours and genv
/// 1.4.3's alike.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Usage {
    #[serde(default)]
    pub processes: Processes,
    #[serde(default)]
    pub envs: Envs,
    #[serde(default)]
    pub devices: Devices,
}

/// Users by name, each given a number of its own for the rules (which
/// count memory by uid), the same on every host.
#[derive(Default)]
struct Users(BTreeMap<String, u32>);

impl Users {
    fn uid(&mut self, name: &str) -> u32 {
        let next = self.0.len() as u32 + 1;
        *self.0.entry(name.to_owned()).or_insert(next)
    }
}

/// One host's answer as the rules see it: owners named as the host
/// recorded them, a process in the environment the host said (when that
/// environment exists) and owned by that environment's user.
fn host_snapshot(usage: &Usage, users: &mut Users) -> Snapshot {
    let mut owners = HashMap::new();
    let mut names = BTreeMap::new();
    for env in &usage.envs.envs {
        let name = env
            .username
            .as_deref()
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| env.uid.to_string());
        let uid = users.uid(&name);
        names.insert(uid, name.clone());
        owners.insert(env.eid.to_string(), Owner { uid, name });
    }
    let processes = usage
        .processes
        .processes
        .iter()
        .map(|p| {
            let eid = p.eid.clone().filter(|e| owners.contains_key(e));
            GpuProcess {
                pid: p.pid,
                usage: p
                    .used_gpu_memory
                    .iter()
                    .map(|u| (u.index, bytes(&u.gpu_memory).unwrap_or(0)))
                    .collect(),
                identity: eid.as_ref().map(|e| Identity {
                    uid: owners[e].uid,
                    start_time: 0,
                }),
                eid,
            }
        })
        .collect();
    let mut snapshot = Snapshot::new(processes, usage.envs.clone(), usage.devices.clone());
    snapshot.owners = owners;
    snapshot.names = names;
    snapshot
}

/// Separates a host's number from its own ids in the combined snapshot.
const SEP: char = '\u{1f}';
const PID_SHIFT: u32 = 32;

/// All hosts' snapshots as one: each host's devices after the previous
/// host's (the first index of each host returned), eids `host<SEP>eid`,
/// pids `host << 32 | pid`.
fn combine(snapshots: &[Snapshot]) -> (Snapshot, Vec<u32>) {
    let mut combined = Snapshot::default();
    let mut offsets = Vec::with_capacity(snapshots.len());
    let mut offset = 0u32;
    for (h, s) in snapshots.iter().enumerate() {
        offsets.push(offset);
        let eid = |e: &str| format!("{h}{SEP}{e}");
        for env in &s.envs.envs {
            let mut env = env.clone();
            env.eid = eid(&env.eid).into();
            combined.hosts.insert(env.eid.to_string(), h);
            combined.envs.envs.push(env);
        }
        let mut end = offset;
        for device in &s.devices.devices {
            let mut device = device.clone();
            device.index = device.index.saturating_add(offset);
            end = end.max(device.index.saturating_add(1));
            for a in &mut device.attachments {
                a.eid = eid(&a.eid);
            }
            combined.devices.devices.push(device);
        }
        for p in &s.processes {
            // A GPU the host's devices do not list still gets a number
            // of this host's.
            end = p
                .indices()
                .map(|i| i.saturating_add(offset).saturating_add(1))
                .fold(end, u32::max);
            combined.processes.push(GpuProcess {
                pid: ((h as i64) << PID_SHIFT) | (p.pid & 0xffff_ffff),
                usage: p
                    .usage
                    .iter()
                    .map(|(i, b)| (i.saturating_add(offset), *b))
                    .collect(),
                eid: p.eid.as_deref().map(eid),
                identity: p.identity,
            });
        }
        for (e, owner) in &s.owners {
            combined.owners.insert(eid(e), owner.clone());
        }
        combined.names.extend(s.names.clone());
        offset = end;
    }
    (combined, offsets)
}

/// The part of a report of the combined snapshot that is host `h`'s,
/// with the host's own ids.
fn part_of(report: &Report, h: usize, offsets: &[u32]) -> Report {
    let prefix = format!("{h}{SEP}");
    let first = offsets[h];
    let end = offsets.get(h + 1).copied().unwrap_or(u32::MAX);
    let own = |e: &str| e.strip_prefix(&prefix).map(str::to_owned);
    let processes = report
        .terminate
        .processes
        .iter()
        .filter(|p| (p.pid >> PID_SHIFT) as usize == h)
        .map(|p| Process {
            pid: p.pid & 0xffff_ffff,
            used_gpu_memory: p
                .used_gpu_memory
                .iter()
                .map(|u| enforce::Usage {
                    index: u.index.saturating_sub(first),
                    gpu_memory: u.gpu_memory.clone(),
                })
                .collect(),
            eid: p.eid.as_deref().and_then(own),
        })
        .collect();
    let mut detach = BTreeMap::new();
    for (index, envs) in &report.detach {
        let Ok(index) = index.parse::<u32>() else {
            continue;
        };
        if index < first || index >= end {
            continue;
        }
        let envs: Vec<_> = envs
            .envs
            .iter()
            .filter_map(|env| {
                let mut env = env.clone();
                env.eid = own(&env.eid)?.into();
                Some(env)
            })
            .collect();
        if !envs.is_empty() {
            detach.insert(index.saturating_sub(first).to_string(), Envs { envs });
        }
    }
    Report {
        terminate: Processes { processes },
        detach,
    }
}

/// `extra` added to `report`: processes not already there, environments
/// not already detached from a device.
fn merge(report: &mut Report, extra: Report) {
    for p in extra.terminate.processes {
        if !report.terminate.processes.iter().any(|q| q.pid == p.pid) {
            report.terminate.processes.push(p);
        }
    }
    for (index, envs) in extra.detach {
        let into = report.detach.entry(index).or_default();
        for env in envs.envs {
            if into.get(&env.eid).is_none() {
                into.envs.push(env);
            }
        }
    }
}

pub(crate) fn is_empty(report: &Report) -> bool {
    report.terminate.processes.is_empty() && report.detach.is_empty()
}

/// What one cycle over many hosts decided: the rules' lines, in genv
/// 1.4.3's order, and a report for each host (in the hosts' order).
pub(crate) struct Decision {
    pub lines: Vec<String>,
    pub reports: Vec<Report>,
}

/// Runs `rules` over the hosts' answers, named by `hostnames`.
pub(crate) fn decide(hosts: &[(&str, &Usage)], rules: &Rules) -> Decision {
    let mut users = Users::default();
    let snapshots: Vec<Snapshot> = hosts
        .iter()
        .map(|(_, usage)| host_snapshot(usage, &mut users))
        .collect();
    let local = Rules {
        max_devices: Quota::default(),
        max_memory: Quota::default(),
        ..rules.clone()
    };
    let mut lines = Vec::new();
    let mut reports = Vec::with_capacity(hosts.len());
    for ((hostname, _), snapshot) in hosts.iter().zip(&snapshots) {
        let survey = enforce::decide(snapshot, &local);
        let host = crate::escape::terminal(hostname);
        lines.extend(survey.lines.iter().map(|l| format!("[{host}] {l}")));
        reports.push(survey.report());
    }
    let quotas = Rules {
        max_devices: rules.max_devices.clone(),
        max_memory: rules.max_memory.clone(),
        ..Rules::default()
    };
    if quotas.max_devices.is_set() || quotas.max_memory.is_set() {
        let (combined, offsets) = combine(&snapshots);
        let survey = enforce::decide(&combined, &quotas);
        lines.extend(survey.lines.iter().cloned());
        let report = survey.report();
        for (h, into) in reports.iter_mut().enumerate() {
            merge(into, part_of(&report, h, &offsets));
        }
    }
    Decision { lines, reports }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::Usage as Use;
    use crate::state::{Attachment, Config, Device, Env};

    fn env(eid: &str, user: &str, uid: i64) -> Env {
        Env {
            eid: eid.into(),
            uid,
            creation: "01/01/2026 00:00:00".into(),
            username: Some(user.into()),
            config: Config::default(),
            pids: vec![],
            kernel_ids: vec![],
        }
    }

    /// A host with `n` devices, environment `eid` of `user` attached to
    /// `attached`, and a process of it on each of those devices.
    fn host(n: u32, eid: &str, user: &str, uid: i64, attached: &[u32], pid: i64) -> Usage {
        let mut devices: Vec<Device> = (0..n).map(|i| Device::new(i, 16384)).collect();
        for &i in attached {
            devices[i as usize].attachments.push(Attachment {
                eid: eid.into(),
                gpu_memory: None,
                time: "01/01/2026 00:00:00".into(),
            });
        }
        Usage {
            processes: Processes {
                processes: attached
                    .iter()
                    .enumerate()
                    .map(|(k, &i)| Process {
                        pid: pid + k as i64,
                        used_gpu_memory: vec![Use {
                            index: i,
                            gpu_memory: "100mi".into(),
                        }],
                        eid: Some(eid.into()),
                    })
                    .collect(),
            },
            envs: Envs {
                envs: vec![env(eid, user, uid)],
            },
            devices: Devices { devices },
        }
    }

    fn quota(n: u64) -> Rules {
        Rules {
            max_devices: Quota {
                per_user: Some(n),
                ..Quota::default()
            },
            ..Rules::default()
        }
    }

    #[test]
    fn a_device_quota_counts_every_host() {
        // alice: one device on each host (uids differ), within 2 on each
        // host alone, over it together.
        let a = host(2, "x", "alice", 1000, &[1], 50);
        let b = host(2, "y", "alice", 2000, &[0, 1], 50);
        let decision = decide(&[("a", &a), ("b", &b)], &quota(2));
        assert_eq!(
            decision.lines,
            ["User alice is using 3 devices on 2 hosts which is 1 more than the maximum allowed"]
        );
        let ra = &decision.reports[0];
        assert_eq!(ra.terminate.processes.len(), 1);
        assert_eq!(ra.terminate.processes[0].pid, 50);
        assert_eq!(ra.terminate.processes[0].used_gpu_memory[0].index, 1);
        assert_eq!(ra.detach["1"].envs[0].eid, "x");
        assert!(is_empty(&decision.reports[1]));

        let decision = decide(&[("a", &a), ("b", &b)], &quota(3));
        assert!(decision.lines.is_empty());
        assert!(decision.reports.iter().all(is_empty));
    }

    #[test]
    fn host_rules_name_their_host() {
        let mut a = host(2, "x", "alice", 1000, &[1], 50);
        a.processes.processes[0].used_gpu_memory[0].index = 0;
        let b = host(1, "y", "bob", 1000, &[0], 60);
        let rules = Rules {
            env_devices: true,
            ..Rules::default()
        };
        let decision = decide(&[("a", &a), ("b", &b)], &rules);
        assert_eq!(
            decision.lines,
            ["[a] Process 50 from environment x is using non-attached GPU(s) 0"]
        );
        assert_eq!(decision.reports[0].terminate.processes[0].pid, 50);
        assert!(is_empty(&decision.reports[1]));
    }

    #[test]
    fn a_memory_quota_counts_every_host_by_name() {
        let a = host(1, "x", "alice", 1000, &[0], 50);
        let b = host(1, "y", "alice", 2000, &[0], 50);
        let rules = Rules {
            max_memory: Quota {
                per_user: Some(20 << 30),
                ..Quota::default()
            },
            ..Rules::default()
        };
        // 16 GiB reserved on each host: 32 GiB together, over 20.
        let decision = decide(&[("a", &a), ("b", &b)], &rules);
        assert_eq!(decision.lines.len(), 1, "{:?}", decision.lines);
        assert!(decision.lines[0].contains("alice"), "{:?}", decision.lines);
        assert_eq!(decision.reports[0].detach["0"].envs[0].eid, "x");
        assert!(is_empty(&decision.reports[1]));
    }
}
