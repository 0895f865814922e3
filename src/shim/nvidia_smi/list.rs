//! `nvidia-smi -L` narrowed to the environment's GPUs. Drivers 580 and
//! later refuse `--id` with `-L` ("Option --id=0 is not valid for this
//! command"), so the shim runs the plain list and keeps the lines of the
//! visible GPUs (and the MIG devices listed under them).

/// Keeps what `-L` prints for the visible GPUs, named by index or UUID.
pub(crate) struct ListFilter {
    visible: Vec<String>,
    keeping: bool,
}

impl ListFilter {
    pub(crate) fn new(visible: Vec<String>) -> Self {
        ListFilter {
            visible,
            keeping: false,
        }
    }

    /// Whether to print this line: a `GPU N: … (UUID: GPU-…)` line when its
    /// index or UUID is visible, and the indented lines under a kept GPU.
    pub(crate) fn keep(&mut self, line: &str) -> bool {
        if let Some(rest) = line.strip_prefix("GPU ") {
            let index = rest.split(':').next().unwrap_or_default();
            let uuid = rest
                .rsplit_once("(UUID: ")
                .map(|(_, u)| u.trim_end_matches(')'))
                .unwrap_or_default();
            self.keeping = self
                .visible
                .iter()
                .any(|v| v == index || (v.starts_with("GPU-") && uuid.starts_with(v.as_str())));
            return self.keeping;
        }
        self.keeping && line.starts_with(char::is_whitespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str =
        "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-aaaa1111-0000-0000-0000-000000000000)
  MIG 1g.5gb      Device  0: (UUID: MIG-1111)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-bbbb2222-0000-0000-0000-000000000000)
  MIG 1g.5gb      Device  0: (UUID: MIG-2222)
GPU 2: NVIDIA H100 80GB HBM3 (UUID: GPU-cccc3333-0000-0000-0000-000000000000)";

    fn kept(visible: &[&str]) -> Vec<&'static str> {
        let mut filter = ListFilter::new(visible.iter().map(|v| (*v).to_owned()).collect());
        LIST.lines().filter(|l| filter.keep(l)).collect()
    }

    #[test]
    fn keeps_visible_gpus_and_their_mig_devices() {
        assert_eq!(
            kept(&["1"]),
            [
                "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-bbbb2222-0000-0000-0000-000000000000)",
                "  MIG 1g.5gb      Device  0: (UUID: MIG-2222)"
            ]
        );
        assert_eq!(kept(&["0", "2"]).len(), 3);
        assert_eq!(kept(&["GPU-cccc"]), [LIST.lines().last().unwrap()]);
        assert!(kept(&["7"]).is_empty());
    }

    #[test]
    fn the_h100_list_of_driver_580() {
        let fixture = include_str!("../../../tests/fixtures/nvidia-smi/580-h100/list.txt");
        let mut filter = ListFilter::new(vec!["0".into()]);
        let kept: Vec<&str> = fixture.lines().filter(|l| filter.keep(l)).collect();
        assert_eq!(kept, fixture.lines().collect::<Vec<_>>());
        let mut filter = ListFilter::new(vec!["1".into()]);
        assert_eq!(fixture.lines().filter(|l| filter.keep(l)).count(), 0);
    }
}
