//! Provisioning: which devices an environment gets. Pure functions over
//! the in-memory [`Devices`], so the wait queue can try a request on a
//! copy; [`activate`], the one way a process becomes part of an
//! environment; and `wait.rs`, the line of `--wait` requests.

mod activate;
mod wait;

pub use activate::{Activated, Activation, Attach, Configure, activate};
pub use wait::{Wait, attach_waiting};

use crate::error::reference;
use crate::error::{Error, Result};
use crate::state::{Config, Devices, Transaction};

/// What an environment asks of the devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Request {
    /// How many devices in all (the configured count when neither is set).
    pub count: Option<u32>,
    /// One device by index.
    pub index: Option<u32>,
    pub over_subscribe: bool,
}

#[derive(Debug)]
pub enum AttachError {
    /// Can never be met on this machine (more GPUs than it has, an index
    /// it does not have): waiting would not help.
    Impossible(Error),
    /// Not now: the devices are taken.
    Unavailable(Error),
}

impl AttachError {
    pub fn into_error(self) -> Error {
        match self {
            AttachError::Impossible(e) | AttachError::Unavailable(e) => e,
        }
    }
}

/// Attaches devices to an environment as genv 1.4.3 does: ensure a count
/// (detaching the surplus, from the highest index down) or attach one
/// index. An environment with a memory capacity takes a fraction of a
/// device; one without takes the whole device.
pub fn attach(
    devices: &mut Devices,
    config: &Config,
    eid: &str,
    request: Request,
    now: &str,
) -> Result<(), AttachError> {
    let gpu_memory = config.gpu_memory.clone();
    let count = match (request.count, request.index) {
        (None, None) => config.gpus.and_then(|g| u32::try_from(g).ok()),
        (count, _) => count,
    };
    if let Some(count) = count {
        let current = devices.indices_of(eid).len();
        let wanted = count as usize;
        if current < wanted {
            if wanted > devices.devices.len() {
                return Err(AttachError::Impossible(reference::more_devices_than_total(
                    count,
                    devices.devices.len(),
                )));
            }
            let indices = devices
                .find_available(
                    eid,
                    wanted - current,
                    gpu_memory.as_deref(),
                    request.over_subscribe,
                )
                .ok_or_else(|| AttachError::Unavailable(reference::no_available_devices()))?;
            for index in indices {
                if let Some(device) = devices.get_mut(index) {
                    device.attach(
                        eid,
                        gpu_memory.as_deref().map(str::to_owned),
                        now.to_owned(),
                    );
                }
            }
        } else if current > wanted {
            let mut attached = devices.indices_of(eid);
            attached.reverse();
            for index in attached.into_iter().take(current - wanted) {
                if let Some(device) = devices.get_mut(index) {
                    device.detach(eid);
                }
            }
        }
    } else if let Some(index) = request.index {
        let known: Vec<String> = devices
            .devices
            .iter()
            .map(|d| d.index.to_string())
            .collect();
        let device = devices.get_mut(index).ok_or_else(|| {
            AttachError::Impossible(Error::new(format!(
                "Device {index} does not exist (devices: {})",
                known.join(",")
            )))
        })?;
        if !device.is_attached(eid) {
            if !request.over_subscribe && !device.available(gpu_memory.as_deref()) {
                return Err(AttachError::Unavailable(reference::device_not_available(
                    index,
                )));
            }
            device.attach(eid, gpu_memory.map(String::from), now.to_owned());
        }
    }
    Ok(())
}

/// Brings an attached environment's attachments in line with a new memory
/// capacity (genv 1.4.3 leaves them stale), and says when the change makes
/// a device more over-subscribed than it was: promised more memory than
/// it has, and more than before.
pub fn update_capacity(devices: &mut Devices, eid: &str, gpu_memory: Option<&str>) {
    for device in &mut devices.devices {
        if !device
            .attachments
            .iter()
            .any(|a| a.eid == eid && a.gpu_memory.as_deref() != gpu_memory)
        {
            continue;
        }
        let before = promised_bytes(device);
        for attachment in device.attachments.iter_mut().filter(|a| a.eid == eid) {
            attachment.gpu_memory = gpu_memory.map(str::to_owned);
        }
        let after = promised_bytes(device);
        if device.attachments.len() > 1 && after > device.total_bytes() && after > before {
            crate::messages::warn(format_args!(
                "device {} is now over-subscribed: its environments are promised more memory than it has",
                device.index
            ));
        }
    }
}

/// The memory a device's attachments are promised; an attachment without a
/// capacity is promised the whole device.
fn promised_bytes(device: &crate::state::Device) -> u64 {
    device
        .attachments
        .iter()
        .map(|a| {
            a.gpu_memory
                .as_deref()
                .and_then(|m| crate::memory::to_bytes(m).ok())
                .unwrap_or(device.total_bytes())
        })
        .fold(0, u64::saturating_add)
}

/// Attaches devices to an environment as genv 1.4.3 does: ensure a count
/// (detaching the surplus) or attach one index, capacity-aware, with the
/// environment's configuration as the state records it.
pub fn attach_env(tx: &mut Transaction<'_>, eid: &str, request: Request) -> Result<()> {
    let now = tx.now();
    let config = tx
        .envs()?
        .get(eid)
        .map(|e| e.config.clone())
        .unwrap_or_default();
    let devices = tx.devices_mut()?;
    attach(devices, &config, eid, request, &now).map_err(AttachError::into_error)
}

/// Detaches an environment from one device, or from all of them.
pub fn detach(devices: &mut Devices, eid: &str, index: Option<u32>) {
    for device in &mut devices.devices {
        if index.is_none_or(|i| i == device.index) {
            device.detach(eid);
        }
    }
}

/// Detaches the devices beyond `wanted`, highest index first (after `config
/// gpus` lowered the count).
pub fn detach_surplus(devices: &mut Devices, eid: &str, wanted: usize) {
    let mut attached = devices.indices_of(eid);
    while attached.len() > wanted {
        if let Some(index) = attached.pop()
            && let Some(device) = devices.get_mut(index)
        {
            device.detach(eid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Device;

    const NOW: &str = "01/01/2024 00:00:00";

    /// `n` devices of 16000 MiB each.
    fn devices(n: u32) -> Devices {
        Devices {
            devices: (0..n).map(|i| Device::new(i, 16000)).collect(),
        }
    }

    fn config(gpus: Option<i64>, gpu_memory: Option<&str>) -> Config {
        Config {
            name: None,
            gpu_memory: gpu_memory.map(Into::into),
            gpus,
        }
    }

    fn count(n: u32) -> Request {
        Request {
            count: Some(n),
            ..Request::default()
        }
    }

    fn index(i: u32) -> Request {
        Request {
            index: Some(i),
            ..Request::default()
        }
    }

    fn over(request: Request) -> Request {
        Request {
            over_subscribe: true,
            ..request
        }
    }

    /// Attaches and panics on an error.
    #[track_caller]
    fn ok(devices: &mut Devices, config: &Config, eid: &str, request: Request) {
        if let Err(e) = attach(devices, config, eid, request, NOW) {
            panic!("{eid}: {}", e.into_error());
        }
    }

    /// Attaches, expects an error, and checks that nothing changed.
    #[track_caller]
    fn err(devices: &mut Devices, config: &Config, eid: &str, request: Request) -> AttachError {
        let before = devices.clone();
        let error = attach(devices, config, eid, request, NOW).expect_err("should fail");
        assert_eq!(*devices, before, "a failed attach changed the devices");
        error
    }

    fn message(error: AttachError) -> String {
        error.into_error().to_string()
    }

    #[test]
    fn count_takes_free_devices_in_index_order() {
        let mut d = devices(3);
        ok(&mut d, &Config::default(), "a", count(2));
        assert_eq!(d.indices_of("a"), [0, 1]);
        ok(&mut d, &Config::default(), "b", count(1));
        assert_eq!(d.indices_of("b"), [2]);
        let attachment = &d.get(2).unwrap().attachments[0];
        assert_eq!(attachment.time, NOW);
        assert_eq!(attachment.gpu_memory, None);
    }

    #[test]
    fn count_already_met_changes_nothing() {
        let mut d = devices(2);
        ok(&mut d, &Config::default(), "a", count(1));
        let before = d.clone();
        ok(&mut d, &Config::default(), "a", count(1));
        assert_eq!(d, before);
    }

    #[test]
    fn count_grows_without_attaching_twice() {
        let mut d = devices(3);
        ok(&mut d, &Config::default(), "a", index(1));
        ok(&mut d, &Config::default(), "a", count(2));
        assert_eq!(d.indices_of("a"), [0, 1]);
        assert_eq!(d.get(1).unwrap().attachments.len(), 1);
    }

    #[test]
    fn count_detaches_exactly_the_surplus_from_the_highest_index() {
        let mut d = devices(4);
        ok(&mut d, &Config::default(), "a", count(4));
        ok(&mut d, &Config::default(), "a", count(1));
        assert_eq!(d.indices_of("a"), [0]);
        ok(&mut d, &Config::default(), "a", count(0));
        assert_eq!(d.indices_of("a"), Vec::<u32>::new());
    }

    #[test]
    fn the_configured_count_applies_when_neither_is_given() {
        let mut d = devices(3);
        ok(&mut d, &config(Some(2), None), "a", Request::default());
        assert_eq!(d.indices_of("a"), [0, 1]);
        // Without a configured count, nothing is asked and nothing changes.
        ok(&mut d, &Config::default(), "b", Request::default());
        assert_eq!(d.indices_of("b"), Vec::<u32>::new());
    }

    #[test]
    fn an_explicit_count_overrides_the_configured_one() {
        let mut d = devices(3);
        ok(&mut d, &config(Some(3), None), "a", count(1));
        assert_eq!(d.indices_of("a"), [0]);
    }

    #[test]
    fn more_than_the_machine_has_is_impossible() {
        let mut d = devices(2);
        let error = err(&mut d, &Config::default(), "a", count(5));
        assert!(matches!(error, AttachError::Impossible(_)));
        assert_eq!(
            message(error),
            "Requested more devices (5) than total available (2)"
        );
    }

    #[test]
    fn no_available_devices_when_they_are_taken() {
        let mut d = devices(2);
        ok(&mut d, &Config::default(), "a", count(1));
        ok(&mut d, &Config::default(), "b", count(1));
        let error = err(&mut d, &Config::default(), "b", count(2));
        assert!(matches!(error, AttachError::Unavailable(_)));
        assert_eq!(message(error), "No available devices");
    }

    #[test]
    fn a_count_is_met_whole_or_not_at_all() {
        let mut d = devices(3);
        ok(&mut d, &Config::default(), "a", index(0));
        ok(&mut d, &Config::default(), "a", index(1));
        // "b" needs 3, only device 2 is free: nothing is attached.
        err(&mut d, &Config::default(), "b", count(3));
        assert_eq!(d.indices_of("b"), Vec::<u32>::new());
    }

    #[test]
    fn index_attaches_that_device() {
        let mut d = devices(3);
        ok(&mut d, &Config::default(), "a", index(2));
        assert_eq!(d.indices_of("a"), [2]);
        // Again: already attached, nothing changes.
        let before = d.clone();
        ok(&mut d, &Config::default(), "a", index(2));
        assert_eq!(d, before);
    }

    #[test]
    fn a_taken_index_is_not_available() {
        let mut d = devices(2);
        ok(&mut d, &Config::default(), "a", index(0));
        let error = err(&mut d, &Config::default(), "b", index(0));
        assert!(matches!(error, AttachError::Unavailable(_)));
        assert_eq!(message(error), "Device 0 is not available");
    }

    #[test]
    fn an_unknown_index_is_impossible() {
        let mut d = devices(2);
        let error = err(&mut d, &Config::default(), "a", index(7));
        assert!(matches!(error, AttachError::Impossible(_)));
        assert_eq!(message(error), "Device 7 does not exist (devices: 0,1)");
    }

    #[test]
    fn over_subscription_shares_a_taken_index() {
        let mut d = devices(2);
        ok(&mut d, &Config::default(), "a", index(0));
        ok(&mut d, &Config::default(), "b", over(index(0)));
        let eids: Vec<&str> = d.get(0).unwrap().eids().collect();
        assert_eq!(eids, ["a", "b"]);
    }

    #[test]
    fn memory_capacities_share_a_device_while_they_fit() {
        let mut d = devices(2);
        let half = config(None, Some("8000mi"));
        ok(&mut d, &half, "a", count(1));
        ok(&mut d, &half, "b", count(1));
        assert_eq!(d.indices_of("a"), [0]);
        assert_eq!(d.indices_of("b"), [0]);
        // Device 0 is full: the third goes to device 1.
        ok(&mut d, &half, "c", count(1));
        assert_eq!(d.indices_of("c"), [1]);
        let attachment = &d.get(0).unwrap().attachments[0];
        assert_eq!(attachment.gpu_memory.as_deref(), Some("8000mi"));
    }

    #[test]
    fn a_capacity_that_does_not_fit_goes_elsewhere() {
        let mut d = devices(2);
        ok(&mut d, &config(None, Some("10000mi")), "a", count(1));
        ok(&mut d, &config(None, Some("8000mi")), "b", count(1));
        assert_eq!(d.indices_of("b"), [1]);
        // 6000 MiB still fit next to "a".
        ok(&mut d, &config(None, Some("6000mi")), "c", count(1));
        assert_eq!(d.indices_of("c"), [0]);
    }

    #[test]
    fn without_a_capacity_an_environment_takes_the_whole_device() {
        let mut d = devices(2);
        ok(&mut d, &config(None, Some("1g")), "a", count(1));
        // A whole-device environment cannot join a shared device...
        ok(&mut d, &Config::default(), "b", count(1));
        assert_eq!(d.indices_of("b"), [1]);
        // ...and nothing fits next to it, not even a small capacity.
        ok(&mut d, &config(None, Some("1g")), "c", count(1));
        assert_eq!(d.indices_of("c"), [0]);
        let error = err(&mut d, &config(None, Some("1g")), "e", index(1));
        assert_eq!(message(error), "Device 1 is not available");
    }

    #[test]
    fn over_subscription_picks_the_least_shared_device_first() {
        let mut d = devices(3);
        ok(&mut d, &Config::default(), "a", index(0));
        ok(&mut d, &Config::default(), "b", over(index(0)));
        ok(&mut d, &Config::default(), "c", index(1));
        ok(&mut d, &Config::default(), "e", index(2));
        ok(&mut d, &Config::default(), "f", over(index(2)));
        ok(&mut d, &Config::default(), "g", over(index(2)));
        // All taken: 0 has two, 1 has one, 2 has three.
        err(&mut d, &Config::default(), "h", count(1));
        ok(&mut d, &Config::default(), "h", over(count(2)));
        assert_eq!(d.indices_of("h"), [0, 1]);
        assert_eq!(d.get(1).unwrap().attachments.len(), 2);
    }

    #[test]
    fn over_subscription_prefers_available_devices() {
        let mut d = devices(3);
        ok(&mut d, &Config::default(), "a", index(0));
        ok(&mut d, &Config::default(), "b", over(count(1)));
        assert_eq!(d.indices_of("b"), [1]);
    }

    #[test]
    fn find_available_skips_devices_already_attached() {
        let mut d = devices(3);
        ok(&mut d, &Config::default(), "a", index(0));
        assert_eq!(d.find_available("a", 2, None, false), Some(vec![1, 2]));
        assert_eq!(d.find_available("a", 3, None, false), None);
        // Over-subscription still never picks a device twice for one eid.
        assert_eq!(d.find_available("a", 3, None, true), None);
        assert_eq!(d.find_available("b", 3, None, true), Some(vec![1, 2, 0]));
    }

    #[test]
    fn find_available_counts_memory() {
        let mut d = devices(2);
        ok(&mut d, &config(None, Some("12000mi")), "a", count(1));
        assert_eq!(
            d.find_available("b", 1, Some("4000mi"), false),
            Some(vec![0])
        );
        assert_eq!(d.find_available("b", 2, Some("4001mi"), false), None);
        assert_eq!(
            d.find_available("b", 1, Some("4001mi"), false),
            Some(vec![1])
        );
        assert_eq!(d.find_available("b", 2, None, false), None);
        assert_eq!(d.find_available("b", 0, None, false), Some(vec![]));
    }

    #[test]
    fn update_capacity_rewrites_only_that_environments_attachments() {
        let mut d = devices(2);
        let half = config(None, Some("8000mi"));
        ok(&mut d, &half, "a", count(2));
        ok(&mut d, &half, "b", index(0));
        update_capacity(&mut d, "a", Some("4000mi"));
        for device in &d.devices {
            let a = device.attachments.iter().find(|x| x.eid == "a").unwrap();
            assert_eq!(a.gpu_memory.as_deref(), Some("4000mi"));
        }
        let b = &d.get(0).unwrap().attachments[1];
        assert_eq!(
            (b.eid.as_str(), b.gpu_memory.as_deref()),
            ("b", Some("8000mi"))
        );
        assert_eq!(d.get(0).unwrap().available_bytes(), 4000 * 1024 * 1024);
    }

    #[test]
    fn update_capacity_to_none_takes_the_whole_device() {
        let mut d = devices(1);
        ok(&mut d, &config(None, Some("4000mi")), "a", count(1));
        update_capacity(&mut d, "a", None);
        assert_eq!(d.get(0).unwrap().attachments[0].gpu_memory, None);
        assert_eq!(d.get(0).unwrap().available_bytes(), 0);
        assert!(!d.get(0).unwrap().available(Some("1mi")));
    }

    #[test]
    fn update_capacity_of_a_detached_environment_changes_nothing() {
        let mut d = devices(1);
        ok(&mut d, &config(None, Some("4000mi")), "a", count(1));
        let before = d.clone();
        update_capacity(&mut d, "zzz", Some("1g"));
        assert_eq!(d, before);
    }
}
