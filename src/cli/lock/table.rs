//! `genv devices locks`: who holds and who waits for each device's lock.

use crate::cli::PsArgs;
use crate::memory;
use crate::output::{self, Column, Layout, Listing, Table, column};
use crate::state::device_locks::{self, Holder, Need};
use crate::state::{Envs, StateDir};

/// `genv devices locks`: a row per holder or waiter of each device's lock,
/// a free device as a row with empty fields.
pub(crate) fn print_locks(
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
    let listing = LocksTable { envs, rows };
    output::print(&listing, Layout::new(ps.format, ps.no_header), out)
}

struct LocksTable<'a> {
    envs: &'a Envs,
    rows: Vec<(u32, Option<Holder>)>,
}

/// A holder's row: environment, its name, user, mode and state.
struct Described {
    eid: String,
    name: String,
    user: String,
    mode: String,
    state: &'static str,
}

impl LocksTable<'_> {
    fn describe(&self, h: &Holder) -> Described {
        let env = h.eid.as_deref().and_then(|eid| self.envs.get(eid));
        let mode = match h.need {
            Need::Fraction(bytes) => format!("fraction:{}mi", memory::to_mib(bytes)),
            _ => h.mode().to_owned(),
        };
        Described {
            eid: h.eid.clone().unwrap_or_default(),
            name: env
                .and_then(|e| e.config.name.as_deref())
                .unwrap_or_default()
                .to_owned(),
            // Who runs the process, as the kernel says; not the user of
            // the environment it claims, which anyone can write.
            user: h.user(),
            mode,
            state: if h.waiting { "waiting" } else { "holding" },
        }
    }
}

impl Listing for LocksTable<'_> {
    const COLUMNS: &'static [Column] = &[
        column("ID", 8),
        column("ENV ID", 12),
        column("ENV NAME", 16),
        column("USER", 16),
        column("PID", 8),
        column("MODE", 16),
        column("STATE", 0),
    ];

    fn rows(&self, table: &mut Table<'_>) {
        // Names and users come from the shared state: data, never terminal
        // control or extra CSV fields.
        for (index, holder) in &self.rows {
            let mut row = table.row();
            row.number(*index);
            match holder {
                Some(h) => {
                    let d = self.describe(h);
                    row.cell(&d.eid)
                        .cell(&d.name)
                        .cell(&d.user)
                        .number(h.pid)
                        .cell(&d.mode)
                        .cell(d.state);
                }
                None => {
                    row.cell("").cell("").cell("").cell("").cell("").cell("");
                }
            }
            row.end();
        }
    }

    fn json(&self) -> impl serde::Serialize {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .filter_map(|(index, h)| {
                let h = h.as_ref()?;
                let d = self.describe(h);
                Some(serde_json::json!({"index": index, "eid": h.eid.as_ref().map(|_| d.eid),
                    "env_name": d.name, "user": d.user, "pid": h.pid, "mode": d.mode, "state": d.state}))
            })
            .collect();
        serde_json::json!({ "locks": rows })
    }
}
