//! Shared by the `genv lock` tests: environments over one simulated GPU,
//! commands that say through fifos when they enter, and a wait on each
//! step that fails the test instead of hanging it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::{Sandbox, Sleeper};

/// How long any one step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(30);

/// Runs `f` on a thread and fails the test when it takes longer than
/// [`STEP`] (a blocked fifo or a lock never given).
#[track_caller]
pub fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(STEP)
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A sandbox with one simulated 16g GPU.
pub fn one_gpu() -> Sandbox {
    let mut sb = Sandbox::new();
    sb.set("GENV_MOCK_DEVICE_COUNT", "1");
    sb
}

/// An environment attached to GPU 0, alive while the returned process is.
pub fn env(sb: &Sandbox, eid: &str, gpu_memory: Option<&str>) -> Sleeper {
    let job = Sleeper::new();
    let pid = job.pid().to_string();
    sb.run(&[
        "envs",
        "activate",
        "--eid",
        eid,
        "--uid",
        "1000",
        "--username",
        "alice",
        "--pid",
        &pid,
    ])
    .ok();
    sb.run(&[
        "envs",
        "config",
        "--eid",
        eid,
        "name",
        "--name",
        &format!("job-{eid}"),
    ])
    .ok();
    if let Some(memory) = gpu_memory {
        sb.run(&[
            "envs",
            "config",
            "--eid",
            eid,
            "gpu-memory",
            "--gpu-memory",
            memory,
        ])
        .ok();
    }
    sb.run(&[
        "devices",
        "attach",
        "--eid",
        eid,
        "--index",
        "0",
        "--allow-over-subscription",
    ])
    .ok();
    job
}

pub fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success());
}

/// A `genv lock` run with its stderr read line by line.
pub struct Locker {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Locker {
    /// `genv lock ARGS…` in environment `eid` (none: outside genv).
    pub fn spawn(sb: &Sandbox, eid: Option<&str>, args: &[&str]) -> Self {
        let mut cmd = sb.cmd(&["lock"]);
        cmd.args(args);
        if let Some(eid) = eid {
            cmd.env("GENV_ENVIRONMENT_ID", eid);
        }
        Self::start(cmd)
    }

    pub fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn genv lock");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Locker {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line on stderr that contains `needle`.
    #[track_caller]
    pub fn expect_line(&mut self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(STEP) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?} on stderr; saw {:?}", self.seen),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the exit and returns the status, stdout and every line
    /// of stderr.
    #[track_caller]
    pub fn finish_all(mut self) -> (ExitStatus, String, Vec<String>) {
        let mut seen = self.seen.clone();
        let lines = std::mem::replace(&mut self.lines, mpsc::channel().1);
        let (status, stdout) = self.finish();
        // The reader thread ends with stderr, after the exit.
        while let Ok(line) = lines.recv_timeout(STEP) {
            seen.push(line);
        }
        (status, stdout, seen)
    }

    /// Waits for the exit and returns the status and stdout.
    #[track_caller]
    pub fn finish(mut self) -> (ExitStatus, String) {
        let mut stdout = self.child.stdout.take().expect("stdout");
        let mut child = self.child;
        within("genv lock to exit", move || {
            let mut out = String::new();
            let _ = stdout.read_to_string(&mut out);
            (child.wait().expect("wait"), out)
        })
    }
}

/// A critical section: a command that logs `in NAME`, says so through the
/// fifo `NAME.in`, waits for a line on the fifo `NAME.out`, and logs
/// `out NAME`.
pub struct Section {
    pub dir: PathBuf,
    pub name: String,
}

pub const SCRIPT: &str = r#"echo "in $1" >> "$2/log"; echo x > "$2/$1.in"; read -r _ < "$2/$1.out"; echo "out $1" >> "$2/log""#;

/// A test that fails while a command is inside its section would leave it
/// blocked on the `.out` FIFO forever (holding the test's output open):
/// let it out, if it is waiting there.
impl Drop for Section {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.join(format!("{}.out", self.name));
        if let Ok(mut fifo) = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            let _ = fifo.write_all(b"x\n");
        }
    }
}

impl Section {
    pub fn new(dir: &Path, name: &str) -> Self {
        mkfifo(&dir.join(format!("{name}.in")));
        mkfifo(&dir.join(format!("{name}.out")));
        Section {
            dir: dir.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The command line, after `genv lock [OPTIONS]`.
    pub fn command(&self) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            SCRIPT.into(),
            "sh".into(),
            self.name.clone(),
            self.dir.to_string_lossy().into_owned(),
        ]
    }

    /// Blocks until the command is inside the section.
    #[track_caller]
    pub fn entered(&self) {
        let path = self.dir.join(format!("{}.in", self.name));
        within(&format!("{} to enter", self.name), move || {
            let mut s = String::new();
            std::fs::File::open(path)
                .and_then(|mut f| f.read_to_string(&mut s))
                .expect("read fifo");
        });
    }

    /// Lets the command leave the section.
    #[track_caller]
    pub fn release(&self) {
        let path = self.dir.join(format!("{}.out", self.name));
        within(&format!("{} to take its release", self.name), move || {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|mut f| f.write_all(b"go\n"))
                .expect("write fifo");
        });
    }
}

/// The `in`/`out` records, in order.
pub fn log(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn args<'a>(options: &[&'a str], command: &'a [String]) -> Vec<&'a str> {
    options
        .iter()
        .copied()
        .chain(command.iter().map(String::as_str))
        .collect()
}
