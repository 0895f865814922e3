//! The state folder (`$GENV_TMPDIR`, default `/var/tmp/genv`). This module
//! is the only one that touches it: every read-modify-write happens inside
//! a [`Transaction`], which holds the global `genv.lock` as genv 1.4.3 does.

pub mod device_locks;
mod devices;
pub mod enforcement;
mod envs;
pub mod file;
mod queue;
mod watch;

pub use devices::{Attachment, Device, Devices};
pub use envs::{Config, Env, Envs};
pub use queue::{Queue, Waiter};
pub use watch::{Wake as WatchWake, Watch};

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use crate::backend::{DeviceBackend, GpuInfo};
use crate::env_vars;
use crate::error::{Error, Result};
use crate::procs;

const ENVS_FILE: &str = "envs.json";
const DEVICES_FILE: &str = "devices.json";
const LOCK_FILE: &str = "genv.lock";
/// What the hardware looked like when `devices.json` was last reconciled.
/// Our own file, so that `devices.json` keeps exactly genv 1.4.3's keys.
const HARDWARE_FILE: &str = "hardware.json";
/// Requests waiting for GPUs; our own file too.
const QUEUE_FILE: &str = "queue.json";
const DIR_MODE: u32 = 0o777;

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// How a transaction loads the state, as `--no-cleanup` and `--reset` ask.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    pub cleanup: bool,
    pub reset: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            cleanup: true,
            reset: false,
        }
    }
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    pub fn from_env() -> Self {
        let root = std::env::var_os(env_vars::GENV_TMPDIR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env_vars::DEFAULT_TMPDIR));
        StateDir::new(root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Creates a folder (and its parents) open to every user, whatever the
    /// umask: 0777 without the sticky bit, so one user may rename over a
    /// file another user wrote last.
    pub fn ensure_folder(path: &Path) -> Result<()> {
        match rustix::fs::mkdir(path, Mode::from_raw_mode(DIR_MODE)) {
            Ok(()) => rustix::fs::chmod(path, Mode::from_raw_mode(DIR_MODE))
                .map_err(|e| Error::io(path, e.into())),
            Err(Errno::EXIST) => Ok(()),
            Err(Errno::NOENT) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    StateDir::ensure_folder(parent)?;
                }
                match rustix::fs::mkdir(path, Mode::from_raw_mode(DIR_MODE)) {
                    Ok(()) | Err(Errno::EXIST) => {
                        let _ = rustix::fs::chmod(path, Mode::from_raw_mode(DIR_MODE));
                        Ok(())
                    }
                    Err(e) => Err(Error::io(path, e.into())),
                }
            }
            Err(e) => Err(Error::io(path, e.into())),
        }
    }

    /// Opens (creating it 0666) and locks a lock file, waiting for it.
    pub fn lock_file(path: &Path, operation: FlockOperation) -> Result<OwnedFd> {
        let fd = open_lock(path)?;
        loop {
            match rustix::fs::flock(&fd, operation) {
                Ok(()) => return Ok(fd),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(Error::io(path, e.into())),
            }
        }
    }

    /// Takes the global lock and starts a transaction.
    pub fn transaction(&self, options: LoadOptions) -> Result<Transaction<'_>> {
        StateDir::ensure_folder(&self.root)?;
        let lock = StateDir::lock_file(&self.path(LOCK_FILE), FlockOperation::LockExclusive)?;
        Ok(Transaction {
            dir: self,
            _lock: lock,
            options,
            envs: None,
            devices: None,
            queue: None,
            now: None,
            reconciled: false,
        })
    }

    /// Watches the state folder, to wake up when another process commits.
    /// Start watching before looking at the state, so no change is missed.
    pub fn watch(&self) -> Result<Watch> {
        StateDir::ensure_folder(&self.root)?;
        Watch::new(&self.root)
    }
}

pub fn open_lock(path: &Path) -> Result<OwnedFd> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path, flags, Mode::from_raw_mode(file::FILE_MODE)) {
        Ok(fd) => fd,
        Err(Errno::LOOP) => return Err(Error::SymbolicLink(path.to_owned())),
        Err(e) => return Err(Error::io(path, e.into())),
    };
    // Only the owner may change the mode; for anyone else it is already set.
    let _ = rustix::fs::fchmod(&fd, Mode::from_raw_mode(file::FILE_MODE));
    Ok(fd)
}

struct Tracked<T> {
    value: T,
    /// The bytes on disk when loaded; the file is rewritten only when the
    /// new bytes differ.
    original: Option<Vec<u8>>,
}

/// The state, loaded lazily under the global lock; [`Transaction::commit`]
/// writes back what changed.
pub struct Transaction<'a> {
    dir: &'a StateDir,
    _lock: OwnedFd,
    options: LoadOptions,
    envs: Option<Tracked<Envs>>,
    devices: Option<Tracked<Devices>>,
    queue: Option<Tracked<Queue>>,
    now: Option<String>,
    /// Whether the devices were brought in line with the hardware.
    reconciled: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Hardware {
    fingerprint: Option<String>,
}

impl Transaction<'_> {
    /// The current time in genv's format, the same for the whole
    /// transaction.
    pub fn now(&mut self) -> String {
        self.now.get_or_insert_with(crate::timefmt::now).clone()
    }

    pub fn envs(&mut self) -> Result<&mut Envs> {
        if self.envs.is_none() {
            let path = self.dir.path(ENVS_FILE);
            let (mut envs, original) = if self.options.reset {
                (Envs::default(), file::read(&path)?)
            } else {
                load(&path, Envs::from_value)?.unwrap_or_default()
            };
            if self.options.cleanup {
                envs.cleanup(procs::pid_alive, |env, kernel| {
                    procs::kernel_alive(env.uid, kernel)
                });
            }
            self.envs = Some(Tracked {
                value: envs,
                original,
            });
        }
        Ok(&mut self.envs.as_mut().expect("loaded above").value)
    }

    /// The devices as recorded, without attachments of environments that
    /// are gone. No device backend is needed: reading the state never asks
    /// the driver. When there is no `devices.json` yet the list is empty
    /// until [`Transaction::reconcile`] fills it.
    pub fn devices(&mut self) -> Result<&mut Devices> {
        if self.devices.is_none() {
            let path = self.dir.path(DEVICES_FILE);
            let loaded = if self.options.reset {
                None
            } else {
                load(&path, Devices::from_value)?
            };
            let (mut devices, original) = match loaded {
                Some(loaded) => loaded,
                None => (Devices::default(), file::read(&path)?),
            };
            devices.devices.sort_by_key(|d| d.index);
            if self.options.cleanup {
                let envs = self.envs()?;
                let alive: std::collections::HashSet<&str> =
                    envs.envs.iter().map(|e| e.eid.as_str()).collect();
                devices.cleanup(|eid| alive.contains(eid));
            }
            self.devices = Some(Tracked {
                value: devices,
                original,
            });
        }
        Ok(&mut self.devices.as_mut().expect("loaded above").value)
    }

    /// The devices brought in line with the hardware: the driver is asked
    /// when there is no `devices.json` yet, on `--reset`, when the GPUs'
    /// fingerprint changed since the last time, or always with `force`
    /// (attaching). A step of its own, so that only the commands that
    /// show or hand out devices pay for asking the driver.
    pub fn reconcile(&mut self, backend: &dyn DeviceBackend, force: bool) -> Result<&mut Devices> {
        if !self.reconciled {
            self.devices()?;
            let tracked = self.devices.as_mut().expect("loaded above");
            // No devices.json yet (or --reset): the driver says what there is.
            let force = force || self.options.reset || tracked.original.is_none();
            let mut devices = std::mem::take(&mut tracked.value);
            let result = self.reconcile_with(&mut devices, backend, force);
            self.devices.as_mut().expect("loaded above").value = devices;
            result?;
            self.reconciled = true;
        }
        Ok(&mut self.devices.as_mut().expect("loaded above").value)
    }

    fn reconcile_with(
        &mut self,
        devices: &mut Devices,
        backend: &dyn DeviceBackend,
        force: bool,
    ) -> Result<()> {
        let hardware_path = self.dir.path(HARDWARE_FILE);
        let fingerprint = backend.fingerprint();
        let stored: Option<Hardware> = match file::read(&hardware_path) {
            Ok(bytes) => bytes.and_then(|b| serde_json::from_slice(&b).ok()),
            Err(_) => None,
        };
        let changed = fingerprint.is_some()
            && stored.as_ref().and_then(|h| h.fingerprint.as_ref()) != fingerprint.as_ref();
        if !force && !changed {
            return Ok(());
        }
        apply_inventory(devices, &backend.devices()?);
        let record = Hardware { fingerprint };
        if stored.as_ref().map(|h| &h.fingerprint) != Some(&record.fingerprint) {
            file::write_atomic(&hardware_path, &file::to_json(&record))?;
        }
        Ok(())
    }

    /// The line of waiting requests, without waiters whose process is gone.
    pub fn queue(&mut self) -> Result<&mut Queue> {
        if self.queue.is_none() {
            let path = self.dir.path(QUEUE_FILE);
            let (mut queue, original): Loaded<Queue> = load(&path, |v| {
                serde_json::from_value(v).map_err(|e| e.to_string())
            })?
            .unwrap_or_default();
            queue.waiters.retain(|w| procs::pid_alive(w.pid));
            queue.waiters.sort_by_key(|w| w.ticket);
            self.queue = Some(Tracked {
                value: queue,
                original,
            });
        }
        Ok(&mut self.queue.as_mut().expect("loaded above").value)
    }

    /// Writes back the files whose content changed.
    pub fn commit(self) -> Result<()> {
        if let Some(tracked) = &self.envs {
            save(
                &self.dir.path(ENVS_FILE),
                &tracked.value,
                tracked.original.as_deref(),
            )?;
        }
        if let Some(tracked) = &self.devices {
            save(
                &self.dir.path(DEVICES_FILE),
                &tracked.value,
                tracked.original.as_deref(),
            )?;
        }
        if let Some(tracked) = &self.queue {
            // An empty line and no file are the same; don't create one.
            if !(tracked.original.is_none() && tracked.value.waiters.is_empty()) {
                save(
                    &self.dir.path(QUEUE_FILE),
                    &tracked.value,
                    tracked.original.as_deref(),
                )?;
            }
        }
        Ok(())
    }
}

/// Brings `devices` in line with the GPUs present: new ones are added, gone
/// ones dropped with a warning naming the environments that lose them.
fn apply_inventory(devices: &mut Devices, gpus: &[GpuInfo]) {
    devices.devices.retain(|device| {
        let present = gpus.iter().any(|g| g.index == device.index);
        if !present {
            let eids: Vec<&str> = device.eids().collect();
            if eids.is_empty() {
                eprintln!(
                    "warning: GPU {} is no longer present; removed it",
                    device.index
                );
            } else {
                eprintln!(
                    "warning: GPU {} is no longer present; environment(s) {} lose it",
                    device.index,
                    eids.join(", ")
                );
            }
        }
        present
    });
    for gpu in gpus {
        let total = format!("{}mi", gpu.total_memory_mib);
        match devices.get_mut(gpu.index) {
            Some(device) => {
                if device.total_memory != total
                    && crate::memory::to_bytes(&device.total_memory).ok()
                        != Some(gpu.total_memory_mib << 20)
                {
                    device.total_memory = total;
                }
            }
            None => devices
                .devices
                .push(Device::new(gpu.index, gpu.total_memory_mib)),
        }
    }
    devices.devices.sort_by_key(|d| d.index);
}

type Loaded<T> = (T, Option<Vec<u8>>);

/// Reads and parses a state file. A file that does not parse is moved
/// aside with a warning and treated as missing.
fn load<T: serde::de::DeserializeOwned>(
    path: &Path,
    parse: impl Fn(serde_json::Value) -> Result<T, String>,
) -> Result<Option<Loaded<T>>> {
    let Some(bytes) = file::read(path)? else {
        return Ok(None);
    };
    // The current layout straight into its types (fast for large states);
    // anything else through a generic value (older layouts, or an error).
    let parsed = serde_json::from_slice::<T>(&bytes).or_else(|_| {
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(&parse)
    });
    match parsed {
        Ok(value) => Ok(Some((value, Some(bytes)))),
        Err(reason) => {
            file::quarantine(path, &reason)?;
            Ok(None)
        }
    }
}

fn save<T: Serialize>(path: &Path, value: &T, original: Option<&[u8]>) -> Result<()> {
    let bytes = file::to_json(value);
    if original == Some(bytes.as_slice()) {
        return Ok(());
    }
    file::write_atomic(path, &bytes)
}
