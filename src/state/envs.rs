//! `envs.json`: the environments, with exactly the keys genv 1.4.3 writes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A short text of the state (an eid, a name, a timestamp): kept inline
/// up to 24 bytes, so that reading 10,000 environments does not allocate
/// and free a string for each of their fields.
pub(super) type Text = compact_str::CompactString;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub name: Option<Text>,
    #[serde(default)]
    pub gpu_memory: Option<Text>,
    #[serde(default)]
    pub gpus: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Env {
    pub eid: Text,
    pub uid: i64,
    pub creation: Text,
    #[serde(default)]
    pub username: Option<Text>,
    #[serde(default)]
    pub config: Config,
    #[serde(default)]
    pub pids: Vec<i64>,
    #[serde(default)]
    pub kernel_ids: Vec<String>,
}

impl Env {
    pub fn active(&self) -> bool {
        !self.pids.is_empty() || !self.kernel_ids.is_empty()
    }

    /// `username(uid)`, or the uid alone, as the tables print the owner.
    pub fn user(&self) -> String {
        let mut out = String::new();
        self.write_user(&mut out);
        out
    }

    /// [`Env::user`] appended to `out`.
    pub fn write_user(&self, out: &mut String) {
        let mut digits = itoa::Buffer::new();
        if let Some(name) = self.username.as_deref().filter(|n| !n.is_empty()) {
            out.push_str(name);
            out.push('(');
            out.push_str(digits.format(self.uid));
            out.push(')');
        } else {
            out.push_str(digits.format(self.uid));
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envs {
    pub envs: Vec<Env>,
}

impl Envs {
    pub fn get(&self, eid: &str) -> Option<&Env> {
        self.envs.iter().find(|env| env.eid == eid)
    }

    pub fn get_mut(&mut self, eid: &str) -> Option<&mut Env> {
        self.envs.iter_mut().find(|env| env.eid == eid)
    }

    /// Every environment by its identifier, for looking many up at once
    /// (a table row per attachment): the first of duplicates wins, as in
    /// [`Envs::get`].
    pub fn by_eid(&self) -> std::collections::HashMap<&str, &Env> {
        let mut index = std::collections::HashMap::with_capacity(self.envs.len());
        for env in &self.envs {
            index.entry(env.eid.as_str()).or_insert(env);
        }
        index
    }

    pub fn contains(&self, eid: &str) -> bool {
        self.get(eid).is_some()
    }

    /// Creates the environment when it does not exist yet.
    pub fn activate(&mut self, eid: &str, uid: i64, username: Option<String>, now: String) {
        if !self.contains(eid) {
            self.envs.push(Env {
                eid: eid.into(),
                uid,
                creation: now.into(),
                username: username.map(Into::into),
                config: Config::default(),
                pids: Vec::new(),
                kernel_ids: Vec::new(),
            });
        }
    }

    /// Removes a process from an environment, and the environment when no
    /// process or kernel is left in it; says whether it was removed.
    pub fn remove_pid(&mut self, eid: &str, pid: i64) -> bool {
        if let Some(env) = self.get_mut(eid) {
            env.pids.retain(|&p| p != pid);
        }
        let count = self.envs.len();
        self.envs.retain(|env| env.eid != eid || env.active());
        self.envs.len() != count
    }

    /// Keeps the pids and kernels for which the predicates hold and drops
    /// environments left with neither.
    /// Drops dead pids and kernels, then the environments left with
    /// neither; says whether anything was dropped.
    pub fn cleanup(
        &mut self,
        mut pid_alive: impl FnMut(i64) -> bool,
        mut kernel_alive: impl FnMut(&Env, &str) -> bool,
    ) -> bool {
        let mut changed = false;
        for env in &mut self.envs {
            let (pids, kernels) = (env.pids.len(), env.kernel_ids.len());
            env.pids.retain(|&pid| pid_alive(pid));
            let ids = std::mem::take(&mut env.kernel_ids);
            env.kernel_ids = ids.into_iter().filter(|k| kernel_alive(env, k)).collect();
            changed |= env.pids.len() != pids || env.kernel_ids.len() != kernels;
        }
        let count = self.envs.len();
        self.envs.retain(Env::active);
        changed || self.envs.len() != count
    }

    /// Whether [`Envs::cleanup`] would drop anything, asking each pid and
    /// kernel at most once (the predicates may remember their answers).
    pub fn stale(
        &self,
        mut pid_alive: impl FnMut(i64) -> bool,
        mut kernel_alive: impl FnMut(&Env, &str) -> bool,
    ) -> bool {
        self.envs.iter().any(|env| {
            !env.active()
                || env.pids.iter().any(|&pid| !pid_alive(pid))
                || env.kernel_ids.iter().any(|k| !kernel_alive(env, k))
        })
    }

    pub fn find(&self, pid: Option<i64>, kernel_id: Option<&str>) -> impl Iterator<Item = &Env> {
        self.envs.iter().filter(move |env| {
            pid.is_some_and(|pid| env.pids.contains(&pid))
                || kernel_id.is_some_and(|k| env.kernel_ids.iter().any(|id| id == k))
        })
    }
}

impl super::salvage::Entries for Envs {
    const KEY: &'static str = "envs";

    /// Reads the current layout, or the `{"envs": {eid: {...}}}` layout of
    /// genv 0.9 and older, one environment at a time: those that do not
    /// parse are returned as they were.
    fn from_value(value: Value) -> Result<(Self, Vec<Value>), String> {
        let Value::Object(mut root) = value else {
            return Err("expected a JSON object".into());
        };
        let entries: Vec<Value> = match root.remove("envs") {
            Some(Value::Object(legacy)) => legacy.into_iter().map(|(_, env)| env).collect(),
            Some(Value::Array(list)) => list,
            Some(_) => return Err("\"envs\" is neither a list nor an object".into()),
            None => return Err("missing the key \"envs\"".into()),
        };
        let mut envs = Envs::default();
        let mut rejected = Vec::new();
        for entry in entries {
            match Env::deserialize(&entry) {
                Ok(env) => envs.envs.push(env),
                Err(_) => rejected.push(entry),
            }
        }
        Ok((envs, rejected))
    }

    fn fill_from(&mut self, older: Self) {
        for env in older.envs {
            if !self.contains(&env.eid) {
                self.envs.push(env);
            }
        }
    }

    fn len(&self) -> usize {
        self.envs.len()
    }

    fn parse_fast(text: &str) -> Option<Self> {
        super::envs_json::parse(text)
    }

    fn to_json_sized(&self, capacity: usize) -> crate::error::Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(capacity);
        super::envs_json::write(self, &mut bytes);
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::salvage::Entries;
    use serde_json::json;

    fn env(eid: &str) -> Value {
        json!({"eid": eid, "uid": 1, "creation": "t", "username": null,
            "config": {"name": null, "gpu_memory": null, "gpus": null},
            "pids": [1], "kernel_ids": []})
    }

    #[test]
    fn a_bad_environment_is_rejected_alone_in_both_layouts() {
        let bad = json!({"eid": "b", "uid": "x", "creation": "t"});
        let (envs, rejected) =
            Envs::from_value(json!({"envs": [env("a"), bad.clone(), env("c")]})).unwrap();
        assert_eq!(envs.envs.len(), 2);
        assert!(envs.contains("a") && envs.contains("c"));
        assert_eq!(rejected, std::slice::from_ref(&bad));
        let (envs, rejected) =
            Envs::from_value(json!({"envs": {"a": env("a"), "b": bad.clone()}})).unwrap();
        assert!(envs.contains("a"));
        assert_eq!(rejected, [bad]);
        assert!(Envs::from_value(json!({"envs": 3})).is_err());
    }

    #[test]
    fn filling_from_an_older_copy_keeps_the_newer_entries() {
        let (mut newer, _) = Envs::from_value(json!({"envs": [env("a")]})).unwrap();
        newer.envs[0].config.name = Some("new".into());
        let (older, _) = Envs::from_value(json!({"envs": [env("a"), env("b")]})).unwrap();
        newer.fill_from(older);
        assert_eq!(newer.envs.len(), 2);
        assert_eq!(newer.get("a").unwrap().config.name.as_deref(), Some("new"));
    }
}
