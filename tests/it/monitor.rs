//! `genv monitor`: the exporter scraped over HTTP, the published files,
//! the signals, a port in use, and a real Prometheus scraping it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// `genv monitor` running on a free port, collecting every second.
pub struct Monitor {
    pub child: Option<Child>,
    pub port: u16,
}

impl Monitor {
    pub fn start(sb: &Sandbox) -> Monitor {
        let port = free_port();
        let child = sb
            .cmd(&[
                "monitor",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--interval",
                "1",
            ])
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
    sb.activate_env("ee", shell.pid()).ok();
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
