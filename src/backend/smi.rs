//! `nvidia-smi --query-… --format=csv,noheader,nounits`, the way genv 1.4.3
//! asks, and the way tests put a fake GPU machine under genv.

use std::collections::HashMap;
use std::process::Command;

use super::{ComputeProcess, DeviceBackend, GpuInfo, GpuStatus};
use crate::env_vars;
use crate::error::{Error, Result};

const PROGRAM: &str = "nvidia-smi";
const FORMAT: &str = "--format=csv,noheader,nounits";
const SEPARATOR: &str = ", ";

pub struct SmiBackend;

impl SmiBackend {
    /// The backend when `nvidia-smi` is on `PATH`.
    pub fn find() -> Option<Self> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .any(|dir| dir.join(PROGRAM).is_file())
            .then_some(SmiBackend)
    }

    fn query(&self, query: &str) -> Result<String> {
        let output = Command::new(PROGRAM)
            .arg(query)
            .arg(FORMAT)
            .env(env_vars::GENV_BYPASS, "1")
            .output()
            .map_err(|e| Error::Backend(format!("could not run {PROGRAM}: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(Error::Backend(format!(
                "{PROGRAM} {query} failed ({}): {}",
                output.status,
                stderr.trim()
            )));
        }
        String::from_utf8(output.stdout)
            .map_err(|_| Error::Backend(format!("{PROGRAM} printed invalid UTF-8")))
    }
}

fn bad_line(line: &str) -> Error {
    Error::Backend(format!("unexpected line from {PROGRAM}: {line:?}"))
}

fn number<T: std::str::FromStr>(field: &str, line: &str) -> Result<T> {
    field.trim().parse().map_err(|_| bad_line(line))
}

/// Parses `index, uuid, memory.total, name` lines.
pub(super) fn parse_gpus(text: &str) -> Result<Vec<GpuInfo>> {
    let mut gpus = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.splitn(4, SEPARATOR).collect();
            let [index, uuid, total, name] = fields[..] else {
                return Err(bad_line(line));
            };
            Ok(GpuInfo {
                index: number(index, line)?,
                uuid: uuid.trim().to_owned(),
                total_memory_mib: number(total, line)?,
                name: name.trim().to_owned(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    gpus.sort_by_key(|g| g.index);
    Ok(gpus)
}

/// Parses `gpu_uuid, pid, used_gpu_memory` lines, mapping uuids to indices.
pub(super) fn parse_processes(
    text: &str,
    uuids: &HashMap<String, u32>,
) -> Result<Vec<ComputeProcess>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(SEPARATOR).collect();
            let [uuid, pid, used] = fields[..] else {
                return Some(Err(bad_line(line)));
            };
            let index = *uuids.get(uuid.trim())?;
            // "[N/A]" when the driver cannot tell (e.g. in a container).
            let used_memory_mib = used.trim().parse().unwrap_or(0);
            Some(number(pid, line).map(|pid| ComputeProcess {
                pid,
                index,
                used_memory_mib,
            }))
        })
        .collect()
}

/// Parses `index, utilization.gpu, temperature.gpu, memory.used,
/// memory.total` lines; `[N/A]` (or anything not a number) is unknown.
pub(super) fn parse_statuses(text: &str) -> Result<Vec<GpuStatus>> {
    let mut statuses = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(SEPARATOR).collect();
            let [index, utilization, temperature, used, total] = fields[..] else {
                return Err(bad_line(line));
            };
            Ok(GpuStatus {
                index: number(index, line)?,
                utilization: utilization.trim().parse().ok(),
                temperature: temperature.trim().parse().ok(),
                used_memory_mib: used.trim().parse().ok(),
                total_memory_mib: total.trim().parse().unwrap_or(0),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    statuses.sort_by_key(|s| s.index);
    Ok(statuses)
}

impl DeviceBackend for SmiBackend {
    fn devices(&self) -> Result<Vec<GpuInfo>> {
        parse_gpus(&self.query("--query-gpu=index,uuid,memory.total,name")?)
    }

    fn processes(&self) -> Result<Vec<ComputeProcess>> {
        let uuids = self
            .devices()?
            .into_iter()
            .map(|g| (g.uuid, g.index))
            .collect::<HashMap<_, _>>();
        parse_processes(
            &self.query("--query-compute-apps=gpu_uuid,pid,used_gpu_memory")?,
            &uuids,
        )
    }

    fn statuses(&self) -> Result<Vec<GpuStatus>> {
        parse_statuses(
            &self.query(
                "--query-gpu=index,utilization.gpu,temperature.gpu,memory.used,memory.total",
            )?,
        )
    }

    fn fingerprint(&self) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gpus_and_processes() {
        let gpus =
            parse_gpus("1, GPU-b, 81559, NVIDIA H100 80GB HBM3\n0, GPU-a, 16384, Tesla, V100\n")
                .unwrap();
        assert_eq!(gpus[0].index, 0);
        assert_eq!(gpus[0].name, "Tesla, V100");
        assert_eq!(gpus[1].total_memory_mib, 81559);
        let uuids = gpus.iter().map(|g| (g.uuid.clone(), g.index)).collect();
        let procs =
            parse_processes("GPU-b, 4242, 1024\nGPU-x, 1, 2\nGPU-a, 7, [N/A]\n", &uuids).unwrap();
        assert_eq!(procs.len(), 2);
        assert_eq!(procs[0].pid, 4242);
        assert_eq!(procs[0].index, 1);
        assert_eq!(procs[1].used_memory_mib, 0);
        assert!(parse_gpus("garbage\n").is_err());
    }

    #[test]
    fn parses_statuses_with_unknown_fields() {
        let statuses =
            parse_statuses("1, [N/A], 45, 1024, 81559\n0, 93, [N/A], [N/A], 16384\n").unwrap();
        assert_eq!(statuses[0].index, 0);
        assert_eq!(statuses[0].utilization, Some(93));
        assert_eq!(statuses[0].temperature, None);
        assert_eq!(statuses[0].used_memory_mib, None);
        assert_eq!(statuses[1].utilization, None);
        assert_eq!(statuses[1].used_memory_mib, Some(1024));
        assert!(parse_statuses("0, 1\n").is_err());
        // An idle H200, as its driver answers genv's query.
        let h200 = parse_statuses("0, 0, 35, 0, 143771\n").unwrap();
        assert_eq!(h200[0].utilization, Some(0));
        assert_eq!(h200[0].temperature, Some(35));
        assert_eq!(h200[0].used_memory_mib, Some(0));
        assert_eq!(h200[0].total_memory_mib, 143771);
    }
}
