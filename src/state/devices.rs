//! `devices.json`: the GPUs and which environments are attached to them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::memory;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub eid: String,
    #[serde(default)]
    pub gpu_memory: Option<String>,
    pub time: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub index: u32,
    pub total_memory: String,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

impl Device {
    pub fn new(index: u32, total_memory_mib: u64) -> Self {
        Device {
            index,
            total_memory: format!("{total_memory_mib}mi"),
            attachments: Vec::new(),
        }
    }

    pub fn eids(&self) -> impl Iterator<Item = &str> {
        self.attachments.iter().map(|a| a.eid.as_str())
    }

    pub fn is_attached(&self, eid: &str) -> bool {
        self.eids().any(|e| e == eid)
    }

    pub fn total_bytes(&self) -> u64 {
        memory::to_bytes(&self.total_memory).unwrap_or(0)
    }

    /// Memory not promised to an attached environment; an attachment
    /// without a capacity takes the whole device.
    pub fn available_bytes(&self) -> u64 {
        let total = self.total_bytes();
        let used: u64 = self
            .attachments
            .iter()
            .map(|a| {
                a.gpu_memory
                    .as_deref()
                    .and_then(|m| memory::to_bytes(m).ok())
                    .unwrap_or(total)
            })
            .fold(0u64, u64::saturating_add);
        total.saturating_sub(used)
    }

    /// Whether an environment with this capacity (or none: the whole
    /// device) fits, as genv 1.4.3 decides it.
    pub fn available(&self, gpu_memory: Option<&str>) -> bool {
        match gpu_memory.and_then(|m| memory::to_bytes(m).ok()) {
            None => self.attachments.is_empty(),
            Some(bytes) => self.available_bytes() >= bytes,
        }
    }

    pub fn attach(&mut self, eid: &str, gpu_memory: Option<String>, time: String) {
        self.attachments.push(Attachment {
            eid: eid.to_owned(),
            gpu_memory,
            time,
        });
    }

    pub fn detach(&mut self, eid: &str) -> bool {
        let before = self.attachments.len();
        self.attachments.retain(|a| a.eid != eid);
        before != self.attachments.len()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Devices {
    pub devices: Vec<Device>,
}

impl Devices {
    pub fn get(&self, index: u32) -> Option<&Device> {
        self.devices.iter().find(|d| d.index == index)
    }

    pub fn get_mut(&mut self, index: u32) -> Option<&mut Device> {
        self.devices.iter_mut().find(|d| d.index == index)
    }

    pub fn indices_of(&self, eid: &str) -> Vec<u32> {
        self.devices
            .iter()
            .filter(|d| d.is_attached(eid))
            .map(|d| d.index)
            .collect()
    }

    /// The environments of every attachment, once per attachment.
    pub fn eids_of_all(&self) -> impl Iterator<Item = &str> {
        self.devices.iter().flat_map(Device::eids)
    }

    /// Drops attachments of environments that no longer exist.
    /// Drops the attachments of environments that are gone; says whether
    /// there were any.
    pub fn cleanup(&mut self, eid_alive: impl Fn(&str) -> bool) -> bool {
        let mut changed = false;
        for device in &mut self.devices {
            let count = device.attachments.len();
            device.attachments.retain(|a| eid_alive(&a.eid));
            changed |= device.attachments.len() != count;
        }
        changed
    }

    /// Picks `count` devices not attached to `eid`: available ones first
    /// (in index order), then, when allowed, the least shared of the rest.
    pub fn find_available(
        &self,
        eid: &str,
        count: usize,
        gpu_memory: Option<&str>,
        over_subscribe: bool,
    ) -> Option<Vec<u32>> {
        let candidates: Vec<&Device> = self
            .devices
            .iter()
            .filter(|d| !d.is_attached(eid))
            .collect();
        let mut indices: Vec<u32> = candidates
            .iter()
            .filter(|d| d.available(gpu_memory))
            .map(|d| d.index)
            .collect();
        if over_subscribe && indices.len() < count {
            let mut rest: Vec<&&Device> = candidates
                .iter()
                .filter(|d| !indices.contains(&d.index))
                .collect();
            rest.sort_by_key(|d| d.attachments.len());
            indices.extend(rest.into_iter().map(|d| d.index));
        }
        (indices.len() >= count).then(|| {
            indices.truncate(count);
            indices
        })
    }
}

impl super::salvage::Entries for Devices {
    const KEY: &'static str = "devices";

    /// Reads the current layout, or the `{"devices": {"0": {"eids": {...},
    /// "total_memory": ...}}}` layout of genv 0.8 and older, one device and
    /// one attachment at a time: a device that does not parse is returned
    /// as it was (reconciling with the hardware brings it back, free), an
    /// attachment that does not parse as `{"device": index, "attachment":
    /// ...}` (its device stays).
    fn from_value(value: Value) -> Result<(Self, Vec<Value>), String> {
        let Value::Object(mut root) = value else {
            return Err("expected a JSON object".into());
        };
        let mut devices = Devices::default();
        let mut rejected = Vec::new();
        match root.remove("devices") {
            Some(Value::Object(legacy)) => {
                for (index, device) in legacy {
                    match legacy_device(&index, &device) {
                        Ok(device) => devices.devices.push(device),
                        Err(_) => rejected.push(serde_json::json!({ index: device })),
                    }
                }
            }
            Some(Value::Array(list)) => {
                for entry in list {
                    match device(entry) {
                        Ok((device, bad)) => {
                            rejected.extend(bad.into_iter().map(|attachment| {
                                serde_json::json!({"device": device.index, "attachment": attachment})
                            }));
                            devices.devices.push(device);
                        }
                        Err(entry) => rejected.push(entry),
                    }
                }
            }
            Some(_) => return Err("\"devices\" is neither a list nor an object".into()),
            None => return Err("missing the key \"devices\"".into()),
        }
        devices.devices.sort_by_key(|d| d.index);
        Ok((devices, rejected))
    }

    fn fill_from(&mut self, older: Self) {
        for device in older.devices {
            if self.get(device.index).is_none() {
                self.devices.push(device);
            }
        }
        self.devices.sort_by_key(|d| d.index);
    }

    fn len(&self) -> usize {
        self.devices.len()
    }
}

/// One device of the current layout and the attachments of it that do not
/// parse; the entry as it was when the device itself does not.
fn device(mut entry: Value) -> Result<(Device, Vec<Value>), Value> {
    let attachments = match entry.as_object_mut() {
        Some(object) => object.remove("attachments"),
        None => return Err(entry),
    };
    let mut device = match Device::deserialize(&entry) {
        Ok(device) => device,
        Err(_) => {
            if let (Some(object), Some(attachments)) = (entry.as_object_mut(), attachments) {
                object.insert("attachments".into(), attachments);
            }
            return Err(entry);
        }
    };
    let mut rejected = Vec::new();
    match attachments {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for attachment in list {
                match Attachment::deserialize(&attachment) {
                    Ok(a) => device.attachments.push(a),
                    Err(_) => rejected.push(attachment),
                }
            }
        }
        Some(other) => rejected.push(other),
    }
    Ok((device, rejected))
}

fn legacy_device(index: &str, device: &Value) -> Result<Device, String> {
    let index: u32 = index
        .parse()
        .map_err(|_| format!("bad device index {index:?}"))?;
    let total_memory = device
        .get("total_memory")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("device {index} has no \"total_memory\""))?
        .to_owned();
    let mut attachments = Vec::new();
    if let Some(Value::Object(eids)) = device.get("eids") {
        for (key, env) in eids {
            let field = |name: &str| env.get(name).and_then(Value::as_str).map(str::to_owned);
            attachments.push(Attachment {
                eid: field("eid").unwrap_or_else(|| key.clone()),
                gpu_memory: field("gpu_memory"),
                time: field("attached").unwrap_or_default(),
            });
        }
    }
    Ok(Device {
        index,
        total_memory,
        attachments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::salvage::Entries;
    use serde_json::json;

    #[test]
    fn a_bad_attachment_is_rejected_alone() {
        let doc = json!({"devices": [
            {"index": 1, "total_memory": "16g", "attachments": [
                {"eid": "a", "gpu_memory": null, "time": "t"},
                {"eid": 7, "gpu_memory": null, "time": "t"}]},
            {"index": "zero", "total_memory": "16g", "attachments": []},
            {"index": 0, "total_memory": "16g", "attachments": null}]});
        let (devices, rejected) = Devices::from_value(doc).unwrap();
        assert_eq!(
            devices.devices.iter().map(|d| d.index).collect::<Vec<_>>(),
            [0, 1]
        );
        assert_eq!(devices.indices_of("a"), [1]);
        assert_eq!(
            rejected,
            [
                json!({"device": 1, "attachment": {"eid": 7, "gpu_memory": null, "time": "t"}}),
                json!({"index": "zero", "total_memory": "16g", "attachments": []}),
            ]
        );
    }

    #[test]
    fn filling_from_an_older_copy_keeps_the_newer_devices() {
        let mut newer = Devices {
            devices: vec![Device::new(1, 100)],
        };
        newer.devices[0].attach("new", None, "t".into());
        let mut older = Devices {
            devices: vec![Device::new(0, 100), Device::new(1, 100)],
        };
        older.devices[1].attach("old", None, "t".into());
        newer.fill_from(older);
        assert_eq!(newer.indices_of("new"), [1]);
        assert!(newer.indices_of("old").is_empty());
        assert_eq!(newer.len(), 2);
    }
}
