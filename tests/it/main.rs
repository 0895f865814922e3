//! The integration tests: one binary driving the real `genv` and
//! `nvidia-smi-sim` binaries, one module per capability.

#![allow(dead_code)]
// Tests may call libc directly (kill, mkfifo, umask); each block says why
// it is sound.
#![allow(unsafe_code)]
// A test binary has no outside users: `pub` in its modules marks what
// the other modules call, not an interface.
#![allow(unreachable_pub)]

mod common;
mod lock_support;
mod shim_support;

mod command_line;
mod compat_messages;
mod compat_ref;
mod container;
mod core_cli;
mod crash_concurrency;
mod daemon;
mod daemon_parts;
mod enforce;
mod errors;
mod extensions;
mod first_hour;
mod hostile_text;
mod llm;
mod lock_cli;
mod lock_sharing;
mod memcap;
mod monitor;
mod package;
mod remote;
mod sdk_plumbing;
mod shell_integration;
mod shell_tmux;
mod shim_bytes;
mod shim_docker;
mod shim_h100;
mod shim_nvidia_smi;
mod shim_sim;
mod slow_driver;
mod snapshots;
mod state_hostile;
mod state_safety;
mod status_locks;
mod top;
mod trust;
mod wait_queue;
