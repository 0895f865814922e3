//! Where the GPUs come from: simulated, NVML, or `nvidia-smi`, behind one
//! trait.

mod mock;
mod nvml;
mod smi;

pub use mock::{MockBackend, MockConfig};
pub use nvml::NvmlBackend;
pub use smi::SmiBackend;

use crate::env_vars;
use crate::error::{Error, Result};

/// One GPU as the hardware reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub total_memory_mib: u64,
}

/// What a GPU is doing now: what `genv monitor` and `genv top` show.
/// `None` where the driver cannot tell (`[N/A]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuStatus {
    pub index: u32,
    /// Percent of the time a kernel ran over the last sample period.
    pub utilization: Option<u32>,
    /// Degrees Celsius.
    pub temperature: Option<u32>,
    pub used_memory_mib: Option<u64>,
    pub total_memory_mib: u64,
}

/// One compute process on one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeProcess {
    pub pid: u32,
    pub index: u32,
    pub used_memory_mib: u64,
}

pub trait DeviceBackend {
    /// The GPUs, in index order. May be slow (tens of milliseconds).
    fn devices(&self) -> Result<Vec<GpuInfo>>;

    /// The running compute processes.
    fn processes(&self) -> Result<Vec<ComputeProcess>>;

    /// Utilization, temperature and memory of every GPU, in index order.
    fn statuses(&self) -> Result<Vec<GpuStatus>>;

    /// Something cheap that changes when GPUs come or go, or `None` when
    /// there is no such thing and only asking the driver tells.
    fn fingerprint(&self) -> Option<String>;
}

/// The simulated backend when `GENV_MOCK_DEVICE_COUNT` or
/// `GENV_MOCK_DEVICE_TOTAL_MEMORY` is set; otherwise the real GPUs, through
/// NVML when its library loads and `nvidia-smi` when it does not.
pub fn detect() -> Box<dyn DeviceBackend> {
    match MockConfig::from_env() {
        Some(config) => Box::new(MockBackend::new(config)),
        None => Box::new(SystemBackend::default()),
    }
}

/// [`detect`], for many threads at once: `genv daemon` asks the driver
/// through one backend (NVML initialised once) for every request.
pub fn detect_shared() -> std::sync::Arc<dyn DeviceBackend + Send + Sync> {
    match MockConfig::from_env() {
        Some(config) => std::sync::Arc::new(MockBackend::new(config)),
        None => std::sync::Arc::new(SystemBackend::default()),
    }
}

/// The machine's GPUs: NVML when the driver's library loads, else
/// `nvidia-smi`. Which one is decided (and NVML initialised) once, the
/// first time it is asked.
#[derive(Default)]
pub struct SystemBackend {
    chosen: std::sync::OnceLock<Option<System>>,
}

enum System {
    Nvml(Box<NvmlBackend>),
    Smi(SmiBackend),
}

const NO_DRIVER_HINT: &str = "no NVIDIA driver found (NVML could not be loaded and nvidia-smi is not on PATH); to simulate GPUs, set GENV_MOCK_DEVICE_COUNT (e.g. GENV_MOCK_DEVICE_COUNT=2)";

impl SystemBackend {
    fn with<T>(
        &self,
        nvml: impl FnOnce(&NvmlBackend) -> Result<T>,
        smi: impl FnOnce(&SmiBackend) -> Result<T>,
    ) -> Result<T> {
        let chosen = self.chosen.get_or_init(|| match NvmlBackend::load() {
            Some(backend) => Some(System::Nvml(Box::new(backend))),
            None => SmiBackend::find().map(System::Smi),
        });
        match chosen {
            Some(System::Nvml(backend)) => nvml(backend),
            Some(System::Smi(backend)) => smi(backend),
            None => Err(Error::Backend(NO_DRIVER_HINT.into())),
        }
    }
}

impl DeviceBackend for SystemBackend {
    fn devices(&self) -> Result<Vec<GpuInfo>> {
        self.with(|b| b.devices(), |b| b.devices())
    }

    fn processes(&self) -> Result<Vec<ComputeProcess>> {
        self.with(|b| b.processes(), |b| b.processes())
    }

    fn statuses(&self) -> Result<Vec<GpuStatus>> {
        self.with(|b| b.statuses(), |b| b.statuses())
    }

    fn fingerprint(&self) -> Option<String> {
        let entries = std::fs::read_dir("/proc/driver/nvidia/gpus").ok()?;
        let mut names: Vec<String> = entries
            .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Some(format!("nvidia:{}", names.join(",")))
    }
}

/// The environment identifier of a process, from its environment.
pub fn process_eid(pid: u32) -> Option<String> {
    crate::os::procs::environ_var(pid, env_vars::GENV_ENVIRONMENT_ID)
}
