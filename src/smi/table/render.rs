//! Rendering the default table, column for column as the driver prints
//! it.

use std::fmt::Write;

use crate::smi::{Layout, SimGpu, SimProcess, fit};

/// Widths of the cells between the `|`s of the GPU table.
struct Cells {
    gpu: usize,
    memory: usize,
    util: usize,
}

impl Layout {
    fn cells(self) -> Cells {
        match self {
            Layout::Narrow => Cells {
                gpu: 31,
                memory: 22,
                util: 22,
            },
            Layout::Wide => Cells {
                gpu: 41,
                memory: 24,
                util: 22,
            },
        }
    }

    /// The width of the whole table, borders included.
    pub fn width(self) -> usize {
        let c = self.cells();
        c.gpu + c.memory + c.util + 4
    }
}

/// The default view: header, one block per GPU, and the processes.
pub(crate) fn render(
    layout: Layout,
    timestamp: &str,
    driver: &str,
    cuda: &str,
    gpus: &[SimGpu],
    processes: &[SimProcess],
) -> String {
    let c = layout.cells();
    let inner = layout.width() - 2;
    // Within the wide layout: 570 widened the PID column (by taking from
    // the process name), 580 closed the rule under the version line with
    // `+` and left the line between the tables empty.
    let major: u32 = driver
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let wide_pid = layout == Layout::Wide && major >= 570;
    let closed_rules = layout == Layout::Wide && major >= 580;
    let full_rule = format!("+{}+", "-".repeat(inner));
    let rule = |fill: &str, start: char, mid: char, end: char| {
        format!(
            "{start}{}{mid}{}{mid}{}{end}",
            fill.repeat(c.gpu),
            fill.repeat(c.memory),
            fill.repeat(c.util)
        )
    };
    let mut out = String::new();
    let _ = writeln!(out, "{timestamp}       ");
    out.push_str(&full_rule);
    out.push('\n');
    match layout {
        Layout::Narrow => {
            let _ = writeln!(
                out,
                "| NVIDIA-SMI {driver:<13}Driver Version: {driver:<13}CUDA Version: {cuda:<9}|"
            );
        }
        Layout::Wide => {
            let _ = writeln!(
                out,
                "| NVIDIA-SMI {driver:<23}Driver Version: {driver:<15}CUDA Version: {cuda:<9}|"
            );
        }
    }
    if closed_rules {
        out.push_str(&rule("-", '+', '+', '+'));
    } else {
        out.push_str(&rule("-", '|', '+', '+'));
    }
    out.push('\n');
    let headers: [&str; 3] = match layout {
        Layout::Narrow => [
            "| GPU  Name        Persistence-M| Bus-Id        Disp.A | Volatile Uncorr. ECC |",
            "| Fan  Temp  Perf  Pwr:Usage/Cap|         Memory-Usage | GPU-Util  Compute M. |",
            "|                               |                      |               MIG M. |",
        ],
        Layout::Wide => [
            "| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |",
            "| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |",
            "|                                         |                        |               MIG M. |",
        ],
    };
    for header in headers {
        out.push_str(header);
        out.push('\n');
    }
    out.push_str(&rule("=", '|', '+', '|'));
    out.push('\n');
    for gpu in gpus {
        let bus = format!("00000000:{:02X}:00.0", gpu.index + 1);
        match layout {
            Layout::Narrow => {
                let name = fit(&gpu.name, 18, false);
                let _ = writeln!(
                    out,
                    "|{:>4}  {name:<18}  {:<3}  | {bus} {:>3} |{:>21} |",
                    gpu.index, "Off", "Off", "N/A"
                );
                let _ = writeln!(
                    out,
                    "| {:>3}   {:>3}    {:<2}{:>7} / {:>4} |{:>7}MiB / {:>5}MiB |{:>7}%{:>13} |",
                    "30%",
                    format!("{}C", gpu.temperature),
                    "P8",
                    "26W",
                    "250W",
                    gpu.used_mib,
                    gpu.total_mib,
                    gpu.utilization,
                    "Default"
                );
            }
            Layout::Wide => {
                let name = fit(&gpu.name, 28, false);
                let _ = writeln!(
                    out,
                    "|{:>4}  {name:<28}   {:<3} |   {bus} {:>3} |{:>21} |",
                    gpu.index, "Off", "Off", "N/A"
                );
                let _ = writeln!(
                    out,
                    "| {:>3}   {:>3}    {:<2}{:>16} / {:>5} |{:>8}MiB / {:>6}MiB |{:>7}%{:>13} |",
                    "30%",
                    format!("{}C", gpu.temperature),
                    "P8",
                    "26W",
                    "250W",
                    gpu.used_mib,
                    gpu.total_mib,
                    gpu.utilization,
                    "Default"
                );
            }
        }
        let _ = writeln!(
            out,
            "|{}|{}|{:>21} |",
            " ".repeat(c.gpu),
            " ".repeat(c.memory),
            "N/A"
        );
        out.push_str(&rule("-", '+', '+', '+'));
        out.push('\n');
    }
    // The drivers print a blank line of spaces between the tables: as wide
    // as the table in the narrow layout, two short of it in the wide one.
    let blank = match layout {
        Layout::Narrow => layout.width(),
        Layout::Wide if closed_rules => 0,
        Layout::Wide => inner,
    };
    let _ = writeln!(out, "{}", " ".repeat(blank));
    out.push_str(&full_rule);
    out.push('\n');
    let process_headers: [&str; 3] = match layout {
        Layout::Narrow => [
            "| Processes:                                                                  |",
            "|  GPU   GI   CI        PID   Type   Process name                  GPU Memory |",
            "|        ID   ID                                                   Usage      |",
        ],
        Layout::Wide if wide_pid => [
            "| Processes:                                                                              |",
            "|  GPU   GI   CI              PID   Type   Process name                        GPU Memory |",
            "|        ID   ID                                                               Usage      |",
        ],
        Layout::Wide => [
            "| Processes:                                                                              |",
            "|  GPU   GI   CI        PID   Type   Process name                              GPU Memory |",
            "|        ID   ID                                                               Usage      |",
        ],
    };
    for header in process_headers {
        out.push_str(header);
        out.push('\n');
    }
    let _ = writeln!(out, "|{}|", "=".repeat(inner));
    if processes.is_empty() {
        out.push_str(&no_running_processes(layout.width()));
        out.push('\n');
    }
    for p in processes {
        let (pid_width, name_width, memory_width) = match layout {
            Layout::Narrow => (10, 28, 6),
            Layout::Wide if wide_pid => (16, 32, 8),
            Layout::Wide => (10, 38, 8),
        };
        let name = fit(&p.name, name_width, true);
        let _ = writeln!(
            out,
            "|{:>5}   {:<3}  {:<3}{:>pid_width$}      C   {name:<name_width$}   {:>memory_width$}MiB |",
            p.index, "N/A", "N/A", p.pid, p.used_mib
        );
    }
    out.push_str(&full_rule);
    out.push('\n');
    out
}

/// The row nvidia-smi prints in an empty processes table `width` wide.
pub(crate) fn no_running_processes(width: usize) -> String {
    let text = "  No running processes found";
    format!("|{text:<w$}|", w = width.saturating_sub(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_a_table_has_the_layout_width() {
        let gpus = vec![SimGpu {
            index: 0,
            uuid: "GPU-x".into(),
            name: "NVIDIA GeForce RTX 2080 Ti".into(),
            total_mib: 15258,
            used_mib: 10,
            utilization: 93,
            temperature: 38,
        }];
        let processes = vec![SimProcess {
            index: 0,
            uuid: "GPU-x".into(),
            gpu_name: "NVIDIA GeForce RTX 2080 Ti".into(),
            pid: 4242,
            name: "/usr/bin/sleep".into(),
            used_mib: 42,
        }];
        for layout in [Layout::Narrow, Layout::Wide] {
            let text = render(
                layout,
                "Mon Jan  1 00:00:00 2024",
                "550.54.15",
                "12.4",
                &gpus,
                &processes,
            );
            for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
                assert_eq!(line.len(), layout.width(), "{layout:?}: {line:?}");
            }
        }
    }
}
