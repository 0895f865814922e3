//! nvidia-smi's default table, both ways: [`render`] prints it for the
//! stand-in, [`parse`] reads what a real driver printed for the shim. The
//! layouts are those of the drivers before 530 (79 columns) and of 530 and
//! later (91 columns, 570's wider PID column included), and the MIG
//! devices table (see tests/fixtures/nvidia-smi for published outputs).

pub(crate) mod parse;
mod render;

pub(crate) use render::{no_running_processes, render};
