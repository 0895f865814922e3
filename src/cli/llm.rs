//! `genv llm` (`genv llms`): serve an open model with Ollama in an
//! environment of its own, list what is served, and chat with it.
//!
//! A served model is an environment named `llm/MODEL/PORT` whose processes
//! are genv and the `ollama serve` it runs; the name is how `ps` and
//! `attach` find it, as in genv 1.4.3 (whose environments named
//! `llm/MODEL` are found too, without a port). Anyone can write any name
//! and any pids into `envs.json`, so the port is not taken from the name:
//! it is one the environment's processes listen on, as the kernel says
//! (see [`listening`]).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use serde_json::json;

use super::{Context, Exit, LlmArgs, LlmCommand, PsArgs};
use crate::error::{Error, Result};
use crate::os::procs;
use crate::output::{self, Column, Layout, Listing, Table, column};
use crate::provision::{Activation, Attach, Configure};
use crate::state::{Config, Env, LoadOptions};
use crate::{env_vars as ev, escape, memory, provision, session, timefmt};

/// genv 1.4.3's words, with the fix.
const NO_OLLAMA: &str = "Could not find ollama.
You should install it if it's not already installed.
Otherwise, $PATH is probably not configured properly.";

pub(crate) fn run(args: LlmArgs, ctx: &mut Context) -> Result<Exit> {
    match args.command.unwrap_or(LlmCommand::Ps(PsArgs::default())) {
        LlmCommand::Serve {
            model,
            host,
            port,
            gpus,
            gpu_memory,
        } => serve(ctx, &model, &host, port, gpus, gpu_memory),
        LlmCommand::Ps(ps) => {
            let mut tx = ctx.dir.transaction(LoadOptions::default())?;
            let envs = tx.envs()?.clone();
            tx.commit()?;
            print_ps(&served(envs.envs.iter()), ps, &mut ctx.out)?;
            Ok(Exit::SUCCESS)
        }
        LlmCommand::Attach { model } => attach(ctx, &model),
    }
}

/// One served model: its environment and the port its server listens on.
struct Served<'a> {
    model: &'a str,
    /// The port a process of the environment listens on, and that
    /// process's owner; `None` when no process of it is seen listening.
    port: Option<u16>,
    owner: Option<u32>,
    env: &'a Env,
}

/// The environments that serve a model, by their names, each with the
/// port its processes listen on.
fn served<'a>(envs: impl Iterator<Item = &'a Env>) -> Vec<Served<'a>> {
    envs.filter_map(|env| {
        let name = env.config.name.as_deref()?;
        let rest = name.strip_prefix("llm/")?;
        let (model, named) = match rest.split_once('/') {
            Some((model, port)) => (model, Some(port.parse().ok()?)),
            None => (rest, None),
        };
        if model.is_empty() {
            return None;
        }
        let found = listening(env, named);
        Some(Served {
            model,
            port: found.map(|(port, _)| port),
            owner: found.map(|(_, owner)| owner),
            env,
        })
    })
    .collect()
}

/// The TCP port a process of `env` listens on, and that process's owner,
/// as the kernel says (genv 1.4.3 finds a server's port the same way):
/// the listening sockets of `/proc/<pid>/net/tcp` and `tcp6` whose inodes
/// are among the process's descriptors (`/proc/<pid>/fd`); the `named`
/// port when it is one of them. Another user's descriptors can be read
/// only by root: then the named port counts when a socket of the process's
/// owner listens on it, so a name can point only at a port that user
/// listens on.
fn listening(env: &Env, named: Option<u16>) -> Option<(u16, u32)> {
    env.pids.iter().find_map(|&pid| {
        let pid = u32::try_from(pid).ok().filter(|&p| p > 0)?;
        let owner = procs::owner(pid).ok()?;
        let sockets = listening_sockets(pid);
        let port = match socket_inodes(pid) {
            Some(inodes) => {
                let mut ports: Vec<u16> = sockets
                    .iter()
                    .filter(|s| inodes.contains(&s.inode))
                    .map(|s| s.port)
                    .collect();
                ports.sort_unstable();
                match named.filter(|p| ports.contains(p)) {
                    Some(port) => port,
                    None => *ports.first()?,
                }
            }
            None => named.filter(|&p| sockets.iter().any(|s| s.port == p && s.uid == owner))?,
        };
        Some((port, owner))
    })
}

/// A listening TCP socket, from `/proc/<pid>/net/tcp*`.
struct Socket {
    port: u16,
    uid: u32,
    inode: u64,
}

/// The listening TCP sockets of the network namespace `pid` is in.
fn listening_sockets(pid: u32) -> Vec<Socket> {
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(parse_socket)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One row of `/proc/net/tcp`: `sl local_address rem_address st tx:rx
/// tr:when retrnsmt uid timeout inode ...`, the address as `HEX:PORT`,
/// state `0A` for listening.
fn parse_socket(line: &str) -> Option<Socket> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 10 || fields[3] != "0A" {
        return None;
    }
    let port = u16::from_str_radix(fields[1].rsplit_once(':')?.1, 16).ok()?;
    Some(Socket {
        port,
        uid: fields[7].parse().ok()?,
        inode: fields[9].parse().ok()?,
    })
}

/// The inodes of the sockets process `pid` holds (`socket:[N]` links in
/// `/proc/<pid>/fd`); `None` when its descriptors cannot be read.
fn socket_inodes(pid: u32) -> Option<Vec<u64>> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        entries
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter_map(|target| {
                let target = target.to_str()?;
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()
            })
            .collect(),
    )
}

fn print_ps(served: &[Served<'_>], ps: PsArgs, out: &mut String) -> Result<()> {
    let listing = LlmTable {
        served,
        timestamp: ps.timestamp,
    };
    output::print(&listing, Layout::new(ps.format, ps.no_header), out)
}

/// `genv llm ps`: a row per served model.
struct LlmTable<'a> {
    served: &'a [Served<'a>],
    timestamp: bool,
}

impl Listing for LlmTable<'_> {
    const COLUMNS: &'static [Column] = &[
        column("MODEL", 12),
        column("PORT", 8),
        column("CREATED", 21),
        column("EID", 8),
        column("USER", 16),
        column("PID(S)", 0),
    ];

    // The CSV is well-formed, unlike genv 1.4.3's (which joins user and pids).
    fn rows(&self, table: &mut Table<'_>) {
        let now = timefmt::local_now();
        for s in self.served {
            let created = if self.timestamp {
                s.env.creation.to_string()
            } else {
                timefmt::since(&s.env.creation, now)
            };
            let port = s.port.map_or("N/A".to_owned(), |p| p.to_string());
            table
                .row()
                .cell(s.model)
                .cell(&port)
                .cell(&created)
                .cell(&s.env.eid)
                .cell(&s.env.user())
                .numbers(&s.env.pids, ' ')
                .end();
        }
    }

    fn json(&self) -> impl serde::Serialize {
        let rows: Vec<_> = self
            .served
            .iter()
            .map(|s| {
                json!({"model": s.model, "port": s.port, "created": s.env.creation,
                       "eid": s.env.eid, "user": s.env.user(), "pids": s.env.pids,
                       "clients": s.port.map(clients)})
            })
            .collect();
        json!({ "llms": rows })
    }
}

fn ollama() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("ollama"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::hinted(
                NO_OLLAMA,
                "install Ollama (https://ollama.com/download) and make sure `ollama` is on PATH",
            )
        })
}

/// A port nobody listens on now, as the kernel hands one out.
fn free_port(host: &str) -> Result<u16> {
    let listener = std::net::TcpListener::bind((host, 0))
        .or_else(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
        .map_err(|e| Error::new(format!("cannot find a free port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::new(format!("cannot find a free port: {e}")))
}

fn serve(
    ctx: &mut Context,
    model: &str,
    host: &str,
    port: Option<u16>,
    gpus: Option<u32>,
    gpu_memory: Option<String>,
) -> Result<Exit> {
    if model.is_empty() || model.contains('/') {
        return Err(Error::hinted(
            format!("invalid model name '{}'", escape::terminal(model)),
            "give an Ollama model name such as llama3 or llama3:8b",
        ));
    }
    if let Some(memory) = &gpu_memory {
        memory::validate(memory)?;
    }
    let program = ollama()?;
    let port = match port {
        Some(port) => port,
        None => free_port(host)?,
    };
    let name = format!("llm/{model}/{port}");
    session::validate_name(&name)?;
    let pid = std::process::id();
    let eid = pid.to_string();
    let config = Config {
        name: Some(name.into()),
        gpu_memory: gpu_memory.clone().map(Into::into),
        gpus: gpus.map(i64::from),
    };
    let activation = Activation {
        eid: &eid,
        pid: pid.into(),
        config: Configure::Replace(config),
        attach: Attach::ConfiguredIfDetached,
        over_subscribe: false,
        survey_always: false,
    };
    let indices = match ctx.dir.daemon_socket() {
        // The daemon makes the environment, for this process.
        Some(socket) => {
            let config = serde_json::to_string(&activation_config(&activation))
                .map_err(|e| Error::new(e.to_string()))?;
            let answer = crate::daemon::client::ask(
                &socket,
                &[
                    "sdk",
                    "activate",
                    "--eid",
                    &eid,
                    "--pid",
                    &pid.to_string(),
                    "--config",
                    &config,
                ],
            )?;
            serde_json::from_str::<serde_json::Value>(&answer)
                .ok()
                .and_then(|v| serde_json::from_value(v.get("indices")?.clone()).ok())
                .unwrap_or_default()
        }
        None => provision::activate(&ctx.dir, &ctx.backend, activation)?.indices,
    };
    let visible = if indices.is_empty() {
        "-1".to_owned()
    } else {
        let list: Vec<String> = indices.iter().map(u32::to_string).collect();
        list.join(",")
    };
    let mut command = std::process::Command::new(program);
    command
        .arg("serve")
        .env("OLLAMA_HOST", format!("{host}:{port}"))
        .env(ev::CUDA_VISIBLE_DEVICES, visible)
        .env(ev::GENV_ENVIRONMENT_ID, &eid)
        .env(ev::GENV_ENVIRONMENT_NAME, format!("llm/{model}/{port}"));
    match &gpu_memory {
        Some(memory) => command.env(ev::GENV_GPU_MEMORY, memory),
        None => command.env_remove(ev::GENV_GPU_MEMORY),
    };
    crate::messages::note(format_args!(
        "serving {} on {host}:{port} in environment {eid}",
        escape::terminal(model)
    ));
    let code = crate::os::child::run(&mut command, |child| {
        // Ollama's own pid too, so the environment is known by it.
        let _ = register(ctx, &eid, child);
    });
    // Ctrl-C (forwarded to Ollama) or Ollama's end: the GPUs go back now,
    // not when the next command notices the processes are gone.
    release(ctx, &eid)?;
    Ok(Exit(code))
}

/// The configuration an activation replaces the environment's with.
fn activation_config(activation: &Activation<'_>) -> Config {
    match &activation.config {
        Configure::Replace(config) => config.clone(),
        _ => Config::default(),
    }
}

fn register(ctx: &Context, eid: &str, pid: u32) -> Result<()> {
    if let Some(socket) = ctx.dir.daemon_socket() {
        let uid = procs::current_uid().to_string();
        let pid = pid.to_string();
        let args = [
            "envs", "activate", "--eid", eid, "--uid", &uid, "--pid", &pid,
        ];
        return crate::daemon::client::ask(&socket, &args).map(drop);
    }
    let mut tx = ctx.dir.transaction(LoadOptions::default())?;
    if let Some(env) = tx.envs_mut()?.get_mut(eid) {
        env.pids.push(pid.into());
    }
    tx.commit()
}

fn release(ctx: &Context, eid: &str) -> Result<()> {
    if let Some(socket) = ctx.dir.daemon_socket() {
        // This process leaves; the environment goes with its last one.
        let pid = std::process::id().to_string();
        let args = ["envs", "deactivate", "--pid", &pid];
        return crate::daemon::client::ask(&socket, &args).map(drop);
    }
    let mut tx = ctx.dir.transaction(LoadOptions::default())?;
    tx.envs_mut()?.envs.retain(|env| env.eid != eid);
    provision::detach(tx.devices_mut()?, eid, None);
    tx.commit()
}

/// Clients attached to a server: `ollama` processes (other than servers)
/// whose `OLLAMA_HOST` names its port.
fn clients(port: u16) -> usize {
    let suffix = format!(":{port}");
    procs::all_pids()
        .into_iter()
        .filter(|&pid| procs::comm(pid).is_some_and(|c| c.starts_with("ollama")))
        .filter(|&pid| {
            procs::environ_var(pid, "OLLAMA_HOST").is_some_and(|h| h.ends_with(&suffix))
                && procs::environ_var(pid, ev::GENV_ENVIRONMENT_ID).is_none()
        })
        .count()
}

fn attach(ctx: &mut Context, model: &str) -> Result<Exit> {
    let mut tx = ctx.dir.transaction(LoadOptions::default())?;
    let envs = tx.envs()?.clone();
    tx.commit()?;
    // The caller's own servers first, then root's, then other users';
    // among those, the one with the fewest clients.
    let me = procs::current_uid();
    let trust = |owner: Option<u32>| match owner {
        Some(uid) if uid == me => 0,
        Some(0) => 1,
        _ => 2,
    };
    let best = served(envs.envs.iter())
        .into_iter()
        .filter(|s| s.model == model)
        .filter_map(|s| Some((trust(s.owner), s.port?)))
        .min_by_key(|&(trust, port)| (trust, clients(port)));
    let Some((_, port)) = best else {
        return Err(crate::error::reference::no_llm_model(&escape::terminal(
            model,
        )));
    };
    let program = ollama()?;
    let error = std::process::Command::new(&program)
        .args(["run", model])
        .env("OLLAMA_HOST", format!("localhost:{port}"))
        .exec();
    Err(Error::new(format!(
        "cannot run {}: {error}",
        escape::terminal(&program.to_string_lossy())
    )))
}
