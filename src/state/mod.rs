//! The state folder (`$GENV_TMPDIR`, default `/var/tmp/genv`). This module
//! is the only one that touches it: every read-modify-write happens inside
//! a [`Transaction`], which holds the global `genv.lock` as genv 1.4.3 does.

mod authorize;
mod cache;
mod cursor;
pub(crate) mod device_locks;
mod devices;
pub(crate) mod enforcement;
mod envs;
pub mod envs_json;
pub(crate) mod file;
pub(crate) mod memcap_ledger;
mod queue;
mod salvage;
mod watch;

pub use devices::{Attachment, Device, Devices};
pub use envs::{Config, Env, Envs};
pub use file::Dir;
pub use queue::{Queue, Waiter};
pub use watch::{Wake as WatchWake, Watch};

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustix::fs::FlockOperation;
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use crate::backend::{DeviceBackend, GpuInfo};
use crate::env_vars;
use crate::error::{Error, Result};
use crate::os::procs;
use salvage::{Loaded, load};

const ENVS_FILE: &str = "envs.json";
const DEVICES_FILE: &str = "devices.json";
const LOCK_FILE: &str = "genv.lock";
/// The global lock where a daemon owns the folder: only root may open it
/// (whoever opens a lock file can hold it, and hold everyone up), so
/// `genv.lock` is left to genv 1.4.3's readers, which open it to write.
const DAEMON_LOCK_FILE: &str = ".daemon.lock";
/// What the hardware looked like when `devices.json` was last reconciled.
/// Our own file, so that `devices.json` keeps exactly genv 1.4.3's keys.
const HARDWARE_FILE: &str = "hardware.json";
/// Requests waiting for GPUs; our own file too.
const QUEUE_FILE: &str = "queue.json";
/// Where `genv daemon` listens, when it serves the folder.
pub(crate) const DAEMON_SOCKET: &str = "genv.sock";

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    /// The folder, opened (and created) on first use.
    opened: OnceLock<Arc<Dir>>,
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
        StateDir {
            root: root.into(),
            opened: OnceLock::new(),
        }
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

    /// The path of a state file, for messages and for looking only.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The state folder, created 0777 when missing and opened once; every
    /// file and folder inside it is opened through this descriptor.
    pub fn root_dir(&self) -> Result<&Dir> {
        if let Some(dir) = self.opened.get() {
            return Ok(dir);
        }
        let dir = Arc::new(Dir::open_root(&self.root)?);
        Ok(self.opened.get_or_init(|| dir))
    }

    /// A folder inside the state folder (`devices`), created 0777 when
    /// missing; a link or a file in its place is moved aside.
    pub fn subdir(&self, name: &str) -> Result<Dir> {
        self.root_dir()?.subdir(name)
    }

    /// The memory cap's ledger of environment `eid` for processes of
    /// `uid` (`memcap-<uid>-<eid>`, the file `libgenv_memcap.so` maps),
    /// opened for the container runtime's hook to mount into a container.
    pub fn memcap_ledger(&self, uid: u32, eid: &str) -> Result<OwnedFd> {
        self.root_dir()?
            .open_private(&crate::memcap::ledger_name(uid, eid), uid)
    }

    /// Removes an environment's memory cap ledger, if any (never through a
    /// link: a link in its place is removed itself, not its target).
    pub fn remove_memcap_ledger(&self, uid: u32, eid: &str) {
        if let Ok(root) = self.root_dir() {
            let _ = rustix::fs::unlinkat(
                root.fd(),
                crate::memcap::ledger_name(uid, eid),
                rustix::fs::AtFlags::empty(),
            );
        }
    }

    /// Opens (creating it 0666) and locks a lock file in `dir`, waiting for
    /// it.
    pub fn lock_file(dir: &Dir, name: &str, operation: FlockOperation) -> Result<OwnedFd> {
        let fd = dir.open_lock(name)?;
        loop {
            match rustix::fs::flock(&fd, operation) {
                Ok(()) => return Ok(fd),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(Error::io(dir.join(name), e.into())),
            }
        }
    }

    /// What the hardware looks like, asked before taking the global lock
    /// (a driver query can take seconds; nobody should wait behind it),
    /// and only when needed: there is no `devices.json` yet, the GPUs'
    /// fingerprint differs from the one last recorded, or `force`
    /// (`--reset`). [`Transaction::reconcile`] applies it under the lock.
    pub fn survey<'b>(&self, backend: &'b dyn DeviceBackend, force: bool) -> Result<Survey<'b>> {
        let root = self.root_dir()?;
        let fingerprint = backend.fingerprint();
        let hardware = Hardware::recorded(root, |root| root.peek(HARDWARE_FILE));
        let needed = force
            || !root.has(DEVICES_FILE)
            || (hardware.is_none() && lists_no_devices(root))
            || (fingerprint.is_some() && hardware.and_then(|h| h.fingerprint) != fingerprint);
        let gpus = if needed {
            Some(backend.devices()?)
        } else {
            None
        };
        Ok(Survey {
            backend,
            fingerprint,
            gpus,
            force,
        })
    }

    /// Takes the global lock and starts a transaction. Where a daemon
    /// owns the folder ([`StateDir::daemon_socket`]) and this process may
    /// not take the lock, a transaction that only reads: the daemon puts
    /// each file in place whole, so a read without the lock sees one
    /// state or the next, never half of one; a change is refused at
    /// commit.
    pub fn transaction(&self, options: LoadOptions) -> Result<Transaction<'_>> {
        let peer = crate::caller::restricted();
        if options.reset && peer.is_some() {
            // Starting the state over drops everyone's environments.
            return Err(Error::Refused(
                "only root may reset the state (--reset) where genv daemon keeps it".into(),
            ));
        }
        let root = self.root_dir()?;
        let served = file::locked_down() || self.daemon_socket().is_some();
        let lock = if !served {
            Some(StateDir::lock_file(
                root,
                LOCK_FILE,
                FlockOperation::LockExclusive,
            )?)
        } else if rustix::process::geteuid().is_root() {
            Some(StateDir::lock_file(
                root,
                DAEMON_LOCK_FILE,
                FlockOperation::LockExclusive,
            )?)
        } else {
            // Only root may open the daemon's lock: this process reads.
            None
        };
        Ok(Transaction {
            root,
            _lock: lock,
            options,
            envs: None,
            devices: None,
            queue: None,
            now: None,
            reconciled: false,
            alive: std::collections::HashMap::new(),
            peer,
            before: Before::default(),
            changing: false,
        })
    }

    /// Where the daemon serves the folder: removes the files that changes
    /// replaced, and readies new ones for the next, under the daemon's
    /// lock ([`Dir::tidy`]). The daemon runs it after answering, when the
    /// lock is free: while others wait for it, their changes remove and
    /// make the files themselves, as a change does outside the daemon.
    pub fn tidy(&self) {
        if let Ok(root) = self.root_dir() {
            root.tidy(&[ENVS_FILE, DEVICES_FILE], || {
                StateDir::lock_file(
                    root,
                    DAEMON_LOCK_FILE,
                    FlockOperation::NonBlockingLockExclusive,
                )
                .ok()
            });
        }
    }

    /// The socket of a daemon that serves this folder, when one is there
    /// to be believed: a socket owned by root, in a folder owned by root
    /// that no one else may write (so no one could have put it there or
    /// swapped it since).
    pub fn daemon_socket(&self) -> Option<PathBuf> {
        use rustix::fs::FileType;
        let socket = self.root.join(DAEMON_SOCKET);
        let stat = rustix::fs::lstat(&socket).ok()?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::Socket || stat.st_uid != 0 {
            return None;
        }
        let folder = rustix::fs::lstat(&self.root).ok()?;
        let trusted = FileType::from_raw_mode(folder.st_mode) == FileType::Directory
            && folder.st_uid == 0
            && folder.st_mode & 0o022 == 0;
        trusted.then_some(socket)
    }

    /// Watches the state folder, to wake up when another process commits.
    /// Start watching before looking at the state, so no change is missed.
    pub fn watch(&self) -> Result<Watch> {
        self.root_dir()?;
        Watch::new(&self.root)
    }
}

struct Tracked<T> {
    /// Shared with the daemon's cache until changed.
    value: Arc<T>,
    /// How many bytes the file held when loaded (`None`: no file; `0`: an
    /// older layout, to be written back). The bytes themselves are not
    /// kept (30 MB at 100,000 environments): at commit the new bytes are
    /// compared with the file itself, and written only when they differ.
    original: Option<usize>,
    /// Whether it may have changed: handed out to change, cleaned up, or
    /// new. Only then is it serialised and compared at commit.
    touched: bool,
}

/// The state, loaded lazily under the global lock; [`Transaction::commit`]
/// writes back what changed.
pub struct Transaction<'a> {
    root: &'a Dir,
    /// The global lock; `None` in a process that only reads a folder the
    /// daemon owns.
    _lock: Option<OwnedFd>,
    options: LoadOptions,
    envs: Option<Tracked<Envs>>,
    devices: Option<Tracked<Devices>>,
    queue: Option<Tracked<Queue>>,
    now: Option<String>,
    /// Whether the devices were brought in line with the hardware.
    reconciled: bool,
    /// Each pid's liveness, asked once per transaction.
    alive: std::collections::HashMap<i64, bool>,
    /// A client of the daemon that is not root: its changes are checked
    /// at commit ([`authorize`]).
    peer: Option<crate::caller::Peer>,
    /// For that check: the state as it was when first handed out to
    /// change.
    before: Before,
    /// Whether a file was handed out to change.
    changing: bool,
}

#[derive(Default)]
struct Before {
    envs: Option<Envs>,
    devices: Option<Devices>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Hardware {
    fingerprint: Option<String>,
}

impl Hardware {
    /// The record in `hardware.json`, as `read` reads it; in the daemon,
    /// as last parsed while the file is the same.
    fn recorded(root: &Dir, read: impl FnOnce(&Dir) -> Option<Vec<u8>>) -> Option<Hardware> {
        let key = file::locked_down()
            .then(|| cache::Key::of(root, HARDWARE_FILE))
            .flatten();
        if let Some(kept) = key.and_then(cache::get::<Hardware>) {
            return Some((*kept).clone());
        }
        let hardware = serde_json::from_slice::<Hardware>(&read(root)?).ok()?;
        if let Some(key) = key {
            cache::put(key, Arc::new(hardware.clone()));
        }
        Some(hardware)
    }
}

/// The hardware as [`StateDir::survey`] found it before the lock: the
/// GPUs when they had to be asked, and the backend in case another
/// process changed the state between the survey and the lock.
pub struct Survey<'b> {
    backend: &'b dyn DeviceBackend,
    fingerprint: Option<String>,
    gpus: Option<Vec<GpuInfo>>,
    force: bool,
}

impl Transaction<'_> {
    /// The current time in genv's format, the same for the whole
    /// transaction.
    pub fn now(&mut self) -> String {
        self.now.get_or_insert_with(crate::timefmt::now).clone()
    }

    /// The environments, without those whose processes and kernels are
    /// all gone. Reading marks nothing: a transaction that only reads
    /// writes nothing back (and serialises nothing to find that out).
    pub fn envs(&mut self) -> Result<&Envs> {
        self.load_envs()?;
        Ok(&self.envs.as_ref().expect("loaded above").value)
    }

    /// The environments, to change: written back at commit when their
    /// bytes differ.
    pub fn envs_mut(&mut self) -> Result<&mut Envs> {
        self.load_envs()?;
        let tracked = self.envs.as_mut().expect("loaded above");
        tracked.touched = true;
        self.changing = true;
        if self.peer.is_some() && self.before.envs.is_none() {
            self.before.envs = Some((*tracked.value).clone());
        }
        Ok(Arc::make_mut(&mut tracked.value))
    }

    fn load_envs(&mut self) -> Result<()> {
        if self.envs.is_none() {
            let cached = self.cached::<Envs>(ENVS_FILE);
            let (mut envs, original) = match cached {
                Some(hit) => hit,
                None => {
                    let key = self.cache_key(ENVS_FILE);
                    let (envs, original) = if self.options.reset {
                        (Envs::default(), self.root.read(ENVS_FILE)?)
                    } else {
                        load(self.root, ENVS_FILE, true)?.unwrap_or_default()
                    };
                    let envs = Arc::new(envs);
                    if let Some(key) = key.filter(|_| original.is_some()) {
                        cache::put(key, envs.clone());
                    }
                    (envs, original.map(|bytes| bytes.len()))
                }
            };
            // New, or converted from an older layout (empty original).
            let mut touched = original.is_none_or(|len| len == 0) || self.options.reset;
            if self.options.cleanup {
                let alive = &mut self.alive;
                let mut pid_alive =
                    |pid| *alive.entry(pid).or_insert_with(|| procs::pid_alive(pid));
                let kernel_alive = |env: &Env, kernel: &str| procs::kernel_alive(env.uid, kernel);
                // Copied (from the daemon's cache) only when something goes.
                if envs.stale(&mut pid_alive, kernel_alive) {
                    touched |= Arc::make_mut(&mut envs).cleanup(&mut pid_alive, kernel_alive);
                }
            }
            self.envs = Some(Tracked {
                value: envs,
                original,
                touched,
            });
        }
        Ok(())
    }

    /// In the daemon: the file `name` as last parsed, when it has not
    /// been replaced since, with its size.
    fn cached<T: cache::Cached>(&self, name: &str) -> Option<(Arc<T>, Option<usize>)> {
        if self.options.reset {
            return None;
        }
        let key = self.cache_key(name)?;
        cache::get::<T>(key).map(|value| (value, Some(key.size())))
    }

    /// In the daemon: keeps what was just written as the file's content.
    fn keep<T: cache::Cached>(&self, name: &str, value: &Arc<T>) {
        if let Some(key) = self.cache_key(name) {
            cache::put(key, value.clone());
        }
    }

    /// In the daemon, the identity of the file `name` now.
    fn cache_key(&self, name: &str) -> Option<cache::Key> {
        if !file::locked_down() {
            return None;
        }
        cache::Key::of(self.root, name)
    }

    /// The devices as recorded, without attachments of environments that
    /// are gone. No device backend is needed: reading the state never asks
    /// the driver. When there is no `devices.json` yet the list is empty
    /// until [`Transaction::reconcile`] fills it.
    pub fn devices(&mut self) -> Result<&Devices> {
        self.load_devices()?;
        Ok(&self.devices.as_ref().expect("loaded above").value)
    }

    /// The devices, to change: written back at commit when their bytes
    /// differ.
    pub fn devices_mut(&mut self) -> Result<&mut Devices> {
        self.load_devices()?;
        let tracked = self.devices.as_mut().expect("loaded above");
        tracked.touched = true;
        self.changing = true;
        if self.peer.is_some() && self.before.devices.is_none() {
            self.before.devices = Some((*tracked.value).clone());
        }
        Ok(Arc::make_mut(&mut tracked.value))
    }

    /// The environments and the devices together (as [`Transaction::envs`]
    /// and [`Transaction::devices`]), for the views that join them,
    /// without copying either.
    pub fn envs_and_devices(&mut self) -> Result<(&Envs, &Devices)> {
        self.load_devices()?;
        self.load_envs()?;
        Ok((
            &self.envs.as_ref().expect("loaded above").value,
            &self.devices.as_ref().expect("loaded above").value,
        ))
    }

    fn load_devices(&mut self) -> Result<()> {
        if self.devices.is_none() {
            let (mut devices, original) = match self.cached::<Devices>(DEVICES_FILE) {
                Some(hit) => hit,
                None => {
                    let key = self.cache_key(DEVICES_FILE);
                    let loaded = if self.options.reset {
                        None
                    } else {
                        load(self.root, DEVICES_FILE, true)?
                    };
                    let (mut devices, original) = match loaded {
                        Some(loaded) => loaded,
                        None => (Devices::default(), self.root.read(DEVICES_FILE)?),
                    };
                    devices.devices.sort_by_key(|d| d.index);
                    let devices = Arc::new(devices);
                    if let Some(key) = key.filter(|_| original.is_some()) {
                        cache::put(key, devices.clone());
                    }
                    (devices, original.map(|bytes| bytes.len()))
                }
            };
            // Converted from an older layout (empty original): written back.
            let mut touched = self.options.reset || original == Some(0);
            if self.options.cleanup {
                let envs = self.envs()?;
                let alive: std::collections::HashSet<&str> =
                    envs.envs.iter().map(|e| e.eid.as_str()).collect();
                let gone = devices.eids_of_all().any(|eid| !alive.contains(eid));
                if gone {
                    touched |= Arc::make_mut(&mut devices).cleanup(|eid| alive.contains(eid));
                }
            }
            self.devices = Some(Tracked {
                value: devices,
                original,
                touched,
            });
        }
        Ok(())
    }

    /// The devices brought in line with the hardware as surveyed before
    /// the lock: new GPUs added, gone ones dropped. The driver is asked
    /// here, under the lock, only if the state changed since the survey
    /// in a way that needs it (`devices.json` removed meanwhile).
    pub fn reconcile(&mut self, survey: &Survey<'_>) -> Result<&Devices> {
        if !self.reconciled {
            self.load_devices()?;
            let stored =
                Hardware::recorded(self.root, |root| root.read(HARDWARE_FILE).ok().flatten());
            let tracked = self.devices.as_mut().expect("loaded above");
            let recorded = stored.as_ref().and_then(|h| h.fingerprint.as_ref());
            // An empty list that no survey wrote (no hardware record) was
            // written by a change before anything asked the driver.
            let needed = survey.force
                || self.options.reset
                || tracked.original.is_none()
                || (stored.is_none() && tracked.value.devices.is_empty())
                || (survey.fingerprint.is_some() && recorded != survey.fingerprint.as_ref());
            if needed {
                let asked;
                let gpus = match &survey.gpus {
                    Some(gpus) => gpus,
                    None => {
                        asked = survey.backend.devices()?;
                        &asked
                    }
                };
                apply_inventory(Arc::make_mut(&mut tracked.value), gpus);
                tracked.touched = true;
                let record = Hardware {
                    fingerprint: survey.fingerprint.clone(),
                };
                // A reader of the daemon's folder records nothing.
                if self._lock.is_some()
                    && stored.map(|h| h.fingerprint) != Some(record.fingerprint.clone())
                {
                    self.root.write_atomic(
                        HARDWARE_FILE,
                        &crate::output::json::to_json(&record)?,
                        false,
                    )?;
                }
            }
            self.reconciled = true;
        }
        Ok(&self.devices.as_ref().expect("loaded above").value)
    }

    /// The line of waiting requests, without waiters whose process is gone.
    pub fn queue(&mut self) -> Result<&Queue> {
        self.load_queue()?;
        Ok(&self.queue.as_ref().expect("loaded above").value)
    }

    /// The line of waiting requests, to change.
    pub fn queue_mut(&mut self) -> Result<&mut Queue> {
        self.load_queue()?;
        self.changing = true;
        let tracked = self.queue.as_mut().expect("loaded above");
        tracked.touched = true;
        Ok(Arc::make_mut(&mut tracked.value))
    }

    fn load_queue(&mut self) -> Result<()> {
        if self.queue.is_none() {
            let (mut queue, original): Loaded<Queue> =
                load(self.root, QUEUE_FILE, false)?.unwrap_or_default();
            let original = original.map(|bytes| bytes.len());
            let waiting = queue.waiters.len();
            let alive = &mut self.alive;
            queue.waiters.retain(|w| {
                *alive
                    .entry(w.pid)
                    .or_insert_with(|| procs::pid_alive(w.pid))
            });
            queue.waiters.sort_by_key(|w| w.ticket);
            self.queue = Some(Tracked {
                touched: queue.waiters.len() != waiting,
                value: Arc::new(queue),
                original,
            });
        }
        Ok(())
    }

    /// Writes back the files whose content changed.
    pub fn commit(mut self) -> Result<()> {
        if self._lock.is_none() {
            return self.read_only();
        }
        if let Some(peer) = self.peer {
            // The devices' owners are read from the environments, changed
            // or not.
            self.load_envs()?;
            let envs = self
                .before
                .envs
                .as_ref()
                .zip(self.envs.as_ref().map(|t| &*t.value));
            let devices = self
                .before
                .devices
                .as_ref()
                .zip(self.devices.as_ref().map(|t| &*t.value));
            let unchanged;
            let envs = match envs {
                Some(pair) => Some(pair),
                None if devices.is_some() => {
                    let now = &*self.envs.as_ref().expect("loaded above").value;
                    unchanged = now;
                    Some((unchanged, now))
                }
                None => None,
            };
            authorize::check(peer, envs, devices)?;
        }
        if let Some(tracked) = self.envs.as_ref().filter(|t| t.touched) {
            save(
                self.root,
                ENVS_FILE,
                &*tracked.value,
                tracked.original,
                true,
            )?;
            self.keep(ENVS_FILE, &tracked.value);
            if file::locked_down() {
                make_ledgers(self.root, &tracked.value);
            }
        }
        // Devices nobody surveyed are not recorded: a configuration change
        // before the first survey would otherwise record a machine with
        // no GPUs.
        let unsurveyed = |t: &&Tracked<Devices>| t.original.is_none() && !self.reconciled;
        if let Some(tracked) = self
            .devices
            .as_ref()
            .filter(|t| t.touched && !unsurveyed(t))
        {
            save(
                self.root,
                DEVICES_FILE,
                &*tracked.value,
                tracked.original,
                true,
            )?;
            self.keep(DEVICES_FILE, &tracked.value);
        }
        if let Some(tracked) = self.queue.as_ref().filter(|t| t.touched) {
            // An empty line and no file are the same; don't create one.
            if !(tracked.original.is_none() && tracked.value.waiters.is_empty()) {
                save(
                    self.root,
                    QUEUE_FILE,
                    &*tracked.value,
                    tracked.original,
                    false,
                )?;
            }
        }
        Ok(())
    }
}

impl Transaction<'_> {
    /// The end of a transaction without the lock: nothing is written (what
    /// cleanup dropped, the daemon drops on its next change); a change is
    /// refused.
    fn read_only(self) -> Result<()> {
        if self.changing {
            return Err(Error::hinted(
                format!(
                    "genv daemon owns the state folder {}; this change must go through it",
                    file::shown(&self.root.join(""))
                ),
                "genv's own commands do; genv 1.4.3 and other tools that write the files cannot",
            ));
        }
        Ok(())
    }
}

/// In the daemon's folder, where only root makes files: the memory cap
/// ledger of each capped environment of the caller's, made for its owner
/// (0600, theirs), so that the memory cap library of its processes finds
/// one to share.
fn make_ledgers(root: &Dir, envs: &Envs) {
    let uid = crate::caller::uid();
    for env in envs.envs.iter().filter(|e| e.config.gpu_memory.is_some()) {
        if env.uid != i64::from(uid) {
            continue;
        }
        let _ = root.open_private(&crate::memcap::ledger_name(uid, &env.eid), uid);
    }
}

/// Whether `devices.json` lists no device (an empty list or folder of
/// devices), as a change writes it before anything asked the driver.
fn lists_no_devices(root: &Dir) -> bool {
    root.peek(DEVICES_FILE)
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| match v.get("devices")? {
            serde_json::Value::Array(a) => Some(a.is_empty()),
            serde_json::Value::Object(o) => Some(o.is_empty()),
            _ => None,
        })
        .unwrap_or(false)
}

/// Brings `devices` in line with the GPUs present: new ones are added, gone
/// ones dropped with a warning naming the environments that lose them.
fn apply_inventory(devices: &mut Devices, gpus: &[GpuInfo]) {
    devices.devices.retain(|device| {
        let present = gpus.iter().any(|g| g.index == device.index);
        if !present {
            let eids: Vec<&str> = device.eids().collect();
            if eids.is_empty() {
                crate::messages::warn(format_args!(
                    "GPU {} is no longer present; removed it",
                    device.index
                ));
            } else {
                let eids: Vec<_> = eids.iter().map(|e| crate::escape::terminal(e)).collect();
                crate::messages::warn(format_args!(
                    "GPU {} is no longer present; environment(s) {} lose it",
                    device.index,
                    eids.join(", ")
                ));
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

/// Writes a state file when its bytes changed (the file as it is now, not
/// as it was read: whatever it holds, it ends up holding `value`);
/// `original`, the size it was read at, sizes the buffer. `keep_good` for
/// the files genv 1.4.3 writes too, which it may leave torn.
fn save<T: salvage::Entries>(
    dir: &Dir,
    name: &str,
    value: &T,
    original: Option<usize>,
    keep_good: bool,
) -> Result<()> {
    let bytes = value.to_json_sized(original.map_or(0, |len| len + len / 8))?;
    if original.is_some_and(|len| len == bytes.len()) && dir.holds(name, &bytes) {
        return Ok(());
    }
    dir.write_atomic(name, &bytes, keep_good)
}
