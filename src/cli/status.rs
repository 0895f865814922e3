//! `genv status`: the current environment, its devices and configuration.

use std::fmt::Write;

use crate::error::Result;
use crate::session;
use crate::state::{Config, LoadOptions, StateDir};

pub fn run(dir: &StateDir, out: &mut String) -> Result<()> {
    let Some(eid) = session::eid() else {
        out.push_str("Environment is not active\n");
        return Ok(());
    };
    let backend = crate::backend::detect();
    let mut tx = dir.transaction(LoadOptions::default())?;
    let config = match tx.envs()?.get(&eid) {
        Some(env) => env.config.clone(),
        None => from_variables(),
    };
    let indices = tx
        .devices(backend.as_ref(), false)
        .map(|d| d.indices_of(&eid))
        .unwrap_or_default();
    tx.commit()?;
    let _ = writeln!(out, "Environment is active ({eid})");
    if indices.is_empty() {
        out.push_str("Detached from GPUs\n");
    } else {
        let list: Vec<String> = indices.iter().map(u32::to_string).collect();
        let _ = writeln!(out, "Attached to GPUs at indices {}", list.join(","));
    }
    let or_na = |v: Option<String>| {
        v.filter(|v| !v.is_empty() && v != "0")
            .unwrap_or_else(|| "N/A".into())
    };
    let _ = write!(
        out,
        "\nConfiguration\n    Name: {}\n    Device count: {}\n    GPU memory capacity: {}\n\n",
        or_na(config.name),
        or_na(config.gpus.map(|g| g.to_string())),
        or_na(config.gpu_memory)
    );
    Ok(())
}

/// The configuration as the shell's variables carry it.
fn from_variables() -> Config {
    use crate::env_vars::{self as ev, get};
    Config {
        name: get(ev::GENV_ENVIRONMENT_NAME),
        gpu_memory: get(ev::GENV_GPU_MEMORY),
        gpus: get(ev::GENV_GPUS).and_then(|g| g.parse().ok()),
    }
}
