//! The platform layer: what genv asks of the operating system about
//! processes, users and signals, and the children it runs.

pub mod child;
pub mod exec;
pub mod procs;
pub mod signals;
