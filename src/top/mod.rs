//! `genv top`: a live terminal view of the devices, the environments on
//! them, their users and processes, and the device locks. `frame.rs` turns
//! a [`Snapshot`] into lines (pure, so `--once` and the tests see exactly
//! what the screen shows); `live.rs` runs the full-screen loop.

pub(crate) mod frame;
pub(crate) mod live;

use clap::ValueEnum;

/// What `genv top` sorts environments and processes by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopSort {
    /// Used GPU memory, most first
    Memory,
    /// Environment identifier
    Env,
    /// User name
    User,
    /// Process identifier
    Pid,
}
