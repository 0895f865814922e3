//! `genv daemon`: root serving the state folder to every user, the one
//! place where the state changes on a locked-down machine.
//!
//! It makes the folder root's (0755, files 0644: everyone still reads
//! it, genv 1.4.3 included), listens on `<state folder>/genv.sock`
//! (0666), and runs each request as the verb it names, with the same code
//! as file mode, for the uid and pid the kernel gives for the connection
//! (`SO_PEERCRED`); every change a client that is not root makes is
//! checked against who owns what (`state/authorize.rs`) before it is
//! written, and written before it is answered. `protocol.rs` is what goes
//! over the socket, `server.rs` the connections, `client.rs` every other
//! genv process's side.

pub(crate) mod client;
pub(crate) mod protocol;
mod server;

use std::io::Read;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::context::{Context, Exit};
use crate::error::{Error, Result};
use crate::messages;
use crate::os::signals::Blocked;
use crate::state::file;

/// The socket's name in the state folder.
pub(crate) const SOCKET: &str = crate::state::DAEMON_SOCKET;

/// Files only root may even open: whoever can open a lock file can hold
/// it, and hold up the daemon.
const PRIVATE_LOCKS: [&str; 2] = file::PRIVATE_LOCKS;

/// How long a stopping daemon lets requests in flight finish.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Runs the daemon until SIGTERM, SIGINT or SIGHUP.
pub(crate) fn run(ctx: &mut Context) -> Result<Exit> {
    if !rustix::process::geteuid().is_root() {
        return Err(Error::hinted(
            "genv daemon runs as root: it owns the state folder for every user",
            "run it with sudo, or install its systemd units (README, Locked-down machines)",
        ));
    }
    // One allocator arena a thread would keep each connection's freed
    // answers (tens of MB at 100,000 environments) long after.
    // SAFETY: mallopt only sets glibc's allocator parameters, here before
    // any other thread starts.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let root = ctx.dir.root().to_owned();
    let activated = systemd_listener()?;
    let from_systemd = activated.is_some();
    take_over(&root)?;
    // Opened once, here: every request's context shares the descriptor.
    ctx.dir.root_dir()?;
    let socket = root.join(SOCKET);
    let listener = match activated {
        Some(listener) => listener,
        None => bind(&socket)?,
    };
    // Blocked here, before any thread starts, so that every thread
    // inherits the mask and the signals wait for the main thread.
    let signals = Blocked::block();
    let stop = std::sync::Arc::new(server::StopHandle::default());
    let serving = {
        let dir = ctx.dir.clone();
        let listener = listener.try_clone().map_err(|e| Error::io(&socket, e))?;
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("genv-daemon-accept".into())
            .spawn(move || server::serve(dir, listener, &stop))
            .map_err(|e| Error::io(&socket, e))?
    };
    server::ready(&socket, from_systemd);
    let signal = loop {
        if let Some(signal) = signals.wait(Duration::from_secs(3600)) {
            break signal;
        }
    };
    stop.stop(&listener);
    let _ = serving.join();
    let deadline = Instant::now() + DRAIN_TIME;
    while stop.open() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // systemd's socket stays, for the next start.
    if !from_systemd {
        remove_socket(&root);
    }
    messages::note(format_args!("daemon stopped ({})", Blocked::name(signal)));
    Ok(Exit::SUCCESS)
}

/// The socket systemd opened for us (`genv-daemon.socket`): one listening
/// Unix stream socket at descriptor 3, `LISTEN_PID` naming this process.
fn systemd_listener() -> Result<Option<UnixListener>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    if fds != "1" {
        return Err(Error::new(format!(
            "systemd passed {fds} sockets; genv daemon listens on one (genv-daemon.socket)"
        )));
    }
    // SAFETY: systemd's protocol hands this process descriptor 3 (after
    // checking LISTEN_PID above), and nothing else in genv owns it.
    #[allow(unsafe_code)]
    let fd = unsafe { OwnedFd::from_raw_fd(3) };
    let is_listening_unix = rustix::net::sockopt::socket_type(&fd)
        .is_ok_and(|t| t == rustix::net::SocketType::STREAM)
        && rustix::net::sockopt::socket_acceptconn(&fd).unwrap_or(false);
    if !is_listening_unix {
        return Err(Error::new(
            "systemd's descriptor 3 is not a listening stream socket",
        ));
    }
    let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
    Ok(Some(UnixListener::from(fd)))
}

/// Listens on `socket`, 0666, replacing a socket left by a daemon that
/// died; anything else in its place is refused.
fn bind(socket: &Path) -> Result<UnixListener> {
    let shown = file::shown(socket);
    match rustix::fs::lstat(socket) {
        Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Socket => {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return Err(Error::new(format!(
                    "another genv daemon answers on {shown} already"
                )));
            }
            std::fs::remove_file(socket).map_err(|e| Error::io(socket, e))?;
        }
        Ok(_) => {
            return Err(Error::new(format!(
                "{shown} is there and is not a socket; remove it and start the daemon again"
            )));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(socket).map_err(|e| Error::io(socket, e))?;
    rustix::fs::chmod(socket, Mode::from_raw_mode(0o666))
        .map_err(|e| Error::io(socket, e.into()))?;
    Ok(listener)
}

fn remove_socket(root: &Path) {
    let socket = root.join(SOCKET);
    if rustix::fs::lstat(&socket)
        .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Socket)
    {
        let _ = std::fs::remove_file(&socket);
    }
}

/// genv 1.4.3's global lock, which its read commands open to write: left
/// open to everyone (the daemon and root's tools lock `.daemon.lock`).
const SHARED_LOCK: &str = "genv.lock";

/// Makes the state folder root's: the folder 0755, the state files 0644,
/// the daemon's lock and the line's guard 0600, genv 1.4.3's `genv.lock`
/// 0666, `devices/` and its files alike. Users' memory cap ledgers stay theirs; nothing is followed
/// through a link, and from now on what this process makes is 0644/0755.
fn take_over(root: &Path) -> Result<()> {
    rustix::process::umask(Mode::from_raw_mode(0o022));
    file::lock_down();
    let shown = file::shown(root);
    match rustix::fs::mkdir(root, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(Error::io(root, e.into())),
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let folder = rustix::fs::open(root, flags, Mode::empty()).map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => Error::new(format!(
            "the state folder {shown} is a link or not a folder; genv daemon does not follow it"
        )),
        e => Error::io(root, e.into()),
    })?;
    own(&folder, 0o755).map_err(|e| Error::io(root, e.into()))?;
    own_entries(&folder, root)?;
    if let Ok(devices) = rustix::fs::openat(&folder, "devices", flags, Mode::empty()) {
        own(&devices, 0o755).map_err(|e| Error::io(root.join("devices"), e.into()))?;
        own_entries(&devices, &root.join("devices"))?;
    }
    // Made new above when they were there (so no one holds them now).
    for name in PRIVATE_LOCKS.into_iter().chain([SHARED_LOCK]) {
        let create = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&folder, name, create, Mode::from_raw_mode(0o600))
            .map_err(|e| Error::io(root.join(name), e.into()))?;
        own(&fd, mode_of(name)).map_err(|e| Error::io(root.join(name), e.into()))?;
    }
    Ok(())
}

/// The regular files of a folder made root's and new: each copied into a
/// new file of root's (0644; the private locks 0600, genv 1.4.3's lock
/// 0666) put in its place, so that a descriptor someone opened on the old
/// one while the folder was everyone's (to write it, or to hold its lock)
/// reaches nothing of the daemon's. Users' ledgers, links and anything
/// else are left as they are.
fn own_entries(folder: &OwnedFd, path: &Path) -> Result<()> {
    let dir = rustix::fs::Dir::read_from(folder).map_err(|e| Error::io(path, e.into()))?;
    let mut names = Vec::new();
    for entry in dir {
        let entry = entry.map_err(|e| Error::io(path, e.into()))?;
        if let Ok(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    for name in names {
        if name == "." || name == ".." || name == SOCKET || name.starts_with("memcap-") {
            continue;
        }
        renew(folder, path, &name)?;
    }
    Ok(())
}

/// Replaces the regular file `name` with a copy of root's (see
/// [`own_entries`]).
fn renew(folder: &OwnedFd, path: &Path, name: &str) -> Result<()> {
    let shown = path.join(name);
    let Ok(stat) = rustix::fs::statat(folder, name, AtFlags::SYMLINK_NOFOLLOW) else {
        return Ok(());
    };
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Ok(());
    }
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let Ok(old) = rustix::fs::openat(folder, name, flags, Mode::empty()) else {
        return Ok(());
    };
    let mut bytes = Vec::new();
    std::io::Read::take(std::fs::File::from(old), file::MAX_STATE_FILE)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(&shown, e))?;
    let temporary = format!(".{name}.daemon");
    let _ = rustix::fs::unlinkat(folder, temporary.as_str(), AtFlags::empty());
    let create =
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let new = rustix::fs::openat(
        folder,
        temporary.as_str(),
        create,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| Error::io(&shown, e.into()))?;
    let mut new = std::fs::File::from(new);
    std::io::Write::write_all(&mut new, &bytes).map_err(|e| Error::io(&shown, e))?;
    own(&new, mode_of(name)).map_err(|e| Error::io(&shown, e.into()))?;
    rustix::fs::renameat(folder, temporary.as_str(), folder, name)
        .map_err(|e| Error::io(&shown, e.into()))?;
    Ok(())
}

/// The mode of a state file in the daemon's folder.
fn mode_of(name: &str) -> u32 {
    if PRIVATE_LOCKS.contains(&name) {
        0o600
    } else if name == SHARED_LOCK {
        0o666
    } else {
        0o644
    }
}

/// Makes an open file or folder root's with `mode`, when it is a regular
/// file or a folder (checked on the descriptor itself).
fn own(fd: &impl AsFd, mode: u32) -> rustix::io::Result<()> {
    let stat = rustix::fs::fstat(fd)?;
    let kind = FileType::from_raw_mode(stat.st_mode);
    if kind != FileType::RegularFile && kind != FileType::Directory {
        return Ok(());
    }
    if stat.st_uid != 0 || stat.st_gid != 0 {
        rustix::fs::fchown(fd, Some(rustix::fs::Uid::ROOT), Some(rustix::fs::Gid::ROOT))?;
    }
    if stat.st_mode & 0o7777 != mode {
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?;
    }
    Ok(())
}
