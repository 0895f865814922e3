//! What `genv remote` prints, made from the hosts' snapshots: pure
//! functions, in genv 1.4.3's layouts (plus JSON).

use chrono::NaiveDateTime;
use serde_json::json;

use crate::error::Result;
use crate::escape;
use crate::output::{self, Column, Layout, Listing, Table, column};
use crate::state::{Device, Devices, Envs};
use crate::timefmt;

/// Bytes of a device not reserved by its attachments; an attachment
/// without a memory capacity takes the whole device.
fn unreserved(device: &Device) -> u64 {
    let total = crate::memory::to_bytes(&device.total_memory).unwrap_or(0);
    let mut reserved: u64 = 0;
    for a in &device.attachments {
        match a
            .gpu_memory
            .as_deref()
            .and_then(|m| crate::memory::to_bytes(m).ok())
        {
            Some(bytes) => reserved = reserved.saturating_add(bytes),
            None => return 0,
        }
    }
    total.saturating_sub(reserved)
}

/// Devices a new environment could take: unattached ones (genv 1.4.3),
/// or with `gpu_memory` (bytes), those with that much unreserved memory.
pub(crate) fn available(devices: &Devices, gpu_memory: Option<u64>) -> usize {
    devices
        .devices
        .iter()
        .filter(|d| match gpu_memory {
            None => d.attachments.is_empty(),
            Some(bytes) => unreserved(d) >= bytes,
        })
        .count()
}

/// The first host (an index into `snapshots`) with `gpus` available
/// devices; without `gpus`, the first host that answered.
pub(crate) fn find_host(
    snapshots: &[&Devices],
    gpus: Option<u32>,
    gpu_memory: Option<u64>,
) -> Option<usize> {
    snapshots.iter().position(|devices| match gpus {
        None => gpu_memory.is_none_or(|_| available(devices, gpu_memory) > 0),
        Some(n) => available(devices, gpu_memory) >= n as usize,
    })
}

/// `genv remote devices`: a row per host and the totals line.
pub(crate) fn devices(rows: &[(&str, &Devices)], layout: Layout) -> Result<String> {
    let listing = DevicesTable {
        rows: rows
            .iter()
            .map(|(host, d)| (*host, d.devices.len(), available(d, None)))
            .collect(),
    };
    let mut out = String::new();
    output::print(&listing, layout, &mut out)?;
    Ok(out)
}

/// A host, its devices and how many of them are available.
struct DevicesTable<'a> {
    rows: Vec<(&'a str, usize, usize)>,
}

impl Listing for DevicesTable<'_> {
    const COLUMNS: &'static [Column] = &[
        column("HOST", 25),
        column("TOTAL", 9),
        column("AVAILABLE", 0),
    ];

    fn rows(&self, table: &mut Table<'_>) {
        for (host, total, available) in &self.rows {
            table
                .row()
                .cell(host)
                .number(*total)
                .number(*available)
                .end();
        }
    }

    fn json(&self) -> impl serde::Serialize {
        let hosts: Vec<_> = self
            .rows
            .iter()
            .map(|(host, total, available)| {
                json!({"host": host, "total": total, "available": available})
            })
            .collect();
        hosts
    }

    fn summary(&self) -> Option<String> {
        let total: usize = self.rows.iter().map(|r| r.1).sum();
        let available: usize = self.rows.iter().map(|r| r.2).sum();
        Some(format!(
            "Total {total} devices with {available} available on {} hosts",
            self.rows.len()
        ))
    }
}

/// `genv remote envs`: a row per environment of every host.
pub(crate) fn envs(
    rows: &[(&str, &Envs)],
    layout: Layout,
    timestamp: bool,
    now: NaiveDateTime,
) -> Result<String> {
    let listing = EnvsTable {
        rows,
        timestamp,
        now,
    };
    let mut out = String::new();
    output::print(&listing, layout, &mut out)?;
    Ok(out)
}

struct EnvsTable<'a> {
    rows: &'a [(&'a str, &'a Envs)],
    timestamp: bool,
    now: NaiveDateTime,
}

impl Listing for EnvsTable<'_> {
    const COLUMNS: &'static [Column] = &[
        column("HOST", 25),
        column("ID", 8),
        column("USER", 16),
        column("NAME", 16),
        column("CREATED", 0),
    ];

    fn rows(&self, table: &mut Table<'_>) {
        for (host, envs) in self.rows {
            for env in &envs.envs {
                let created = if self.timestamp {
                    env.creation.to_string()
                } else {
                    timefmt::since(&env.creation, self.now)
                };
                table
                    .row()
                    .cell(host)
                    .cell(&env.eid)
                    .cell(env.username.as_deref().unwrap_or(""))
                    .cell(env.config.name.as_deref().unwrap_or(""))
                    .cell(&created)
                    .end();
            }
        }
    }

    fn json(&self) -> impl serde::Serialize {
        let list: Vec<_> = self
            .rows
            .iter()
            .flat_map(|(host, envs)| {
                envs.envs.iter().map(move |env| {
                    json!({
                        "host": host,
                        "eid": env.eid,
                        "user": env.username,
                        "name": env.config.name,
                        "creation": env.creation,
                        "gpus": env.config.gpus,
                        "gpu_memory": env.config.gpu_memory,
                    })
                })
            })
            .collect();
        list
    }

    fn summary(&self) -> Option<String> {
        let count: usize = self.rows.iter().map(|(_, e)| e.envs.len()).sum();
        Some(format!(
            "Total {count} environments on {} hosts",
            self.rows.len()
        ))
    }
}

/// The fields `genv remote query --query` knows.
pub(crate) const QUERIES: [&str; 3] = ["hostname", "eid", "creation"];

/// `genv remote query`: the asked fields of every environment named
/// `name`, comma-separated, a line each.
pub(crate) fn query(rows: &[(&str, &Envs)], name: &str, queries: &[String]) -> String {
    let mut out = String::new();
    for (host, envs) in rows {
        for env in envs
            .envs
            .iter()
            .filter(|e| e.config.name.as_deref() == Some(name))
        {
            let fields: Vec<_> = queries
                .iter()
                .map(|q| {
                    let value = match q.as_str() {
                        "hostname" => host,
                        "eid" => env.eid.as_str(),
                        _ => env.creation.as_str(),
                    };
                    escape::csv_field(value).into_owned()
                })
                .collect();
            out.push_str(&fields.join(","));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Format;
    use crate::state::{Attachment, Config, Env};

    fn devices(attached: &[Option<Option<&str>>]) -> Devices {
        Devices {
            devices: attached
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let mut d = Device::new(i as u32, 16384);
                    if let Some(memory) = a {
                        d.attachments.push(Attachment {
                            eid: "e".into(),
                            gpu_memory: memory.map(str::to_owned),
                            time: "01/01/2024 00:00:00".into(),
                        });
                    }
                    d
                })
                .collect(),
        }
    }

    fn env(eid: &str, name: Option<&str>) -> Env {
        Env {
            eid: eid.into(),
            uid: 0,
            creation: "01/02/2024 10:00:00".into(),
            username: Some("alice".into()),
            config: Config {
                name: name.map(Into::into),
                ..Config::default()
            },
            pids: vec![],
            kernel_ids: vec![],
        }
    }

    const TUI: Layout = Layout {
        format: Format::Tui,
        header: true,
        summary: true,
    };

    #[test]
    fn devices_prints_rows_and_the_totals_line() {
        let a = devices(&[None, Some(None)]);
        let b = devices(&[None, None, None]);
        let text = super::devices(&[("a", &a), ("b", &b)], TUI).unwrap();
        assert_eq!(
            text,
            "HOST                     TOTAL    AVAILABLE\n\
             a                        2        1\n\
             b                        3        3\n\
             \nTotal 5 devices with 4 available on 2 hosts\n"
        );
        let csv = super::devices(
            &[("a", &a)],
            Layout {
                format: Format::Csv,
                header: false,
                summary: false,
            },
        )
        .unwrap();
        assert_eq!(csv, "a,2,1\n");
    }

    #[test]
    fn memory_capacity_leaves_room_on_a_device() {
        let d = devices(&[Some(Some("4g")), Some(None), None]);
        assert_eq!(available(&d, None), 1);
        assert_eq!(available(&d, Some(8 << 30)), 2);
        assert_eq!(available(&d, Some(13 << 30)), 1);
    }

    #[test]
    fn find_host_takes_the_first_with_enough() {
        let a = devices(&[Some(None), None]);
        let b = devices(&[None, None]);
        assert_eq!(find_host(&[&a, &b], Some(2), None), Some(1));
        assert_eq!(find_host(&[&a, &b], Some(1), None), Some(0));
        assert_eq!(find_host(&[&a, &b], Some(3), None), None);
        assert_eq!(find_host(&[&a, &b], None, None), Some(0));
        assert_eq!(find_host(&[], None, None), None);
    }

    #[test]
    fn envs_and_query_name_the_host() {
        let now = timefmt::parse("01/02/2024 10:00:05").unwrap();
        let e = Envs {
            envs: vec![env("1", Some("train")), env("2\u{1b}[31m", None)],
        };
        let text = super::envs(&[("gpu1", &e)], TUI, false, now).unwrap();
        assert_eq!(
            text,
            "HOST                     ID      USER            NAME            CREATED\n\
             gpu1                     1       alice           train           5 seconds ago\n\
             gpu1                     2\\u{1b}[31malice                           5 seconds ago\n\
             \nTotal 2 environments on 1 hosts\n"
        );
        let q = query(
            &[("gpu1", &e)],
            "train",
            &["hostname".into(), "eid".into(), "creation".into()],
        );
        assert_eq!(q, "gpu1,1,01/02/2024 10:00:00\n");
    }

    /// `genv remote envs --format json` escapes a name as `genv envs
    /// --format json` does (Python's way: non-ASCII, DEL and controls as
    /// `\uXXXX`).
    #[test]
    fn remote_json_escapes_text_as_local_json_does() {
        let now = timefmt::parse("01/02/2024 10:00:05").unwrap();
        let e = Envs {
            envs: vec![env("1", Some("caf\u{e9} \u{2615} \u{1d11e}\u{7f}\"\u{1b}"))],
        };
        let escaped = r#""name": "caf\u00e9 \u2615 \ud834\udd1e\u007f\"\u001b""#;
        let local = String::from_utf8(crate::output::json::to_json(&e).unwrap()).unwrap();
        let json = Layout {
            format: Format::Json,
            ..TUI
        };
        let remote = super::envs(&[("gpu1", &e)], json, true, now).unwrap();
        assert!(local.contains(escaped), "{local}");
        assert!(remote.contains(escaped), "{remote}");
        assert!(remote.is_ascii(), "{remote}");
    }
}
