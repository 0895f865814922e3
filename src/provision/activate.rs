//! Making a process part of an environment, for every caller: a shell's
//! `genv activate`, the Python SDK (`genv sdk activate`), `genv llm serve`
//! and a container's `prestart` hook. One transaction creates (or joins)
//! the environment, configures it and attaches its devices, so a failure
//! leaves no half-activated environment behind; only `--wait` commits the
//! environment first and then waits in line for its devices.

use super::{Request, Wait, attach_env, attach_waiting, update_capacity};
use crate::context::LazyBackend;
use crate::error::{Error, Result};
use crate::state::{Config, LoadOptions, StateDir};

/// A process to make part of an environment, and what to do on the way.
pub struct Activation<'a> {
    pub eid: &'a str,
    /// The process that joins the environment (a shell, a program using
    /// the SDK, genv serving a model, a container's init process).
    pub pid: i64,
    pub config: Configure,
    pub attach: Attach,
    /// Share devices already taken when no free one is left.
    pub over_subscribe: bool,
    /// Ask the driver (when the state needs it) and bring the devices in
    /// line with it even when nothing is attached, a failure stopping the
    /// activation: a container's hook, which must know the devices it
    /// names. Otherwise a failed survey matters only when devices are
    /// attached, and shows there.
    pub survey_always: bool,
}

/// What becomes of the environment's configuration.
pub enum Configure {
    /// Kept as the state has it.
    Keep,
    /// Replaced; the attachments follow a new memory capacity.
    Replace(Config),
    /// A shell's: a new environment starts from `initial` (its `.genv`),
    /// then every field `set` has is set. The attachments stay as they
    /// are, as genv 1.4.3's activation leaves them.
    Merge {
        initial: Option<Config>,
        set: Config,
    },
}

/// Which devices to attach.
pub enum Attach {
    /// None.
    No,
    /// The configured count (`gpus`), when there is one: devices attached
    /// up to it, the surplus detached; with `wait`, waiting in line for
    /// them (`--wait`).
    Configured { wait: Option<Wait> },
    /// The configured count, only when the environment is attached to
    /// nothing yet (the SDK, `genv llm serve`).
    ConfiguredIfDetached,
    /// These devices, by index.
    Indices(Vec<u32>),
}

/// The environment as the activation left it.
pub struct Activated {
    pub config: Config,
    /// The devices it is attached to.
    pub indices: Vec<u32>,
    /// Whether the environment was made by this activation (it did not
    /// exist before).
    pub created: bool,
}

/// Creates (or joins) environment `eid` for a process, configures it and
/// attaches its devices as `activation` asks, in one transaction. The
/// driver, when it must be asked, is asked before the lock.
pub fn activate(
    dir: &StateDir,
    backend: &LazyBackend,
    activation: Activation<'_>,
) -> Result<Activated> {
    let Activation {
        eid,
        pid,
        config,
        attach,
        over_subscribe,
        survey_always,
    } = activation;
    if eid.is_empty() {
        return Err(Error::new("the environment identifier must not be empty"));
    }
    let uid = crate::caller::uid();
    let username = crate::os::procs::username(uid);
    // Asked before the lock, as every verb does; whether devices are
    // attached depends on the configuration in the state, so a failure
    // here (no driver) only matters if they are, and then shows there.
    let survey = if survey_always {
        Some(dir.survey(backend.get(), false)?)
    } else if matches!(attach, Attach::No) {
        None
    } else {
        dir.survey(backend.get(), false).ok()
    };
    let mut tx = dir.transaction(LoadOptions::default())?;
    if survey_always && let Some(survey) = &survey {
        tx.reconcile(survey)?;
    }
    let now = tx.now();
    let envs = tx.envs_mut()?;
    let new = !envs.contains(eid);
    envs.activate(eid, uid.into(), username, now);
    let env = envs
        .get_mut(eid)
        .ok_or_else(|| Error::new("environment vanished"))?;
    if !env.pids.contains(&pid) {
        env.pids.push(pid);
    }
    let follow_capacity = match config {
        Configure::Keep => true,
        Configure::Replace(config) => {
            env.config = config;
            true
        }
        Configure::Merge { initial, set } => {
            if new && let Some(initial) = initial {
                env.config = initial;
            }
            if set.name.is_some() {
                env.config.name = set.name;
            }
            if set.gpu_memory.is_some() {
                env.config.gpu_memory = set.gpu_memory;
            }
            if set.gpus.is_some() {
                env.config.gpus = set.gpus;
            }
            false
        }
    };
    let config = env.config.clone();
    if follow_capacity {
        update_capacity(tx.devices_mut()?, eid, config.gpu_memory.as_deref());
    }
    let attaching = match &attach {
        Attach::No => false,
        Attach::Configured { .. } => config.gpus.is_some(),
        Attach::ConfiguredIfDetached => {
            config.gpus.is_some() && tx.devices()?.indices_of(eid).is_empty()
        }
        Attach::Indices(_) => true,
    };
    let configured = Request {
        over_subscribe,
        ..Request::default()
    };
    if attaching {
        if let Attach::Configured { wait: Some(wait) } = attach {
            tx.commit()?;
            if let Err(e) = attach_waiting(dir, backend.get(), eid, configured, wait) {
                // Leave no trace of an activation that did not happen.
                let mut tx = dir.transaction(LoadOptions::default())?;
                tx.envs_mut()?.cleanup(|p| p != pid, |_, _| true);
                tx.devices()?;
                tx.commit()?;
                return Err(e);
            }
            let mut tx = dir.transaction(LoadOptions::default())?;
            let indices = attached(&mut tx, eid);
            tx.commit()?;
            return Ok(Activated {
                config,
                indices,
                created: new,
            });
        }
        match &survey {
            Some(survey) => tx.reconcile(survey)?,
            None => tx.reconcile(&dir.survey(backend.get(), false)?)?,
        };
        match attach {
            Attach::Indices(indices) => {
                for index in indices {
                    let request = Request {
                        index: Some(index),
                        ..configured
                    };
                    attach_env(&mut tx, eid, request)?;
                }
            }
            _ => attach_env(&mut tx, eid, configured)?,
        }
    }
    let indices = attached(&mut tx, eid);
    tx.commit()?;
    Ok(Activated {
        config,
        indices,
        created: new,
    })
}

/// The devices `eid` is attached to; none when they cannot be read (the
/// activation itself already read them whenever it attached).
fn attached(tx: &mut crate::state::Transaction<'_>, eid: &str) -> Vec<u32> {
    tx.devices().map(|d| d.indices_of(eid)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backend::{MockBackend, MockConfig};

    /// A state folder of its own over two simulated GPUs of 16 GiB.
    struct Machine {
        _folder: tempfile::TempDir,
        dir: StateDir,
        backend: LazyBackend,
    }

    impl Machine {
        fn new() -> Self {
            let folder = tempfile::tempdir().unwrap();
            let dir = StateDir::new(folder.path());
            let config = MockConfig {
                count: 2,
                ..MockConfig::with_defaults()
            };
            Machine {
                _folder: folder,
                dir,
                backend: LazyBackend::with(Box::new(MockBackend::new(config))),
            }
        }

        /// Activates for this process, alive for as long as the test runs.
        fn activate(&self, eid: &str, config: Configure, attach: Attach) -> Result<Activated> {
            self.activate_for(std::process::id().into(), eid, config, attach)
        }

        fn activate_for(
            &self,
            pid: i64,
            eid: &str,
            config: Configure,
            attach: Attach,
        ) -> Result<Activated> {
            let activation = Activation {
                eid,
                pid,
                config,
                attach,
                over_subscribe: false,
                survey_always: false,
            };
            activate(&self.dir, &self.backend, activation)
        }

        fn exists(&self, eid: &str) -> bool {
            let mut tx = self.dir.transaction(LoadOptions::default()).unwrap();
            tx.envs().unwrap().contains(eid)
        }
    }

    fn gpus(n: i64) -> Config {
        Config {
            gpus: Some(n),
            ..Config::default()
        }
    }

    const CONFIGURED: Attach = Attach::Configured { wait: None };

    #[test]
    fn a_shell_sets_its_fields_over_the_saved_configuration() {
        let machine = Machine::new();
        let saved = Config {
            name: Some("saved".into()),
            ..gpus(1)
        };
        let set = Config {
            gpu_memory: Some("4g".into()),
            ..Config::default()
        };
        let merge = Configure::Merge {
            initial: Some(saved),
            set,
        };
        let activated = machine.activate("e", merge, CONFIGURED).unwrap();
        assert_eq!(activated.indices, [0]);
        assert_eq!(activated.config.name.as_deref(), Some("saved"));
        assert_eq!(activated.config.gpu_memory.as_deref(), Some("4g"));
        assert_eq!(activated.config.gpus, Some(1));
    }

    #[test]
    fn the_saved_configuration_is_only_for_a_new_environment() {
        let machine = Machine::new();
        machine
            .activate("e", Configure::Replace(gpus(1)), Attach::No)
            .unwrap();
        let merge = Configure::Merge {
            initial: Some(gpus(2)),
            set: Config::default(),
        };
        let activated = machine.activate("e", merge, CONFIGURED).unwrap();
        assert_eq!(activated.config.gpus, Some(1));
        assert_eq!(activated.indices, [0]);
    }

    #[test]
    fn the_sdk_attaches_only_an_environment_attached_to_nothing() {
        let machine = Machine::new();
        let first = machine
            .activate(
                "e",
                Configure::Replace(gpus(1)),
                Attach::ConfiguredIfDetached,
            )
            .unwrap();
        assert_eq!(first.indices, [0]);
        let again = machine
            .activate(
                "e",
                Configure::Replace(gpus(2)),
                Attach::ConfiguredIfDetached,
            )
            .unwrap();
        assert_eq!(again.indices, [0]);
        // The shell's activation ensures the count.
        let shell = machine.activate("e", Configure::Keep, CONFIGURED).unwrap();
        assert_eq!(shell.indices, [0, 1]);
    }

    #[test]
    fn given_indices_are_attached() {
        let machine = Machine::new();
        let activated = machine
            .activate("e", Configure::Keep, Attach::Indices(vec![1]))
            .unwrap();
        assert_eq!(activated.indices, [1]);
    }

    #[test]
    fn a_failed_attach_leaves_no_environment() {
        let machine = Machine::new();
        let error = machine
            .activate("e", Configure::Replace(gpus(3)), CONFIGURED)
            .err()
            .expect("more devices than the machine has");
        assert_eq!(
            error.to_string(),
            "Requested more devices (3) than total available (2)"
        );
        assert!(!machine.exists("e"));
    }

    #[test]
    fn an_empty_identifier_is_refused() {
        let machine = Machine::new();
        let error = machine
            .activate("", Configure::Keep, Attach::No)
            .err()
            .expect("an empty identifier");
        assert_eq!(
            error.to_string(),
            "the environment identifier must not be empty"
        );
    }

    #[test]
    fn a_wait_that_fails_takes_the_environment_back() {
        let _serial = crate::os::signals::TEST_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let machine = Machine::new();
        // Another process, alive too: taking the environment back removes
        // this process from every environment, as a shell's leaving does.
        let parent = std::os::unix::process::parent_id().into();
        machine
            .activate_for(parent, "taken", Configure::Replace(gpus(2)), CONFIGURED)
            .unwrap();
        let wait = Wait {
            timeout: Some(Duration::from_millis(1)),
        };
        let error = machine
            .activate(
                "e",
                Configure::Replace(gpus(1)),
                Attach::Configured { wait: Some(wait) },
            )
            .err()
            .expect("no device is free");
        assert!(error.to_string().starts_with("Timed out after"), "{error}");
        assert!(!machine.exists("e"));
        assert!(machine.exists("taken"));
    }
}
