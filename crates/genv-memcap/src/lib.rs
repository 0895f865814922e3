//! `libgenv_memcap.so`: hard GPU memory caps for genv environments.
//!
//! Activation puts this library in `LD_PRELOAD` when the environment has a
//! memory capacity (`GENV_GPU_MEMORY`). It interposes the CUDA driver API's
//! allocation calls, their frees and the memory queries, however the
//! application reaches them: by symbol, through `dlsym` on the driver's
//! handle, and through `cuGetProcAddress` (how libcudart resolves every
//! entry point). Past the capacity an allocation returns
//! `CUDA_ERROR_OUT_OF_MEMORY`. Usage is shared by every process of the
//! environment through a small file in the state folder ([`ledger`]).
//!
//! Rules for this code: no constructor and no work until the first hooked
//! call; no allocation on the heap (the process may be anything); nothing
//! panics across the C boundary (`extern "C"` functions abort instead of
//! unwinding); every failure to set up degrades to passing calls through.

// The exported functions are the CUDA driver's and NVML's, with their names
// and C signatures; their safety contract is the driver's documentation.
#![allow(non_snake_case, clippy::missing_safety_doc)]

mod allocs;
mod config;
mod hooks;
mod layout;
mod ledger;
mod procstat;
mod real;
mod unwind;

pub use hooks::*;
