//! `CUDA_VISIBLE_DEVICES` read as CUDA reads it, by every part of genv that
//! needs to know which GPUs a process sees.
//!
//! CUDA's rules (NVIDIA's documentation and what the driver does, as
//! PyTorch's `torch.cuda._parse_visible_devices` reproduces it):
//!
//! - entries are separated by commas, whitespace around each is ignored;
//! - an entry is a GPU index, or a UUID (`GPU-…`, or `MIG-…` for a MIG
//!   device; any unique prefix of the UUID will do);
//! - an index is read as `strtoul` reads it: the leading digits count and
//!   the rest of the entry is ignored (`1gpu` is 1);
//! - the list is read up to the first invalid entry: an entry without
//!   leading digits (`-1`, an empty entry), a UUID after indices or an
//!   index after UUIDs, and, once resolved against the machine's GPUs, an
//!   index or UUID that names no GPU. That entry and every one after it are
//!   ignored: `0,2,-1,1` makes GPUs 0 and 2 visible;
//! - a GPU named twice hides every GPU (`0,1,0` makes none visible).
//!
//! An empty value hides every GPU; an unset variable hides none.

use std::fmt;

/// One entry of `CUDA_VISIBLE_DEVICES`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum VisibleDevice {
    /// A GPU's index, as `nvidia-smi` numbers them.
    Index(u32),
    /// A UUID or a prefix of one, with its `GPU-` or `MIG-` prefix.
    Uuid(String),
}

impl fmt::Display for VisibleDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VisibleDevice::Index(index) => write!(f, "{index}"),
            VisibleDevice::Uuid(uuid) => f.write_str(uuid),
        }
    }
}

impl VisibleDevice {
    /// The entry as CUDA reads it, or `None` where CUDA stops.
    fn parse(entry: &str) -> Option<Self> {
        if entry.starts_with("GPU-") || entry.starts_with("MIG-") {
            return Some(VisibleDevice::Uuid(entry.to_owned()));
        }
        let digits = entry.strip_prefix('+').unwrap_or(entry);
        let end = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        digits[..end].parse().ok().map(VisibleDevice::Index)
    }

    /// Whether this entry names the GPU with `index` and `uuid`.
    pub(crate) fn names(&self, index: u32, uuid: &str) -> bool {
        match self {
            VisibleDevice::Index(i) => *i == index,
            VisibleDevice::Uuid(prefix) => uuid.starts_with(prefix.as_str()),
        }
    }
}

/// The GPUs `value` (the text of `CUDA_VISIBLE_DEVICES`) makes visible, in
/// CUDA's order, without knowing the machine's GPUs: the entries up to the
/// first one CUDA would reject.
pub(crate) fn visible_devices(value: &str) -> Vec<VisibleDevice> {
    let mut devices: Vec<VisibleDevice> = Vec::new();
    for entry in value.split(',').map(str::trim) {
        let Some(device) = VisibleDevice::parse(entry) else {
            break;
        };
        // Indices and UUIDs do not mix: the first entry sets the kind.
        if let Some(first) = devices.first()
            && matches!(first, VisibleDevice::Index(_)) != matches!(device, VisibleDevice::Index(_))
        {
            break;
        }
        if devices.contains(&device) {
            return Vec::new();
        }
        devices.push(device);
    }
    devices
}

/// The indices of the GPUs `value` makes visible on a machine with `gpus`
/// (each GPU's index and UUID), in CUDA's order: reading stops at an entry
/// that names no GPU or that more than one UUID starts with, and a GPU
/// named twice (by index and UUID prefix alike) hides every GPU.
pub(crate) fn visible_indices<'a>(
    value: &str,
    gpus: impl IntoIterator<Item = (u32, &'a str)> + Clone,
) -> Vec<u32> {
    let mut indices = Vec::new();
    for device in visible_devices(value) {
        let mut matching = gpus
            .clone()
            .into_iter()
            .filter(|(index, uuid)| device.names(*index, uuid));
        let (Some((index, _)), None) = (matching.next(), matching.next()) else {
            break;
        };
        if indices.contains(&index) {
            return Vec::new();
        }
        indices.push(index);
    }
    indices
}

#[cfg(test)]
mod tests {
    use super::VisibleDevice::{Index, Uuid};
    use super::*;

    fn uuids(entries: &[&str]) -> Vec<VisibleDevice> {
        entries.iter().map(|e| Uuid((*e).to_owned())).collect()
    }

    #[test]
    fn indices_in_the_order_given() {
        assert_eq!(visible_devices("0,1"), [Index(0), Index(1)]);
        assert_eq!(visible_devices("2,1"), [Index(2), Index(1)]);
        assert_eq!(visible_devices(" 2 , 3 "), [Index(2), Index(3)]);
        assert_eq!(visible_devices("+1"), [Index(1)]);
    }

    #[test]
    fn reading_stops_at_the_first_invalid_entry() {
        assert_eq!(visible_devices("0,2,-1,1"), [Index(0), Index(2)]);
        assert!(visible_devices("-1").is_empty());
        assert!(visible_devices("").is_empty());
        assert!(visible_devices("  ").is_empty());
        assert_eq!(visible_devices("0,,1"), [Index(0)]);
        assert_eq!(visible_devices("1,none,0"), [Index(1)]);
        assert_eq!(visible_devices("1,99999999999,0"), [Index(1)]);
    }

    #[test]
    fn an_index_is_its_leading_digits() {
        assert_eq!(visible_devices("1gpu2,2ampere"), [Index(1), Index(2)]);
        assert_eq!(visible_devices("0:1"), [Index(0)]);
    }

    #[test]
    fn uuids_and_mig_devices() {
        assert_eq!(
            visible_devices("GPU-abc, GPU-def"),
            uuids(&["GPU-abc", "GPU-def"])
        );
        assert_eq!(
            visible_devices("MIG-5c89852c-d268-c3f3-1b07-005d5ae1dc3f"),
            uuids(&["MIG-5c89852c-d268-c3f3-1b07-005d5ae1dc3f"])
        );
        // Indices and UUIDs do not mix.
        assert_eq!(visible_devices("GPU-abc,1"), uuids(&["GPU-abc"]));
        assert_eq!(visible_devices("1,GPU-abc"), [Index(1)]);
        assert!(visible_devices("gpu-abc").is_empty());
    }

    #[test]
    fn a_device_named_twice_hides_every_device() {
        assert!(visible_devices("0,1,0").is_empty());
        assert!(visible_devices("GPU-a,GPU-a").is_empty());
        // After the end of the list, a repeat is not read at all.
        assert_eq!(visible_devices("0,-1,0"), [Index(0)]);
    }

    #[test]
    fn entries_display_as_given() {
        let shown: Vec<String> = visible_devices("1gpu, GPU-ab")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["1"]);
        assert_eq!(Uuid("GPU-ab".into()).to_string(), "GPU-ab");
    }

    const GPUS: [(u32, &str); 3] = [
        (0, "GPU-00000000-0000-0000-0000-000000000000"),
        (1, "GPU-00000000-0000-0000-0000-000000000001"),
        (2, "GPU-11111111-0000-0000-0000-000000000002"),
    ];

    #[test]
    fn resolved_against_the_machine() {
        assert_eq!(visible_indices("2,0", GPUS), [2, 0]);
        // An index the machine does not have ends the list.
        assert_eq!(visible_indices("1,7,0", GPUS), [1]);
        assert_eq!(
            visible_indices("GPU-00000000-0000-0000-0000-000000000001", GPUS),
            [1]
        );
        // A unique prefix names a GPU; an ambiguous one ends the list.
        assert_eq!(visible_indices("GPU-1", GPUS), [2]);
        assert_eq!(visible_indices("GPU-1,GPU-0", GPUS), [2]);
        assert!(visible_indices("GPU-0", GPUS).is_empty());
        // The same GPU through two prefixes hides every GPU.
        assert!(visible_indices("GPU-1,GPU-11", GPUS).is_empty());
        assert!(visible_indices("-1", GPUS).is_empty());
    }
}
