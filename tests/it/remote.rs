//! `genv remote` over real OpenSSH: several `sshd` on loopback ports, each
//! a "host" with its own state folder and simulated GPUs (given by the
//! server's `SetEnv`), one of them running genv 1.4.3, one without genv on
//! its `PATH` and one that is down.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{GENV, Run, Sandbox, Sleeper};

const SSHD: &str = "/usr/sbin/sshd";

/// What a host runs as `genv`.
#[derive(Clone, Copy)]
enum Genv {
    Ours,
    Reference,
    Missing,
}

struct Fleet {
    dir: tempfile::TempDir,
    servers: Vec<Child>,
    config: PathBuf,
    hosts: Vec<(String, Sandbox)>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for server in &mut self.servers {
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
        let mut servers = Vec::new();
        let mut hosts = Vec::new();
        let mut waits = Vec::new();
        for (i, (name, genv, gpus)) in specs.iter().enumerate() {
            let mut sb = Sandbox::new();
            sb.set("GENV_MOCK_DEVICE_COUNT", &gpus.to_string());
            let path = match genv {
                Genv::Ours => format!("{}:/usr/bin:/bin", folder_of(GENV)),
                Genv::Reference => format!("{}:{sim}:/usr/bin:/bin", reference_bin()),
                Genv::Missing => "/usr/bin:/bin".to_owned(),
            };
            let port = free_port();
            let config = d.join(format!("sshd_config.{i}"));
            std::fs::write(
                &config,
                format!(
                    "HostKey {d}/host_key\nPort {port}\nListenAddress 127.0.0.1\n\
                     AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.{i}.pid\n\
                     StrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nPermitRootLogin yes\nLogLevel ERROR\n\
                     SetEnv GENV_TMPDIR={state} GENV_MOCK_DEVICE_COUNT={gpus} PATH={path}\n",
                    d = d.display(),
                    state = sb.state().display(),
                ),
            )
            .unwrap();
            let log = std::fs::File::create(d.join(format!("sshd.{i}.log"))).unwrap();
            servers.push(
                Command::new(SSHD)
                    .args(["-D", "-e", "-f"])
                    .arg(&config)
                    .stdin(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("start sshd"),
            );
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
            dir,
            servers,
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
            let exited = self.servers[i].try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.path().join(format!("sshd.{i}.log")));
                panic!("sshd {i} on port {port} did not start ({exited:?}): {log:?}");
            }
            std::thread::yield_now();
        }
    }

    fn host(&self, name: &str) -> &Sandbox {
        &self.hosts.iter().find(|(n, _)| n == name).unwrap().1
    }

    fn remote(&self, args: &[&str], stdin: &str) -> Run {
        let mut cmd = Command::new(GENV);
        cmd.arg("remote").args(args);
        for (name, _) in std::env::vars() {
            if name.starts_with("GENV_") {
                cmd.env_remove(name);
            }
        }
        cmd.env("GENV_SSH", format!("ssh -F {}", self.config.display()));
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
            .starts_with("Failed running SSH command on down ("),
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
