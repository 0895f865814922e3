//! Provisioning: which devices an environment gets. Pure functions over
//! the in-memory [`Devices`], so the wait queue can try a request on a copy.

mod wait;

pub use wait::{Wait, attach_waiting};

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
                return Err(AttachError::Impossible(Error::msg(format!(
                    "Requested more devices ({count}) than total available ({})",
                    devices.devices.len()
                ))));
            }
            let indices = devices
                .find_available(
                    eid,
                    wanted - current,
                    gpu_memory.as_deref(),
                    request.over_subscribe,
                )
                .ok_or_else(|| AttachError::Unavailable(Error::msg("No available devices")))?;
            for index in indices {
                if let Some(device) = devices.get_mut(index) {
                    device.attach(eid, gpu_memory.clone(), now.to_owned());
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
            AttachError::Impossible(Error::msg(format!(
                "Device {index} does not exist (devices: {})",
                known.join(",")
            )))
        })?;
        if !device.is_attached(eid) {
            if !request.over_subscribe && !device.available(gpu_memory.as_deref()) {
                return Err(AttachError::Unavailable(Error::msg(format!(
                    "Device {index} is not available"
                ))));
            }
            device.attach(eid, gpu_memory, now.to_owned());
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
    let devices = tx.devices()?;
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
