//! `genv daemon` for the tests: started as root on a sandbox's state
//! folder with the sandbox's simulated GPUs, waited for until it says it
//! serves, killed when dropped; and the users' commands run against it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::users::command_as;
use super::{GENV, Run, Sandbox};

/// The line a client prints when the daemon's socket is there and nobody
/// answers.
pub const NOT_ANSWERING: &str = "genv: error: genv daemon does not answer on ";

/// The hint every refusal of the daemon's rules ends with.
pub const RULES_HINT: &str = "hint: genv daemon keeps the state on this machine: ";

/// A running `genv daemon`, root's, serving a sandbox's state folder.
pub struct Daemon {
    child: Child,
    /// What it said on stderr, line by line, after it began serving.
    lines: mpsc::Receiver<String>,
    pub socket: PathBuf,
}

impl Daemon {
    /// Starts the daemon on `sb`'s state folder, with `sb`'s variables
    /// (its simulated GPUs among them), and returns once it serves.
    pub fn start(sb: &Sandbox) -> Daemon {
        let mut cmd = Command::new(GENV);
        cmd.arg("daemon");
        sb.apply(&mut cmd);
        cmd.env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn genv daemon");
        let stderr = child.stderr.take().expect("daemon's stderr");
        let (tx, lines) = mpsc::channel();
        // Read on until the daemon ends, so that it never blocks on a
        // full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut daemon = Daemon {
            child,
            lines,
            socket: sb.file("genv.sock"),
        };
        daemon.wait_serving();
        daemon
    }

    fn wait_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut said = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with("genv: daemon serving ") => {
                    assert!(
                        line.ends_with(&format!("on {}", self.socket.display())),
                        "{line}"
                    );
                    return;
                }
                Ok(line) => said.push(line),
                Err(_) => panic!(
                    "genv daemon never said it serves ({:?}); it said: {said:?}",
                    self.child.try_wait()
                ),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: the socket stays, nobody listens on it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and the daemon's exit code.
    pub fn terminate(&mut self) -> i32 {
        // SAFETY: kill(2) on our own child, which has not been waited for.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child
            .wait()
            .expect("wait for genv daemon")
            .code()
            .unwrap_or(-1)
    }

    /// `count` raw connections to the daemon made as `uid`, as many as
    /// the daemon accepted (a refused one is kept too: it holds the
    /// daemon's answer).
    pub fn connect_as(&self, uid: u32, count: usize) -> Vec<UnixStream> {
        connect_as(uid, &self.socket, count)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes one frame: 4-byte big-endian length, then `body`.
pub fn write_frame(stream: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    stream.write_all(&(body.len() as u32).to_be_bytes())?;
    stream.write_all(body)
}

/// Reads one frame as JSON; `None` when the connection ends first.
pub fn read_frame(stream: &mut impl Read) -> Option<serde_json::Value> {
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(head) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(serde_json::from_slice(&body).expect("the daemon answers JSON"))
}

/// Sends `argv` as a request and returns the final answer.
pub fn request(stream: &mut UnixStream, argv: &[&str]) -> serde_json::Value {
    let body = serde_json::json!({ "argv": argv }).to_string();
    write_frame(stream, body.as_bytes()).expect("send a request");
    loop {
        let answer = read_frame(stream).expect("an answer");
        if answer.get("code").is_some() {
            return answer;
        }
    }
}

/// `bash -c script` as `uid`, genv on its PATH, in the sandbox.
pub fn bash_as(sb: &Sandbox, uid: u32, script: &str) -> Run {
    let mut bash = command_as(uid, "bash");
    bash.arg("-c").arg(script);
    sb.apply(&mut bash);
    let genv = std::path::Path::new(GENV);
    bash.env(
        "PATH",
        format!("{}:/usr/bin:/bin", genv.parent().unwrap().display()),
    )
    .env("HOME", sb.home_of(uid))
    .current_dir(sb.home_of(uid));
    Run::from(bash.output().expect("run bash"))
}

/// `count` connections to `socket` made by a thread of ours that is `uid`
/// (Linux credentials are per thread under the C library: the raw
/// system calls change only the calling thread's), so that the kernel
/// gives the daemon `uid` as the peer.
pub fn connect_as(uid: u32, socket: &std::path::Path, count: usize) -> Vec<UnixStream> {
    let socket = socket.to_path_buf();
    std::thread::spawn(move || {
        // SAFETY: raw setgroups/setresgid/setresuid on this thread only;
        // it does nothing but connect, then ends.
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
                0
            );
            assert_eq!(libc::syscall(libc::SYS_setresgid, uid, uid, uid), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
        }
        (0..count)
            .map(|_| UnixStream::connect(&socket).expect("connect to genv daemon"))
            .collect()
    })
    .join()
    .expect("connecting thread")
}
