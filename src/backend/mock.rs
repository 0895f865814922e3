//! Simulated GPUs driven by the `GENV_MOCK_*` variables of genv 1.4.3's
//! mock, with its defaults. Compute processes are chosen as that mock
//! chooses them, by process name (`sleep` by default); each one is put on
//! the GPUs its `CUDA_VISIBLE_DEVICES` names (read as CUDA reads it, see
//! [`crate::cuda`]), or on all of them when it is unset.

use super::{ComputeProcess, DeviceBackend, GpuInfo, GpuStatus};
use crate::env_vars::{self as ev, get};
use crate::error::{Error, Result};
use crate::os::procs;
use crate::{cuda, memory};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockConfig {
    pub count: u32,
    pub total_memory: String,
    pub name: String,
    pub used_memory: String,
    pub utilization: u32,
    pub temperature: u32,
    pub driver_version: String,
    pub cuda_version: String,
    pub process_name: String,
    pub process_memory: String,
}

impl MockConfig {
    /// The simulated GPUs, when the variables that select them are set.
    pub fn from_env() -> Option<Self> {
        if get(ev::GENV_MOCK_DEVICE_COUNT).is_none()
            && get(ev::GENV_MOCK_DEVICE_TOTAL_MEMORY).is_none()
        {
            return None;
        }
        Some(Self::with_defaults())
    }

    /// The `GENV_MOCK_*` variables, with the reference's defaults.
    pub fn with_defaults() -> Self {
        let var = |name: &str, default: &str| get(name).unwrap_or_else(|| default.to_owned());
        MockConfig {
            count: var(ev::GENV_MOCK_DEVICE_COUNT, "2")
                .parse()
                .unwrap_or(u32::MAX),
            total_memory: var(ev::GENV_MOCK_DEVICE_TOTAL_MEMORY, "16g"),
            name: var(ev::GENV_MOCK_DEVICE_NAME, "NVIDIA GeForce RTX 2080 Ti"),
            used_memory: var(ev::GENV_MOCK_DEVICE_USED_MEMORY, "10mi"),
            utilization: var(ev::GENV_MOCK_DEVICE_UTILIZATION, "93")
                .parse()
                .unwrap_or(93),
            temperature: var(ev::GENV_MOCK_DEVICE_TEMPERATURE, "38")
                .parse()
                .unwrap_or(38),
            driver_version: var(ev::GENV_MOCK_DRIVER_VERSION, "525.147.05"),
            cuda_version: var(ev::GENV_MOCK_CUDA_VERSION, "12.0"),
            process_name: var(ev::GENV_MOCK_COMPUTE_APPS_PROCESS_NAME, "sleep"),
            process_memory: var(ev::GENV_MOCK_COMPUTE_APPS_GPU_MEMORY, "42mi"),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.count > 1024 {
            return Err(Error::Backend(format!(
                "{} must be a number of GPUs between 0 and 1024",
                ev::GENV_MOCK_DEVICE_COUNT
            )));
        }
        for (name, value) in [
            (ev::GENV_MOCK_DEVICE_TOTAL_MEMORY, &self.total_memory),
            (ev::GENV_MOCK_DEVICE_USED_MEMORY, &self.used_memory),
            (ev::GENV_MOCK_COMPUTE_APPS_GPU_MEMORY, &self.process_memory),
        ] {
            memory::to_bytes(value).map_err(|e| Error::Backend(format!("{name}: {e}")))?;
        }
        Ok(())
    }

    pub fn uuid(index: u32) -> String {
        format!("GPU-00000000-0000-0000-0000-0000000000{index:02}")
    }

    pub fn mib(value: &str) -> u64 {
        memory::to_bytes(value).map(memory::to_mib).unwrap_or(0)
    }

    /// The pids of the simulated compute processes and the GPUs each uses.
    pub fn compute_processes(&self) -> Vec<(u32, Vec<u32>)> {
        let me = std::process::id();
        procs::all_pids()
            .into_iter()
            .filter(|&pid| pid != me)
            .filter(|&pid| procs::comm(pid).is_some_and(|c| c.contains(self.process_name.as_str())))
            .map(|pid| (pid, self.visible_to(pid)))
            .collect()
    }

    fn visible_to(&self, pid: u32) -> Vec<u32> {
        match procs::environ_var(pid, ev::CUDA_VISIBLE_DEVICES) {
            None => (0..self.count).collect(),
            Some(value) => {
                let gpus: Vec<(u32, String)> =
                    (0..self.count).map(|i| (i, Self::uuid(i))).collect();
                cuda::visible_indices(&value, gpus.iter().map(|(i, u)| (*i, u.as_str())))
            }
        }
    }
}

pub struct MockBackend {
    config: MockConfig,
}

impl MockBackend {
    pub fn new(config: MockConfig) -> Self {
        MockBackend { config }
    }
}

impl DeviceBackend for MockBackend {
    fn devices(&self) -> Result<Vec<GpuInfo>> {
        self.config.validate()?;
        let total = MockConfig::mib(&self.config.total_memory);
        Ok((0..self.config.count)
            .map(|index| GpuInfo {
                index,
                uuid: MockConfig::uuid(index),
                name: self.config.name.clone(),
                total_memory_mib: total,
            })
            .collect())
    }

    fn processes(&self) -> Result<Vec<ComputeProcess>> {
        self.config.validate()?;
        let used = MockConfig::mib(&self.config.process_memory);
        Ok(self
            .config
            .compute_processes()
            .into_iter()
            .flat_map(|(pid, indices)| {
                indices.into_iter().map(move |index| ComputeProcess {
                    pid,
                    index,
                    used_memory_mib: used,
                })
            })
            .collect())
    }

    fn statuses(&self) -> Result<Vec<GpuStatus>> {
        self.config.validate()?;
        let total = MockConfig::mib(&self.config.total_memory);
        let used = MockConfig::mib(&self.config.used_memory);
        Ok((0..self.config.count)
            .map(|index| GpuStatus {
                index,
                utilization: Some(self.config.utilization),
                temperature: Some(self.config.temperature),
                used_memory_mib: Some(used),
                total_memory_mib: total,
            })
            .collect())
    }

    fn fingerprint(&self) -> Option<String> {
        Some(format!(
            "mock:{}:{}",
            self.config.count, self.config.total_memory
        ))
    }
}
