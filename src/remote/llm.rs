//! `genv remote llm`: the models served on many hosts, and which host to
//! attach to.
//!
//! A host is asked `genv llm ps --format json`, whose rows carry how many
//! clients each server has; a host running genv 1.4.3 (which has no JSON
//! there) answers `genv usage snapshot --type envs` instead, in the same
//! SSH command, and its servers are found by their environments' names
//! (`llm/MODEL/PORT`, or `llm/MODEL` before genv 1.4.1), clients unknown.

use chrono::NaiveDateTime;
use serde::Deserialize;
use serde_json::json;

use crate::error::Result;
use crate::output::{self, Column, Layout, Listing, Table, column};
use crate::state::Envs;
use crate::timefmt;

/// The remote command (for `sh -c`).
pub(crate) const SCRIPT: &str =
    "genv llm ps --format json 2>/dev/null || genv usage snapshot --type envs";

/// One served model on one host.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Server {
    pub model: String,
    pub port: Option<u16>,
    pub created: String,
    pub eid: String,
    pub user: String,
    /// Chat clients attached to it, when the host could tell.
    #[serde(default)]
    pub clients: Option<usize>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Answer {
    Llms { llms: Vec<Server> },
    Envs(Envs),
}

/// The servers in a host's answer to [`SCRIPT`].
pub(crate) fn parse(answer: &str) -> Result<Vec<Server>, String> {
    match serde_json::from_str::<Answer>(answer) {
        Ok(Answer::Llms { llms }) => Ok(llms),
        Ok(Answer::Envs(envs)) => Ok(envs
            .envs
            .iter()
            .filter_map(|env| {
                let rest = env.config.name.as_deref()?.strip_prefix("llm/")?;
                let (model, port) = match rest.split_once('/') {
                    Some((model, port)) => (model, Some(port.parse().ok()?)),
                    None => (rest, None),
                };
                (!model.is_empty()).then(|| Server {
                    model: model.to_owned(),
                    port,
                    created: env.creation.to_string(),
                    eid: env.eid.to_string(),
                    user: env.user(),
                    clients: None,
                })
            })
            .collect()),
        Err(e) => Err(format!("cannot read the list of LLMs: {e}")),
    }
}

/// The host (an index into `hosts`) to attach to for `model`: of the
/// servers of that model, the one with the fewest clients (unknown
/// counts as none), the first host's on a tie.
pub(crate) fn pick(hosts: &[&[Server]], model: &str) -> Option<usize> {
    hosts
        .iter()
        .enumerate()
        .flat_map(|(h, servers)| {
            servers
                .iter()
                .filter(|s| s.model == model)
                .map(move |s| (s.clients.unwrap_or(0), h))
        })
        .min()
        .map(|(_, h)| h)
}

/// `genv remote llm ps`: a row per server of every host, the host first.
pub(crate) fn ps(
    rows: &[(&str, &[Server])],
    layout: Layout,
    timestamp: bool,
    now: NaiveDateTime,
) -> Result<String> {
    let listing = PsTable {
        rows,
        timestamp,
        now,
    };
    let mut out = String::new();
    output::print(&listing, layout, &mut out)?;
    Ok(out)
}

struct PsTable<'a> {
    rows: &'a [(&'a str, &'a [Server])],
    timestamp: bool,
    now: NaiveDateTime,
}

impl Listing for PsTable<'_> {
    const COLUMNS: &'static [Column] = &[
        column("HOST", 25),
        column("MODEL", 12),
        column("PORT", 8),
        column("CREATED", 21),
        column("EID", 8),
        column("USER", 0),
    ];

    fn rows(&self, table: &mut Table<'_>) {
        for (host, servers) in self.rows {
            for s in *servers {
                let created = if self.timestamp {
                    s.created.clone()
                } else {
                    timefmt::since(&s.created, self.now)
                };
                let port = s.port.map_or("N/A".to_owned(), |p| p.to_string());
                table
                    .row()
                    .cell(host)
                    .cell(&s.model)
                    .cell(&port)
                    .cell(&created)
                    .cell(&s.eid)
                    .cell(&s.user)
                    .end();
            }
        }
    }

    fn json(&self) -> impl serde::Serialize {
        let list: Vec<_> = self
            .rows
            .iter()
            .flat_map(|(host, servers)| {
                servers.iter().map(move |s| {
                    json!({"host": host, "model": s.model, "port": s.port,
                           "created": s.created, "eid": s.eid, "user": s.user,
                           "clients": s.clients})
                })
            })
            .collect();
        list
    }

    fn summary(&self) -> Option<String> {
        let total: usize = self.rows.iter().map(|(_, s)| s.len()).sum();
        Some(format!("Total {total} LLMs on {} hosts", self.rows.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(model: &str, clients: Option<usize>) -> Server {
        Server {
            model: model.into(),
            port: Some(1234),
            created: "01/02/2024 10:00:00".into(),
            eid: "7".into(),
            user: "alice(1000)".into(),
            clients,
        }
    }

    #[test]
    fn both_answers_are_read() {
        let ours = r#"{"llms": [{"model": "phi3", "port": 5, "created": "c", "eid": "1", "user": "u(1)", "pids": [1], "clients": 2}]}"#;
        assert_eq!(parse(ours).unwrap()[0].clients, Some(2));
        let theirs = r#"{"envs": [
            {"eid": "9", "uid": 1, "creation": "c", "username": "u", "config": {"name": "llm/llama3/7000"}, "pids": []},
            {"eid": "8", "uid": 1, "creation": "c", "username": "u", "config": {"name": "llm/old"}, "pids": []},
            {"eid": "3", "uid": 1, "creation": "c", "username": "u", "config": {"name": "train"}, "pids": []}]}"#;
        let servers = parse(theirs).unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(
            (servers[0].model.as_str(), servers[0].port),
            ("llama3", Some(7000))
        );
        assert_eq!((servers[1].model.as_str(), servers[1].port), ("old", None));
        assert!(parse("usage: genv").is_err());
    }

    #[test]
    fn attach_picks_the_server_with_fewest_clients() {
        let a = [server("phi3", Some(2)), server("llama3", Some(0))];
        let b = [server("phi3", Some(1))];
        assert_eq!(pick(&[&a, &b], "phi3"), Some(1));
        assert_eq!(pick(&[&a, &b], "llama3"), Some(0));
        assert_eq!(pick(&[&a, &b], "mistral"), None);
        let c = [server("phi3", None)];
        assert_eq!(pick(&[&a, &c], "phi3"), Some(1));
    }

    #[test]
    fn ps_puts_the_host_first() {
        use crate::output::Format;
        let now = timefmt::parse("01/02/2024 10:00:05").unwrap();
        let a = [server("phi3", Some(0))];
        let layout = Layout {
            format: Format::Csv,
            header: true,
            summary: true,
        };
        assert_eq!(
            ps(&[("gpu1", &a)], layout, true, now).unwrap(),
            "HOST,MODEL,PORT,CREATED,EID,USER\ngpu1,phi3,1234,01/02/2024 10:00:00,7,alice(1000)\n\nTotal 1 LLMs on 1 hosts\n"
        );
    }
}
