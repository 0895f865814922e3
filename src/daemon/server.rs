//! The daemon's side: the socket, one thread a connection, each request
//! run as the verb it names, for the client the kernel says it is.
//!
//! Bounded against clients that misbehave: connections in all and per
//! uid, the size of a request, the time a request may take to arrive and
//! an answer to be taken, the time a connection may sit idle. A client
//! that breaks a bound loses its own connection, nobody else's.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};

use super::protocol::{self, Answer, DotGenv, FrameError, MAX_REQUEST, Request};
use crate::caller::{self, Caller, Progress};
use crate::context::Context;
use crate::error::Error;
use crate::messages;
use crate::state::StateDir;

/// Connections served at once, from everyone.
const MAX_CONNECTIONS: usize = 1024;
/// Connections served at once from one uid other than root's.
const MAX_PER_UID: usize = 64;
/// How long a request may take to arrive once it began, and an answer to
/// be read by the client.
const TRANSFER_TIME: Duration = Duration::from_secs(10);
/// How long a connection may wait for its next request.
const IDLE_TIME: Duration = Duration::from_secs(60);
/// How long a connection's thread watches for a request before it sleeps
/// on the socket, when the client asked again at once after its last
/// answer (the SDK, a loop of calls): such a client is answered without
/// the wake-ups of a sleep, which cost more than the request itself on a
/// virtual machine. A command line's single request never waits so.
const SPIN: Duration = Duration::from_micros(200);
/// What "at once" means for [`SPIN`].
const QUICK: Duration = Duration::from_millis(1);
/// Each connection's thread: the verbs need little stack.
const STACK: usize = 1 << 20;

/// Who is connected: per uid, and the flag that stops the daemon.
struct Shared {
    dir: StateDir,
    /// The GPUs, asked through one backend for every request.
    backend: Arc<dyn crate::backend::DeviceBackend + Send + Sync>,
    per_uid: Mutex<HashMap<u32, usize>>,
    stopping: AtomicBool,
}

/// Serves `listener` until `stop` is set and the listener shut down.
pub(crate) fn serve(dir: StateDir, listener: UnixListener, stop: &StopHandle) {
    let shared = Arc::new(Shared {
        dir,
        backend: crate::backend::detect_shared(),
        per_uid: Mutex::new(HashMap::new()),
        stopping: AtomicBool::new(false),
    });
    *stop.shared.lock().unwrap_or_else(|e| e.into_inner()) = Some(shared.clone());
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(_) if shared.stopping.load(Ordering::Relaxed) => return,
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                // Out of descriptors: let connections end.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(_) => continue,
        };
        if shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        let Ok(peer) = rustix::net::sockopt::socket_peercred(&stream) else {
            continue;
        };
        let uid = peer.uid.as_raw();
        let pid = peer.pid.as_raw_nonzero().get() as u32;
        if let Err(why) = admit(&shared, uid) {
            refuse(stream, &why);
            continue;
        }
        let worker = shared.clone();
        let started = std::thread::Builder::new()
            .name("genv-daemon-connection".into())
            .stack_size(STACK)
            .spawn(move || {
                connection(&worker, stream, uid, pid);
                leave(&worker, uid);
            });
        if started.is_err() {
            leave(&shared, uid);
        }
    }
}

/// Counts a new connection of `uid`, or says why it is one too many.
fn admit(shared: &Shared, uid: u32) -> std::result::Result<(), String> {
    let mut per_uid = shared.per_uid.lock().unwrap_or_else(|e| e.into_inner());
    let total: usize = per_uid.values().sum();
    let mine = per_uid.get(&uid).copied().unwrap_or(0);
    if total >= MAX_CONNECTIONS {
        return Err(format!(
            "genv daemon serves {MAX_CONNECTIONS} connections already; try again"
        ));
    }
    if uid != 0 && mine >= MAX_PER_UID {
        return Err(format!(
            "uid {uid} has {MAX_PER_UID} connections to genv daemon open already; close some"
        ));
    }
    *per_uid.entry(uid).or_insert(0) += 1;
    Ok(())
}

fn leave(shared: &Shared, uid: u32) {
    let mut per_uid = shared.per_uid.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(count) = per_uid.get_mut(&uid) {
        *count -= 1;
        if *count == 0 {
            per_uid.remove(&uid);
        }
    }
}

/// Answers a connection that is one too many with its reason, without a
/// thread: the write goes to the socket's buffer or nowhere.
fn refuse(stream: UnixStream, why: &str) {
    let _ = stream.set_nonblocking(true);
    let answer = Answer {
        code: Some(1),
        stderr: format!("genv: error: {why}\n"),
        ..Answer::default()
    };
    if let Ok(body) = serde_json::to_vec(&answer) {
        let _ = protocol::write_frame(&mut &stream, &body);
    }
}

/// One connection: requests answered in turn until the client closes it,
/// breaks a bound, or the daemon stops.
fn connection(shared: &Shared, stream: UnixStream, uid: u32, pid: u32) {
    // Whether the client asked again at once after its last answer.
    let mut quick = false;
    let mut answered: Option<Instant> = None;
    loop {
        if shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        let body = match read_request(&stream, quick) {
            Ok(body) => body,
            Err(FrameError::Closed) => return,
            Err(e @ FrameError::TooLong(_)) => {
                let _ = send(&stream, &malformed(&e.to_string()));
                return;
            }
            // Cut short, too slow or gone: nothing to answer.
            Err(FrameError::Io(_)) => return,
        };
        quick = answered.is_some_and(|at| at.elapsed() < QUICK);
        let answer = match serde_json::from_slice::<Request>(&body) {
            Ok(request) => answer(shared, request, &stream, uid, pid),
            Err(e) => malformed(&e.to_string()),
        };
        if send_final(&stream, answer).is_err() {
            return;
        }
        answered = Some(Instant::now());
        // What a change left to remove and make, now that it is answered.
        shared.dir.tidy();
    }
}

fn malformed(why: &str) -> Answer {
    Answer {
        code: Some(2),
        stderr: format!("genv: error: genv daemon: a malformed request: {why}\n"),
        ..Answer::default()
    }
}

/// The next request: up to [`IDLE_TIME`] for it to begin, then
/// [`TRANSFER_TIME`] for the rest. With `spin`, its first bytes are
/// watched for a moment before the thread sleeps on them.
fn read_request(stream: &UnixStream, spin: bool) -> std::result::Result<Vec<u8>, FrameError> {
    let mut reader = Deadline {
        stream,
        first: Some(IDLE_TIME),
        deadline: None,
        spin,
    };
    protocol::read_frame(&mut reader, MAX_REQUEST)
}

/// Reads with a deadline for the whole: each read waits only for the time
/// left, however slowly the bytes trickle in.
struct Deadline<'a> {
    stream: &'a UnixStream,
    /// How long to wait for the first byte.
    first: Option<Duration>,
    deadline: Option<Instant>,
    /// Whether to watch for the first bytes for [`SPIN`] before sleeping.
    spin: bool,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let wait = match (self.first.take(), self.deadline) {
            (Some(first), _) => first,
            (None, Some(deadline)) => deadline.saturating_duration_since(Instant::now()),
            (None, None) => TRANSFER_TIME,
        };
        if std::mem::take(&mut self.spin) {
            let until = Instant::now() + SPIN;
            while Instant::now() < until {
                match rustix::net::recv(self.stream, &mut *buf, RecvFlags::DONTWAIT) {
                    Ok((n, _)) => return Ok(self.got(n)),
                    Err(Errno::AGAIN | Errno::INTR) => std::hint::spin_loop(),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let n = wait_for(self.stream, PollFlags::IN, wait, |fd| {
            rustix::net::recv(fd, &mut *buf, RecvFlags::DONTWAIT).map(|(n, _)| n)
        })?;
        Ok(self.got(n))
    }
}

impl Deadline<'_> {
    fn got(&mut self, n: usize) -> usize {
        self.deadline
            .get_or_insert_with(|| Instant::now() + TRANSFER_TIME);
        n
    }
}

/// Tries `io` on `stream` without blocking, and while it would block,
/// waits up to `wait` in all for `ready`: a deadline kept with `poll`
/// rather than a socket timeout set before every call.
fn wait_for<T>(
    stream: &UnixStream,
    ready: PollFlags,
    wait: Duration,
    mut io: impl FnMut(BorrowedFd<'_>) -> rustix::io::Result<T>,
) -> std::io::Result<T> {
    let until = Instant::now() + wait;
    loop {
        match io(stream.as_fd()) {
            Ok(done) => return Ok(done),
            Err(Errno::AGAIN | Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        let timeout = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(stream, ready)];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends an answer, which the client must take within [`TRANSFER_TIME`];
/// a long stdout as a frame of its own after it.
fn send(stream: &UnixStream, answer: &Answer) -> std::io::Result<()> {
    let body = serde_json::to_vec(answer).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    protocol::write_frame(&mut frame, &body)?;
    write_all(stream, &frame)
}

/// A final answer, with its stdout in a frame of its own when long.
fn send_final(stream: &UnixStream, mut answer: Answer) -> std::io::Result<()> {
    if answer.stdout.len() <= protocol::INLINE_STDOUT {
        return send(stream, &answer);
    }
    let stdout = std::mem::take(&mut answer.stdout);
    answer.stdout_frame = true;
    send(stream, &answer)?;
    let len = u32::try_from(stdout.len())
        .map_err(|_| std::io::Error::other("an answer of more than 4 GiB"))?;
    write_all(stream, &len.to_be_bytes())?;
    write_all(stream, stdout.as_bytes())
}

/// Writes all of `frame` within [`TRANSFER_TIME`].
fn write_all(stream: &UnixStream, frame: &[u8]) -> std::io::Result<()> {
    let deadline = Instant::now() + TRANSFER_TIME;
    let mut rest = frame;
    while !rest.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = wait_for(stream, PollFlags::OUT, left, |fd| {
            rustix::net::send(fd, rest, SendFlags::DONTWAIT | SendFlags::NOSIGNAL)
        })?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        rest = &rest[n..];
    }
    Ok(())
}

/// Runs a request's command line for the client `uid`/`pid`.
fn answer(shared: &Shared, request: Request, stream: &UnixStream, uid: u32, pid: u32) -> Answer {
    let Request { argv, env, dotgenv } = request;
    let caller = Caller {
        uid,
        pid,
        env,
        dotgenv: dotgenv.map(|d| match d {
            DotGenv::Config(config) => Ok(config),
            DotGenv::Error(why) => Err(why),
        }),
        connection: stream.try_clone().ok().map(Into::into),
        progress: stream.try_clone().ok().map(|stream| {
            Box::new(move |progress: Progress<'_>| {
                let frame = match progress {
                    Progress::Said(text) => Answer {
                        stderr: text.to_owned(),
                        ..Answer::default()
                    },
                    Progress::Held => Answer {
                        held: true,
                        ..Answer::default()
                    },
                };
                send(&stream, &frame).is_ok()
            }) as caller::SendProgress
        }),
        ..Caller::default()
    };
    let mut ctx = Context::new(shared.dir.clone());
    ctx.backend = crate::context::LazyBackend::shared(shared.backend.clone());
    let (code, caller) = caller::serve(caller, || {
        let args = std::iter::once("genv".to_owned())
            .chain(argv)
            .map(Into::into)
            .collect();
        let cli = match crate::parse(args, &mut ctx.out) {
            Ok(cli) => cli,
            Err(code) => return code,
        };
        if !cli.runs_in_daemon() {
            return crate::error::report(&Error::new(
                "genv daemon runs the verbs that read or change the state; this one runs in your own process",
            ));
        }
        match crate::run(cli, &mut ctx) {
            Ok(crate::context::Exit(code)) => code,
            Err(e) => {
                // What the verb printed before its change was refused
                // (an index it meant to attach) did not happen.
                if matches!(e, Error::Refused(_)) {
                    ctx.out.clear();
                }
                crate::error::report(&e)
            }
        }
    });
    Answer {
        code: Some(code),
        stdout: std::mem::take(&mut ctx.out),
        stderr: caller.stderr,
        save: caller.save,
        ..Answer::default()
    }
}

/// What stops the daemon from another thread: the listener shut down,
/// connections told to end after their request.
#[derive(Default)]
pub(crate) struct StopHandle {
    shared: Mutex<Option<Arc<Shared>>>,
}

impl StopHandle {
    pub(crate) fn stop(&self, listener: &impl AsFd) {
        if let Some(shared) = &*self.shared.lock().unwrap_or_else(|e| e.into_inner()) {
            shared.stopping.store(true, Ordering::Relaxed);
        }
        let _ = rustix::net::shutdown(listener, rustix::net::Shutdown::Both);
    }

    /// How many connections are open.
    pub(crate) fn open(&self) -> usize {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(0, |s| {
                s.per_uid
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .sum()
            })
    }
}

/// Says the daemon is serving, on stderr (journald keeps it).
pub(crate) fn ready(socket: &std::path::Path, activated: bool) {
    messages::note(format_args!(
        "daemon serving {} on {}{}",
        crate::state::file::shown(socket.parent().unwrap_or(socket)),
        crate::state::file::shown(socket),
        if activated { " (from systemd)" } else { "" }
    ));
}
