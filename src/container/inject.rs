//! Files of the host's state folder mounted into a container by its
//! `prestart` hook: the attached devices' lock files and the memory cap's
//! ledger, known only once the environment is attached.
//!
//! The hook runs as root and the state folder is writable by every local
//! user, so nothing is mounted by path: each file is opened without
//! following links and checked ([`crate::state`]), and that descriptor is
//! cloned as a detached mount (`open_tree`). The hook then enters the
//! container's mount namespace (runc and crun run `prestart` hooks after
//! the container's mounts and before it switches to its root) and attaches
//! each mount (`move_mount`) onto a file it creates in the tmpfs that the
//! runtime mounted at [`STATE_IN_CONTAINER`]: the image cannot put a link
//! there, and the path to the tmpfs is resolved inside the container's
//! root (`RESOLVE_IN_ROOT`), as the runtime resolved it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{MoveMountFlags, OpenTreeFlags};

use super::STATE_IN_CONTAINER;
use crate::error::{Error, Result};

/// tmpfs's `f_type`.
const TMPFS_MAGIC: u64 = 0x0102_1994;

/// A host file to mount at `name` inside the container's state folder
/// (`devices/0.lock`, `memcap-0-…`).
pub(super) struct File {
    pub fd: OwnedFd,
    pub name: String,
}

/// Mounts `files` into the mount namespace of `pid` (the container's init
/// process, from the runtime), beneath the container root `root`.
pub(super) fn mount(pid: i64, root: &Path, files: Vec<File>) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let fail = |what: &str, e: Errno| {
        Error::hinted(
            format!("could not mount genv's files into the container: {what}: {e}"),
            "the hook must run as root (a rootful engine); run the container with --no-device-locks and without --gpu-memory otherwise",
        )
    };
    let mut trees = Vec::with_capacity(files.len());
    for file in files {
        if file.name.is_empty()
            || file.name.starts_with('/')
            || file
                .name
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(Error::hinted(
                format!(
                    "not a name inside the state folder: {}",
                    crate::escape::terminal(&file.name)
                ),
                "this is a bug of genv's hook",
            ));
        }
        let tree = rustix::mount::open_tree(
            file.fd.as_fd(),
            c"",
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_EMPTY_PATH,
        )
        .map_err(|e| fail(&file.name, e))?;
        trees.push((tree, file.name));
    }
    let ns_path = format!("/proc/{pid}/ns/mnt");
    let ns = rustix::fs::open(
        ns_path.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(&ns_path, e))?;
    // Entering a mount namespace takes a process of one thread; the hook
    // starts none, and says so if that ever changes.
    rustix::thread::move_into_link_name_space(
        ns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Mount),
    )
    .map_err(|e| fail("entering the container's mount namespace", e))?;
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(&root.display().to_string(), e))?;
    let state = rustix::fs::openat2(
        &root_fd,
        STATE_IN_CONTAINER.trim_start_matches('/'),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| fail(STATE_IN_CONTAINER, e))?;
    let is_tmpfs = rustix::fs::fstatfs(&state).is_ok_and(|s| s.f_type as u64 == TMPFS_MAGIC);
    if !is_tmpfs {
        return Err(Error::hinted(
            format!(
                "could not mount genv's files into the container: {STATE_IN_CONTAINER} is not the tmpfs genv's runtime mounts there"
            ),
            "create the container with genv's runtime (--runtime=genv)",
        ));
    }
    for (tree, name) in trees {
        let (folder, file) = match name.rsplit_once('/') {
            Some((folder, file)) => (Some(folder), file),
            None => (None, name.as_str()),
        };
        let parent = match folder {
            Some(folder) => {
                match rustix::fs::mkdirat(&state, folder, Mode::from_raw_mode(0o777)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(fail(folder, e)),
                }
                let dir = rustix::fs::openat(
                    &state,
                    folder,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| fail(folder, e))?;
                // Processes of any user in the container lock and write
                // here, as in the host's state folder.
                rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o777))
                    .map_err(|e| fail(folder, e))?;
                dir
            }
            None => rustix::fs::openat(
                &state,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| fail(STATE_IN_CONTAINER, e))?,
        };
        let point = rustix::fs::openat(
            &parent,
            file,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| fail(&name, e))?;
        rustix::mount::move_mount(
            tree.as_fd(),
            c"",
            point.as_fd(),
            c"",
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
        )
        .map_err(|e| fail(&name, e))?;
    }
    Ok(())
}
