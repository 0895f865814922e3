//! `genv remote` over real OpenSSH: several `sshd` on loopback ports, each
//! a "host" with its own state folder and simulated GPUs (given by the
//! server's `SetEnv`), one of them running genv 1.4.3, one without genv on
//! its `PATH` and one that is down.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{GENV, Run, Sandbox, Sleeper};

const SSHD: &str = "/usr/sbin/sshd";
const SSH: &str = "/usr/bin/ssh";

/// What a host runs as `genv`.
#[derive(Clone, Copy)]
pub enum Genv {
    Ours,
    Reference,
    Missing,
}

pub struct Fleet {
    // First, so the servers are gone before their folder is.
    servers: Servers,
    dir: tempfile::TempDir,
    config: PathBuf,
    hosts: Vec<(String, Sandbox)>,
}

/// The running `sshd`s, each owned from the moment it is spawned: however
/// the test ends (a panic while the next host is set up included), each
/// server and what it started in its process group is killed and reaped.
struct Servers(Vec<Child>);

impl Servers {
    /// Starts `sshd -D` with `config` in a process group of its own, its
    /// stdout closed and its stderr in `log`: nothing it leaves behind
    /// holds the test run's output open.
    fn spawn(&mut self, config: &Path, log: std::fs::File) {
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start sshd");
        self.0.push(child);
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for server in &mut self.0 {
            let group = i32::try_from(server.id())
                .ok()
                .and_then(rustix::process::Pid::from_raw);
            if let Some(group) = group {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (scripts/test installs openssh-client)");
    assert!(status.success());
}

fn folder_of(path: &str) -> String {
    Path::new(path).parent().unwrap().display().to_string()
}

/// A folder holding `nvidia-smi`, our simulator, for genv 1.4.3.
fn simulated_nvidia_smi(dir: &Path) -> String {
    let bin = dir.join("sim-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let _ =
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_nvidia-smi-sim"), bin.join("nvidia-smi"));
    bin.display().to_string()
}

pub fn reference_bin() -> String {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/genv-ref/bin");
    assert!(
        bin.join("genv").is_file(),
        "genv 1.4.3 is not installed in {} (scripts/test installs it)",
        bin.display()
    );
    bin.display().to_string()
}

fn login() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

impl Fleet {
    /// One sshd per `(name, genv, gpus)`, plus the host `down` where
    /// nothing listens. Each host's sandbox is its state folder.
    fn start(specs: &[(&str, Genv, u32)]) -> Fleet {
        Fleet::start_with(specs, |_, _| {})
    }

    /// [`Fleet::start`], each host's sandbox first given to `configure`
    /// (its variables reach the host's commands through `SetEnv`).
    pub fn start_with(
        specs: &[(&str, Genv, u32)],
        configure: impl Fn(&str, &mut Sandbox),
    ) -> Fleet {
        assert!(
            Path::new(SSHD).is_file(),
            "{SSHD} is missing (scripts/test installs openssh-server)"
        );
        std::fs::create_dir_all("/run/sshd").ok();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("user_key"));
        std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).unwrap();
        let sim = simulated_nvidia_smi(d);
        let mut ssh_config = String::new();
        let mut servers = Servers(Vec::new());
        let mut hosts = Vec::new();
        let mut waits = Vec::new();
        for (i, (name, genv, gpus)) in specs.iter().enumerate() {
            let mut sb = Sandbox::new();
            sb.set("GENV_MOCK_DEVICE_COUNT", &gpus.to_string());
            // The stand-in ollama and nvidia-smi on every host's PATH.
            let ollama = crate::common::fixture("ollama");
            let log = sb.dir.path().join("ollama.log");
            sb.set("OLLAMA_STANDIN_LOG", log.to_str().unwrap());
            // GPU processes are processes of this name (the mock and the
            // stand-in nvidia-smi pick them by name), one name a host.
            sb.set("GENV_MOCK_COMPUTE_APPS_PROCESS_NAME", &gpu_name(name));
            configure(name, &mut sb);
            let path = match genv {
                Genv::Ours => format!(
                    "{}:{sim}:{}:/usr/bin:/bin",
                    folder_of(GENV),
                    ollama.display()
                ),
                Genv::Reference => {
                    format!(
                        "{}:{sim}:{}:/usr/bin:/bin",
                        reference_bin(),
                        ollama.display()
                    )
                }
                Genv::Missing => format!("{sim}:/usr/bin:/bin"),
            };
            let vars: Vec<String> = sb
                .vars
                .iter()
                .filter(|(n, _)| n != "PATH")
                .map(|(n, v)| format!("{n}={v}"))
                .collect();
            let port = free_port();
            // A home of its own: the login shell sshd starts sources the
            // account's ~/.bashrc, whose noise (this machine's pyenv
            // rehashing from eight sessions at once) is not the host's.
            let home = d.join(format!("home.{i}"));
            std::fs::create_dir(&home).unwrap();
            let config = d.join(format!("sshd_config.{i}"));
            std::fs::write(
                &config,
                format!(
                    "HostKey {d}/host_key\nPort {port}\nListenAddress 127.0.0.1\n\
                     AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.{i}.pid\n\
                     StrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nPermitRootLogin yes\nLogLevel ERROR\n\
                     SetEnv {vars} HOME={home} PATH={path}\n",
                    d = d.display(),
                    home = home.display(),
                    vars = vars.join(" "),
                ),
            )
            .unwrap();
            let log = std::fs::File::create(d.join(format!("sshd.{i}.log"))).unwrap();
            servers.spawn(&config, log);
            ssh_config.push_str(&format!("Host {name}\n  Port {port}\n"));
            waits.push(port);
            hosts.push((name.to_string(), sb));
        }
        ssh_config.push_str(&format!(
            "Host down\n  Port {}\nHost *\n  HostName 127.0.0.1\n  IdentityFile {d}/user_key\n  \
             IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  \
             LogLevel ERROR\n",
            free_port(),
            d = d.display(),
        ));
        let config = d.join("ssh_config");
        std::fs::write(&config, ssh_config).unwrap();
        let mut fleet = Fleet {
            servers,
            dir,
            config,
            hosts,
        };
        for (i, port) in waits.into_iter().enumerate() {
            fleet.wait_listening(i, port);
        }
        fleet
    }

    /// Polls the port until sshd listens, or fails with its log.
    fn wait_listening(&mut self, i: usize, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            let exited = self.servers.0[i].try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.path().join(format!("sshd.{i}.log")));
                panic!("sshd {i} on port {port} did not start ({exited:?}): {log:?}");
            }
            std::thread::yield_now();
        }
    }

    pub fn host(&self, name: &str) -> &Sandbox {
        &self.hosts.iter().find(|(n, _)| n == name).unwrap().1
    }

    pub fn remote(&self, args: &[&str], stdin: &str) -> Run {
        let mut cmd = Command::new(GENV);
        cmd.env("GENV_SSH", format!("ssh -F {}", self.config.display()));
        self.run_remote(cmd, args, stdin)
    }

    /// `genv remote ARGS` of genv 1.4.3, as a machine with the reference
    /// installed runs it: `ssh` from `PATH`, here one that reads the
    /// fleet's configuration.
    pub fn remote_of_reference(&self, args: &[&str]) -> Run {
        let bin = self.dir.path().join("ssh-bin");
        std::fs::create_dir_all(&bin).unwrap();
        let ssh = bin.join("ssh");
        std::fs::write(
            &ssh,
            format!(
                "#!/bin/sh\nexec {SSH} -F {} \"$@\"\n",
                self.config.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut cmd = Command::new(Path::new(&reference_bin()).join("genv"));
        cmd.env(
            "PATH",
            format!(
                "{}:{}:{}",
                bin.display(),
                reference_bin(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
        self.run_remote(cmd, args, "")
    }

    fn run_remote(&self, mut cmd: Command, args: &[&str], stdin: &str) -> Run {
        cmd.arg("remote").args(args);
        for (name, _) in std::env::vars() {
            if name.starts_with("GENV_") && name != "GENV_SSH" {
                cmd.env_remove(name);
            }
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        Run::from(child.wait_with_output().unwrap())
    }
}

/// The name of host `host`'s GPU processes: unique to this run and at
/// most 15 characters, the kernel's limit.
fn gpu_name(host: &str) -> String {
    let name = format!(
        "g{}{}",
        &host[..host.len().min(6)],
        std::process::id() % 100_000
    );
    assert!(name.len() <= 15, "{name}");
    name
}

/// A GPU process on `host`, in environment `eid`, on the GPUs `gpus`.
pub fn gpu_process(fleet: &Fleet, host: &str, eid: &str, gpus: &str) -> Sleeper {
    let name = gpu_name(host);
    crate::shim_support::named_sleeper(
        fleet.dir.path(),
        &name,
        &[("CUDA_VISIBLE_DEVICES", gpus), ("GENV_ENVIRONMENT_ID", eid)],
    )
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn devices_envs_and_query_across_ours_the_reference_and_failing_hosts() {
    let fleet = Fleet::start(&[
        ("ours1", Genv::Ours, 2),
        ("ours2", Genv::Ours, 3),
        ("ref", Genv::Reference, 2),
        ("nogenv", Genv::Missing, 2),
    ]);
    let job = Sleeper::new();
    let pid = job.pid().to_string();
    let ours2 = fleet.host("ours2");
    ours2.activate_env("train", &pid).ok();
    ours2.config_name("train", "train").ok();
    ours2.attach("train", 1).ok();
    let theirs = fleet.host("ref");
    theirs.activate_env("infer", &pid).ok();
    theirs.config_name("infer", "serve it").ok();
    theirs.attach("infer", 2).ok();

    let run = fleet.remote(&["-H", "ours1,ours2,ref", "devices", "--format", "csv"], "");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        "HOST,TOTAL,AVAILABLE\nours1,2,2\nours2,3,2\nref,2,0\n\n\
         Total 7 devices with 4 available on 3 hosts\n"
    );
    assert_eq!(run.stderr, "");

    // Failing hosts: one line each, the rest still answer, exit 1.
    let run = fleet.remote(&["-H", "ours1,down,nogenv,ref", "devices"], "");
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        lines(&run.stdout),
        [
            "HOST                     TOTAL    AVAILABLE",
            "ours1                    2        2",
            "ref                      2        0",
            "",
            "Total 4 devices with 2 available on 2 hosts",
        ]
    );
    let err = lines(&run.stderr);
    assert_eq!(err.len(), 3, "{run:?}");
    assert!(
        err[0].starts_with("genv: warning: Failed running SSH command on down (")
            && err[0].contains("Connection refused"),
        "{run:?}"
    );
    assert!(
        err[1].starts_with("genv: warning: Failed running SSH command on nogenv (")
            && err[1].contains("genv"),
        "{run:?}"
    );
    assert!(
        err[2].starts_with("hint: genv is not on the PATH"),
        "{run:?}"
    );

    let quiet = fleet.remote(
        &["-H", "ours1,down", "--quiet", "devices", "--no-summary"],
        "",
    );
    assert_eq!((quiet.code, quiet.stderr.as_str()), (1, ""), "{quiet:?}");
    assert_eq!(
        quiet.stdout,
        "HOST                     TOTAL    AVAILABLE\nours1                    2        2\n"
    );
    let strict = fleet.remote(&["-H", "ours1,down", "-e", "devices"], "");
    assert_eq!(strict.code, 1);
    assert!(
        strict
            .stderr
            .starts_with("genv: error: Failed running SSH command on down ("),
        "{strict:?}"
    );

    let run = fleet.remote(
        &[
            "-H",
            "ours1,ours2,ref",
            "envs",
            "--format",
            "csv",
            "--timestamp",
            "--no-header",
        ],
        "",
    );
    assert_eq!(run.code, 0, "{run:?}");
    let rows = lines(&run.stdout);
    assert_eq!(rows.len(), 4, "{run:?}");
    assert!(rows[0].starts_with("ours2,train,"), "{run:?}");
    assert!(rows[0].contains(",train,"), "{run:?}");
    assert!(rows[1].starts_with("ref,infer,"), "{run:?}");
    assert!(rows[1].contains(",serve it,"), "{run:?}");
    assert_eq!(rows[3], "Total 2 environments on 3 hosts");

    let run = fleet.remote(
        &[
            "-host",
            "ours2,ref",
            "query",
            "--name",
            "serve it",
            "--query",
            "hostname",
            "eid",
        ],
        "",
    );
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "ref,infer\n"),
        "{run:?}"
    );

    let json = fleet.remote(&["-H", "ours2,ref", "devices", "--format", "json"], "");
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(value[0]["host"], "ours2");
    assert_eq!(value[0]["available"], 2);

    // A name of any text is escaped in the hosts' JSON as in a host's own.
    let ours1 = fleet.host("ours1");
    ours1.activate_env("odd", &pid).ok();
    ours1
        .config_name("odd", "caf\u{e9} \u{2615}\u{7f}\"\u{1b}")
        .ok();
    let local = ours1.run(&["envs", "ps", "--format", "json"]);
    let remote = fleet.remote(&["-H", "ours1", "envs", "--format", "json"], "");
    assert_eq!((local.code, remote.code), (0, 0), "{local:?} {remote:?}");
    let escaped = r#""name": "caf\u00e9 \u2615\u007f\"\u001b""#;
    assert!(local.stdout.contains(escaped), "{local:?}");
    assert!(remote.stdout.contains(escaped), "{remote:?}");
    ours1.run(&["envs", "deactivate", "--pid", &pid]);

    // The login name: from user@host over -l, and from -l otherwise.
    let me = login();
    let run = fleet.remote(
        &[
            "-H",
            &format!("{me}@ours1"),
            "-l",
            "nosuchuser",
            "devices",
            "--no-header",
            "--no-summary",
            "--format",
            "csv",
        ],
        "",
    );
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "ours1,2,2\n"),
        "{run:?}"
    );
    let run = fleet.remote(&["-H", "ours1", "-l", "nosuchuser", "devices"], "");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("on ours1 ("), "{run:?}");

    // A host file.
    let hostfile = fleet.dir.path().join("hosts");
    std::fs::write(&hostfile, "# the fleet\nours1\n\nours2\n").unwrap();
    let run = fleet.remote(
        &[
            "--hostfile",
            hostfile.to_str().unwrap(),
            "devices",
            "--format",
            "csv",
            "--no-header",
        ],
        "",
    );
    assert_eq!(
        run.stdout,
        "ours1,2,2\nours2,3,2\n\nTotal 5 devices with 4 available on 2 hosts\n"
    );
}

#[test]
fn activate_opens_a_shell_on_a_host_with_room() {
    let fleet = Fleet::start(&[("busy", Genv::Ours, 2), ("free", Genv::Ours, 3)]);
    let job = Sleeper::new();
    let busy = fleet.host("busy");
    busy.activate_env("hog", job.pid()).ok();
    busy.attach("hog", 2).ok();
    let script = "echo \"at=$GENV_TMPDIR gpus=$GENV_PREACTIVATE_GPUS name=$GENV_PREACTIVATE_ENVIRONMENT_NAME\"\n";
    let run = fleet.remote(
        &[
            "-H",
            "busy,free",
            "activate",
            "--gpus",
            "2",
            "--name",
            "it's mine",
        ],
        script,
    );
    assert_eq!(run.code, 0, "{run:?}");
    let expected = format!(
        "at={} gpus=2 name=it's mine",
        fleet.host("free").state().display()
    );
    assert!(run.stdout.lines().any(|l| l == expected), "{run:?}");

    let run = fleet.remote(&["-H", "busy,free", "activate", "--gpus", "4"], "");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("Cannot find a host with enough available resources"),
        "{run:?}"
    );
}

/// Until `child` exits, or fails after `seconds`.
fn wait_exit(child: &mut Child, seconds: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "{} did not exit", child.id());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn enforce_counts_a_users_devices_on_every_host() {
    let fleet = Fleet::start(&[("ref", Genv::Reference, 2), ("ours", Genv::Ours, 2)]);
    let holder = Sleeper::new();
    // alice: two devices on the genv 1.4.3 host, one on ours; within a
    // quota of 2 on each host alone, one over it together.
    let theirs = fleet.host("ref");
    theirs.activate_env("x", holder.pid()).ok();
    theirs.attach("x", 2).ok();
    let ours = fleet.host("ours");
    ours.activate_env("y", holder.pid()).ok();
    ours.attach("y", 1).ok();
    let mut p1 = gpu_process(&fleet, "ref", "x", "0");
    let p2 = gpu_process(&fleet, "ours", "y", "0");
    let enforce = |quota: &str, extra: &[&str]| {
        let mut args = vec![
            "-H",
            "ref,ours",
            "enforce",
            "--interval",
            "0",
            "--max-devices-per-user",
            quota,
        ];
        args.extend_from_slice(extra);
        fleet.remote(&args, "")
    };

    let run = enforce("3", &[]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{run:?}");

    // --report: what each host would be sent.
    let run = enforce("2", &["--report"]);
    assert_eq!(run.code, 0, "{run:?}");
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        report["ref"]["detach"]["0"]["envs"][0]["eid"], "x",
        "{run:?}"
    );
    assert_eq!(
        report["ref"]["terminate"]["processes"][0]["pid"],
        p1.pid(),
        "{run:?}"
    );
    assert_eq!(
        report["ours"]["terminate"]["processes"],
        serde_json::json!([])
    );
    assert!(
        run.stderr.contains(
            "User alice is using 3 devices on 2 hosts which is 1 more than the maximum allowed"
        ),
        "{run:?}"
    );
    // --dry-run changes nothing.
    let run = enforce("2", &["--dry-run"]);
    assert!(
        run.stdout
            .contains("[ref] would terminate 1 process(es) and detach 1 environment(s)"),
        "{run:?}"
    );
    assert_eq!(
        theirs.run(&["devices", "find", "--eid", "x"]).ok().stdout,
        "0,1\n"
    );

    // Enforced: genv 1.4.3 on `ref` executes its part.
    let run = fleet.remote(
        &[
            "-H",
            "ref,ours,down",
            "--quiet",
            "enforce",
            "--interval",
            "0",
            "--max-devices-per-user",
            "2",
        ],
        "",
    );
    assert_eq!(
        lines(&run.stdout),
        [
            "User alice is using 3 devices on 2 hosts which is 1 more than the maximum allowed"
                .to_owned(),
            format!(
                "[ref] Terminating process {} from environment x that is running on GPU(s) 0",
                p1.pid()
            ),
            "[ref] Detaching environment x of user alice from device 0".to_owned(),
        ],
        "{run:?}"
    );
    assert_eq!(run.code, 1, "a host was down: {run:?}");
    wait_exit(&mut p1.0, 10);
    assert_eq!(
        theirs.run(&["devices", "find", "--eid", "x"]).ok().stdout,
        "1\n"
    );
    assert_eq!(
        ours.run(&["devices", "find", "--eid", "y"]).ok().stdout,
        "0\n"
    );
    assert!(Path::new(&format!("/proc/{}", p2.pid())).exists());

    // Now within the quota everywhere: nothing more to do.
    let run = enforce("2", &[]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{run:?}");
}

/// `GET /metrics` on localhost:`port`: the body.
fn scrape(port: u16) -> String {
    use std::io::Read;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{head}"
    );
    body.to_owned()
}

#[test]
fn monitor_serves_every_hosts_metrics_with_its_hostname() {
    use std::io::{BufRead, BufReader};
    let fleet = Fleet::start(&[("ours1", Genv::Ours, 2), ("ref", Genv::Reference, 3)]);
    let holder = Sleeper::new();
    let ours = fleet.host("ours1");
    ours.activate_env("e1", holder.pid()).ok();
    ours.attach("e1", 1).ok();
    let port = free_port();
    let config = fleet.dir.path().join("metrics");
    let mut cmd = Command::new(GENV);
    for (name, _) in std::env::vars() {
        if name.starts_with("GENV_") {
            cmd.env_remove(name);
        }
    }
    let local = Sandbox::new();
    let mut child = cmd
        .env("GENV_TMPDIR", local.state())
        .env("GENV_SSH", format!("ssh -F {}", fleet.config.display()))
        .args([
            "remote",
            "-H",
            "ours1,ref,down",
            "monitor",
            "--host",
            "127.0.0.1",
        ])
        .args([
            "--port",
            &port.to_string(),
            "--interval",
            "1",
            "--config-dir",
        ])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut said = Vec::new();
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "{said:?}");
        let serving = line.contains("serving the metrics of 3 host(s)");
        said.push(line);
        if serving {
            break;
        }
    }
    assert!(
        said.iter()
            .any(|l| l.contains("Failed running SSH command on down")),
        "{said:?}"
    );
    let body = scrape(port);
    for series in [
        "genv_environments_total{hostname=\"ours1\"} 1",
        "genv_environments_total{hostname=\"ref\"} 0",
        "genv_is_installed{hostname=\"ref\"} 1",
        "genv_attached_devices_total{hostname=\"ours1\"} 1",
        "genv_device_temperature{hostname=\"ref\",index=\"2\"}",
    ] {
        assert!(body.contains(series), "{series} missing from:\n{body}");
    }
    assert!(!body.contains("hostname=\"down\""), "{body}");
    let prometheus = std::fs::read_to_string(config.join("prometheus/prometheus.yml")).unwrap();
    assert!(
        prometheus.contains(&format!("127.0.0.1:{port}")),
        "{prometheus}"
    );
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    assert!(wait_exit(&mut child, 20).success());
}

#[test]
fn llm_serve_ps_and_attach_across_hosts() {
    use std::io::{BufRead, BufReader};
    let fleet = Fleet::start(&[
        ("busy", Genv::Ours, 2),
        ("free", Genv::Ours, 2),
        ("old", Genv::Reference, 2),
    ]);
    let holder = Sleeper::new();
    let busy = fleet.host("busy");
    busy.activate_env("hog", holder.pid()).ok();
    busy.attach("hog", 1).ok();
    // A model genv 1.4.3 serves on `old`, found by its environment's name.
    let old = fleet.host("old");
    old.activate_env("srv", holder.pid()).ok();
    old.config_name("srv", "llm/llama3/7000").ok();

    let run = fleet.remote(&["-H", "busy,free", "llm", "ps"], "");
    // Without a subcommand, the same list.
    let alone = fleet.remote(&["-H", "busy,free", "llm"], "");
    assert_eq!(alone.stdout, run.stdout, "{alone:?}");
    assert_eq!(
        lines(&run.stdout),
        [
            "HOST                     MODEL       PORT    CREATED              EID     USER",
            "",
            "Total 0 LLMs on 2 hosts"
        ],
        "{run:?}"
    );

    // Served on the first host with 2 free GPUs, in a terminal there.
    let mut cmd = Command::new(GENV);
    for (name, _) in std::env::vars() {
        if name.starts_with("GENV_") {
            cmd.env_remove(name);
        }
    }
    let mut server = cmd
        .env("GENV_SSH", format!("ssh -F {}", fleet.config.display()))
        .args([
            "remote",
            "-H",
            "busy,free",
            "llm",
            "serve",
            "phi3",
            "--gpus",
            "2",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut seen = Vec::new();
    let port: u16 = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "{seen:?}");
        if let Some(at) = line.trim().strip_prefix("listening on ") {
            break at.rsplit(':').next().unwrap().parse().unwrap();
        }
        seen.push(line);
    };
    let free = fleet.host("free");
    assert_eq!(
        free.run(&["envs", "query", "--query", "config.name"])
            .ok()
            .stdout,
        format!("llm/phi3/{port}\n")
    );

    let run = fleet.remote(
        &[
            "-H",
            "busy,free,old,down",
            "--quiet",
            "llm",
            "ps",
            "--format",
            "csv",
            "--no-header",
            "--timestamp",
        ],
        "",
    );
    let rows = lines(&run.stdout);
    assert_eq!(rows.len(), 4, "{run:?}");
    assert!(
        rows[0].starts_with(&format!("free,phi3,{port},")),
        "{run:?}"
    );
    assert!(rows[1].starts_with("old,llama3,7000,"), "{run:?}");
    assert!(rows[1].ends_with(",srv,alice(1000)"), "{run:?}");
    assert_eq!(rows[3], "Total 2 LLMs on 3 hosts");
    let json = fleet.remote(&["-H", "free", "llm", "ps", "--format", "json"], "");
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(value[0]["host"], "free", "{json:?}");
    assert_eq!(value[0]["clients"], 0, "{json:?}");

    // Attach: on the host serving it.
    let run = fleet.remote(&["-H", "busy,old,free", "llm", "attach", "phi3"], "");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("phi3: Ollama is running"), "{run:?}");
    let run = fleet.remote(&["-H", "busy,free", "llm", "attach", "nope"], "");
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (1, "Could not find LLM model 'nope'\n"),
        "{run:?}"
    );
    // No host with room: genv 1.4.3's message.
    let run = fleet.remote(
        &["-H", "busy,free", "llm", "serve", "phi3", "--gpus", "2"],
        "",
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("Cannot find a host with enough available resources")
    );

    // Ctrl-C in the terminal: the server stops, the GPUs are free again.
    server.stdin.as_mut().unwrap().write_all(b"\x03").unwrap();
    let status = wait_exit(&mut server, 20);
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(free.dir.path().join("ollama.log")).unwrap();
    assert!(log.contains("\"signal\": 2"), "{log}");
    assert_eq!(free.run(&["llm", "ps", "--no-header"]).ok().stdout, "");
    assert_eq!(
        free.run(&["devices", "ps", "--format", "csv", "--no-header"])
            .ok()
            .stdout,
        "0,,,\n1,,,\n"
    );
}
