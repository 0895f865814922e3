//! The platform layer: what genv asks of the operating system about
//! processes, users and signals, and the children it runs.

pub(crate) mod child;
pub(crate) mod exec;
pub mod procs;
pub(crate) mod signals;
