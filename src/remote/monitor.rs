//! `genv remote monitor`: the metrics of `genv monitor` for many hosts in
//! one exporter, every series labelled with its `hostname` first, as genv
//! 1.4.3 labels them.
//!
//! Each host is asked once a collection, with one SSH command: whether
//! genv is installed there and its snapshot (`genv usage snapshot`, which
//! genv 1.4.3 answers too), then its GPUs' state from `nvidia-smi`. The
//! families are the local monitor's ([`crate::monitor::metrics::collect`])
//! over a snapshot made of that answer.

use std::collections::BTreeMap;

use crate::backend::GpuStatus;
use crate::monitor::metrics::{self, Family};
use crate::monitor::snapshot::{Process, Snapshot};

use super::enforce::Usage;

/// Separates the snapshot from the GPUs' lines in a host's answer.
const MARK: &str = "--genv-remote-monitor--";

/// The remote command (for `sh -c`): the snapshot, or `none` when genv is
/// not installed, then the GPUs as genv 1.4.3 queries them.
pub(crate) fn script() -> String {
    format!(
        "if command -v genv >/dev/null 2>&1; then genv usage snapshot || exit $?; else echo none; fi; \
         echo {MARK}; \
         nvidia-smi --query-gpu=index,utilization.gpu,temperature.gpu,memory.used,memory.total \
         --format=csv,noheader,nounits 2>/dev/null || true"
    )
}

/// A number from nvidia-smi's CSV, `None` for `[N/A]` and the like.
fn number<T: std::str::FromStr>(field: &str) -> Option<T> {
    field.trim().parse().ok()
}

/// One host's answer to [`script`]: its snapshot for the metrics, and
/// whether genv is installed there.
pub(crate) fn parse(answer: &str) -> Result<(Snapshot, bool), String> {
    let (head, gpus) = answer
        .split_once(MARK)
        .ok_or_else(|| "the answer is not in the expected shape".to_owned())?;
    let head = head.trim();
    let installed = head != "none";
    let usage: Usage = if installed {
        serde_json::from_str(head).map_err(|e| format!("cannot read the snapshot: {e}"))?
    } else {
        Usage::default()
    };
    let gpus = gpus
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            if f.len() != 5 {
                return None;
            }
            Some(GpuStatus {
                index: number(f[0])?,
                utilization: number(f[1]),
                temperature: number(f[2]),
                used_memory_mib: number(f[3]),
                total_memory_mib: number(f[4]).unwrap_or(0),
            })
        })
        .collect();
    let processes = usage
        .processes
        .processes
        .iter()
        .filter_map(|p| {
            Some(Process {
                pid: u32::try_from(p.pid).ok()?,
                eid: p.eid.clone(),
                usage: p
                    .used_gpu_memory
                    .iter()
                    .map(|u| {
                        let bytes = crate::memory::to_bytes(&u.gpu_memory).unwrap_or(0);
                        (u.index, bytes >> 20)
                    })
                    .collect(),
            })
        })
        .collect();
    Ok((
        Snapshot {
            gpus,
            envs: usage.envs.envs,
            devices: usage.devices.devices,
            processes,
            ..Snapshot::default()
        },
        installed,
    ))
}

/// What the local monitor knows and a remote snapshot does not tell: the
/// device locks and the enforcement counts of that machine.
const LOCAL_ONLY: [&str; 3] = [
    "genv_device_lock_holders",
    "genv_device_lock_waiters",
    "genv_enforcement_actions",
];

/// The families of every host that answered, each series labelled with
/// its host first; families in the local monitor's order.
pub(crate) fn families(hosts: &[(&str, &Snapshot, bool)]) -> Vec<Family> {
    let mut merged: Vec<Family> = Vec::new();
    let mut at: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (hostname, snapshot, installed) in hosts {
        for mut family in metrics::collect(snapshot) {
            if LOCAL_ONLY.contains(&family.name) {
                continue;
            }
            for sample in &mut family.samples {
                if family.name == "genv_is_installed" {
                    sample.value = if *installed { 1.0 } else { 0.0 };
                }
                sample
                    .labels
                    .insert(0, ("hostname", (*hostname).to_owned()));
            }
            match at.get(family.name) {
                Some(&i) => merged[i].samples.append(&mut family.samples),
                None => {
                    at.insert(family.name, merged.len());
                    merged.push(family);
                }
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = r#"{"processes": {"processes": [{"pid": 7, "used_gpu_memory": [{"index": 1, "gpu_memory": "300mi"}], "eid": "e"}]},
 "envs": {"envs": [{"eid": "e", "uid": 1000, "creation": "01/01/2026 00:00:00", "username": "alice", "config": {}, "pids": []}]},
 "devices": {"devices": [{"index": 0, "total_memory": "16384mi", "attachments": []}, {"index": 1, "total_memory": "16384mi", "attachments": [{"eid": "e", "gpu_memory": null, "time": "01/01/2026 00:00:00"}]}]}}
--genv-remote-monitor--
0, 5, 40, 100, 16384
1, [N/A], 41, 300, 16384
"#;

    fn value(families: &[Family], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        families
            .iter()
            .find(|f| f.name == name)?
            .samples
            .iter()
            .find(|s| {
                s.labels.len() == labels.len()
                    && s.labels
                        .iter()
                        .zip(labels)
                        .all(|(a, b)| a.0 == b.0 && a.1 == b.1)
            })
            .map(|s| s.value)
    }

    #[test]
    fn every_series_names_its_host() {
        let (a, installed) = parse(ANSWER).unwrap();
        assert!(installed);
        assert_eq!(a.gpus.len(), 2);
        assert_eq!(a.gpus[1].utilization, None);
        assert_eq!(a.processes[0].usage, vec![(1, 300)]);
        let (b, installed) = parse("none\n--genv-remote-monitor--\n0, 1, 2, 3, 4\n").unwrap();
        assert!(!installed);
        let all = families(&[("a", &a, true), ("b", &b, false)]);
        assert_eq!(
            value(&all, "genv_environments_total", &[("hostname", "a")]),
            Some(1.0)
        );
        assert_eq!(
            value(&all, "genv_is_installed", &[("hostname", "b")]),
            Some(0.0)
        );
        assert_eq!(
            value(
                &all,
                "genv_device_temperature",
                &[("hostname", "a"), ("index", "1")]
            ),
            Some(41.0)
        );
        assert!(all.iter().all(|f| !LOCAL_ONLY.contains(&f.name)));
        assert!(parse("garbage").is_err());
    }
}
