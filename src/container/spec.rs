//! The parts of an OCI runtime configuration (`config.json`, and the
//! process JSON of `exec`) that genv reads: a few serde structs, the field
//! names of the OCI runtime specification. They check the file and answer
//! genv's questions; genv's changes go into the JSON as read
//! (`serde_json::Value`), so every field not named here stays as it was.
//! The getters are those of the `oci-spec` crate, whose types these were.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;

/// A bundle's `config.json`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Spec {
    #[serde(default)]
    process: Option<Process>,
    #[serde(default)]
    root: Option<Root>,
    #[serde(default)]
    annotations: Option<HashMap<String, String>>,
    #[serde(default)]
    linux: Option<Linux>,
}

impl Spec {
    pub(crate) fn process(&self) -> &Option<Process> {
        &self.process
    }

    pub(crate) fn root(&self) -> &Option<Root> {
        &self.root
    }

    pub(crate) fn annotations(&self) -> &Option<HashMap<String, String>> {
        &self.annotations
    }

    pub(crate) fn linux(&self) -> &Option<Linux> {
        &self.linux
    }
}

/// The container's process (`process` in `config.json`, or the whole
/// process JSON of `exec`). `user` and `cwd` are required, as the
/// specification says.
#[derive(Debug, Deserialize)]
pub(crate) struct Process {
    user: User,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[allow(dead_code)] // Read to refuse a process without one.
    cwd: PathBuf,
}

impl Process {
    pub(crate) fn user(&self) -> &User {
        &self.user
    }

    pub(crate) fn env(&self) -> &Option<Vec<String>> {
        &self.env
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct User {
    #[serde(default)]
    uid: u32,
}

impl User {
    pub(crate) fn uid(&self) -> u32 {
        self.uid
    }
}

/// The container's root file system.
#[derive(Debug, Deserialize)]
pub(crate) struct Root {
    path: PathBuf,
}

impl Root {
    pub(crate) fn path(&self) -> &PathBuf {
        &self.path
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Linux {
    #[serde(default)]
    uid_mappings: Option<Vec<IdMapping>>,
}

impl Linux {
    pub(crate) fn uid_mappings(&self) -> &Option<Vec<IdMapping>> {
        &self.uid_mappings
    }
}

/// A range of ids of a user namespace: `size` ids from `containerID`
/// inside are `hostID` onwards outside.
#[derive(Clone, Copy, Debug, Deserialize)]
pub(crate) struct IdMapping {
    #[serde(default, rename = "containerID")]
    container_id: u32,
    #[serde(default, rename = "hostID")]
    host_id: u32,
    #[serde(default)]
    size: u32,
}

impl IdMapping {
    pub(crate) fn container_id(&self) -> u32 {
        self.container_id
    }

    pub(crate) fn host_id(&self) -> u32 {
        self.host_id
    }

    pub(crate) fn size(&self) -> u32 {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_genv_reads_is_read_and_the_rest_ignored() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.2.0","process":{"user":{"uid":7,"gid":0},"cwd":"/",
                "env":["A=1"],"args":["sh"]},"root":{"path":"rootfs"},
                "annotations":{"k":"v"},"vendorField":{"x":1},
                "linux":{"uidMappings":[{"containerID":0,"hostID":100000,"size":65536}]}}"#,
        )
        .unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.user().uid(), 7);
        assert_eq!(process.env().as_deref(), Some(&["A=1".to_owned()][..]));
        assert_eq!(
            spec.root().as_ref().unwrap().path(),
            &PathBuf::from("rootfs")
        );
        assert_eq!(spec.annotations().as_ref().unwrap()["k"], "v");
        let mapping = spec
            .linux()
            .as_ref()
            .unwrap()
            .uid_mappings()
            .as_ref()
            .unwrap()[0];
        assert_eq!(
            (mapping.container_id(), mapping.host_id(), mapping.size()),
            (0, 100_000, 65536)
        );
    }

    #[test]
    fn a_malformed_configuration_is_refused() {
        // A process needs its user and working folder; types must match.
        for json in [
            r#"{"process":{"cwd":"/"}}"#,
            r#"{"process":{"user":{"uid":0}}}"#,
            r#"{"process":{"user":{"uid":"root"},"cwd":"/"}}"#,
            r#"{"root":{}}"#,
            r#"{"annotations":{"k":1}}"#,
        ] {
            assert!(serde_json::from_str::<Spec>(json).is_err(), "{json}");
        }
        assert!(serde_json::from_str::<Spec>("{}").is_ok());
    }
}
