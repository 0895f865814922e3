//! The exporter's HTTP/1.1, on `std::net` with a thread per connection:
//! every path answers the latest metrics (as genv 1.4.3's Python client
//! does), `/favicon.ico` a 404, HEAD the head only; keep-alive for a
//! bounded number of requests.
//!
//! It listens on every address by default, so anyone who can reach the
//! port is a client, and no client may stop or starve the others: the
//! connections held are bounded (a new one sheds the one that has waited
//! longest), a request's head and URL are bounded, reads and writes have
//! deadlines, each connection writes on its own thread, and an accept that
//! fails (out of descriptors) backs off instead of ending the server.

use std::collections::VecDeque;
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;

use super::metrics::Format;
use super::server::Shared;

/// What one client may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections held at once; at the limit a new one sheds the one that
    /// has waited longest (for a request, or for a client to read).
    pub connections: usize,
    /// A request's line and headers, together.
    pub head_bytes: usize,
    /// The request target (the URL).
    pub url_bytes: usize,
    /// Requests answered on one connection before it is closed.
    pub requests: usize,
    /// How long a connection may wait for a request to begin.
    pub idle: Duration,
    /// How long a request's head may take to arrive, once begun.
    pub head: Duration,
    /// How long a response may take to be sent.
    pub write: Duration,
}

impl Limits {
    /// The limits for this process: at most a quarter of its open-files
    /// limit in connections (never raised), at most 256.
    pub(crate) fn for_this_process() -> Limits {
        let files = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        Limits {
            connections: usize::try_from(files / 4).unwrap_or(256).clamp(4, 256),
            head_bytes: 16 * 1024,
            url_bytes: 8 * 1024,
            requests: 100,
            idle: Duration::from_secs(30),
            head: Duration::from_secs(10),
            write: Duration::from_secs(20),
        }
    }
}

/// How long to wait before accepting again when the process is out of
/// descriptors (or the kernel out of memory for sockets).
const BACKOFF: Duration = Duration::from_millis(50);
/// A connection's thread: its buffers are on the heap.
const STACK: usize = 128 * 1024;
/// What is read of a client's leftovers before closing, so that the last
/// response is not cut short by a reset.
const LINGER_BYTES: usize = 64 * 1024;
const LINGER: Duration = Duration::from_secs(1);

/// A listening socket and the pipe that stops it.
pub(crate) struct Listener {
    socket: TcpListener,
    wake: OwnedFd,
    stop: Arc<OwnedFd>,
}

impl Listener {
    pub(crate) fn new(socket: TcpListener) -> std::io::Result<Listener> {
        socket.set_nonblocking(true)?;
        let (wake, stop) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        Ok(Listener {
            socket,
            wake,
            stop: Arc::new(stop),
        })
    }

    /// What ends [`Listener::serve`] from another thread.
    pub(crate) fn stopper(&self) -> Stopper {
        Stopper(Arc::clone(&self.stop))
    }

    /// Accepts and answers until stopped; then closes every connection.
    pub(crate) fn serve(self, shared: Shared, limits: Limits) {
        let open = Arc::new(Connections::new(limits.connections));
        loop {
            let mut fds = [
                PollFd::new(&self.socket, PollFlags::IN),
                PollFd::new(&self.wake, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(_) => {
                    std::thread::sleep(BACKOFF);
                    continue;
                }
            }
            if !fds[1].revents().is_empty() {
                break;
            }
            self.accept_all(&open, &shared, limits);
        }
        open.close_all();
    }

    /// Accepts what is waiting.
    fn accept_all(&self, open: &Arc<Connections>, shared: &Shared, limits: Limits) {
        loop {
            match self.socket.accept() {
                Ok((stream, _)) => start(stream, open, shared, limits),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors or memory: free one and let the
                    // client wait in the queue a moment. Anything else (a
                    // client gone before it was accepted) concerns only
                    // that client.
                    let errno = e.raw_os_error().map(Errno::from_raw_os_error);
                    if matches!(
                        errno,
                        Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)
                    ) {
                        open.shed_oldest();
                        std::thread::sleep(BACKOFF);
                    }
                    return;
                }
            }
        }
    }
}

/// Stops a [`Listener`]'s loop.
pub(crate) struct Stopper(Arc<OwnedFd>);

impl Stopper {
    pub(crate) fn stop(&self) {
        let _ = rustix::io::write(&*self.0, b"x");
    }
}

/// One client's connection, and when it last made progress.
struct Connection {
    id: u64,
    stream: TcpStream,
    /// Milliseconds after [`Connections::epoch`] when it was accepted or
    /// last had a response sent: the oldest is shed first.
    since: AtomicU64,
}

/// The connections held, bounded, and the threads waiting to answer one.
struct Connections {
    epoch: Instant,
    max: usize,
    next: AtomicU64,
    open: Mutex<Vec<Arc<Connection>>>,
    waiting: Mutex<Waiting>,
    handed: Condvar,
}

/// Connections handed over and not yet taken, and the threads waiting
/// for one (a thread woken is scheduled at once; a new one may wait for
/// the next tick on a busy machine).
#[derive(Default)]
struct Waiting {
    connections: VecDeque<Arc<Connection>>,
    threads: usize,
    closed: bool,
}

/// How long a thread with nothing to answer waits for a connection.
const SPARE: Duration = Duration::from_secs(60);

impl Connections {
    fn new(max: usize) -> Connections {
        Connections {
            epoch: Instant::now(),
            max: max.max(1),
            next: AtomicU64::new(0),
            open: Mutex::new(Vec::with_capacity(max)),
            waiting: Mutex::new(Waiting::default()),
            handed: Condvar::new(),
        }
    }

    /// Gives `connection` to a waiting thread; gives it back when none
    /// waits.
    fn hand_over(&self, connection: Arc<Connection>) -> Option<Arc<Connection>> {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if waiting.threads == 0 {
            return Some(connection);
        }
        waiting.threads -= 1;
        waiting.connections.push_back(connection);
        self.handed.notify_one();
        None
    }

    /// The next connection for a thread that has answered its last one;
    /// `None` when none came for a while (the thread ends).
    fn next_connection(&self) -> Option<Arc<Connection>> {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        waiting.threads += 1;
        let deadline = Instant::now() + SPARE;
        loop {
            if let Some(connection) = waiting.connections.pop_front() {
                return Some(connection);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if waiting.closed || left.is_zero() {
                waiting.threads -= 1;
                return None;
            }
            waiting = self
                .handed
                .wait_timeout(waiting, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Holds `stream`, shedding the connections that waited longest to
    /// stay within the bound.
    fn admit(&self, stream: TcpStream) -> Arc<Connection> {
        let connection = Arc::new(Connection {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            stream,
            since: AtomicU64::new(self.now()),
        });
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        while open.len() >= self.max {
            if !shed(&mut open) {
                break;
            }
        }
        open.push(Arc::clone(&connection));
        connection
    }

    fn shed_oldest(&self) {
        shed(&mut self.open.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn leave(&self, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|c| c.id != id);
    }

    fn close_all(&self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        for connection in open.drain(..) {
            let _ = connection.stream.shutdown(Shutdown::Both);
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        waiting.closed = true;
        self.handed.notify_all();
    }
}

/// Ends the connection that has waited longest: its thread sees the end
/// of its stream, or a failed write, and returns. Whether one was shed.
fn shed(open: &mut Vec<Arc<Connection>>) -> bool {
    let oldest = open
        .iter()
        .enumerate()
        .min_by_key(|(_, c)| c.since.load(Ordering::Relaxed))
        .map(|(i, _)| i);
    let Some(oldest) = oldest else {
        return false;
    };
    let connection = open.swap_remove(oldest);
    let _ = connection.stream.shutdown(Shutdown::Both);
    true
}

/// Answers `stream` on a thread: one of the threads waiting for a
/// connection (woken at once) or a new one. A thread that cannot be
/// started closes the connection.
fn start(stream: TcpStream, open: &Arc<Connections>, shared: &Shared, limits: Limits) {
    // Accepted sockets do not inherit the listener's non-blocking mode on
    // Linux; said again so the timeouts below are what bounds each call.
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let connection = open.admit(stream);
    let id = connection.id;
    let Some(connection) = open.hand_over(connection) else {
        return;
    };
    let (thread_open, shared) = (Arc::clone(open), Arc::clone(shared));
    let started = std::thread::Builder::new()
        .name("genv-monitor-client".into())
        .stack_size(STACK)
        .spawn(move || {
            let mut next = Some(connection);
            while let Some(connection) = next.take() {
                serve(&connection, &thread_open, &shared, limits);
                thread_open.leave(connection.id);
                // Closed now, not kept open while waiting for the next.
                drop(connection);
                next = thread_open.next_connection();
            }
        });
    if started.is_err() {
        open.leave(id);
    }
}

/// A request's head, parsed: what the answer depends on.
struct Request {
    head_only: bool,
    /// `HTTP/1.0` or `HTTP/1.1`, said back in the status line.
    version: &'static str,
    favicon: bool,
    format: Format,
    keep_alive: bool,
}

/// Why no request was read.
enum Refusal {
    /// Answer with this status and close.
    Status(u16),
    /// Close without a word (the client left, or never began).
    Close,
}

fn serve(connection: &Connection, open: &Connections, shared: &Shared, limits: Limits) {
    let stream = &connection.stream;
    let _ = stream.set_nodelay(true);
    // What was received and not yet used: the next request's first bytes.
    let mut pending = Vec::with_capacity(1024);
    for served in 1..=limits.requests {
        let request = match read_request(stream, &mut pending, &limits) {
            Ok(request) => request,
            Err(Refusal::Status(status)) => {
                let _ = write_all(stream, &[status_only(status).as_bytes()], limits.write);
                linger(stream);
                return;
            }
            Err(Refusal::Close) => return,
        };
        let last = served == limits.requests || !request.keep_alive;
        let published = match shared.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        let (status, content_type, body) = if request.favicon {
            ("404 Not Found", "text/plain; charset=UTF-8", "")
        } else {
            (
                "200 OK",
                request.format.content_type(),
                published.body(request.format),
            )
        };
        let connection_header = match (last, request.version) {
            (true, _) => "Connection: close\r\n",
            (false, "HTTP/1.0") => "Connection: keep-alive\r\n",
            (false, _) => "",
        };
        let head = format!(
            "{} {status}\r\nDate: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{connection_header}\r\n",
            request.version,
            chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT"),
            body.len(),
        );
        let body = if request.head_only { "" } else { body };
        if write_all(stream, &[head.as_bytes(), body.as_bytes()], limits.write).is_err() {
            return;
        }
        connection.since.store(open.now(), Ordering::Relaxed);
        if last {
            linger(stream);
            return;
        }
    }
}

/// Reads one request's head (its body, if any, is not read: such a
/// request is answered and the connection closed).
fn read_request(
    stream: &TcpStream,
    pending: &mut Vec<u8>,
    limits: &Limits,
) -> Result<Request, Refusal> {
    // Empty lines before a request are allowed (RFC 9112, 2.2).
    let blank = pending
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    pending.drain(..blank);
    // The head's deadline runs from its first byte.
    let mut deadline = (!pending.is_empty()).then(|| Instant::now() + limits.head);
    let end = loop {
        if let Some(end) = head_end(pending) {
            break end;
        }
        let line = pending.iter().position(|&b| b == b'\n');
        // The method and version around the URL take a few bytes more.
        if line.unwrap_or(pending.len()) > limits.url_bytes + 32 {
            return Err(Refusal::Status(414));
        }
        if pending.len() >= limits.head_bytes {
            return Err(Refusal::Status(431));
        }
        let wait = match deadline {
            None => limits.idle,
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => left,
                _ => return Err(Refusal::Status(408)),
            },
        };
        let mut block = [0u8; 4096];
        let room = (limits.head_bytes - pending.len()).min(block.len());
        if stream.set_read_timeout(Some(wait)).is_err() {
            return Err(Refusal::Close);
        }
        match (&*stream).read(&mut block[..room]) {
            Ok(0) => return Err(Refusal::Close),
            Ok(n) => {
                deadline.get_or_insert_with(|| Instant::now() + limits.head);
                pending.extend_from_slice(&block[..n]);
                let blank = pending
                    .iter()
                    .take_while(|b| matches!(b, b'\r' | b'\n'))
                    .count();
                pending.drain(..blank);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(match deadline {
                    Some(_) => Refusal::Status(408),
                    None => Refusal::Close,
                });
            }
            Err(_) => return Err(Refusal::Close),
        }
    };
    let head: Vec<u8> = pending.drain(..end).collect();
    parse(&head, limits)
}

/// Where the head in `bytes` ends (after its empty line), if it has.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(n) = bytes[at..].iter().position(|&b| b == b'\n') {
        let next = at + n + 1;
        match bytes.get(next..) {
            Some([b'\n', ..]) => return Some(next + 1),
            Some([b'\r', b'\n', ..]) => return Some(next + 2),
            _ => at = next,
        }
    }
    None
}

fn parse(head: &[u8], limits: &Limits) -> Result<Request, Refusal> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty());
    let line = lines.next().ok_or(Refusal::Status(400))?;
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Status(400));
    };
    if method.is_empty() || !method.iter().all(u8::is_ascii_alphabetic) || target.is_empty() {
        return Err(Refusal::Status(400));
    }
    if target.len() > limits.url_bytes {
        return Err(Refusal::Status(414));
    }
    let version = match version {
        b"HTTP/1.1" => "HTTP/1.1",
        b"HTTP/1.0" => "HTTP/1.0",
        v if v.starts_with(b"HTTP/") => return Err(Refusal::Status(505)),
        _ => return Err(Refusal::Status(400)),
    };
    let mut accept = None;
    let mut connection = Vec::new();
    let mut body = false;
    for line in lines {
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(Refusal::Status(400))?;
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
            return Err(Refusal::Status(400));
        }
        if name.eq_ignore_ascii_case(b"accept") {
            accept.get_or_insert(value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection.extend(
                value
                    .split(|&b| b == b',')
                    .map(|t| t.trim_ascii().to_ascii_lowercase()),
            );
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || (name.eq_ignore_ascii_case(b"content-length") && value != b"0")
        {
            body = true;
        }
    }
    let says = |token: &[u8]| connection.iter().any(|t| t == token);
    let keep_alive = !body
        && !says(b"close")
        && !says(b"upgrade")
        && (version == "HTTP/1.1" || says(b"keep-alive"));
    let accept = accept.map(String::from_utf8_lossy);
    Ok(Request {
        head_only: method == b"HEAD",
        version,
        favicon: target == b"/favicon.ico",
        format: Format::negotiate(accept.as_deref()),
        keep_alive,
    })
}

/// A response of a status alone, closing the connection.
fn status_only(status: u16) -> String {
    let reason = match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    };
    format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}

/// Writes every part within `limit`, however slowly the client reads.
fn write_all(stream: &TcpStream, parts: &[&[u8]], limit: Duration) -> std::io::Result<()> {
    let deadline = Instant::now() + limit;
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(ErrorKind::TimedOut)?;
        stream.set_write_timeout(Some(left))?;
        match (&*stream).write_vectored(slices) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Closes after the last response: says so, then reads (a bounded amount,
/// briefly) what the client still sends, so that closing with unread
/// bytes does not reset the connection before the client has read.
fn linger(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut drained = 0;
    let mut block = [0u8; 4096];
    while drained < LINGER_BYTES {
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return;
        };
        if stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*stream).read(&mut block) {
            Ok(0) => return,
            Ok(n) => drained += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            url_bytes: 16,
            ..Limits::for_this_process()
        }
    }

    #[test]
    fn finds_the_end_of_a_head() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nrest"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    #[test]
    fn parses_what_decides_the_answer() {
        let ok = |head: &str| parse(head.as_bytes(), &limits()).ok().unwrap();
        let request = ok("GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n\r\n");
        assert!(request.keep_alive && !request.head_only && !request.favicon);
        assert!(matches!(request.format, Format::OpenMetrics));
        assert!(!ok("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!ok("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n").keep_alive);
        assert!(!ok("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n").keep_alive);
        assert!(ok("HEAD /favicon.ico HTTP/1.1\r\n\r\n").favicon);
        let status = |head: &str| match parse(head.as_bytes(), &limits()) {
            Err(Refusal::Status(status)) => status,
            _ => 0,
        };
        assert_eq!(status("GET /0123456789abcdef HTTP/1.1\r\n\r\n"), 414);
        assert_eq!(status("GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(status("GET / FTP\r\n\r\n"), 400);
        assert_eq!(status("GET /\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nno colon\r\n\r\n"), 400);
    }
}
