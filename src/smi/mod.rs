//! `nvidia-smi`'s output formats: the default table in the layouts of the
//! drivers before 500 and of 500 and later, and the CSV queries. The
//! project's stand-in for `nvidia-smi` (`nvidia-smi-sim`) renders them for
//! the simulated GPUs; the shim reads the same layouts.

pub(crate) mod query;
pub mod sim;
pub(crate) mod table;

/// The program's name: the shim stands in for it, containers get it.
pub const PROGRAM: &str = "nvidia-smi";

/// The two layouts of the default table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// 79 columns, drivers 470 to 525 (`Tesla V100-SXM2...  Off  |`).
    Narrow,
    /// 91 columns, drivers 530 and later (`NVIDIA H100 80GB HBM3   On  |`).
    Wide,
}

impl Layout {
    /// The layout the stand-in prints for a driver version: the narrow one
    /// below 500, the wide one otherwise (and when the version does not
    /// parse).
    pub fn for_driver(version: &str) -> Self {
        let major = version
            .split('.')
            .next()
            .and_then(|m| m.trim().parse::<u32>().ok());
        match major {
            Some(major) if major < 500 => Layout::Narrow,
            _ => Layout::Wide,
        }
    }
}

/// One simulated GPU as the stand-in shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimGpu {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub total_mib: u64,
    pub used_mib: u64,
    pub utilization: u32,
    pub temperature: u32,
}

/// One simulated compute process on one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimProcess {
    pub index: u32,
    pub uuid: String,
    pub gpu_name: String,
    pub pid: u32,
    pub name: String,
    pub used_mib: u64,
}

/// `name` cut to `width` columns the way nvidia-smi cuts it: the start and
/// `...` for GPU names, `...` and the end for process names.
pub fn fit(name: &str, width: usize, keep_end: bool) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= width {
        return name.to_owned();
    }
    let keep = width.saturating_sub(3);
    if keep_end {
        let tail: String = chars[chars.len() - keep..].iter().collect();
        format!("...{tail}")
    } else {
        let head: String = chars[..keep].iter().collect();
        format!("{head}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_follows_the_driver() {
        assert_eq!(Layout::for_driver("470.82.01"), Layout::Narrow);
        assert_eq!(Layout::for_driver("418.226.00"), Layout::Narrow);
        assert_eq!(Layout::for_driver("550.54.15"), Layout::Wide);
        assert_eq!(Layout::for_driver("525.147.05"), Layout::Wide);
        assert_eq!(Layout::for_driver("garbage"), Layout::Wide);
    }

    #[test]
    fn fits_names() {
        assert_eq!(fit("Tesla V100-SXM2-16GB", 18, false), "Tesla V100-SXM2...");
        assert_eq!(fit("short", 18, false), "short");
        assert_eq!(fit("/a/very/long/path/to/python3", 10, true), "...python3");
    }
}
