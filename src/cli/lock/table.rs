//! `genv devices locks`: who holds and who waits for each device's lock.

use std::fmt::Write;

use crate::cli::{Format, PsArgs};
use crate::escape;
use crate::memory;
use crate::state::device_locks::{self, Holder, Need};
use crate::state::{Envs, StateDir};

/// `genv devices locks`: a row per holder or waiter of each device's lock,
/// a free device as a row with empty fields.
pub fn print_locks(
    dir: &StateDir,
    envs: &Envs,
    indices: &[u32],
    ps: PsArgs,
    out: &mut String,
) -> crate::error::Result<()> {
    let rows: Vec<(u32, Option<Holder>)> = indices
        .iter()
        .flat_map(|&index| {
            let holders = device_locks::lock_holders(dir, index, envs);
            if holders.is_empty() {
                vec![(index, None)]
            } else {
                holders.into_iter().map(|h| (index, Some(h))).collect()
            }
        })
        .collect();
    let describe = |h: &Holder| {
        let env = h.eid.as_deref().and_then(|eid| envs.get(eid));
        let mode = match h.need {
            Need::Fraction(bytes) => format!("fraction:{}mi", memory::to_mib(bytes)),
            _ => h.mode().to_owned(),
        };
        (
            h.eid.clone().unwrap_or_default(),
            env.and_then(|e| e.config.name.clone()).unwrap_or_default(),
            // Who runs the process, as the kernel says; not the user of
            // the environment it claims, which anyone can write.
            h.user(),
            h.pid.to_string(),
            mode,
            if h.waiting { "waiting" } else { "holding" }.to_owned(),
        )
    };
    if ps.format == Format::Json {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .filter_map(|(index, h)| {
                let h = h.as_ref()?;
                let (eid, name, user, _, mode, state) = describe(h);
                Some(
                    serde_json::json!({"index": index, "eid": h.eid.as_ref().map(|_| eid),
                    "env_name": name, "user": user, "pid": h.pid, "mode": mode, "state": state}),
                )
            })
            .collect();
        let doc = serde_json::json!({ "locks": rows });
        out.push_str(&String::from_utf8_lossy(&crate::state::file::to_json(
            &doc,
        )?));
        out.push('\n');
        return Ok(());
    }
    if !ps.no_header {
        out.push_str(match ps.format {
            Format::Csv => "ID,ENV ID,ENV NAME,USER,PID,MODE,STATE\n",
            _ => "ID      ENV ID      ENV NAME        USER            PID     MODE            STATE\n",
        });
    }
    for (index, holder) in rows {
        let (eid, name, user, pid, mode, state) = holder.as_ref().map(describe).unwrap_or_default();
        // Names and users come from the shared state: data, never terminal
        // control or extra CSV fields.
        let _ = match ps.format {
            Format::Csv => {
                let (eid, name, user) = (
                    escape::csv_field(&eid),
                    escape::csv_field(&name),
                    escape::csv_field(&user),
                );
                writeln!(out, "{index},{eid},{name},{user},{pid},{mode},{state}")
            }
            _ => {
                let (eid, name, user) = (
                    escape::terminal(&eid),
                    escape::terminal(&name),
                    escape::terminal(&user),
                );
                writeln!(
                    out,
                    "{index:<8}{eid:<12}{name:<16}{user:<16}{pid:<8}{mode:<16}{state}"
                )
            }
        };
    }
    Ok(())
}
