//! Who a verb runs for. In a `genv` process of its own, the process
//! itself: its uid, its variables, its stderr. Inside `genv daemon`, the
//! client on the other end of the socket: its uid and pid as the kernel
//! gave them (`SO_PEERCRED`), the variables it sent, and a buffer that
//! collects what the verb says on stderr for the answer.
//!
//! A verb run by the daemon is the same code as in file mode; the few
//! places that ask "who" or "which variable" ask here
//! ([`crate::env_vars::get`], [`uid`], the printer of
//! [`crate::messages`], `.genv` in [`crate::session`]), and a
//! [`crate::state::Transaction`] committed for a caller that is not root
//! is checked against the ownership rules first.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::state::Config;

/// A client of the daemon, for the length of one request.
#[derive(Default)]
pub(crate) struct Caller {
    /// From the kernel, never from the request.
    pub uid: u32,
    pub pid: u32,
    /// The client's variables (only those it may decide, see
    /// [`daemon_owns`]).
    pub env: HashMap<String, String>,
    /// The `.genv` folder the client found (in its working folder or
    /// home) and what it read there, or why it could not: the daemon
    /// never reads a user's folders. `None`: no such folder.
    pub dotgenv: Option<std::result::Result<Config, String>>,
    /// A configuration the verb asked to save into `.genv`: the client
    /// writes it.
    pub save: Option<Config>,
    /// What the verb said on stderr.
    pub stderr: String,
    /// The connection, to notice the client hanging up while the verb
    /// waits.
    pub connection: Option<std::os::fd::OwnedFd>,
    /// Sends progress before the verb waits: what was said so far (a
    /// place in line), or that the locks it asked for are held; `false`
    /// when the client is gone.
    pub progress: Option<SendProgress>,
}

thread_local! {
    static CALLER: RefCell<Option<Caller>> = const { RefCell::new(None) };
}

/// Runs `f` for `caller` on this thread, and gives the caller back with
/// what the verb left in it (stderr, a configuration to save).
pub(crate) fn serve<R>(caller: Caller, f: impl FnOnce() -> R) -> (R, Caller) {
    CALLER.with(|c| *c.borrow_mut() = Some(caller));
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            CALLER.with(|c| c.borrow_mut().take());
        }
    }
    let reset = Reset;
    let result = f();
    let caller = CALLER.with(|c| c.borrow_mut().take()).unwrap_or_default();
    drop(reset);
    (result, caller)
}

fn with<R>(f: impl FnOnce(&mut Caller) -> R) -> Option<R> {
    CALLER.with(|c| c.borrow_mut().as_mut().map(f))
}

/// Whether this verb runs inside the daemon for a client.
pub(crate) fn remote() -> bool {
    with(|_| ()).is_some()
}

/// The uid a verb acts for: the client's in the daemon, else this
/// process's.
pub(crate) fn uid() -> u32 {
    with(|c| c.uid).unwrap_or_else(crate::os::procs::current_uid)
}

/// The uid whose changes a transaction must check: a client of the
/// daemon that is not root. `None`: this process, or root, which may
/// change anything.
pub(crate) fn restricted() -> Option<Peer> {
    with(|c| Peer { uid: c.uid }).filter(|c| c.uid != 0)
}

/// A client's identity alone, as the kernel gave it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    pub uid: u32,
}

/// The variables that stay the daemon's own whoever asks: where the state
/// is, which GPUs exist, what programs are run.
pub(crate) fn daemon_owns(name: &str) -> bool {
    use crate::env_vars as ev;
    name == ev::GENV_TMPDIR
        || name.starts_with("GENV_MOCK_")
        || name == "PATH"
        || name == ev::GENV_SSH
        || name == ev::GENV_DOCKER
        || name == ev::GENV_CONTAINER_RUNTIME
        || name == ev::GENV_BYPASS
        || name == ev::GENV_SHIM_DEPTH
        || name.starts_with("LD_LIBRARY")
}

/// The client's value of a variable, when this is a client's verb and
/// the variable is the client's to decide: `Some(None)` for one it did
/// not send. `None`: ask the process.
pub(crate) fn var(name: &str) -> Option<Option<String>> {
    if daemon_owns(name) {
        return None;
    }
    with(|c| c.env.get(name).cloned())
}

/// Keeps a line meant for stderr in the client's answer; `false` when
/// there is no client (print it).
pub(crate) fn say(text: &str) -> bool {
    with(|c| {
        // A verb says a few lines; a bound keeps a loop from growing it.
        if c.stderr.len() < 1 << 20 {
            c.stderr.push_str(text);
        }
    })
    .is_some()
}

/// How progress reaches the client: `false` when it is gone.
pub(crate) type SendProgress = Box<dyn FnMut(Progress<'_>) -> bool>;

/// What a verb tells its client before it answers.
pub(crate) enum Progress<'a> {
    /// Lines for stderr.
    Said(&'a str),
    /// The device locks are held for it: run the command, and hang up to
    /// let them go.
    Held,
}

/// Sends what the verb said so far to the client now, before it waits
/// (never while it holds the global lock: a client that does not read
/// would hold everyone up).
pub(crate) fn progress() {
    with(|c| {
        if c.stderr.is_empty() {
            return;
        }
        let text = std::mem::take(&mut c.stderr);
        if let Some(send) = &mut c.progress
            && !send(Progress::Said(&text))
        {
            c.progress = None;
        }
    });
}

/// The client's connection, readable when it hangs up (a waiting client
/// sends nothing); `None` outside the daemon.
pub(crate) fn hangup() -> Option<std::os::fd::OwnedFd> {
    with(|c| c.connection.as_ref().and_then(|fd| fd.try_clone().ok())).flatten()
}

/// Tells the client its locks are held (after what was said so far), and
/// waits for it to hang up; `false` when it is gone already.
pub(crate) fn hold_until_hangup() -> bool {
    progress();
    let told =
        with(|c| c.progress.as_mut().is_some_and(|send| send(Progress::Held))).unwrap_or(false);
    if told && let Some(fd) = hangup() {
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        while let Err(rustix::io::Errno::INTR) = rustix::event::poll(&mut fds, None) {}
    }
    told
}

/// Whether the daemon's client hung up (or sent something, which a
/// waiting client does not).
pub(crate) fn hung_up() -> bool {
    hangup().is_some_and(crate::os::readable_now)
}

/// The client's pid, as the kernel gave it; `None` outside the daemon.
pub(crate) fn pid() -> Option<u32> {
    with(|c| c.pid)
}

/// The client's `.genv`, as it read it: `Some(found)` in the daemon.
pub(crate) fn dotgenv() -> Option<Option<std::result::Result<Config, String>>> {
    with(|c| c.dotgenv.clone())
}

/// Asks the client to save `config` into its `.genv`; `false` when there
/// is no client (save it here).
pub(crate) fn save(config: &Config) -> bool {
    with(|c| c.save = Some(config.clone())).is_some()
}
