//! The metrics, as a pure function of a [`Snapshot`]: every metric of
//! genv 1.4.3 with its name, labels, type and help text, then ours. The
//! families are built anew from each snapshot, so the series of
//! environments, processes and users that are gone disappear.
//!
//! The text formats are written by `prometheus-client`: Prometheus's
//! classic text format (what genv 1.4.3's Python client serves) or
//! OpenMetrics, when the scraper asks for it.

use std::fmt::Write as _;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use std::collections::{BTreeSet, HashMap};

use super::snapshot::{Process, Snapshot};
use crate::memory;
use crate::state::device_locks::Holder;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// One series: its labels in the order genv 1.4.3 declares them.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// A metric and its series.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// For a counter, the name without `_total` (the encoders add it).
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

impl Family {
    fn gauge(name: &'static str, help: &'static str) -> Self {
        Family {
            name,
            help,
            kind: Kind::Gauge,
            samples: Vec::new(),
        }
    }

    fn set(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push(Sample { labels, value });
    }

    /// The name a series of this family has in the text formats.
    #[cfg(test)]
    pub fn series_name(&self) -> String {
        match self.kind {
            Kind::Gauge => self.name.to_owned(),
            Kind::Counter => format!("{}_total", self.name),
        }
    }
}

/// Every metric name `genv monitor` serves (counters with `_total`), for
/// checks of dashboards and documentation.
#[cfg(test)]
pub fn series_names() -> Vec<String> {
    collect(&Snapshot::default())
        .iter()
        .map(Family::series_name)
        .collect()
}

/// Processes and attached devices by environment, so that 200
/// environments and 1,000 processes cost one pass each, not a product.
struct ByEnv<'a> {
    processes: HashMap<&'a str, Vec<&'a Process>>,
    devices: HashMap<&'a str, Vec<u32>>,
}

impl<'a> ByEnv<'a> {
    fn new(s: &'a Snapshot) -> Self {
        let mut processes: HashMap<&str, Vec<&Process>> = HashMap::new();
        for p in &s.processes {
            if let Some(eid) = p.eid.as_deref() {
                processes.entry(eid).or_default().push(p);
            }
        }
        let mut devices: HashMap<&str, Vec<u32>> = HashMap::new();
        for d in &s.devices {
            for a in &d.attachments {
                let list = devices.entry(a.eid.as_str()).or_default();
                // An environment attached twice to one device counts once.
                if list.last() != Some(&d.index) {
                    list.push(d.index);
                }
            }
        }
        ByEnv { processes, devices }
    }

    fn processes(&self, eid: &str) -> &[&'a Process] {
        self.processes.get(eid).map(Vec::as_slice).unwrap_or(&[])
    }

    fn devices(&self, eid: &str) -> &[u32] {
        self.devices.get(eid).map(Vec::as_slice).unwrap_or(&[])
    }
}

fn mib(value: u64) -> f64 {
    (value << 20) as f64
}

/// The metric families of a snapshot. genv 1.4.3's come first, in the
/// order its registry lists them (alphabetical by its spec names).
pub fn collect(s: &Snapshot) -> Vec<Family> {
    let by_env = ByEnv::new(s);
    let usernames = s.usernames();
    let eid_of = |e: &crate::state::Env| vec![("eid", e.eid.to_string())];
    let mut user_envs: HashMap<&str, Vec<&crate::state::Env>> = HashMap::new();
    for env in &s.envs {
        if let Some(name) = env.username.as_deref() {
            user_envs.entry(name).or_default().push(env);
        }
    }

    let mut attached_devices =
        Family::gauge("genv_attached_devices_total", "Number of attached devices");
    attached_devices.set(
        vec![],
        s.devices
            .iter()
            .filter(|d| !d.attachments.is_empty())
            .count() as f64,
    );

    let mut memory_total = Family::gauge(
        "genv_device_memory_total_bytes",
        "Device total memory in bytes",
    );
    let mut memory_used = Family::gauge(
        "genv_device_memory_used_bytes",
        "Device used memory in bytes",
    );
    let mut temperature =
        Family::gauge("genv_device_temperature", "Device temperature in degrees C");
    let mut utilization = Family::gauge("genv_device_utilization", "Device utilization");
    for gpu in &s.gpus {
        let index = || vec![("index", gpu.index.to_string())];
        memory_total.set(index(), mib(gpu.total_memory_mib));
        if let Some(used) = gpu.used_memory_mib {
            memory_used.set(index(), mib(used));
        }
        if let Some(t) = gpu.temperature {
            temperature.set(index(), f64::from(t));
        }
        if let Some(u) = gpu.utilization {
            utilization.set(index(), f64::from(u));
        }
    }

    let mut environments =
        Family::gauge("genv_environments_total", "Number of active environments");
    environments.set(vec![], s.envs.len() as f64);

    let mut env_devices = Family::gauge(
        "genv_environment_attached_devices_total",
        "Number of attached devices of an environment",
    );
    let mut env_processes = Family::gauge(
        "genv_environment_processes_total",
        "Number of running processes in an environment",
    );
    for env in &s.envs {
        env_devices.set(eid_of(env), by_env.devices(&env.eid).len() as f64);
        env_processes.set(eid_of(env), by_env.processes(&env.eid).len() as f64);
    }

    // genv is what serves these metrics, so it is installed.
    let mut installed = Family::gauge("genv_is_installed", "Genv installation status");
    installed.set(vec![], 1.0);

    let mut processes = Family::gauge("genv_processes_total", "Number of running processes");
    processes.set(vec![], s.processes.len() as f64);

    let mut process_devices = Family::gauge(
        "genv_process_devices_total",
        "Number of devices used by a process",
    );
    let mut process_memory = Family::gauge(
        "genv_process_used_gpu_memory_bytes",
        "Used GPU memory by a process",
    );
    for p in &s.processes {
        let labels = || {
            vec![
                ("pid", p.pid.to_string()),
                ("eid", p.eid.clone().unwrap_or_default()),
            ]
        };
        process_devices.set(labels(), p.usage.len() as f64);
        for &(index, used) in &p.usage {
            let mut labels = labels();
            labels.push(("device", index.to_string()));
            process_memory.set(labels, mib(used));
        }
    }

    let mut users = Family::gauge("genv_users_total", "Number of active users");
    users.set(vec![], usernames.len() as f64);

    let mut user_devices = Family::gauge(
        "genv_user_attached_devices_total",
        "Number of attached devices of a user",
    );
    let mut user_environments = Family::gauge(
        "genv_user_environments_total",
        "Number of active environments of a user",
    );
    let mut user_processes = Family::gauge(
        "genv_user_processes_total",
        "Number of running processes of a user",
    );
    for &name in &usernames {
        let envs = user_envs.get(name).map(Vec::as_slice).unwrap_or(&[]);
        let labels = || vec![("username", name.to_owned())];
        // Devices on which any of the user's environments is attached.
        let devices: BTreeSet<u32> = envs
            .iter()
            .flat_map(|e| by_env.devices(&e.eid).iter().copied())
            .collect();
        let devices = devices.len();
        let procs: usize = envs.iter().map(|e| by_env.processes(&e.eid).len()).sum();
        user_devices.set(labels(), devices as f64);
        user_environments.set(labels(), envs.len() as f64);
        user_processes.set(labels(), procs as f64);
    }

    let mut families = vec![
        attached_devices,
        memory_total,
        memory_used,
        temperature,
        utilization,
        environments,
        env_devices,
        env_processes,
        installed,
        processes,
        process_devices,
        process_memory,
        users,
        user_devices,
        user_environments,
        user_processes,
    ];
    families.extend(beyond_1_4_3(s, &by_env));
    families
}

/// What an administrator wants next, not in genv 1.4.3.
fn beyond_1_4_3(s: &Snapshot, by_env: &ByEnv<'_>) -> Vec<Family> {
    let mut info = Family::gauge(
        "genv_environment_info",
        "Environment name and owner (always 1)",
    );
    let mut capacity = Family::gauge(
        "genv_environment_gpu_memory_capacity_bytes",
        "Configured GPU memory capacity of an environment in bytes",
    );
    let mut env_used = Family::gauge(
        "genv_environment_used_gpu_memory_bytes",
        "Used GPU memory of an environment's processes on a device in bytes",
    );
    for env in &s.envs {
        info.set(
            vec![
                ("eid", env.eid.to_string()),
                (
                    "name",
                    env.config.name.as_deref().unwrap_or_default().to_owned(),
                ),
                (
                    "username",
                    env.username.as_deref().unwrap_or_default().to_owned(),
                ),
                ("uid", env.uid.to_string()),
            ],
            1.0,
        );
        if let Some(bytes) = env
            .config
            .gpu_memory
            .as_deref()
            .and_then(|m| memory::to_bytes(m).ok())
        {
            capacity.set(vec![("eid", env.eid.to_string())], bytes as f64);
        }
        let mut per_device: std::collections::BTreeMap<u32, u64> = Default::default();
        for &index in by_env.devices(&env.eid) {
            per_device.insert(index, 0);
        }
        for p in by_env.processes(&env.eid) {
            for &(index, used) in &p.usage {
                *per_device.entry(index).or_default() += used;
            }
        }
        for (index, used) in per_device {
            env_used.set(
                vec![("eid", env.eid.to_string()), ("device", index.to_string())],
                mib(used),
            );
        }
    }

    let mut holders = Family::gauge(
        "genv_device_lock_holders",
        "Number of processes holding a device's lock",
    );
    let mut waiters = Family::gauge(
        "genv_device_lock_waiters",
        "Number of processes waiting for a device's lock",
    );
    for locks in &s.locks {
        let count = |waiting: bool| {
            locks
                .holders
                .iter()
                .filter(|h: &&Holder| h.waiting == waiting)
                .count() as f64
        };
        let index = || vec![("index", locks.index.to_string())];
        holders.set(index(), count(false));
        waiters.set(index(), count(true));
    }

    let mut actions = Family {
        name: "genv_enforcement_actions",
        help: "Actions taken by enforcement: processes terminated and environments detached",
        kind: Kind::Counter,
        samples: Vec::new(),
    };
    actions.set(
        vec![("action", "terminate".into())],
        s.enforcement.terminated as f64,
    );
    actions.set(
        vec![("action", "detach".into())],
        s.enforcement.detached as f64,
    );

    vec![info, capacity, env_used, holders, waiters, actions]
}

/// The families as `prometheus-client` sees them: encoded by it at scrape.
#[derive(Debug)]
struct Families(Vec<Family>);

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.0 {
            let kind = match family.kind {
                Kind::Gauge => MetricType::Gauge,
                Kind::Counter => MetricType::Counter,
            };
            let mut metric = encoder.encode_descriptor(family.name, family.help, None, kind)?;
            for sample in &family.samples {
                let series = metric.encode_family(&sample.labels)?;
                match family.kind {
                    Kind::Gauge => ConstGauge::new(sample.value).encode(series)?,
                    Kind::Counter => ConstCounter::new(sample.value).encode(series)?,
                }
            }
        }
        Ok(())
    }
}

/// Which text format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus's text format 0.0.4, as genv 1.4.3 serves it.
    Text,
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the scraper's `Accept` header asks for it, as
    /// Prometheus does; else the classic text format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The families in a text format.
pub fn encode(families: Vec<Family>, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Families(families)));
    let mut out = String::new();
    let result = match format {
        Format::Text => prometheus_client::encoding::prometheus_text::encode(&mut out, &registry),
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
    };
    if result.is_err() {
        // Writing to a String cannot fail; say so rather than serve half.
        let _ = writeln!(out, "# genv: the metrics could not be encoded");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::GpuStatus;
    use crate::monitor::DeviceLocks;
    use crate::state::device_locks::Need;
    use crate::state::{Config, Device, Env};

    fn env(eid: &str, username: Option<&str>, gpu_memory: Option<&str>) -> Env {
        Env {
            eid: eid.into(),
            uid: 1000,
            creation: "01/01/2026 00:00:00".into(),
            username: username.map(Into::into),
            config: Config {
                name: None,
                gpu_memory: gpu_memory.map(Into::into),
                gpus: None,
            },
            pids: vec![1],
            kernel_ids: vec![],
        }
    }

    fn snapshot() -> Snapshot {
        let mut d0 = Device::new(0, 16384);
        d0.attach("a", Some("4g".into()), "t".into());
        d0.attach("b", None, "t".into());
        let mut d1 = Device::new(1, 16384);
        d1.attach("a", Some("4g".into()), "t".into());
        Snapshot {
            gpus: vec![
                GpuStatus {
                    index: 0,
                    utilization: Some(50),
                    temperature: None,
                    used_memory_mib: Some(1024),
                    total_memory_mib: 16384,
                },
                GpuStatus {
                    index: 1,
                    utilization: None,
                    temperature: Some(40),
                    used_memory_mib: None,
                    total_memory_mib: 16384,
                },
            ],
            envs: vec![
                env("a", Some("alice"), Some("4g")),
                env("b", Some("alice"), None),
                env("c", None, None),
            ],
            devices: vec![d0, d1],
            processes: vec![
                Process {
                    pid: 10,
                    eid: Some("a".into()),
                    usage: vec![(0, 100), (1, 200)],
                },
                Process {
                    pid: 11,
                    eid: None,
                    usage: vec![(1, 1)],
                },
            ],
            locks: vec![DeviceLocks {
                index: 0,
                holders: vec![
                    Holder {
                        pid: 10,
                        eid: Some("a".into()),
                        need: Need::Fraction(4 << 30),
                        waiting: false,
                    },
                    Holder {
                        pid: 12,
                        eid: Some("b".into()),
                        need: Need::Exclusive,
                        waiting: true,
                    },
                ],
            }],
            enforcement: crate::state::enforcement::EnforcementCounts {
                terminated: 3,
                detached: 1,
            },
        }
    }

    fn value(families: &[Family], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let family = families.iter().find(|f| f.name == name)?;
        family
            .samples
            .iter()
            .find(|s| {
                s.labels.len() == labels.len()
                    && s.labels
                        .iter()
                        .zip(labels)
                        .all(|((k, v), (l, w))| k == l && v == w)
            })
            .map(|s| s.value)
    }

    #[test]
    fn counts_as_genv_1_4_3_does() {
        let f = collect(&snapshot());
        assert_eq!(value(&f, "genv_environments_total", &[]), Some(3.0));
        // An environment without a username is nobody's.
        assert_eq!(value(&f, "genv_users_total", &[]), Some(1.0));
        assert_eq!(value(&f, "genv_attached_devices_total", &[]), Some(2.0));
        assert_eq!(value(&f, "genv_processes_total", &[]), Some(2.0));
        assert_eq!(
            value(
                &f,
                "genv_environment_attached_devices_total",
                &[("eid", "a")]
            ),
            Some(2.0)
        );
        assert_eq!(
            value(&f, "genv_environment_processes_total", &[("eid", "c")]),
            Some(0.0)
        );
        assert_eq!(
            value(
                &f,
                "genv_process_devices_total",
                &[("pid", "11"), ("eid", "")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &f,
                "genv_process_used_gpu_memory_bytes",
                &[("pid", "10"), ("eid", "a"), ("device", "1")]
            ),
            Some((200u64 << 20) as f64)
        );
        assert_eq!(
            value(
                &f,
                "genv_user_attached_devices_total",
                &[("username", "alice")]
            ),
            Some(2.0)
        );
        assert_eq!(
            value(&f, "genv_user_environments_total", &[("username", "alice")]),
            Some(2.0)
        );
        assert_eq!(
            value(&f, "genv_user_processes_total", &[("username", "alice")]),
            Some(1.0)
        );
        // What the driver cannot tell has no series.
        assert_eq!(
            value(&f, "genv_device_temperature", &[("index", "0")]),
            None
        );
        assert_eq!(
            value(&f, "genv_device_utilization", &[("index", "0")]),
            Some(50.0)
        );
        assert_eq!(
            value(&f, "genv_device_memory_used_bytes", &[("index", "1")]),
            None
        );
    }

    #[test]
    fn adds_memory_locks_and_enforcement() {
        let f = collect(&snapshot());
        assert_eq!(
            value(
                &f,
                "genv_environment_gpu_memory_capacity_bytes",
                &[("eid", "a")]
            ),
            Some(4e9)
        );
        assert_eq!(
            value(
                &f,
                "genv_environment_gpu_memory_capacity_bytes",
                &[("eid", "b")]
            ),
            None
        );
        assert_eq!(
            value(
                &f,
                "genv_environment_used_gpu_memory_bytes",
                &[("eid", "b"), ("device", "0")]
            ),
            Some(0.0)
        );
        assert_eq!(
            value(&f, "genv_device_lock_holders", &[("index", "0")]),
            Some(1.0)
        );
        assert_eq!(
            value(&f, "genv_device_lock_waiters", &[("index", "0")]),
            Some(1.0)
        );
        assert_eq!(
            value(&f, "genv_enforcement_actions", &[("action", "terminate")]),
            Some(3.0)
        );
        assert!(series_names().contains(&"genv_enforcement_actions_total".to_owned()));
    }

    #[test]
    fn gone_things_have_no_series() {
        let mut s = snapshot();
        s.envs.retain(|e| e.eid == "c");
        s.processes.clear();
        s.devices.iter_mut().for_each(|d| d.attachments.clear());
        let text = encode(collect(&s), Format::Text);
        assert!(!text.contains("eid=\"a\""), "{text}");
        assert!(!text.contains("username=\"alice\""), "{text}");
        assert!(!text.contains("pid=\"10\""), "{text}");
        assert!(text.contains("# HELP genv_users_total Number of active users\n"));
        assert!(text.contains("genv_users_total 0.0\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped_by_the_encoder() {
        let mut s = snapshot();
        s.envs[0].config.name = Some("quote \" back \\ new\nline".into());
        let text = encode(collect(&s), Format::Text);
        assert!(
            text.contains(r#"name="quote \" back \\ new\nline""#),
            "{text}"
        );
    }
}
