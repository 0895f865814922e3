//! What genv asks the operating system about processes and users.

use std::ffi::CStr;
use std::path::PathBuf;

use rustix::io::Errno;
use rustix::process::Pid;

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
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    bytes.split(|&b| b == 0).find_map(|entry| {
        let rest = entry.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        Some(String::from_utf8_lossy(rest).into_owned())
    })
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
    // SAFETY: getpwuid_r writes into the buffers we own and sets `result`
    // to null or to `pwd`; nothing is kept past this call.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        let name = CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned();
        let home = if pwd.pw_dir.is_null() {
            PathBuf::new()
        } else {
            PathBuf::from(CStr::from_ptr(pwd.pw_dir).to_string_lossy().into_owned())
        };
        Some((name, home))
    }
}

pub fn username(uid: u32) -> Option<String> {
    user_entry(uid).map(|(name, _)| name)
}

/// Whether a Jupyter kernel still runs: its connection file
/// `kernel-<id>.json` is in a Jupyter runtime folder, the caller's
/// (`$JUPYTER_RUNTIME_DIR`, `$XDG_DATA_HOME` or `~/.local/share`) or the
/// environment owner's. Unlike genv 1.4.3 this starts no `jupyter` process.
pub fn kernel_alive(owner_uid: i64, kernel_id: &str) -> bool {
    if kernel_id.is_empty() || kernel_id.contains('/') {
        return false;
    }
    let file = format!("kernel-{kernel_id}.json");
    runtime_dirs(owner_uid)
        .iter()
        .any(|dir| dir.join(&file).exists())
}

fn runtime_dirs(owner_uid: i64) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("JUPYTER_RUNTIME_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME") {
        dirs.push(PathBuf::from(data).join("jupyter/runtime"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".local/share/jupyter/runtime"));
    }
    if let Some((_, home)) = u32::try_from(owner_uid).ok().and_then(user_entry) {
        dirs.push(home.join(".local/share/jupyter/runtime"));
    }
    dirs
}

/// The first argument of a process's command line (`/proc/<pid>/cmdline`).
pub fn cmdline_arg0(pid: u32) -> Option<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let arg0 = bytes.split(|&b| b == 0).next()?;
    (!arg0.is_empty()).then(|| String::from_utf8_lossy(arg0).into_owned())
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
}
