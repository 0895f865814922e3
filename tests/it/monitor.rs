//! `genv monitor`: the exporter scraped over HTTP, the published files,
//! the signals, a port in use, and a real Prometheus scraping it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::users::{ALICE, MALLORY, alive, command_as};
use crate::common::{Run, Sandbox};

/// genv 1.4.3's metrics with their help texts (genv/metrics/specs.py).
const REFERENCE: [(&str, &str); 16] = [
    ("genv_is_installed", "Genv installation status"),
    ("genv_device_temperature", "Device temperature in degrees C"),
    ("genv_device_utilization", "Device utilization"),
    (
        "genv_device_memory_used_bytes",
        "Device used memory in bytes",
    ),
    (
        "genv_device_memory_total_bytes",
        "Device total memory in bytes",
    ),
    ("genv_environments_total", "Number of active environments"),
    ("genv_processes_total", "Number of running processes"),
    ("genv_attached_devices_total", "Number of attached devices"),
    ("genv_users_total", "Number of active users"),
    (
        "genv_environment_processes_total",
        "Number of running processes in an environment",
    ),
    (
        "genv_environment_attached_devices_total",
        "Number of attached devices of an environment",
    ),
    (
        "genv_process_devices_total",
        "Number of devices used by a process",
    ),
    (
        "genv_process_used_gpu_memory_bytes",
        "Used GPU memory by a process",
    ),
    (
        "genv_user_environments_total",
        "Number of active environments of a user",
    ),
    (
        "genv_user_processes_total",
        "Number of running processes of a user",
    ),
    (
        "genv_user_attached_devices_total",
        "Number of attached devices of a user",
    ),
];

/// A simulated GPU process: `sleep` under a name of its own, which the
/// sandbox's simulated driver counts as its only compute processes (so
/// other tests' `sleep`s on this machine do not show up).
pub struct GpuProcess(Child);

impl GpuProcess {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for GpuProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Makes the sandbox's simulated driver count only processes named
/// `name` (at most 15 characters, the kernel's limit), and returns a
/// function starting such processes with the given variables.
pub fn gpu_processes(
    sb: &mut Sandbox,
    name: &str,
) -> impl Fn(&[(&str, &str)]) -> GpuProcess + use<> {
    let program = sb.dir.path().join(name);
    if !program.exists() {
        std::os::unix::fs::symlink(which("sleep"), &program).unwrap();
    }
    sb.set("GENV_MOCK_COMPUTE_APPS_PROCESS_NAME", name);
    move |vars: &[(&str, &str)]| {
        let mut cmd = Command::new(&program);
        cmd.arg("100000").env_remove("CUDA_VISIBLE_DEVICES");
        cmd.env_remove("GENV_ENVIRONMENT_ID");
        for (n, v) in vars {
            cmd.env(n, v);
        }
        GpuProcess(cmd.spawn().expect("spawn sleep"))
    }
}

fn which(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} is not installed; scripts/test installs it"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A GET over plain HTTP/1.0: (status line, body).
pub fn http_get(port: u16, path: &str, accept: Option<&str>) -> Option<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\n{accept}\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some((head.to_owned(), body.to_owned()))
}

/// Polls `check` until it gives a value or the deadline passes.
pub fn poll<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn monitor_args(port: u16) -> Vec<String> {
    [
        "monitor",
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
    ]
    .into_iter()
    .chain(["--interval", "1"])
    .map(str::to_owned)
    .collect()
}

/// `genv monitor` running on a free port, collecting every second.
pub struct Monitor {
    pub child: Option<Child>,
    pub port: u16,
}

impl Monitor {
    pub fn start(sb: &Sandbox) -> Monitor {
        let port = free_port();
        let mut cmd = Command::new(crate::common::GENV);
        cmd.args(monitor_args(port));
        sb.apply(&mut cmd);
        Monitor::spawn(cmd, port)
    }

    /// As root, under a limit of `files` open files (1,024 is the soft
    /// limit most systems give a service), as an administrator starts it.
    pub fn start_limited(sb: &Sandbox, files: u32) -> Monitor {
        let port = free_port();
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={files}"))
            .arg(crate::common::GENV)
            .args(monitor_args(port));
        sb.apply(&mut cmd);
        Monitor::spawn(cmd, port)
    }

    fn spawn(mut cmd: Command, port: u16) -> Monitor {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let monitor = Monitor {
            child: Some(child),
            port,
        };
        poll("the exporter to answer", Duration::from_secs(30), || {
            monitor.scrape().filter(|body| !body.is_empty())
        });
        monitor
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    pub fn scrape(&self) -> Option<String> {
        http_get(self.port, "/metrics", None).map(|(_, body)| body)
    }

    /// Scrapes until `check` holds for the body (the exporter collects
    /// every second), and returns that body.
    #[track_caller]
    pub fn until(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(body) = self.scrape() {
                if check(&body) {
                    return body;
                }
                last = body;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{last}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends a signal and returns how the monitor ended.
    pub fn stop(&mut self, signal: i32) -> Run {
        let child = self.child.take().unwrap();
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        Run::from(child.wait_with_output().unwrap())
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn has_line(body: &str, line: &str) -> bool {
    body.lines().any(|l| l == line)
}

#[test]
fn serves_every_metric_of_genv_1_4_3_with_its_help_and_type() {
    let sb = Sandbox::new();
    let monitor = Monitor::start(&sb);
    let body = monitor.until("the devices", |b| {
        b.contains("genv_device_utilization{index=\"1\"} 93.0")
    });
    for (name, help) in REFERENCE {
        assert!(
            has_line(&body, &format!("# HELP {name} {help}")),
            "{name}:\n{body}"
        );
        assert!(
            has_line(&body, &format!("# TYPE {name} gauge")),
            "{name}:\n{body}"
        );
    }
    for line in [
        "genv_is_installed 1.0",
        "genv_device_temperature{index=\"0\"} 38.0",
        "genv_device_memory_used_bytes{index=\"0\"} 10485760.0",
        "genv_device_memory_total_bytes{index=\"1\"} 15999172608.0",
        "genv_environments_total 0.0",
        "genv_users_total 0.0",
        "# TYPE genv_enforcement_actions_total counter",
        "genv_enforcement_actions_total{action=\"terminate\"} 0.0",
    ] {
        assert!(has_line(&body, line), "{line}:\n{body}");
    }
    // OpenMetrics for a scraper that asks, as Prometheus does.
    let (head, open) = http_get(
        monitor.port,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0"),
    )
    .unwrap();
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(
        has_line(&open, "# TYPE genv_enforcement_actions counter"),
        "{open}"
    );
    let (head, _) = http_get(monitor.port, "/metrics", None).unwrap();
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
}

#[test]
fn series_of_environments_processes_and_users_come_and_go() {
    let mut sb = Sandbox::new();
    let spawn = gpu_processes(&mut sb, "gm-series");
    let alice = spawn(&[("GENV_ENVIRONMENT_ID", "ea"), ("CUDA_VISIBLE_DEVICES", "0")]);
    let bob = spawn(&[("GENV_ENVIRONMENT_ID", "eb")]);
    let stray = spawn(&[("CUDA_VISIBLE_DEVICES", "1")]);
    sb.activate_env_as("ea", 1000, Some("alice"), alice.pid())
        .ok();
    sb.activate_env_as("eb", 1001, Some("bob"), bob.pid()).ok();
    sb.config_memory("ea", "4g").ok();
    sb.config_name("ea", "train").ok();
    sb.attach("ea", 1).ok();
    sb.attach_index("eb", 1).ok();
    let monitor = Monitor::start(&sb);
    let (a, b, s) = (alice.pid(), bob.pid(), stray.pid());
    let body = monitor.until("both environments", |body| {
        has_line(body, "genv_environments_total 2.0")
    });
    for line in [
        "genv_users_total 2.0".to_owned(),
        "genv_processes_total 3.0".to_owned(),
        "genv_attached_devices_total 2.0".to_owned(),
        "genv_environment_processes_total{eid=\"ea\"} 1.0".to_owned(),
        "genv_environment_attached_devices_total{eid=\"eb\"} 1.0".to_owned(),
        format!("genv_process_devices_total{{pid=\"{a}\",eid=\"ea\"}} 1.0"),
        format!("genv_process_devices_total{{pid=\"{b}\",eid=\"eb\"}} 2.0"),
        format!("genv_process_devices_total{{pid=\"{s}\",eid=\"\"}} 1.0"),
        format!(
            "genv_process_used_gpu_memory_bytes{{pid=\"{a}\",eid=\"ea\",device=\"0\"}} 44040192.0"
        ),
        "genv_user_environments_total{username=\"alice\"} 1.0".to_owned(),
        "genv_user_processes_total{username=\"bob\"} 1.0".to_owned(),
        "genv_user_attached_devices_total{username=\"bob\"} 1.0".to_owned(),
        // Beyond 1.4.3.
        "genv_environment_info{eid=\"ea\",name=\"train\",username=\"alice\",uid=\"1000\"} 1.0"
            .to_owned(),
        "genv_environment_gpu_memory_capacity_bytes{eid=\"ea\"} 4000000000.0".to_owned(),
        "genv_environment_used_gpu_memory_bytes{eid=\"eb\",device=\"0\"} 44040192.0".to_owned(),
        "genv_environment_used_gpu_memory_bytes{eid=\"eb\",device=\"1\"} 44040192.0".to_owned(),
    ] {
        assert!(has_line(&body, &line), "{line}:\n{body}");
    }
    // Bob's only process ends: his environment, process and user go.
    drop(bob);
    let body = monitor.until("bob's series to go", |body| {
        has_line(body, "genv_environments_total 1.0") && has_line(body, "genv_processes_total 2.0")
    });
    assert!(!body.contains("eid=\"eb\""), "{body}");
    assert!(!body.contains("username=\"bob\""), "{body}");
    assert!(!body.contains(&format!("pid=\"{b}\"")), "{body}");
    assert!(has_line(&body, "genv_users_total 1.0"), "{body}");
}

#[test]
fn counts_enforcement_actions_and_device_locks() {
    let mut sb = Sandbox::new();
    let spawn = gpu_processes(&mut sb, "gm-enforce");
    let shell = crate::common::Sleeper::new();
    let victim = spawn(&[("GENV_ENVIRONMENT_ID", "ee")]);
    // Root's, as the process `usage execute` terminates (root's processes
    // count only in root's environments).
    sb.activate_env_as("ee", 0, Some("root"), shell.pid()).ok();
    sb.activate_env("ef", shell.pid()).ok();
    sb.attach_index("ee", 0).ok();
    sb.attach_index("ef", 1).ok();
    let monitor = Monitor::start(&sb);
    monitor.until("the environments", |b| {
        has_line(b, "genv_environments_total 2.0")
    });
    let report = format!(
        r#"{{"terminate": {{"processes": [{{"pid": {}, "used_gpu_memory": [{{"index": 0, "gpu_memory": "42mi"}}], "eid": "ee"}}]}},
            "detach": {{"1": {{"envs": [{{"eid": "ef", "uid": 1000, "creation": "01/01/2026 00:00:00", "username": "alice",
            "config": {{"name": null, "gpu_memory": null, "gpus": null}}, "pids": [], "kernel_ids": []}}]}}}}}}"#,
        victim.pid()
    );
    sb.run_stdin(&["usage", "execute"], &report).ok();
    monitor.until("the counters", |b| {
        has_line(
            b,
            "genv_enforcement_actions_total{action=\"terminate\"} 1.0",
        ) && has_line(b, "genv_enforcement_actions_total{action=\"detach\"} 1.0")
    });

    // A lock held in environment ee on device 0.
    let mut locked = sb
        .cmd(&["lock", "sh", "-c", "echo in; read x"])
        .env("GENV_ENVIRONMENT_ID", "ee")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(locked.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "in\n");
    monitor.until("the lock holder", |b| {
        has_line(b, "genv_device_lock_holders{index=\"0\"} 1.0")
            && has_line(b, "genv_device_lock_waiters{index=\"0\"} 0.0")
    });
    locked.stdin.take().unwrap().write_all(b"done\n").unwrap();
    assert!(locked.wait().unwrap().success());
}

#[test]
fn sigterm_and_sigint_stop_it_cleanly() {
    let sb = Sandbox::new();
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let mut monitor = Monitor::start(&sb);
        let run = monitor.stop(signal);
        assert_eq!(run.code, 0, "{run:?}");
        assert!(
            run.stderr
                .contains(&format!("genv: monitor stopped ({name})")),
            "{run:?}"
        );
        assert!(
            run.stderr
                .starts_with("genv: serving metrics at http://127.0.0.1:"),
            "{run:?}"
        );
        assert!(http_get(monitor.port, "/metrics", None).is_none());
    }
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let sb = Sandbox::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let run = sb
        .run(&["monitor", "--host", "127.0.0.1", "--port", &port])
        .fails();
    assert_eq!(
        run.stderr,
        format!(
            "genv: error: cannot listen on 127.0.0.1:{port}: the port is already in use\n\
             hint: stop the program using it (another genv monitor?) or choose another port with --port\n"
        )
    );
    assert!(!sb.file("metrics").exists());
}

fn published(sb: &Sandbox, path: &str) -> String {
    std::fs::read_to_string(sb.file("metrics").join(path)).unwrap()
}

/// The metric names an expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("genv_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

fn exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(list) => list.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn publishes_prometheus_and_grafana_files_whose_metrics_exist() {
    let sb = Sandbox::new();
    let monitor = Monitor::start(&sb);
    let body = monitor.scrape().unwrap();
    let served: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();

    let prometheus = published(&sb, "prometheus/prometheus.yml");
    assert!(
        prometheus.contains(&format!("- targets: [\"127.0.0.1:{}\"]", monitor.port)),
        "{prometheus}"
    );
    let root = sb.file("metrics");
    let ini = published(&sb, "grafana/grafana.ini");
    assert!(
        ini.contains(&format!(
            "provisioning = {}/grafana/provisioning\n",
            root.display()
        )),
        "{ini}"
    );
    assert!(ini.contains(&format!(
        "default_home_dashboard_path = {}/grafana/dashboards/overview.json\n",
        root.display()
    )));
    let providers = published(&sb, "grafana/provisioning/dashboards/default.yml");
    assert!(providers.contains(&format!("path: \"{}/grafana/dashboards\"", root.display())));
    let datasources = published(&sb, "grafana/provisioning/datasources/default.yml");
    assert!(
        datasources.contains("uid: genv-prometheus"),
        "{datasources}"
    );

    let dashboard: serde_json::Value =
        serde_json::from_str(&published(&sb, "grafana/dashboards/overview.json")).unwrap();
    let mut all = Vec::new();
    exprs(&dashboard["panels"], &mut all);
    assert!(all.len() >= 20, "{all:?}");
    let mut used = std::collections::BTreeSet::new();
    for expr in &all {
        for name in metric_names(expr) {
            assert!(
                served.contains(&name.as_str()),
                "{name} in {expr:?} is not served"
            );
            used.insert(name);
        }
    }
    // Panels for devices, environments, users and processes.
    for name in [
        "genv_device_utilization",
        "genv_environment_processes_total",
        "genv_user_environments_total",
        "genv_process_used_gpu_memory_bytes",
    ] {
        assert!(used.contains(name), "no panel uses {name}");
    }
    // Every panel reads the published data source.
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] != "row" {
            assert_eq!(panel["datasource"]["uid"], "genv-prometheus", "{panel}");
        }
    }

    // Prometheus's own checker accepts the configuration.
    let check = Command::new(which("promtool"))
        .args(["check", "config"])
        .arg(sb.file("metrics").join("prometheus/prometheus.yml"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
}

/// A real Prometheus started with the published `prometheus.yml`
/// (rewritten to scrape every second) on a free port.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    fn start(sb: &Sandbox) -> Prometheus {
        let config = published(sb, "prometheus/prometheus.yml")
            .replace("scrape_interval: 15s", "scrape_interval: 1s");
        let dir = sb.dir.path().join("prometheus");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        let port = free_port();
        let child = Command::new(which("prometheus"))
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is not installed; scripts/test installs it");
        Prometheus { child, port }
    }

    /// The instant vector of a PromQL query, as (labels, value) pairs.
    fn query(&self, query: &str) -> Vec<(serde_json::Value, String)> {
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let Some((_, body)) = http_get(self.port, &format!("/api/v1/query?query={encoded}"), None)
        else {
            return Vec::new();
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) else {
            return Vec::new();
        };
        json["data"]["result"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|r| {
                        (
                            r["metric"].clone(),
                            r["value"][1].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_the_published_configuration() {
    let mut sb = Sandbox::new();
    let spawn = gpu_processes(&mut sb, "gm-prom");
    let worker = spawn(&[("GENV_ENVIRONMENT_ID", "ep"), ("CUDA_VISIBLE_DEVICES", "1")]);
    sb.activate_env_as("ep", 1000, Some("alice"), worker.pid())
        .ok();
    sb.attach_index("ep", 1).ok();
    let monitor = Monitor::start(&sb);
    let prometheus = Prometheus::start(&sb);
    let expected = [
        ("genv_environments_total", "1"),
        ("genv_environment_processes_total{eid=\"ep\"}", "1"),
        ("genv_user_attached_devices_total{username=\"alice\"}", "1"),
        ("genv_device_utilization{index=\"1\"}", "93"),
        ("genv_enforcement_actions_total{action=\"detach\"}", "0"),
    ];
    for (query, value) in expected {
        let result = poll(
            &format!("Prometheus to have {query}"),
            Duration::from_secs(90),
            || {
                let result = prometheus.query(query);
                (!result.is_empty()).then_some(result)
            },
        );
        assert_eq!(result.len(), 1, "{query}: {result:?}");
        assert_eq!(result[0].1, value, "{query}: {result:?}");
        assert_eq!(result[0].0["job"], "genv", "{result:?}");
    }
    let pid = worker.pid().to_string();
    let memory = prometheus.query("genv_process_used_gpu_memory_bytes");
    assert_eq!(memory.len(), 1, "{memory:?}");
    assert_eq!(memory[0].0["pid"], pid.as_str());
    assert_eq!(memory[0].0["device"], "1");
    assert_eq!(memory[0].1, "44040192");
    drop(monitor);
}

/// An exposition as a set of comparable lines: `# HELP` and `# TYPE` lines
/// as they are, samples as `name{labels sorted} value` with the value
/// parsed (Python writes `1.5999172608e+10` where Rust writes
/// `15999172608.0`, and may order labels differently).
fn exposition(text: &str, names: &[&str]) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            if names.contains(&line.split(' ').nth(2).unwrap_or("")) {
                out.insert(line.to_owned());
            }
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        if !names.contains(&name) {
            continue;
        }
        let mut labels: Vec<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
        labels.sort_unstable();
        let value: f64 = value.parse().unwrap();
        out.insert(format!("{name}{{{}}} {value}", labels.join(",")));
    }
    out
}

#[test]
fn serves_what_genv_1_4_3_serves() {
    let mut sb = Sandbox::new();
    let spawn = gpu_processes(&mut sb, "gm-compat");
    let a = spawn(&[("GENV_ENVIRONMENT_ID", "ca"), ("CUDA_VISIBLE_DEVICES", "1")]);
    let b = spawn(&[("GENV_ENVIRONMENT_ID", "cb")]);
    let _stray = spawn(&[("CUDA_VISIBLE_DEVICES", "0")]);
    sb.activate_env_as("ca", 1000, Some("alice"), a.pid()).ok();
    sb.activate_env_as("cb", 1001, Some("bob"), b.pid()).ok();
    sb.attach_index("ca", 1).ok();
    sb.attach_index("cb", 0).ok();

    // genv 1.4.3 asks nvidia-smi: the project's stand-in, on PATH with it.
    let bin = sb.dir.path().join("ref-bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(crate::shim_support::SIM, bin.join("nvidia-smi")).unwrap();
    let reference = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/genv-ref/bin");
    assert!(
        reference.join("genv").is_file(),
        "genv 1.4.3 is not installed in target/genv-ref; scripts/test installs it"
    );
    let port = free_port();
    let mut cmd = Command::new(reference.join("genv"));
    cmd.args(["monitor", "--port", &port.to_string(), "--interval", "1"]);
    cmd.arg("--config-dir")
        .arg(sb.dir.path().join("ref-metrics"));
    sb.apply(&mut cmd);
    cmd.env(
        "PATH",
        format!("{}:{}:/usr/bin:/bin", bin.display(), reference.display()),
    );
    let mut theirs = Monitor {
        child: Some(
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ),
        port,
    };
    let ours = Monitor::start(&sb);
    let names: Vec<&str> = REFERENCE.iter().map(|(n, _)| *n).collect();
    let want = |body: &str| {
        has_line(body, "genv_processes_total 3.0") && body.contains("genv_user_processes_total{")
    };
    let expected = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(body) = theirs.scrape().filter(|b| want(b)) {
                break exposition(&body, &names);
            }
            if let Some(child) = theirs.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let mut stderr = String::new();
                let _ = child
                    .stderr
                    .take()
                    .map(|mut e| e.read_to_string(&mut stderr));
                panic!("genv 1.4.3's monitor exited ({status}): {stderr}");
            }
            assert!(
                Instant::now() < deadline,
                "genv 1.4.3's monitor never served the metrics (is prometheus_client installed in target/genv-ref? scripts/test installs it)"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let body = ours.until("the processes", want);
    assert_eq!(exposition(&body, &names), expected);
    assert!(expected.len() > 40, "{expected:#?}");
}

// The exporter against hostile clients: it runs as root, as an
// administrator starts it, and any local user (or anyone on the network:
// it listens on every address by default) can connect.

/// The open files a test may hold, raised (up to the hard limit) so that
/// this process can hold a thousand connections itself.
fn allow_open_files(files: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let want = limit.maximum.map_or(files, |hard| hard.min(files));
    if limit.current.is_some_and(|soft| soft < want) {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: limit.maximum,
            },
        )
        .unwrap();
    }
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// What a process's `/proc/PID/status` says of `field` (`VmHWM`), in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The response's head (up to the blank line), or what came before the
/// connection ended or the deadline passed.
fn read_head(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A scrape that must be answered with the metrics within `within`.
#[track_caller]
fn scrape_within(monitor: &Monitor, within: Duration, after: &str) {
    let started = Instant::now();
    let body = monitor.scrape();
    let took = started.elapsed();
    assert!(alive(monitor.pid()), "the exporter died after {after}");
    assert!(
        body.as_deref()
            .is_some_and(|b| b.contains("genv_is_installed 1.0")),
        "no metrics after {after}: {body:?}"
    );
    assert!(took < within, "a scrape took {took:?} after {after}");
}

#[test]
fn a_thousand_idle_connections_neither_stop_nor_starve_it() {
    allow_open_files(4096);
    let sb = Sandbox::new();
    let monitor = Monitor::start_limited(&sb, 1024);
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], monitor.port));
    // Connected and silent; none of them ever sends a byte.
    let idle: Vec<TcpStream> = (0..1000)
        .filter_map(|_| TcpStream::connect_timeout(&address, Duration::from_secs(5)).ok())
        .collect();
    scrape_within(&monitor, Duration::from_secs(5), "1,000 idle connections");
    // And again: a new client always gets in while they are held.
    scrape_within(&monitor, Duration::from_secs(5), "a second scrape");
    // It holds a bounded number of them (the ones waiting longest were
    // shed), not one per client.
    let sockets = || {
        std::fs::read_dir(format!("/proc/{}/fd", monitor.pid()))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count()
    };
    poll(
        "the exporter to shed connections",
        Duration::from_secs(10),
        || (sockets() <= 300).then_some(()),
    );
    assert!(idle.len() > 900, "{} connected", idle.len());
    drop(idle);
}

#[test]
fn an_accept_without_descriptors_backs_off_and_carries_on() {
    let sb = Sandbox::new();
    // Started as a service is, then its open-files limit lowered to what
    // it holds now and three more: its connection bound (a quarter of the
    // limit it started with) no longer keeps it within its descriptors,
    // and the clients below run it out of them. (Started under so low a
    // limit, it could not write its Prometheus and Grafana files.)
    let monitor = Monitor::start_limited(&sb, 1024);
    let limit = open_files(monitor.pid()) + 3;
    let lowered = Command::new("prlimit")
        .args(["--pid", &monitor.pid().to_string()])
        .arg(format!("--nofile={limit}"))
        .status()
        .unwrap();
    assert!(lowered.success(), "prlimit --pid failed");
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], monitor.port));
    // Sixty: each accept past the limit frees the oldest and waits 50 ms,
    // so the scrape behind them waits about three seconds.
    let idle: Vec<TcpStream> = (0..60)
        .filter_map(|_| TcpStream::connect_timeout(&address, Duration::from_secs(5)).ok())
        .collect();
    scrape_within(
        &monitor,
        Duration::from_secs(10),
        "running out of descriptors",
    );
    drop(idle);
    scrape_within(&monitor, Duration::from_secs(5), "the clients left");
}

#[test]
fn a_client_that_never_reads_does_not_hold_up_other_scrapes() {
    let sb = Sandbox::new();
    let monitor = Monitor::start(&sb);
    let mut hog = TcpStream::connect(("127.0.0.1", monitor.port)).unwrap();
    hog.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    // Pipelined requests whose answers it never reads, more than socket
    // buffers hold: the exporter takes what it takes of them, and the
    // rest times out here (an exporter that stopped reading) or is
    // refused (one that closed the connection).
    let requests = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(500_000);
    let _ = hog.write_all(requests.as_bytes());
    scrape_within(
        &monitor,
        Duration::from_secs(3),
        "a client pipelined 500,000 requests",
    );
    drop(hog);
}

#[test]
fn huge_request_headers_are_cut_off_with_bounded_memory() {
    let sb = Sandbox::multi_user();
    let monitor = Monitor::start(&sb);
    let port = monitor.port.to_string();
    // Eight processes of mallory's, each sending one 64 MB header.
    let script = r#"exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 2
{ printf 'GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Big: '
  head -c 67108864 /dev/zero | tr '\0' a; } >&3 2>/dev/null
exit 0"#;
    let mut clients: Vec<Child> = (0..8)
        .map(|_| {
            command_as(MALLORY, "bash")
                .args(["-c", script, "big-header", &port])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    poll("the clients to end", Duration::from_secs(120), || {
        clients
            .iter_mut()
            .all(|c| matches!(c.try_wait(), Ok(Some(_))))
            .then_some(())
    });
    let peak = status_kb(monitor.pid(), "VmHWM");
    assert!(peak < 64 * 1024, "the exporter peaked at {peak} kB");
    scrape_within(&monitor, Duration::from_secs(3), "64 MB headers");
}

#[test]
fn a_sixteen_megabyte_url_is_refused() {
    let sb = Sandbox::new();
    let monitor = Monitor::start(&sb);
    let mut stream = TcpStream::connect(("127.0.0.1", monitor.port)).unwrap();
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut request = b"GET /".to_vec();
            request.resize(request.len() + (16 << 20), b'a');
            request.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\n\r\n");
            let _ = stream.write_all(&request);
        })
    };
    let head = read_head(&mut stream);
    assert!(
        head.is_empty() || head.starts_with("HTTP/1.1 414 "),
        "{head}"
    );
    drop(stream);
    writer.join().unwrap();
    scrape_within(&monitor, Duration::from_secs(3), "a 16 MB URL");
}

#[test]
fn speaks_http_1_1_with_bounded_keep_alive() {
    let sb = Sandbox::new();
    let monitor = Monitor::start(&sb);
    let mut stream = TcpStream::connect(("127.0.0.1", monitor.port)).unwrap();
    let response = |stream: &mut TcpStream, request: &str| -> (String, String) {
        stream.write_all(request.as_bytes()).unwrap();
        let head = read_head(stream);
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no Content-Length: {head}"));
        let mut body = vec![
            0;
            if request.starts_with("HEAD") {
                0
            } else {
                length
            }
        ];
        stream.read_exact(&mut body).unwrap();
        (head, String::from_utf8(body).unwrap())
    };
    // Two requests on one connection, then one that closes it.
    let (head, body) = response(&mut stream, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "{head}"
    );
    assert!(body.contains("genv_is_installed 1.0"), "{body}");
    let (head, body) = response(&mut stream, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(body.is_empty());
    let (head, body) = response(
        &mut stream,
        "GET /favicon.ico HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
    assert!(body.is_empty(), "{body}");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");

    // A client that keeps one connection open gets a bounded number of
    // answers on it, then a close.
    let mut stream = TcpStream::connect(("127.0.0.1", monitor.port)).unwrap();
    let mut answered = 0;
    loop {
        let (head, _) = response(&mut stream, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        answered += 1;
        if head.contains("\r\nConnection: close\r\n") {
            break;
        }
        assert!(answered < 10_000, "never closed");
    }
    assert!(answered >= 10, "closed after {answered} requests");
}

/// The files `genv monitor` publishes, under the configuration folder.
const PUBLISHED: [&str; 5] = [
    "grafana/dashboards/overview.json",
    "grafana/grafana.ini",
    "grafana/provisioning/dashboards/default.yml",
    "grafana/provisioning/datasources/default.yml",
    "prometheus/prometheus.yml",
];

/// Every entry under `root` is root's, a folder 0755 or a file 0644 (no
/// link, nothing else), and the files are exactly the published ones.
#[track_caller]
fn assert_published_by_root(root: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let mut files = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let meta = std::fs::symlink_metadata(&folder).unwrap();
        assert!(meta.is_dir(), "{}: {meta:?}", folder.display());
        assert_eq!(
            (meta.uid(), meta.mode() & 0o7777),
            (0, 0o755),
            "{}",
            folder.display()
        );
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                folders.push(path);
                continue;
            }
            assert!(meta.is_file(), "{}: {meta:?}", path.display());
            assert_eq!(
                (meta.uid(), meta.mode() & 0o7777),
                (0, 0o644),
                "{}",
                path.display()
            );
            files.push(path.strip_prefix(root).unwrap().display().to_string());
        }
    }
    files.sort();
    assert_eq!(files, PUBLISHED);
}

#[test]
fn root_publishes_its_own_files_over_what_another_user_planted() {
    use std::os::unix::fs::MetadataExt;
    let sb = Sandbox::multi_user();
    let metrics = sb.file("metrics");
    // A file of alice's, which mallory links to from the published tree.
    let notes = sb.home_of(ALICE).join("notes.yml");
    let status = command_as(ALICE, "sh")
        .args(["-c", "printf 'alice\\n' > \"$1\"", "sh"])
        .arg(&notes)
        .status()
        .unwrap();
    assert!(status.success());
    // Mallory's configuration for an administrator's Grafana, in place
    // before root first runs the exporter: open to everyone, a plugin of
    // hers and a link where prometheus.yml goes.
    let plant = r#"umask 0 && mkdir -p "$1/grafana/provisioning/plugins" "$1/prometheus" &&
printf '[plugins]\nallow_loading_unsigned_plugins = evil\n[paths]\nplugins = /tmp/evil\n' > "$1/grafana/grafana.ini" &&
printf 'apiVersion: 1\napps: [{type: evil}]\n' > "$1/grafana/provisioning/plugins/evil.yml" &&
ln -s "$2" "$1/prometheus/prometheus.yml""#;
    let status = command_as(MALLORY, "sh")
        .args(["-c", plant, "sh"])
        .arg(&metrics)
        .arg(&notes)
        .status()
        .unwrap();
    assert!(status.success());
    let hers = std::fs::symlink_metadata(&notes).unwrap();
    let ini = metrics.join("grafana/grafana.ini");
    let meta = std::fs::metadata(&ini).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (MALLORY, 0o666));

    let monitor = Monitor::start(&sb);
    assert_published_by_root(&metrics);
    let ini = std::fs::read_to_string(&ini).unwrap();
    assert!(!ini.contains("evil"), "{ini}");
    assert!(
        std::fs::read_to_string(metrics.join("prometheus/prometheus.yml"))
            .unwrap()
            .contains(&format!("127.0.0.1:{}", monitor.port))
    );
    let meta = std::fs::symlink_metadata(&notes).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode(), meta.ino()),
        (ALICE, hers.mode(), hers.ino())
    );
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "alice\n");
    drop(monitor);

    // Root again: its own files are replaced in place, nothing is moved.
    let names = |dir: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let before = names(&sb.state());
    let monitor = Monitor::start(&sb);
    assert_published_by_root(&metrics);
    assert_eq!(names(&sb.state()), before);
    drop(monitor);

    // Mallory's own exporter never moves root's published files aside to
    // publish hers in their place: it stops with one line and a hint.
    let mut theirs = command_as(MALLORY, "timeout");
    theirs
        .args([
            "10",
            crate::common::GENV,
            "monitor",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ])
        .current_dir(sb.home_of(MALLORY));
    sb.apply(&mut theirs);
    let run = crate::common::Run::from(theirs.output().unwrap()).fails();
    assert_ne!(
        run.code, 124,
        "mallory's exporter published and served: {run:?}"
    );
    assert!(
        run.stderr.contains("only its owner may change it"),
        "{run:?}"
    );
    assert!(run.stderr.contains("hint: "), "{run:?}");
    assert_published_by_root(&metrics);
    assert_eq!(names(&sb.state()), before);
}
