//! Files in the shared state folder, which every local user may write and
//! none may be trusted: everything inside it is opened relative to a
//! descriptor of its folder and never through a link, a file is never
//! truncated in place, only a file created here and now has its mode set,
//! and whatever stands where a state file belongs but is not a regular file
//! (a link, a FIFO, a socket, a folder) is moved aside with one warning, so
//! that one user cannot stop every other user's commands.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::escape;
use crate::messages;

/// Files every user may write, whatever the umask (file mode).
const SHARED_FILE_MODE: u32 = 0o666;
/// Folders open to every user, whatever the umask: 0777 without the sticky
/// bit, so one user may rename over a file another user wrote last.
const SHARED_DIR_MODE: u32 = 0o777;

/// Whether this process is `genv daemon`, which owns the state folder:
/// what it makes is root's and only readable by others (0644, 0755).
static LOCKED_DOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes everything this process creates in the state folder its own
/// alone to write (`genv daemon`).
pub(crate) fn lock_down() {
    LOCKED_DOWN.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether this process is `genv daemon`.
pub(crate) fn locked_down() -> bool {
    LOCKED_DOWN.load(std::sync::atomic::Ordering::Relaxed)
}

/// The lock files that in the daemon only root may open (whoever opens a
/// lock file can hold it): the daemon's global lock and the line's guard.
pub(crate) const PRIVATE_LOCKS: [&str; 2] = [".daemon.lock", "queue.guard"];

/// The mode of a state folder made before it is opened: 0777, or 0755
/// in the daemon.
fn dir_mode() -> u32 {
    if locked_down() {
        PUBLISHED_DIR_MODE
    } else {
        SHARED_DIR_MODE
    }
}

/// Whether a state folder is served by `genv daemon`: root's, writable by
/// no one else, with root's socket in it. Then whatever anyone (root's
/// own tools: the container hook, `genv usage execute`) makes in it is
/// made as the daemon makes it: only root writes it.
fn daemon_serves(folder: &OwnedFd) -> bool {
    let Ok(stat) = rustix::fs::fstat(folder) else {
        return false;
    };
    if stat.st_uid != 0 || stat.st_mode & 0o022 != 0 {
        return false;
    }
    rustix::fs::statat(folder, "genv.sock", AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Socket && s.st_uid == 0)
}

/// Folders and files published for other programs to read (the
/// monitor's configuration for Prometheus and Grafana): the publisher's,
/// readable by everyone and writable by no one else.
pub(crate) const PUBLISHED_DIR_MODE: u32 = 0o755;
pub(crate) const PUBLISHED_FILE_MODE: u32 = 0o644;

/// How often to retry when another process removes or replaces an entry
/// between two of our system calls.
const ATTEMPTS: usize = 4;

/// An open folder: the descriptor everything inside it is opened through,
/// and its path for messages.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    /// In a folder the daemon serves: what is made here is root's to
    /// write alone (0644, 0755; its private locks 0600).
    locked: bool,
    /// Whether [`Dir::replace`] left an old file for [`Dir::tidy`].
    untidy: AtomicBool,
}

impl Dir {
    /// The mode of a state file made now: 0666, or 0644 where the daemon
    /// serves the folder.
    fn file_mode(&self) -> u32 {
        if self.locked {
            PUBLISHED_FILE_MODE
        } else {
            SHARED_FILE_MODE
        }
    }

    /// The mode of a lock file made now: [`Dir::file_mode`], or 0600 for
    /// the daemon's [`PRIVATE_LOCKS`].
    fn lock_mode(&self, name: &str) -> u32 {
        if self.locked && PRIVATE_LOCKS.contains(&name) {
            0o600
        } else {
            self.file_mode()
        }
    }

    /// The mode of a folder made now: 0777, or 0755 where the daemon
    /// serves.
    fn dir_mode(&self) -> u32 {
        if self.locked {
            PUBLISHED_DIR_MODE
        } else {
            SHARED_DIR_MODE
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The path of an entry, for messages only (never opened).
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Opens the state folder itself, creating it (and its parents) when
    /// missing. The user chose this path, so it is followed as given; only
    /// what is inside it is held to the rules of this module.
    ///
    /// The folder itself is refused when it is a link (anyone can make
    /// `/var/tmp/genv` a link before genv makes the folder, and root's
    /// commands would then write wherever it points) or when it belongs to
    /// someone other than root or this user, who could take it over.
    pub fn open_root(path: &Path) -> Result<Dir> {
        make_folder(path)?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::open(path, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::LOOP | Errno::NOTDIR) => {
                let link = rustix::fs::lstat(path)
                    .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Symlink);
                let what = if link {
                    "a symbolic link"
                } else {
                    "not a folder"
                };
                return Err(Error::hinted(
                    format!(
                        "the state folder {} is {what}; genv does not follow it",
                        shown(path)
                    ),
                    "remove it (whoever made it may be trying to redirect genv), or set GENV_TMPDIR to a real folder",
                ));
            }
            Err(e) => return Err(Error::io(path, e.into())),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| Error::io(path, e.into()))?;
        let me = rustix::process::geteuid().as_raw();
        if stat.st_uid != 0 && stat.st_uid != me {
            return Err(Error::hinted(
                format!(
                    "the state folder {} belongs to {}, not to root or you ({}): its owner could take it over",
                    shown(path),
                    crate::os::procs::user_label(stat.st_uid),
                    crate::os::procs::user_label(me),
                ),
                format!(
                    "an administrator makes it root's once (sudo chown root: {0} && sudo chmod 0777 {0}); or set GENV_TMPDIR to a folder of your own",
                    shown(path)
                ),
            ));
        }
        let locked = locked_down() || daemon_serves(&fd);
        Ok(Dir {
            fd,
            path: path.to_owned(),
            locked,
            untidy: AtomicBool::new(false),
        })
    }

    /// The folder `name` inside this one, created 0777 when missing. A link,
    /// a file or anything else in its place is moved aside and replaced by
    /// a new folder.
    pub fn subdir(&self, name: &str) -> Result<Dir> {
        let path = self.join(name);
        for _ in 0..ATTEMPTS {
            let created =
                match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(self.dir_mode())) {
                    Ok(()) => true,
                    Err(Errno::EXIST) => false,
                    Err(e) => return Err(Error::io(&path, e.into())),
                };
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
                Ok(fd) => {
                    if created {
                        widen_own_folder(&fd, self.dir_mode())
                            .map_err(|e| Error::io(&path, e.into()))?;
                    }
                    return Ok(Dir {
                        fd,
                        path,
                        locked: self.locked,
                        untidy: AtomicBool::new(false),
                    });
                }
                Err(Errno::NOENT) => continue,
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    let what = match self.kind_of(name) {
                        Some(FileType::Symlink) => "a symbolic link",
                        _ => "not a folder",
                    };
                    self.move_aside(name, what)?;
                }
                Err(e) => return Err(Error::io(&path, e.into())),
            }
        }
        Err(Error::io(
            &path,
            std::io::Error::other("replaced again and again while opening it"),
        ))
    }

    /// The folder `name` inside this one as this user's own, for files
    /// published for other programs to read: owned by this user, mode
    /// 0755 whatever the umask, created when missing. Whatever else stands
    /// there (a link, a file, a folder of another user or one that others
    /// may write into, whose content may be theirs) is moved aside with a
    /// warning and replaced, never used.
    pub fn own_subdir(&self, name: &str) -> Result<Dir> {
        let path = self.join(name);
        let me = rustix::process::geteuid().as_raw();
        for _ in 0..ATTEMPTS {
            let mode = Mode::from_raw_mode(PUBLISHED_DIR_MODE);
            match rustix::fs::mkdirat(&self.fd, name, mode) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(Error::io(&path, e.into())),
            }
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let what = match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
                Ok(fd) => {
                    let stat = rustix::fs::fstat(&fd).map_err(|e| Error::io(&path, e.into()))?;
                    if stat.st_uid != me && stat.st_mode & 0o022 == 0 && me != 0 {
                        // Another user's, that only she may change (root's
                        // published files): not ours to move aside, or any
                        // user could replace what root published.
                        return Err(others_folder(&path, stat.st_uid));
                    }
                    if stat.st_uid != me {
                        "a folder of another user"
                    } else if stat.st_mode & 0o022 != 0 {
                        "a folder that other users may write into"
                    } else {
                        if stat.st_mode & 0o7777 != PUBLISHED_DIR_MODE {
                            rustix::fs::fchmod(&fd, mode)
                                .map_err(|e| Error::io(&path, e.into()))?;
                        }
                        return Ok(Dir {
                            fd,
                            path,
                            locked: self.locked,
                            untidy: AtomicBool::new(false),
                        });
                    }
                }
                Err(Errno::NOENT) => continue,
                Err(Errno::LOOP | Errno::NOTDIR) => match self.kind_of(name) {
                    Some(FileType::Symlink) => "a symbolic link",
                    _ => "not a folder",
                },
                Err(Errno::ACCESS) => {
                    let stat = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| Error::io(&path, e.into()))?;
                    if me != 0 && stat.st_mode & 0o022 == 0 {
                        return Err(others_folder(&path, stat.st_uid));
                    }
                    "a folder of another user"
                }
                Err(e) => return Err(Error::io(&path, e.into())),
            };
            match self.rename_aside(name) {
                Ok(Some(aside)) => messages::warn(format_args!(
                    "{} was {what}; moved it aside to {}",
                    shown(&path),
                    shown(&aside),
                )),
                Ok(None) => {}
                Err(e) => {
                    return Err(Error::hinted(
                        format!("{} is {what} and cannot be moved aside ({e})", shown(&path)),
                        "remove it, or choose another folder",
                    ));
                }
            }
        }
        Err(Error::io(
            &path,
            std::io::Error::other("replaced again and again while opening it"),
        ))
    }

    /// A folder a user chose (`genv monitor --config-dir`), opened as
    /// given, links followed as for any path on a command line.
    pub fn open_chosen(path: &Path) -> Result<Dir> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd =
            rustix::fs::open(path, flags, Mode::empty()).map_err(|e| Error::io(path, e.into()))?;
        Ok(Dir {
            fd,
            path: path.to_owned(),
            locked: false,
            untidy: AtomicBool::new(false),
        })
    }

    /// The folder `name` inside this one when it is a real folder; `None`
    /// otherwise. Creates and moves nothing.
    pub fn existing_subdir(&self, name: &str) -> Option<Dir> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::empty()).ok()?;
        Some(Dir {
            fd,
            path: self.join(name),
            locked: self.locked,
            untidy: AtomicBool::new(false),
        })
    }

    fn kind_of(&self, name: &str) -> Option<FileType> {
        rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .ok()
            .map(|stat| FileType::from_raw_mode(stat.st_mode))
    }

    /// The whole content of a state file, or `None` when there is none. A
    /// link, FIFO, socket, folder or unreadable file in its place is moved
    /// aside with a warning and counts as none.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.read_versioned(name)?.map(|(bytes, _)| bytes))
    }

    /// [`Dir::read`], with the file's version, for [`Dir::good_is_stale`].
    pub fn read_versioned(&self, name: &str) -> Result<Option<(Vec<u8>, Version)>> {
        Ok(match self.read_or_set_aside(name)? {
            Read::Bytes(bytes, version) => Some((bytes, version)),
            Read::Missing | Read::SetAside => None,
        })
    }

    /// [`Dir::read_versioned`], telling a missing file from one that was
    /// moved aside (a link, a FIFO, a hard link, a file above
    /// [`MAX_STATE_FILE`]), for which the last good copy may stand in.
    pub fn read_or_set_aside(&self, name: &str) -> Result<Read> {
        match self.inspect(name)? {
            Content::Missing => Ok(Read::Missing),
            Content::Bytes(bytes, version) => Ok(Read::Bytes(bytes, version)),
            Content::Damaged(what) => {
                self.move_aside(name, what)?;
                Ok(Read::SetAside)
            }
        }
    }

    /// Like [`Dir::read`], for a reader that holds no lock and so must not
    /// move anything: whatever is not a readable regular file is `None`.
    pub fn peek(&self, name: &str) -> Option<Vec<u8>> {
        match self.inspect(name) {
            Ok(Content::Bytes(bytes, _)) => Some(bytes),
            _ => None,
        }
    }

    /// Whether `name` is a regular file of one link holding exactly
    /// `bytes`, compared a block at a time (no copy of the file is kept).
    /// Anything else, or any error, is `false`: the caller writes.
    pub fn holds(&self, name: &str, bytes: &[u8]) -> bool {
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let Ok(fd) = rustix::fs::openat(&self.fd, name, flags, Mode::empty()) else {
            return false;
        };
        let Ok(stat) = rustix::fs::fstat(&fd) else {
            return false;
        };
        if not_regular_stat(&stat).is_some()
            || stat.st_nlink != 1
            || u64::try_from(stat.st_size).ok() != u64::try_from(bytes.len()).ok()
        {
            return false;
        }
        // No larger than the file (plus the read that finds its end).
        let mut block = vec![0u8; bytes.len().min(64 * 1024) + 1];
        let mut rest = bytes;
        loop {
            match rustix::io::read(&fd, &mut block) {
                Ok(0) => return rest.is_empty(),
                Ok(n) if n <= rest.len() && block[..n] == rest[..n] => rest = &rest[n..],
                Err(Errno::INTR) => {}
                _ => return false,
            }
        }
    }

    /// Whether `name` exists in the folder (as anything; not followed).
    pub fn has(&self, name: &str) -> bool {
        rustix::fs::statat(&self.fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }

    fn inspect(&self, name: &str) -> Result<Content> {
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(Content::Missing),
            Err(Errno::LOOP) => return Ok(Content::Damaged("a symbolic link")),
            Err(Errno::NXIO) => return Ok(Content::Damaged("a socket")),
            Err(Errno::ACCESS) => return Ok(Content::Damaged("not readable")),
            Err(e) => return Err(Error::io(self.join(name), e.into())),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| Error::io(self.join(name), e.into()))?;
        if let Some(what) = not_regular_stat(&stat) {
            return Ok(Content::Damaged(what));
        }
        // State files are only ever replaced by rename, so each has one
        // name; another is a hard link planted to make genv read (and set
        // aside, or copy) a file that is not its own.
        if stat.st_nlink > 1 {
            return Ok(Content::Damaged("a hard link to another file"));
        }
        // A state file is never near the limit (100,000 environments are
        // 30 MB); one above it was made to cost its readers memory and
        // time, root's enforcement included.
        if u64::try_from(stat.st_size).map_or(true, |size| size > MAX_STATE_FILE) {
            return Ok(Content::Damaged(TOO_LARGE));
        }
        // Sized from the fstat above (one read, no second look at the
        // size); a file that grew since is read up to the limit.
        let size = usize::try_from(stat.st_size).unwrap_or(0);
        let mut bytes = Vec::with_capacity(size + 1);
        match read_to_end(&fd, &mut bytes, MAX_STATE_FILE as usize) {
            Ok(()) => Ok(Content::Bytes(bytes, Version::of(&stat))),
            Err(Errno::FBIG) => Ok(Content::Damaged(TOO_LARGE)),
            Err(e) => Err(Error::io(self.join(name), e.into())),
        }
    }

    /// Whether the last good copy of `name` is older than the file as read
    /// (`version`): genv 1.4.3 rewrote it in place since we last wrote it,
    /// or there is no copy yet.
    pub fn good_is_stale(&self, name: &str, version: Version) -> bool {
        match rustix::fs::statat(&self.fd, good_name(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => {
                let good = Version::of(&stat);
                good.size != version.size || good.modified < version.modified
            }
            Err(_) => true,
        }
    }

    /// Replaces the last good copy of `name` with `bytes`, readable by no
    /// more users than the file as read (`version`; `None`: written by us,
    /// 0666). Only a hint for recovery: failing to keep one is no reason
    /// to fail a command.
    pub fn keep_good(&self, name: &str, bytes: &[u8], version: Option<Version>) {
        let good = good_name(name);
        let good_tmp = format!("{good}.tmp");
        let mode = version.map_or(self.file_mode(), |v| v.mode & self.file_mode());
        if self.write_new_mode(&good_tmp, bytes, true, mode).is_ok()
            && self.replace(&good_tmp, &good).is_err()
        {
            let _ = rustix::fs::unlinkat(&self.fd, &good_tmp, AtFlags::empty());
        }
    }

    /// Replaces `name` with `bytes` atomically: a new file (`O_EXCL`, mode
    /// 0666 whatever the umask) beside it, put in the old one's place, which
    /// replaces a planted link instead of writing through it. Callers hold
    /// a lock for this file, so one temporary name per file is enough; a
    /// leftover from a killed writer there is removed, never written
    /// through.
    ///
    /// With `keep_good`, it is put in place by [`Dir::replace`], and a
    /// copy is kept as `.<name>.good` first, for
    /// [`Dir::read`]'s callers to recover from when genv 1.4.3, which
    /// rewrites in place, is killed mid-write. A copy and not a hard link:
    /// a link would share the inode that 1.4.3 truncates.
    pub fn write_atomic(&self, name: &str, bytes: &[u8], keep_good: bool) -> Result<()> {
        let tmp = format!(".{name}.tmp");
        self.write_new(&tmp, bytes, true)?;
        // The last good copy is for files genv 1.4.3 may leave torn; in the
        // daemon's folder only the daemon writes, always whole.
        if keep_good && !self.locked {
            self.keep_good(name, bytes, None);
        }
        let placed = if keep_good {
            self.replace(&tmp, name)
        } else {
            rustix::fs::renameat(&self.fd, &tmp, &self.fd, name)
        };
        if let Err(e) = placed {
            let _ = rustix::fs::unlinkat(&self.fd, &tmp, AtFlags::empty());
            return Err(self.write_failed(name, e));
        }
        Ok(())
    }

    /// Replaces `name` with `bytes` as [`Dir::write_atomic`] does (a new
    /// file put in its place by a rename, never written through), with
    /// exactly `mode` whatever the umask: for a file published for other
    /// programs to read (0644 in an [`Dir::own_subdir`]).
    pub fn write_atomic_mode(&self, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
        let tmp = format!(".{name}.tmp");
        self.write_new_mode(&tmp, bytes, true, mode)?;
        if let Err(e) = rustix::fs::renameat(&self.fd, &tmp, &self.fd, name) {
            let _ = rustix::fs::unlinkat(&self.fd, &tmp, AtFlags::empty());
            return Err(self.write_failed(name, e));
        }
        Ok(())
    }

    /// Puts the file `from` in the place of `to` in one step, as a rename
    /// does: by exchanging the two names, then removing the old file from
    /// under `from` (never a folder; a leftover there is dealt with by the
    /// next write). For `envs.json` and `devices.json` (the files with a
    /// last good copy) and that copy, not a rename over `to`: ext4
    /// (`auto_da_alloc`) then writes the new file to disk at once, which
    /// made every change of a 3 MB `envs.json` wait for 3 MB of I/O, twice
    /// with the last good copy. Without it a file replaced within seconds
    /// never reaches the disk at all. What it gives up, the file's content
    /// after a power loss or a kernel crash (both may then be found empty),
    /// is worth nothing for these two: they describe running processes,
    /// which that ends. The other files (the monitor's configuration, the
    /// enforcement counts, the hardware record) keep the plain rename.
    ///
    /// In the daemon, the old file stays under `from` until [`Dir::tidy`],
    /// which it runs once it has answered: removing a file and making one
    /// are most of a change's cost.
    fn replace(&self, from: &str, to: &str) -> rustix::io::Result<()> {
        use rustix::fs::RenameFlags;
        match rustix::fs::renameat_with(&self.fd, from, &self.fd, to, RenameFlags::EXCHANGE) {
            Ok(()) if locked_down() => {
                self.untidy.store(true, Ordering::Relaxed);
                Ok(())
            }
            Ok(()) => {
                let _ = rustix::fs::unlinkat(&self.fd, from, AtFlags::empty());
                Ok(())
            }
            // Nothing at `to` yet, or a file system or sandbox without the
            // exchange (a real EPERM comes back from the rename too).
            Err(Errno::NOENT | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP | Errno::PERM) => {
                rustix::fs::renameat(&self.fd, from, &self.fd, to)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes `bytes` to a new file `name` created here (`O_EXCL`); with
    /// `replace`, whatever is already there is removed first (never
    /// written through).
    fn write_new(&self, name: &str, bytes: &[u8], replace: bool) -> Result<()> {
        self.write_new_mode(name, bytes, replace, self.file_mode())
    }

    fn write_new_mode(&self, name: &str, bytes: &[u8], replace: bool, mode: u32) -> Result<()> {
        let spare = if replace && self.locked {
            self.spare(name, mode)
        } else {
            None
        };
        let made = match spare {
            Some(fd) => Ok(fd),
            None => create_exclusive(self.fd(), name, mode),
        };
        let fd = match made {
            Err(Errno::EXIST) if replace => {
                rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()).or_else(|e| match e {
                    // A folder planted under the temporary name.
                    Errno::ISDIR | Errno::PERM => {
                        self.move_aside(name, "not a regular file").map(|_| ())?;
                        Ok(())
                    }
                    e => Err(Error::io(self.join(name), e.into())),
                })?;
                create_exclusive(self.fd(), name, mode)
            }
            other => other,
        }
        .map_err(|e| Error::io(self.join(name), e.into()))?;
        let mut file = File::from(fd);
        if let Err(e) = file.write_all(bytes) {
            let _ = rustix::fs::unlinkat(&self.fd, name, AtFlags::empty());
            return Err(Error::io(self.join(name), e));
        }
        Ok(())
    }

    /// The empty file [`Dir::tidy`] left at `name` for the next write:
    /// this process's, regular, of `mode`, with no other name and never
    /// written. Only in a folder the daemon serves, where no one but root
    /// makes names; anything else there is removed and made anew.
    fn spare(&self, name: &str, mode: u32) -> Option<OwnedFd> {
        let flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::empty()).ok()?;
        let stat = rustix::fs::fstat(&fd).ok()?;
        is_spare(&stat, mode).then_some(fd)
    }

    /// After [`Dir::replace`] left old files under the temporary names of
    /// `names` (in a folder the daemon serves): removes them and leaves an
    /// empty file at each for the next write to fill ([`Dir::spare`]).
    /// Only when there is something to tidy, and only under what `lock`
    /// takes (the lock that writers of these files take); nothing is done
    /// when it cannot be taken.
    pub fn tidy<T>(&self, names: &[&str], lock: impl FnOnce() -> Option<T>) {
        if !self.untidy.load(Ordering::Relaxed) {
            return;
        }
        let Some(_held) = lock() else {
            return;
        };
        if !self.untidy.swap(false, Ordering::Relaxed) {
            return;
        }
        let mode = self.file_mode();
        for name in names {
            let tmp = format!(".{name}.tmp");
            match rustix::fs::statat(&self.fd, &tmp, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) if is_spare(&stat, mode) => continue,
                Ok(_) => {
                    if rustix::fs::unlinkat(&self.fd, &tmp, AtFlags::empty()).is_err() {
                        continue;
                    }
                }
                Err(_) => {}
            }
            let _ = create_exclusive(self.fd(), &tmp, mode);
        }
    }

    /// Saves `bytes` (entries of `name` that could not be read) in a new
    /// file `<name>.<kind>-<time>` beside it, readable by no more users
    /// than the file they came from (`version`), and returns its path.
    pub fn save_beside(
        &self,
        name: &str,
        kind: &str,
        bytes: &[u8],
        version: Version,
    ) -> Result<PathBuf> {
        let base = format!("{name}.{kind}-{}", stamp());
        let mut last = None;
        for n in 0..ATTEMPTS {
            let candidate = if n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            match self.write_new_mode(&candidate, bytes, false, version.mode & self.file_mode()) {
                Ok(()) => return Ok(self.join(&candidate)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::io(self.join(&base), std::io::Error::other("exists"))))
    }

    /// Moves what stands at `name` aside as `<name>.corrupt-<time>` and says
    /// so once. Someone else having moved it already is no error.
    pub fn move_aside(&self, name: &str, what: &str) -> Result<()> {
        if let Some(aside) = self.rename_aside(name)? {
            messages::warn(format_args!(
                "{} was {what}, not a state file; moved it aside to {}",
                shown(&self.join(name)),
                shown(&aside),
            ));
        }
        Ok(())
    }

    /// Renames `name` to `<name>.corrupt-<time>` (its owner and mode stay
    /// as they were) and returns the new path; `None` when it was gone.
    pub fn rename_aside(&self, name: &str) -> Result<Option<PathBuf>> {
        let aside = format!("{name}.corrupt-{}", stamp());
        match rustix::fs::renameat(&self.fd, name, &self.fd, &aside) {
            Ok(()) => Ok(Some(self.join(&aside))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(self.write_failed(name, e)),
        }
    }

    /// The error for a file of this folder that could not be replaced or
    /// removed; when the folder has the sticky bit, with a hint naming it:
    /// there one user may not rename over or remove another user's file,
    /// which is every write to a state file another user wrote last.
    fn write_failed(&self, name: &str, e: Errno) -> Error {
        let sticky = rustix::fs::fstat(&self.fd).is_ok_and(|stat| stat.st_mode & 0o1000 != 0);
        if sticky && matches!(e, Errno::PERM | Errno::ACCESS) {
            return Error::hinted(
                format!(
                    "{}: {} (the state folder has the sticky bit, so no user may replace a file another user wrote)",
                    shown(&self.join(name)),
                    std::io::Error::from(e)
                ),
                format!(
                    "an administrator removes the bit: sudo chmod 0777 {} (genv needs the folder 0777 without it)",
                    shown(&self.path)
                ),
            );
        }
        Error::io(self.join(name), e.into())
    }

    /// Opens (creating it 0666 when missing) a file to `flock`. An existing
    /// file keeps its mode; one this user may not write is opened for
    /// reading, which `flock` accepts. Anything but a regular file in its
    /// place is moved aside.
    pub fn open_lock(&self, name: &str) -> Result<OwnedFd> {
        let path = self.join(name);
        let open = |access: OFlags| {
            let flags =
                access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
            rustix::fs::openat(&self.fd, name, flags, Mode::empty())
        };
        for _ in 0..ATTEMPTS {
            // Usually there: opened first, made when missing.
            let opened = match open(OFlags::RDWR) {
                Err(Errno::ACCESS | Errno::ROFS) => open(OFlags::RDONLY),
                other => other,
            };
            let damaged = match opened {
                Ok(fd) => match not_regular(&fd) {
                    None => return Ok(fd),
                    Some(what) => what,
                },
                Err(Errno::NOENT) => {
                    match create_exclusive(self.fd(), name, self.lock_mode(name)) {
                        Ok(fd) => return Ok(fd),
                        // Made by another process meanwhile.
                        Err(Errno::EXIST) => continue,
                        Err(e) => return Err(Error::io(&path, e.into())),
                    }
                }
                Err(Errno::LOOP) => "a symbolic link",
                Err(Errno::ISDIR) => "a folder",
                Err(Errno::NXIO) => "a socket",
                Err(Errno::ACCESS) => "not readable",
                Err(e) => return Err(Error::io(&path, e.into())),
            };
            self.move_aside(name, damaged)?;
        }
        Err(Error::io(
            &path,
            std::io::Error::other("replaced again and again while opening it"),
        ))
    }

    /// Opens (creating it 0600, owned by `uid`, when missing) a private
    /// file of one user, never through a link. An existing file is used
    /// only when it is a regular file of that user with no access for
    /// others and a single link (so no hard link to another file can stand
    /// in for it); anything else is refused, never moved or changed.
    pub fn open_private(&self, name: &str, uid: u32) -> Result<OwnedFd> {
        let path = self.join(name);
        let create =
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.fd, name, create, Mode::from_raw_mode(0o600)) {
            Ok(fd) => {
                rustix::fs::fchown(&fd, Some(rustix::fs::Uid::from_raw(uid)), None)
                    .and_then(|()| rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600)))
                    .map_err(|e| Error::io(&path, e.into()))?;
                return Ok(fd);
            }
            Err(Errno::EXIST) => {
                let flags = OFlags::RDWR
                    | OFlags::NOFOLLOW
                    | OFlags::NONBLOCK
                    | OFlags::NOCTTY
                    | OFlags::CLOEXEC;
                match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(Errno::LOOP) => {
                        return Err(Error::io(
                            &path,
                            std::io::Error::other("a symbolic link: not used"),
                        ));
                    }
                    Err(e) => return Err(Error::io(&path, e.into())),
                }
            }
            Err(e) => return Err(Error::io(&path, e.into())),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| Error::io(&path, e.into()))?;
        let problem = not_regular_stat(&stat).or(if stat.st_uid != uid {
            Some("owned by another user")
        } else if stat.st_mode & 0o077 != 0 {
            Some("open to other users")
        } else if stat.st_nlink != 1 {
            Some("a file with other links")
        } else {
            None
        });
        match problem {
            None => Ok(fd),
            Some(what) => Err(Error::io(
                &path,
                std::io::Error::other(format!("{what}: not used")),
            )),
        }
    }

    /// The names in this folder.
    pub fn names(&self) -> Vec<String> {
        let Ok(mut dir) = rustix::fs::Dir::read_from(&self.fd) else {
            return Vec::new();
        };
        let mut names = Vec::new();
        while let Some(Ok(entry)) = dir.read() {
            if let Ok(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        names
    }
}

enum Content {
    Missing,
    Bytes(Vec<u8>, Version),
    Damaged(&'static str),
}

/// What reading a state file found.
pub enum Read {
    Missing,
    Bytes(Vec<u8>, Version),
    /// Not a regular file of one link within the limit: moved aside, with
    /// a warning.
    SetAside,
}

/// The largest state file genv reads: 64 MiB, twice `envs.json` at
/// 100,000 environments. A larger one is moved aside like a damaged one.
pub(crate) const MAX_STATE_FILE: u64 = 64 << 20;

const TOO_LARGE: &str = "larger than genv's 64 MiB limit for a state file";

/// Which version of a file was read: its size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    size: i64,
    modified: (i64, i64),
    mode: u32,
}

impl Version {
    fn of(stat: &rustix::fs::Stat) -> Self {
        Version {
            size: stat.st_size,
            modified: (stat.st_mtime, stat.st_mtime_nsec as i64),
            mode: stat.st_mode & 0o7777,
        }
    }
}

/// The name of the last good copy of state file `name`.
pub(crate) fn good_name(name: &str) -> String {
    format!(".{name}.good")
}

fn not_regular(fd: &OwnedFd) -> Option<&'static str> {
    match rustix::fs::fstat(fd) {
        Ok(stat) => not_regular_stat(&stat),
        Err(_) => Some("not readable"),
    }
}

fn not_regular_stat(stat: &rustix::fs::Stat) -> Option<&'static str> {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => None,
        FileType::Directory => Some("a folder"),
        FileType::Fifo => Some("a FIFO"),
        FileType::Socket => Some("a socket"),
        _ => Some("not a regular file"),
    }
}

fn create_exclusive(dir: BorrowedFd<'_>, name: &str, mode: u32) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(mode))?;
    // Created just now, so ours: the umask may have taken bits away, and
    // other users (and genv 1.4.3, which rewrites in place) need to write
    // this file too.
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    Ok(fd)
}

/// A file [`Dir::tidy`] readied for a write: this process's, regular, of
/// `mode`, with one name and nothing in it.
fn is_spare(stat: &rustix::fs::Stat, mode: u32) -> bool {
    FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile
        && stat.st_uid == rustix::process::geteuid().as_raw()
        && stat.st_nlink == 1
        && stat.st_size == 0
        && stat.st_mode & 0o7777 == mode
}

/// Creates a folder and its missing parents; only a folder made here has
/// its mode widened to 0777, through a descriptor that did not follow a
/// link.
fn make_folder(path: &Path) -> Result<()> {
    match rustix::fs::mkdir(path, Mode::from_raw_mode(dir_mode())) {
        Ok(()) => widen_new_folder(path),
        Err(Errno::EXIST) => Ok(()),
        Err(Errno::NOENT) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                make_folder(parent)?;
            }
            match rustix::fs::mkdir(path, Mode::from_raw_mode(dir_mode())) {
                Ok(()) => widen_new_folder(path),
                Err(Errno::EXIST) => Ok(()),
                Err(e) => Err(Error::io(path, e.into())),
            }
        }
        Err(e) => Err(Error::io(path, e.into())),
    }
}

fn widen_new_folder(path: &Path) -> Result<()> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    // Replaced by something else since: not ours to change.
    let Ok(fd) = rustix::fs::open(path, flags, Mode::empty()) else {
        return Ok(());
    };
    widen_own_folder(&fd, dir_mode()).map_err(|e| Error::io(path, e.into()))
}

/// Widens a folder made just now to 0777, what the umask took away. Should
/// someone have swapped another folder in between the `mkdir` and the
/// `open`, it is left alone unless it is this user's own.
fn widen_own_folder(fd: &OwnedFd, mode: u32) -> rustix::io::Result<()> {
    let stat = rustix::fs::fstat(fd)?;
    if stat.st_uid != rustix::process::geteuid().as_raw() {
        return Ok(());
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))
}

/// The refusal to replace another user's folder that only she may change.
fn others_folder(path: &Path, owner: u32) -> Error {
    Error::hinted(
        format!(
            "{} belongs to {} and only its owner may change it; genv replaces it only when run by root",
            shown(path),
            crate::os::procs::user_label(owner)
        ),
        "publish somewhere of your own with --config-dir DIR",
    )
}

fn stamp() -> String {
    chrono::Local::now().format("%Y%m%dT%H%M%S%.3f").to_string()
}

/// A path for a message on a terminal.
pub(crate) fn shown(path: &Path) -> String {
    escape::terminal(&path.display().to_string()).into_owned()
}

/// Reads `fd` to its end into `bytes`, whose capacity is the expected
/// size; `FBIG` once it holds more than `limit` bytes.
fn read_to_end(fd: &OwnedFd, bytes: &mut Vec<u8>, limit: usize) -> std::result::Result<(), Errno> {
    loop {
        if bytes.len() > limit {
            return Err(Errno::FBIG);
        }
        if bytes.capacity() == bytes.len() {
            bytes.reserve(64 * 1024);
        }
        match rustix::io::read(fd, rustix::buffer::spare_capacity(bytes)) {
            Ok(0) => return Ok(()),
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file replaced leaves nothing behind: no temporary name, no old
    /// copy; whatever was planted at the name (here a link) is replaced,
    /// not written through.
    #[test]
    fn replacing_leaves_the_new_file_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open_root(tmp.path()).unwrap();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, b"mine").unwrap();
        // Names exchanged (a file with a last good copy), over a link.
        dir.write_atomic("envs.json", b"one", true).unwrap();
        std::fs::remove_file(tmp.path().join("envs.json")).unwrap();
        std::os::unix::fs::symlink(&outside, tmp.path().join("envs.json")).unwrap();
        dir.write_atomic("envs.json", b"two", true).unwrap();
        // A plain rename, over a link.
        std::os::unix::fs::symlink(&outside, tmp.path().join("devices.json")).unwrap();
        dir.write_atomic("devices.json", b"three", false).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [".envs.json.good", "devices.json", "envs.json", "outside"]
        );
        assert_eq!(std::fs::read(tmp.path().join("envs.json")).unwrap(), b"two");
        assert_eq!(
            std::fs::read(tmp.path().join(".envs.json.good")).unwrap(),
            b"two"
        );
        assert_eq!(
            std::fs::read(tmp.path().join("devices.json")).unwrap(),
            b"three"
        );
        assert_eq!(std::fs::read(&outside).unwrap(), b"mine");
    }

    /// A published folder is this user's own 0755 one: a link or a folder
    /// others may write into is moved aside, not used; an own folder the
    /// umask narrowed is reused and opened up to 0755.
    #[test]
    fn own_folders_replace_what_others_could_write() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open_root(tmp.path()).unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, tmp.path().join("linked")).unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::write(open.join("planted"), b"x").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let narrow = tmp.path().join("narrow");
        std::fs::create_dir(&narrow).unwrap();
        std::fs::write(narrow.join("mine"), b"x").unwrap();
        std::fs::set_permissions(&narrow, std::fs::Permissions::from_mode(0o700)).unwrap();
        for name in ["linked", "open", "narrow", "new"] {
            let sub = dir.own_subdir(name).unwrap();
            sub.write_atomic_mode("file", b"published", PUBLISHED_FILE_MODE)
                .unwrap();
            let meta = std::fs::symlink_metadata(tmp.path().join(name)).unwrap();
            assert!(meta.is_dir(), "{name}");
            assert_eq!(meta.permissions().mode() & 0o7777, 0o755, "{name}");
            let file = std::fs::metadata(tmp.path().join(name).join("file")).unwrap();
            assert_eq!(file.permissions().mode() & 0o7777, 0o644, "{name}");
        }
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
        assert!(!open.join("planted").exists());
        assert!(narrow.join("mine").exists());
    }
}
