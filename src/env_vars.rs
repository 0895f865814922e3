//! Every environment variable genv reads, declared once.

/// The state folder; default [`DEFAULT_TMPDIR`].
pub(crate) const GENV_TMPDIR: &str = "GENV_TMPDIR";
pub(crate) const DEFAULT_TMPDIR: &str = "/var/tmp/genv";

/// Set in an activated shell: the environment's identifier.
pub(crate) const GENV_ENVIRONMENT_ID: &str = "GENV_ENVIRONMENT_ID";
pub(crate) const GENV_ENVIRONMENT_NAME: &str = "GENV_ENVIRONMENT_NAME";
pub(crate) const GENV_GPUS: &str = "GENV_GPUS";
pub(crate) const GENV_GPU_MEMORY: &str = "GENV_GPU_MEMORY";
/// `1` in a shell where `genv shell --init` installed the `genv` function.
pub(crate) const GENV_SHELL: &str = "GENV_SHELL";
/// `1` makes the shims run the real program untouched.
pub(crate) const GENV_BYPASS: &str = "GENV_BYPASS";
/// How many shims deep a process runs; set by the shims on the real
/// program, to stop a loop of shims (a copy of genv installed as the real
/// program).
pub(crate) const GENV_SHIM_DEPTH: &str = "GENV_SHIM_DEPTH";
/// `0` makes `genv usage execute` report instead of sending SIGTERM.
pub(crate) const GENV_TERMINATE_PROCESSES: &str = "GENV_TERMINATE_PROCESSES";

/// The `ssh` that `genv remote` runs, with options of its own, split on
/// whitespace (`ssh -F ~/fleet.conf`); default `ssh`.
pub(crate) const GENV_SSH: &str = "GENV_SSH";

/// Simulated GPUs, with the names and defaults of genv 1.4.3's mock.
/// Setting the count or the total memory selects the simulated backend.
pub(crate) const GENV_MOCK_DEVICE_COUNT: &str = "GENV_MOCK_DEVICE_COUNT";
pub(crate) const GENV_MOCK_DEVICE_TOTAL_MEMORY: &str = "GENV_MOCK_DEVICE_TOTAL_MEMORY";
pub(crate) const GENV_MOCK_DEVICE_NAME: &str = "GENV_MOCK_DEVICE_NAME";
pub(crate) const GENV_MOCK_DEVICE_USED_MEMORY: &str = "GENV_MOCK_DEVICE_USED_MEMORY";
pub(crate) const GENV_MOCK_DEVICE_UTILIZATION: &str = "GENV_MOCK_DEVICE_UTILIZATION";
pub(crate) const GENV_MOCK_DEVICE_TEMPERATURE: &str = "GENV_MOCK_DEVICE_TEMPERATURE";
pub(crate) const GENV_MOCK_DRIVER_VERSION: &str = "GENV_MOCK_DRIVER_VERSION";
pub(crate) const GENV_MOCK_CUDA_VERSION: &str = "GENV_MOCK_CUDA_VERSION";
pub(crate) const GENV_MOCK_COMPUTE_APPS_PROCESS_NAME: &str = "GENV_MOCK_COMPUTE_APPS_PROCESS_NAME";
pub(crate) const GENV_MOCK_COMPUTE_APPS_GPU_MEMORY: &str = "GENV_MOCK_COMPUTE_APPS_GPU_MEMORY";

pub(crate) const CUDA_VISIBLE_DEVICES: &str = "CUDA_VISIBLE_DEVICES";

/// Where activation puts the memory cap library (`memcap.rs`).
pub(crate) const LD_PRELOAD: &str = "LD_PRELOAD";

/// Set inside a container started by genv's container runtime, where the
/// attached devices are the `devices/<index>.lock` files mounted into it.
pub(crate) const GENV_CONTAINER: &str = "GENV_CONTAINER";

/// A variable, treating unset and non-UTF-8 alike: the process's, or
/// inside the daemon the client's (for those it may decide,
/// [`crate::caller::daemon_owns`]).
pub(crate) fn get(name: &str) -> Option<String> {
    match crate::caller::var(name) {
        Some(value) => value,
        None => std::env::var(name).ok(),
    }
}

/// The container engine `genv-docker` runs (`docker` by default).
pub(crate) const GENV_DOCKER: &str = "GENV_DOCKER";
/// The runtime name or path `genv-docker run` passes as `--runtime=`
/// (`genv` by default: the name registered with the engine).
pub(crate) const GENV_CONTAINER_RUNTIME: &str = "GENV_CONTAINER_RUNTIME";
/// In a container's configuration: `0` to leave it out of genv.
pub(crate) const GENV_ACTIVATE: &str = "GENV_ACTIVATE";
/// In a container's configuration: `0` to attach no devices.
pub(crate) const GENV_ATTACH: &str = "GENV_ATTACH";
/// In a container's configuration: `0` to mount no shims.
pub(crate) const GENV_MOUNT_SHIMS: &str = "GENV_MOUNT_SHIMS";
/// In a container's configuration: `0` to mount no device locks.
pub(crate) const GENV_MOUNT_DEVICE_LOCKS: &str = "GENV_MOUNT_DEVICE_LOCKS";
/// `1`: attach devices even when their memory is taken (the container's
/// configuration, or `genv-docker`'s own environment).
pub(crate) const GENV_ALLOW_OVER_SUBSCRIPTION: &str = "GENV_ALLOW_OVER_SUBSCRIPTION";
/// In a container's configuration: the devices asked for by index
/// (`genv-docker run --gpus device=1,3`).
pub(crate) const GENV_GPU_INDICES: &str = "GENV_GPU_INDICES";
/// What the NVIDIA container hook gives the container; the genv hook sets
/// it to the attached devices.
pub(crate) const NVIDIA_VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";
