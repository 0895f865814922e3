//! What genv asks the operating system about processes and users.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::process::Pid;

/// The start-time reader the memory cap library uses for its ledger's
/// slots, the same file: one reading of `/proc/<pid>/stat` for both.
#[path = "../../crates/genv-memcap/src/procstat.rs"]
mod procstat;
use procstat::start_time_of_stat;

/// A process is alive while `kill(pid, 0)` succeeds or is refused for
/// permission (it belongs to another user). Never probes pid 0 or negative
/// pids, which would mean process groups.
pub fn pid_alive(pid: i64) -> bool {
    // `Pid::from_raw` asserts on negative values.
    let Some(pid) = i32::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .and_then(Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(Errno::PERM) => true,
        Err(_) => false,
    }
}

/// One variable of another process's environment, from
/// `/proc/<pid>/environ`. `None` when unset or unreadable.
pub fn environ_var(pid: u32, name: &str) -> Option<String> {
    environ_lookup(pid, name).ok().flatten()
}

/// The short command name of a process (`/proc/<pid>/comm`).
pub fn comm(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(text.trim_end_matches('\n').to_owned())
}

/// The pids of all processes.
pub fn all_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids
}

pub fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// The login name and home folder of a user, from the password database.
pub fn user_entry(uid: u32) -> Option<(String, PathBuf)> {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok()??;
    Some((user.name, user.dir))
}

pub fn username(uid: u32) -> Option<String> {
    user_entry(uid).map(|(name, _)| name)
}

/// A user for a message: `uid 1001 (alice)`, or `uid 1001` without a name.
pub fn user_label(uid: u32) -> String {
    match username(uid) {
        Some(name) => format!("uid {uid} ({})", crate::escape::terminal(&name)),
        None => format!("uid {uid}"),
    }
}

/// Whether a Jupyter kernel still runs: its connection file
/// `kernel-<id>.json` is in a Jupyter runtime folder, the caller's
/// (`$JUPYTER_RUNTIME_DIR`, `$XDG_DATA_HOME` or `~/.local/share`) or the
/// environment owner's. Unlike genv 1.4.3 this starts no `jupyter` process.
///
/// Inside `genv daemon`, which looks as root, a client's variables say
/// where its own kernels are and nothing of another user's: they count
/// only for the client's own environments, and only where the folder is
/// the client's. Another user's request finds no kernel gone: only the
/// owner's requests and root's may end an environment for its kernel.
pub fn kernel_alive(owner_uid: i64, kernel_id: &str) -> bool {
    if kernel_id.is_empty() || kernel_id.contains('/') {
        return false;
    }
    // A client of the daemon other than root.
    let client = crate::caller::remote()
        .then(crate::caller::uid)
        .filter(|&uid| uid != 0);
    if client.is_some_and(|uid| i64::from(uid) != owner_uid) {
        return true;
    }
    let file = format!("kernel-{kernel_id}.json");
    runtime_dirs(owner_uid, client)
        .iter()
        .any(|dir| dir.join(&file).exists())
}

/// Where the kernels of `owner_uid` may be: the folders the variables
/// name (for a `client` of the daemon, only those that are its own), and
/// the owner's home's.
fn runtime_dirs(owner_uid: i64, client: Option<u32>) -> Vec<PathBuf> {
    use crate::env_vars::get;
    let mut dirs = Vec::new();
    if let Some(dir) = get("JUPYTER_RUNTIME_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    if let Some(data) = get("XDG_DATA_HOME") {
        dirs.push(PathBuf::from(data).join("jupyter/runtime"));
    }
    if let Some(home) = get("HOME") {
        dirs.push(PathBuf::from(home).join(".local/share/jupyter/runtime"));
    }
    dirs.retain(|dir| client.is_none_or(|uid| owned_by(dir, uid)));
    if let Some((_, home)) = u32::try_from(owner_uid).ok().and_then(user_entry) {
        dirs.push(home.join(".local/share/jupyter/runtime"));
    }
    dirs
}

/// Whether `dir` is a folder of `uid`'s (not followed through a link).
fn owned_by(dir: &Path, uid: u32) -> bool {
    std::fs::symlink_metadata(dir).is_ok_and(|meta| meta.is_dir() && meta.uid() == uid)
}

/// The first argument of a process's command line (`/proc/<pid>/cmdline`).
pub fn cmdline_arg0(pid: u32) -> Option<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let arg0 = bytes.split(|&b| b == 0).next()?;
    (!arg0.is_empty()).then(|| String::from_utf8_lossy(arg0).into_owned())
}

/// The start time of a process in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), which tells a process from a later one that got
/// its pid.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    start_time_of_stat(&stat)
}

/// A file, as `/proc/locks` names it: the device of its file system and
/// its inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub major: u32,
    pub minor: u32,
    pub inode: u64,
}

impl FileId {
    /// The file at `path`, without following a link.
    pub fn of(path: &std::path::Path) -> Option<Self> {
        let stat = rustix::fs::lstat(path).ok()?;
        Some(FileId {
            major: rustix::fs::major(stat.st_dev),
            minor: rustix::fs::minor(stat.st_dev),
            inode: stat.st_ino,
        })
    }
}

/// One `flock` on a file, held or waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlockEntry {
    pub pid: u32,
    pub exclusive: bool,
    /// Waiting for the lock (a `->` row), not holding it.
    pub blocked: bool,
}

/// The `flock`s the kernel lists for `file` in `/proc/locks`.
pub fn flocks(file: FileId) -> Vec<FlockEntry> {
    let text = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    parse_proc_locks(&text, file)
}

/// The `FLOCK` rows of `/proc/locks` on `file`, e.g.
/// `1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF`, and waiters as
/// `1: -> FLOCK  ADVISORY  WRITE 1235 00:2a:5678 0 EOF`. The file is
/// `MAJOR:MINOR:INODE`, the device numbers in hex and the inode in decimal
/// (`%02x:%02x:%lu` in the kernel's fs/locks.c); an inode number means
/// nothing without its device.
pub fn parse_proc_locks(text: &str, file: FileId) -> Vec<FlockEntry> {
    let mut locks: Vec<FlockEntry> = Vec::new();
    for line in text.lines() {
        let mut fields: Vec<&str> = line.split_whitespace().skip(1).collect();
        let blocked = fields.first() == Some(&"->");
        if blocked {
            fields.remove(0);
        }
        if fields.len() < 5 || fields[0] != "FLOCK" {
            continue;
        }
        if parse_file_id(fields[4]) != Some(file) {
            continue;
        }
        let Ok(pid) = fields[3].parse::<u32>() else {
            continue;
        };
        // /proc/locks is read in pieces while locks come and go, so an
        // entry may be seen twice: one per pid.
        if !locks.iter().any(|l| l.pid == pid) {
            locks.push(FlockEntry {
                pid,
                exclusive: fields[2] == "WRITE",
                blocked,
            });
        }
    }
    locks
}

fn parse_file_id(field: &str) -> Option<FileId> {
    let mut parts = field.split(':');
    let major = u32::from_str_radix(parts.next()?, 16).ok()?;
    let minor = u32::from_str_radix(parts.next()?, 16).ok()?;
    let inode = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some(FileId {
        major,
        minor,
        inode,
    })
}

/// Who a process is, as the kernel says: its owner and its start time
/// (clock ticks after boot, field 22 of `/proc/<pid>/stat`). A pid that
/// was reused names a process with another start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The owner of `/proc/<pid>`: the process's effective uid, or root
    /// for a process that is not dumpable (a set-uid program, or one that
    /// asked not to be inspected), which genv then treats as root's.
    pub uid: u32,
    pub start_time: u64,
}

impl Identity {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// Why `/proc` said nothing about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcError {
    /// No such process (it exited).
    Gone,
    /// Not allowed to look (another user's process, without root).
    Denied,
    /// Something else: an unreadable or unexpected file.
    Unreadable,
}

impl ProcError {
    fn from_io(error: &std::io::Error) -> Self {
        match error.kind() {
            std::io::ErrorKind::NotFound => ProcError::Gone,
            std::io::ErrorKind::PermissionDenied => ProcError::Denied,
            _ if error.raw_os_error() == Some(libc::ESRCH) => ProcError::Gone,
            _ => ProcError::Unreadable,
        }
    }
}

/// The owner and start time of a process: the owner of
/// `/proc/<pid>/stat` (as of `/proc/<pid>`) and its field 22, from one
/// open file, readable for every process.
pub fn identity(pid: u32) -> Result<Identity, ProcError> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    if pid == 0 {
        return Err(ProcError::Gone);
    }
    let mut file =
        std::fs::File::open(format!("/proc/{pid}/stat")).map_err(|e| ProcError::from_io(&e))?;
    let uid = file.metadata().map_err(|e| ProcError::from_io(&e))?.uid();
    let mut buf = [0u8; 1024];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProcError::from_io(&e)),
        }
    }
    let start_time = start_time_of_stat(&buf[..filled]).ok_or(ProcError::Unreadable)?;
    Ok(Identity { uid, start_time })
}

/// One variable of another process's environment, telling an unset
/// variable (`Ok(None)`) from a process that could not be inspected.
pub fn environ_lookup(pid: u32, name: &str) -> Result<Option<String>, ProcError> {
    use std::io::Read;
    // One large read rather than `fs::read`'s small first reads: each read
    // of `environ` maps the other process's memory.
    let mut file =
        std::fs::File::open(format!("/proc/{pid}/environ")).map_err(|e| ProcError::from_io(&e))?;
    let mut bytes = Vec::with_capacity(16 * 1024);
    loop {
        if bytes.len() == bytes.capacity() {
            bytes.reserve(bytes.capacity());
        }
        let start = bytes.len();
        bytes.resize(bytes.capacity(), 0);
        match file.read(&mut bytes[start..]) {
            Ok(0) => {
                bytes.truncate(start);
                break;
            }
            Ok(n) => bytes.truncate(start + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => bytes.truncate(start),
            Err(e) => return Err(ProcError::from_io(&e)),
        }
    }
    Ok(bytes.split(|&b| b == 0).find_map(|entry| {
        let rest = entry.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        Some(String::from_utf8_lossy(rest).into_owned())
    }))
}

/// The owner of `/proc/<pid>` alone (see [`Identity::uid`]).
pub fn owner(pid: u32) -> Result<u32, ProcError> {
    use std::os::unix::fs::MetadataExt;
    if pid == 0 {
        return Err(ProcError::Gone);
    }
    std::fs::metadata(format!("/proc/{pid}"))
        .map(|m| m.uid())
        .map_err(|e| ProcError::from_io(&e))
}

/// Raises the soft limit on open files to the hard one, for a program
/// that holds a descriptor per process it watches.
pub fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness() {
        assert!(pid_alive(std::process::id() as i64));
        assert!(!pid_alive(0));
        assert!(!pid_alive(-1));
        assert!(!pid_alive(i64::MAX));
    }

    #[test]
    fn reads_own_environment() {
        let pid = std::process::id();
        assert!(environ_var(pid, "PATH").is_some());
        assert!(environ_var(pid, "GENV_SURELY_UNSET_VARIABLE").is_none());
    }

    const FILE: FileId = FileId {
        major: 0,
        minor: 0x2a,
        inode: 5678,
    };

    #[test]
    fn parses_proc_locks() {
        let text = "1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF\n\
                    1: -> FLOCK  ADVISORY  READ 1235 00:2a:5678 0 EOF\n\
                    2: POSIX  ADVISORY  WRITE 99 00:2a:5678 0 EOF\n\
                    3: FLOCK  ADVISORY  READ 77 00:2a:1 0 EOF\n";
        let locks = parse_proc_locks(text, FILE);
        assert_eq!(locks.len(), 2);
        assert!(locks[0].exclusive && !locks[0].blocked && locks[0].pid == 1234);
        assert!(!locks[1].exclusive && locks[1].blocked && locks[1].pid == 1235);
    }

    /// The same inode on another file system is another file.
    #[test]
    fn proc_locks_rows_of_another_device_do_not_count() {
        let text = "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 1235 00:2b:5678 0 EOF\n\
                    3: FLOCK  ADVISORY  WRITE 1236 fd:2a:5678 0 EOF\n\
                    4: FLOCK  ADVISORY  READ 1237 00:2a:5678 0 EOF\n";
        let locks = parse_proc_locks(text, FILE);
        assert_eq!(locks.iter().map(|l| l.pid).collect::<Vec<_>>(), [1237]);
        // Device numbers are hex: 0x2a is 42, not "42".
        let text = "1: FLOCK  ADVISORY  WRITE 1 00:42:5678 0 EOF\n";
        assert!(parse_proc_locks(text, FILE).is_empty());
    }

    #[test]
    fn a_file_locked_by_this_process_is_found() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("0.lock");
        let file = std::fs::File::create(&path).unwrap();
        file.lock_shared().unwrap();
        let id = FileId::of(&path).unwrap();
        // `/proc/locks` is read a page at a time while other processes'
        // locks come and go, so a row can be missed: look a few times.
        let mine: Vec<FlockEntry> = (0..5)
            .map(|_| {
                flocks(id)
                    .into_iter()
                    .filter(|l| l.pid == std::process::id())
                    .collect::<Vec<_>>()
            })
            .find(|found| !found.is_empty())
            .unwrap_or_default();
        assert_eq!(mine.len(), 1, "{id:?}");
        assert!(!mine[0].exclusive && !mine[0].blocked);
    }

    #[test]
    fn start_time_counts_from_the_last_parenthesis() {
        let stat = b"42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(start_time_of_stat(stat), Some(98765));
        // A command name that is not UTF-8.
        let stat = b"42 (\xff\xfe) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000";
        assert_eq!(start_time_of_stat(stat), Some(98765));
        assert!(start_time(std::process::id()).is_some());
    }

    #[test]
    fn identity_of_self_and_parsing() {
        let me = identity(std::process::id()).unwrap();
        assert_eq!(me.uid, current_uid());
        assert_eq!(identity(std::process::id()).unwrap(), me);
        assert_eq!(identity(0), Err(ProcError::Gone));
        assert_eq!(identity(u32::MAX), Err(ProcError::Gone));
        let stat = b"42 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 19 20";
        assert_eq!(start_time_of_stat(stat), Some(777));
        assert_eq!(start_time_of_stat(b"42 (x) S 1"), None);
    }

    #[test]
    fn environ_lookup_tells_unset_from_gone() {
        let pid = std::process::id();
        assert!(environ_lookup(pid, "PATH").unwrap().is_some());
        assert_eq!(environ_lookup(pid, "GENV_SURELY_UNSET_VARIABLE"), Ok(None));
        assert_eq!(environ_lookup(u32::MAX, "PATH"), Err(ProcError::Gone));
    }
}
