//! The container toolkit: containers as environments.
//!
//! - `genv-docker` ([`docker`]): `docker run` with genv's options turned
//!   into `--runtime=genv` and `GENV_*` variables for the container.
//! - `genv-container-runtime` ([`runtime`]): an OCI runtime that adds genv
//!   to the bundle's configuration on `create` (and to the process on
//!   `exec`), then hands every command to the real runtime.
//! - `genv-container-runtime-hook` ([`hook`]): the `prestart` hook that
//!   activates, configures and attaches the container's environment, and
//!   the `poststop` hook that releases it.
//!
//! All three are the `genv` executable run under those names.

pub mod docker;
pub mod hook;
pub mod runtime;

pub use docker::PROGRAM as DOCKER_PROGRAM;
pub use hook::PROGRAM as HOOK_PROGRAM;
pub use runtime::PROGRAM as RUNTIME_PROGRAM;

/// Where the `nvidia-smi` shim is mounted inside a container, first on its
/// `PATH` (as genv 1.4.3 does).
pub const SHIMS_IN_CONTAINER: &str = "/opt/genv/shims";

/// Where the state folder's `devices/` (the device locks) is mounted
/// inside a container, genv 1.4.3's default state folder.
pub const LOCKS_IN_CONTAINER: &str = "/var/tmp/genv/devices";

/// A variable of an OCI process environment (`NAME=value` entries); the
/// last one wins, as runtimes apply them.
pub fn env_get<'a>(env: &'a [String], name: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find_map(|entry| entry.strip_prefix(name)?.strip_prefix('='))
}
