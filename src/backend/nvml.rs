//! NVML through `nvml-wrapper`, which loads `libnvidia-ml.so` at run time:
//! on a machine without a driver, loading fails and genv moves on.

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::enums::device::UsedGpuMemory;

use super::{ComputeProcess, DeviceBackend, GpuInfo, GpuStatus};
use crate::error::{Error, Result};

pub struct NvmlBackend {
    nvml: Nvml,
}

fn nvml_error(e: nvml_wrapper::error::NvmlError) -> Error {
    Error::Backend(format!("NVML: {e}"))
}

impl NvmlBackend {
    pub fn load() -> Option<Self> {
        Nvml::init().ok().map(|nvml| NvmlBackend { nvml })
    }
}

impl DeviceBackend for NvmlBackend {
    fn devices(&self) -> Result<Vec<GpuInfo>> {
        let count = self.nvml.device_count().map_err(nvml_error)?;
        (0..count)
            .map(|index| {
                let device = self.nvml.device_by_index(index).map_err(nvml_error)?;
                Ok(GpuInfo {
                    index,
                    uuid: device.uuid().map_err(nvml_error)?,
                    name: device.name().unwrap_or_default(),
                    total_memory_mib: device.memory_info().map_err(nvml_error)?.total >> 20,
                })
            })
            .collect()
    }

    fn processes(&self) -> Result<Vec<ComputeProcess>> {
        let count = self.nvml.device_count().map_err(nvml_error)?;
        let mut processes = Vec::new();
        for index in 0..count {
            let device = self.nvml.device_by_index(index).map_err(nvml_error)?;
            for info in device.running_compute_processes().map_err(nvml_error)? {
                let used = match info.used_gpu_memory {
                    UsedGpuMemory::Used(bytes) => bytes >> 20,
                    UsedGpuMemory::Unavailable => 0,
                };
                processes.push(ComputeProcess {
                    pid: info.pid,
                    index,
                    used_memory_mib: used,
                });
            }
        }
        Ok(processes)
    }

    fn statuses(&self) -> Result<Vec<GpuStatus>> {
        let count = self.nvml.device_count().map_err(nvml_error)?;
        (0..count)
            .map(|index| {
                let device = self.nvml.device_by_index(index).map_err(nvml_error)?;
                let memory = device.memory_info().map_err(nvml_error)?;
                Ok(GpuStatus {
                    index,
                    // Some GPUs (and MIG instances) cannot tell: no series.
                    utilization: device.utilization_rates().ok().map(|u| u.gpu),
                    temperature: device.temperature(TemperatureSensor::Gpu).ok(),
                    used_memory_mib: Some(memory.used >> 20),
                    total_memory_mib: memory.total >> 20,
                })
            })
            .collect()
    }

    fn fingerprint(&self) -> Option<String> {
        None
    }
}
