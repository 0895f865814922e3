//! `genv envs`: query and manage environments.

use super::{ConfigField, Context, EnvsArgs, EnvsCommand, Exit, PsArgs};
use crate::error::{Error, Result};
use crate::output::{self, Column, Layout, Listing, Table, column};
use crate::state::{Env, Envs};
use crate::{escape, memory, timefmt};

pub(crate) const QUERIES: [&str; 9] = [
    "eid",
    "creation",
    "uid",
    "username",
    "config.name",
    "config.gpus",
    "config.gpu_memory",
    "pids",
    "kernel_ids",
];

fn query(env: &Env, name: &str) -> String {
    let join = |items: Vec<String>| items.join(" ");
    match name {
        "eid" => env.eid.to_string(),
        "creation" => env.creation.to_string(),
        "uid" => env.uid.to_string(),
        "username" => env.username.as_deref().unwrap_or_default().to_owned(),
        "config.name" => env.config.name.as_deref().unwrap_or_default().to_owned(),
        "config.gpus" => env.config.gpus.map(|g| g.to_string()).unwrap_or_default(),
        "config.gpu_memory" => env
            .config
            .gpu_memory
            .as_deref()
            .unwrap_or_default()
            .to_owned(),
        "pids" => join(env.pids.iter().map(i64::to_string).collect()),
        "kernel_ids" => join(env.kernel_ids.clone()),
        _ => String::new(),
    }
}

pub(crate) fn run(args: EnvsArgs, ctx: &mut Context) -> Result<Exit> {
    let out = &mut ctx.out;
    // Check what the user typed before touching the state.
    if let Some(EnvsCommand::Config {
        config:
            ConfigField::GpuMemory {
                gpu_memory: Some(value),
                ..
            },
        ..
    }) = &args.command
    {
        memory::validate(value)?;
    }
    if let Some(EnvsCommand::Config {
        config: ConfigField::Name {
            name: Some(name), ..
        },
        ..
    }) = &args.command
    {
        crate::session::validate_name(name)?;
    }
    let mut tx = ctx.dir.transaction(args.state.options())?;
    // Changes go through envs_mut(), so that only they mark the state to
    // be written back.
    match args.command {
        Some(EnvsCommand::Activate {
            eid,
            uid,
            username,
            target,
        }) => {
            let now = tx.now();
            let envs = tx.envs_mut()?;
            envs.activate(&eid, uid.into(), username, now);
            let env = envs
                .get_mut(&eid)
                .ok_or_else(|| Error::new("environment vanished"))?;
            if let Some(pid) = target.pid {
                env.pids.push(pid);
            }
            if let Some(kernel) = target.kernel_id {
                env.kernel_ids.push(kernel);
            }
        }
        Some(EnvsCommand::Config { eid, config }) => {
            if let Some(env) = tx.envs_mut()?.get_mut(&eid) {
                match config {
                    ConfigField::Gpus { count, .. } => env.config.gpus = count.map(i64::from),
                    ConfigField::Name { name, .. } => env.config.name = name.map(Into::into),
                    ConfigField::GpuMemory { gpu_memory, .. } => {
                        env.config.gpu_memory = gpu_memory.clone().map(Into::into);
                        // Attachments follow the new capacity.
                        let devices = tx.devices_mut()?;
                        crate::provision::update_capacity(devices, &eid, gpu_memory.as_deref());
                    }
                }
            }
        }
        Some(EnvsCommand::Deactivate { pid }) => {
            tx.envs_mut()?.cleanup(|p| p != pid, |_, _| true);
        }
        Some(EnvsCommand::Find { target }) => {
            for env in tx.envs()?.find(target.pid, target.kernel_id.as_deref()) {
                out.push_str(&escape::terminal(&env.eid));
                out.push('\n');
            }
        }
        Some(EnvsCommand::Ps(ps)) => print_ps(tx.envs()?, ps, out)?,
        Some(EnvsCommand::Query { eid, queries }) => {
            for env in &tx.envs()?.envs {
                if eid.as_ref().is_some_and(|e| *e != env.eid) {
                    continue;
                }
                let row: Vec<String> = queries
                    .iter()
                    .map(|q| escape::csv_field(&query(env, q)).into_owned())
                    .collect();
                out.push_str(&row.join(","));
                out.push('\n');
            }
        }
        None => print_ps(tx.envs()?, PsArgs::default(), out)?,
    }
    tx.commit()?;
    Ok(Exit::SUCCESS)
}

fn print_ps(envs: &Envs, ps: PsArgs, out: &mut String) -> Result<()> {
    let listing = EnvsTable {
        envs,
        timestamp: ps.timestamp,
    };
    output::print(&listing, Layout::new(ps.format, ps.no_header), out)
}

/// `genv envs ps`: a row per environment; its JSON is `envs.json`'s.
struct EnvsTable<'a> {
    envs: &'a Envs,
    timestamp: bool,
}

impl Listing for EnvsTable<'_> {
    const COLUMNS: &'static [Column] = &[
        column("ID", 8),
        column("USER", 16),
        column("NAME", 16),
        column("CREATED", 21),
        column("PID(S)", 0),
    ];

    fn rows(&self, table: &mut Table<'_>) {
        // The local time zone is read only when a row needs it.
        let now = std::cell::OnceCell::new();
        // Any local user can write anything into envs.json: Row shows it as data.
        let (mut user, mut created) = (String::new(), String::new());
        for env in &self.envs.envs {
            user.clear();
            env.write_user(&mut user);
            created.clear();
            if self.timestamp {
                created.push_str(&env.creation);
            } else {
                timefmt::write_since(
                    &mut created,
                    &env.creation,
                    *now.get_or_init(timefmt::local_now),
                );
            }
            table
                .row()
                .cell(&env.eid)
                .cell(&user)
                .cell(env.config.name.as_deref().unwrap_or(""))
                .cell(&created)
                .numbers(&env.pids, ' ')
                .end();
        }
    }

    fn json(&self) -> impl serde::Serialize {
        self.envs
    }
}
