//! The one place that sends signals and detaches environments.
//!
//! A process is signalled through the pidfd the snapshot opened for it,
//! after its owner is checked again: the signal reaches the process the
//! rules judged or none, whatever became of its pid. Without such a pidfd
//! one is opened before the start time and owner are compared with the
//! snapshot's, so a pid reused in between is never signalled: either the
//! check sees the new process, or the pidfd names the old one, which is
//! gone. Pids of 0 or below (process groups) are never signalled.

use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal};

use super::Report;
use super::snapshot::Snapshot;
use crate::env_vars;
use crate::error::Result;
use crate::error::reference::log;
use crate::escape::terminal;
use crate::messages;
use crate::os::procs::{self, Identity};
use crate::state::Transaction;
use crate::timefmt;

/// Whether genv 1.4.3's `GENV_TERMINATE_PROCESSES` allows signals (it is
/// `0` for a dry run of the terminations; detaching still happens).
pub fn terminate_allowed() -> bool {
    env_vars::get(env_vars::GENV_TERMINATE_PROCESSES).is_none_or(|v| v.trim() != "0")
}

/// The "Terminating process …" line of genv 1.4.3.
fn terminating_line(process: &super::Process) -> String {
    let indices: Vec<String> = process
        .used_gpu_memory
        .iter()
        .map(|u| u.index.to_string())
        .collect();
    format!(
        "Terminating process {} from environment {} that is running on GPU(s) {}\n",
        process.pid,
        terminal(process.eid.as_deref().unwrap_or("N/A")),
        indices.join(",")
    )
}

/// The detachments of a report in device order, with genv 1.4.3's line
/// for each.
fn detach(report: &Report, tx: &mut Transaction<'_>, out: &mut String, act: bool) -> Result<usize> {
    let mut entries: Vec<(Option<u32>, &String, &crate::state::Envs)> = report
        .detach
        .iter()
        .map(|(index, envs)| (index.parse::<u32>().ok(), index, envs))
        .collect();
    entries.sort_by_key(|(index, _, _)| *index);
    let mut devices = if act { Some(tx.devices_mut()?) } else { None };
    let mut count = 0;
    for (index, raw, envs) in entries {
        let Some(index) = index else {
            messages::error(format!("invalid device index {raw:?} in the report"), None);
            continue;
        };
        for env in &envs.envs {
            out.push_str(&format!(
                "Detaching environment {} of user {} from device {index}\n",
                terminal(&env.eid),
                terminal(env.username.as_deref().unwrap_or("N/A"))
            ));
            if let Some(device) = devices.as_mut().and_then(|d| d.get_mut(index))
                && device.detach(&env.eid)
            {
                count += 1;
            }
        }
    }
    Ok(count)
}

/// A pidfd for process `pid` of a report from another host, when genv may
/// signal it: a real process (not a group, not init, not genv itself) and,
/// when it is root's, one that its own `GENV_ENVIRONMENT_ID` puts in an
/// environment of root's. A report names pids; the kernel says whose they
/// are, and root's services outside environments are never signalled.
fn judged(pid: i64, tx: &mut Transaction<'_>) -> std::result::Result<Rc<OwnedFd>, String> {
    let raw = u32::try_from(pid)
        .ok()
        .filter(|&p| p > 1 && p != std::process::id())
        .ok_or_else(|| "it is not a process genv may signal".to_owned())?;
    let inspection = super::snapshot::inspect(raw);
    let Some(pidfd) = inspection.pidfd.clone() else {
        return Err("it has exited or cannot be opened".into());
    };
    let identity = inspection
        .identity
        .as_ref()
        .map_err(|_| "genv could not tell who owns it".to_owned())?;
    if identity.is_root() {
        let envs = tx.envs().map_err(|e| e.to_string())?;
        if super::snapshot::membership(&inspection, envs).is_none() {
            return Err("it is root's and in no environment".into());
        }
    }
    Ok(pidfd)
}

/// `genv usage execute`: terminates and detaches as a report from another
/// host says, printing each action as genv 1.4.3 does.
/// `GENV_TERMINATE_PROCESSES=0` only reports the terminations.
pub fn execute(
    report: &Report,
    tx: &mut Transaction<'_>,
    out: &mut String,
) -> crate::error::Result<()> {
    let terminate = terminate_allowed();
    // What was done, for `genv monitor`'s counters.
    let mut terminated = 0u64;
    for process in &report.terminate.processes {
        out.push_str(&terminating_line(process));
        if !terminate {
            continue;
        }
        // Never 0 or negative: kill() would signal whole process groups.
        if process.pid <= 0 {
            messages::error(
                format!("refusing to terminate invalid pid {}", process.pid),
                None,
            );
            continue;
        }
        let pidfd = match judged(process.pid, tx) {
            Ok(pidfd) => pidfd,
            Err(why) => {
                messages::error(
                    format!("refusing to terminate process {}: {why}", process.pid),
                    None,
                );
                continue;
            }
        };
        match send(&pidfd, Signal::TERM) {
            Ok(()) => terminated += 1,
            Err(Errno::PERM) => log::no_permission_to_terminate(process.pid),
            Err(_) => log::already_terminated(process.pid),
        }
    }
    let detached = detach(report, tx, out, true)?;
    crate::state::enforcement::record(tx, terminated, detached as u64)
}

/// How `genv enforce` acts on a report.
#[derive(Debug, Clone, Copy)]
pub struct Acting {
    /// Send signals (`GENV_TERMINATE_PROCESSES` is not `0`, no `--dry-run`).
    pub signal: bool,
    /// Change the state (no `--dry-run`).
    pub detach: bool,
    /// How long a process has after SIGTERM before SIGKILL.
    pub grace: Duration,
}

/// What one cycle did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub terminated: usize,
    pub killed: usize,
    pub refused: usize,
    pub detached: usize,
}

impl Done {
    pub fn any(&self) -> bool {
        self.terminated + self.killed + self.refused + self.detached > 0
    }
}

/// A process that was sent SIGTERM, held by its pidfd.
struct Signalled {
    pid: i64,
    pidfd: Rc<OwnedFd>,
    identity: Identity,
}

fn log(message: impl std::fmt::Display) {
    messages::note(format!("{}: {message}", timefmt::now()));
}

/// A pidfd for the process the snapshot saw as `pid`, when it is still
/// that process: the pidfd the snapshot opened, or one opened now for a
/// process with the same start time; and the same owner.
fn verified(
    pid: i64,
    seen: Option<Identity>,
    pinned: Option<&Rc<OwnedFd>>,
) -> std::result::Result<(Rc<OwnedFd>, Identity), String> {
    let Some(seen) = seen else {
        return Err("genv could not tell who owns it".into());
    };
    let Some(raw) = i32::try_from(pid)
        .ok()
        .filter(|&p| p > 0 && p as u32 != std::process::id())
        .and_then(Pid::from_raw)
    else {
        return Err("it is not a process genv may signal".into());
    };
    if let Some(pidfd) = pinned {
        // Alive, so its pid is still its own.
        if exited(pidfd) {
            return Err("it has exited".into());
        }
        return match procs::identity(pid as u32) {
            Ok(now) if now.uid == seen.uid => Ok((Rc::clone(pidfd), now)),
            Ok(_) => Err("its owner changed".into()),
            Err(_) => Err("it has exited".into()),
        };
    }
    let pidfd = match rustix::process::pidfd_open(raw, PidfdFlags::empty()) {
        Ok(fd) => Rc::new(fd),
        Err(Errno::SRCH) => return Err("it has exited".into()),
        Err(e) => return Err(format!("it could not be opened ({e})")),
    };
    match procs::identity(pid as u32) {
        Ok(now) if now == seen => Ok((pidfd, now)),
        Ok(_) => Err("its pid now belongs to another process".into()),
        Err(_) => Err("it has exited".into()),
    }
}

fn send(pidfd: &Rc<OwnedFd>, signal: Signal) -> std::result::Result<(), Errno> {
    rustix::process::pidfd_send_signal(pidfd.as_fd(), signal)
}

/// Whether the process behind a pidfd has exited (the pidfd is readable).
fn exited(pidfd: &Rc<OwnedFd>) -> bool {
    crate::os::readable_now(pidfd.as_fd())
}

/// Acts on the report of one `genv enforce` cycle: genv 1.4.3's lines for
/// each termination and detachment on `out`, a timestamped line per
/// action on stderr. Processes are signalled only when still the ones the
/// snapshot saw; those alive after the grace period get SIGKILL.
pub fn enforce(
    report: &Report,
    snapshot: &Snapshot,
    acting: Acting,
    dir: &crate::state::StateDir,
    out: &mut String,
) -> Result<Done> {
    let mut done = Done::default();
    let mut signalled: Vec<Signalled> = Vec::new();
    for process in &report.terminate.processes {
        out.push_str(&terminating_line(process));
        if !acting.signal {
            continue;
        }
        let seen = snapshot
            .processes
            .iter()
            .find(|p| p.pid == process.pid)
            .and_then(|p| p.identity);
        let pinned = snapshot.pidfds.get(&process.pid);
        let (pidfd, identity) = match verified(process.pid, seen, pinned) {
            Ok(found) => found,
            Err(why) => {
                messages::warn(format!("not signalling process {}: {why}", process.pid));
                done.refused += 1;
                continue;
            }
        };
        match send(&pidfd, Signal::TERM) {
            Ok(()) => {
                log(format!(
                    "sent SIGTERM to process {} (uid {}, environment {})",
                    process.pid,
                    identity.uid,
                    crate::escape::terminal(process.eid.as_deref().unwrap_or("N/A"))
                ));
                done.terminated += 1;
                signalled.push(Signalled {
                    pid: process.pid,
                    pidfd,
                    identity,
                });
            }
            Err(Errno::PERM) => {
                log::no_permission_to_terminate(process.pid);
                done.refused += 1;
            }
            Err(_) => log::already_terminated(process.pid),
        }
    }
    if !report.detach.is_empty() {
        let mut tx = dir.transaction(crate::state::LoadOptions::default())?;
        let count = detach(report, &mut tx, out, acting.detach)?;
        if acting.detach {
            crate::state::enforcement::record(&tx, 0, count as u64)?;
            tx.commit()?;
            for (index, envs) in &report.detach {
                for env in &envs.envs {
                    log(format!(
                        "detached environment {} from device {index}",
                        crate::escape::terminal(&env.eid)
                    ));
                }
            }
        }
        done.detached += count;
    }
    done.killed = wait_then_kill(signalled, acting.grace);
    if done.terminated > 0 {
        let tx = dir.transaction(crate::state::LoadOptions::default())?;
        crate::state::enforcement::record(&tx, done.terminated as u64, 0)?;
    }
    Ok(done)
}

/// Waits up to `grace` for the signalled processes to exit, then sends
/// SIGKILL to those still alive (each checked again first).
fn wait_then_kill(mut signalled: Vec<Signalled>, grace: Duration) -> usize {
    let deadline = Instant::now() + grace;
    loop {
        signalled.retain(|s| !exited(&s.pidfd));
        if signalled.is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20).min(deadline - Instant::now()));
    }
    let mut killed = 0;
    for s in signalled {
        match procs::identity(s.pid as u32) {
            Ok(now) if now == s.identity => {}
            _ => continue,
        }
        if send(&s.pidfd, Signal::KILL).is_ok() {
            log(format!(
                "sent SIGKILL to process {} (uid {}), still running {} s after SIGTERM",
                s.pid,
                s.identity.uid,
                grace.as_secs_f64()
            ));
            killed += 1;
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    use crate::enforce::snapshot::GpuProcess;
    use crate::enforce::{Process, Processes, Usage};

    fn report(pid: i64) -> Report {
        Report {
            terminate: Processes {
                processes: vec![Process {
                    pid,
                    used_gpu_memory: vec![Usage {
                        index: 0,
                        gpu_memory: "42mi".into(),
                    }],
                    eid: None,
                }],
            },
            detach: Default::default(),
        }
    }

    fn snapshot(pid: i64, identity: Option<Identity>) -> Snapshot {
        Snapshot::new(
            vec![GpuProcess {
                pid,
                usage: vec![(0, 42 << 20)],
                eid: None,
                identity,
            }],
            Default::default(),
            Default::default(),
        )
    }

    fn acting() -> Acting {
        Acting {
            signal: true,
            detach: true,
            grace: Duration::ZERO,
        }
    }

    #[test]
    fn a_pid_whose_process_changed_is_not_signalled() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::state::StateDir::new(dir.path());
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let pid = i64::from(child.id());
        let real = procs::identity(child.id()).unwrap();
        // What the snapshot saw was another process with the same pid
        // (another start time), or another owner.
        for seen in [
            Identity {
                start_time: real.start_time + 1,
                ..real
            },
            Identity {
                uid: real.uid + 1,
                ..real
            },
        ] {
            let mut out = String::new();
            let done = enforce(
                &report(pid),
                &snapshot(pid, Some(seen)),
                acting(),
                &state,
                &mut out,
            )
            .unwrap();
            assert_eq!((done.terminated, done.refused), (0, 1));
        }
        // Nor one that could not be inspected, nor process groups.
        for (pid, seen) in [(pid, None), (0, Some(real)), (-1, Some(real))] {
            let mut out = String::new();
            let done = enforce(
                &report(pid),
                &snapshot(pid, seen),
                acting(),
                &state,
                &mut out,
            )
            .unwrap();
            assert_eq!((done.terminated, done.refused), (0, 1), "{pid}");
        }
        assert_eq!(child.try_wait().unwrap(), None, "still running");
        // The process the snapshot saw is.
        let mut out = String::new();
        let done = enforce(
            &report(pid),
            &snapshot(pid, Some(real)),
            acting(),
            &state,
            &mut out,
        )
        .unwrap();
        assert_eq!(done.terminated, 1);
        assert!(child.wait().unwrap().signal().is_some());
    }

    #[test]
    fn a_pinned_process_that_exited_is_not_signalled_whatever_has_its_pid() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::state::StateDir::new(dir.path());
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let pid = i64::from(child.id());
        let inspection = crate::enforce::snapshot::inspect(child.id());
        let pidfd = inspection.pidfd.clone().expect("pidfds (Linux 5.3)");
        let mut snapshot = snapshot(pid, inspection.identity.ok());
        snapshot.pidfds.insert(pid, pidfd);
        child.kill().unwrap();
        child.wait().unwrap();
        let mut out = String::new();
        let done = enforce(&report(pid), &snapshot, acting(), &state, &mut out).unwrap();
        assert_eq!((done.terminated, done.refused), (0, 1));
    }
}
