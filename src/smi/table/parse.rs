//! Reading the default table a real driver printed: where each GPU block
//! starts, its memory cell, the process rows, and where one frame ends
//! (`-l` prints one table after another). Every layout is read by the
//! borders and cells it shares with the others, never by fixed columns.

/// One row of the processes table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessRow {
    pub gpu: u32,
    pub pid: u32,
    /// The GPU memory it uses, `None` when the driver shows `N/A`.
    pub mib: Option<u64>,
}

/// Parses a row of the processes table, with or without the GI and CI
/// columns (drivers before 450 have none; MIG rows have numbers there).
pub(crate) fn parse_process_row(line: &str) -> Option<ProcessRow> {
    let inner = line.strip_prefix('|')?.strip_suffix('|')?;
    let tokens: Vec<&str> = inner.split_whitespace().collect();
    let gpu = tokens.first()?.parse().ok()?;
    let id = |t: &str| t == "N/A" || t.chars().all(|c| c.is_ascii_digit());
    let pid = if tokens.len() >= 6
        && id(tokens[1])
        && id(tokens[2])
        && tokens[3].parse::<u32>().is_ok()
    {
        tokens[3]
    } else {
        tokens.get(1)?
    };
    let pid = pid.parse().ok()?;
    let mib = tokens
        .last()?
        .strip_suffix("MiB")
        .and_then(|m| m.parse().ok());
    Some(ProcessRow { gpu, pid, mib })
}

/// The `|`-separated cells of a table line, as byte ranges.
fn cells(line: &str) -> Vec<(usize, usize)> {
    let bars: Vec<usize> = line.match_indices('|').map(|(i, _)| i).collect();
    bars.windows(2).map(|w| (w[0] + 1, w[1])).collect()
}

/// The index a GPU block starts with (`|   0  NVIDIA H100 …`).
fn gpu_index(line: &str) -> Option<u32> {
    let &(start, end) = cells(line).first()?;
    line[start..end].split_whitespace().next()?.parse().ok()
}

/// The memory cell of a GPU block's second line: its byte range and the
/// position of `MiB /` in it.
fn memory_cell(line: &str) -> Option<(usize, usize, usize)> {
    let &(start, end) = cells(line).get(1)?;
    let at = line[start..end].find("MiB /")?;
    Some((start, end, start + at))
}

/// The GPU line `line` with its memory cell showing `used` (or `N/A`) and
/// `total` (or the total as printed), at the same width and positions as
/// the driver printed it. A number too wide for its column leaves the line
/// as it was rather than shift the table.
pub(crate) fn set_memory(line: &str, used: Option<u64>, total: Option<u64>) -> String {
    let Some((start, end, at)) = memory_cell(line) else {
        return line.to_owned();
    };
    let cell = &line[start..end];
    let used_width = at - start;
    let after = &cell[used_width + "MiB /".len()..];
    let Some(total_width) = after.rfind("MiB") else {
        return line.to_owned();
    };
    let trailing = &after[total_width + "MiB".len()..];
    let printed_total = after[..total_width].trim();
    let total_text = total.map_or_else(|| printed_total.to_owned(), |t| t.to_string());
    let used_text = match used {
        Some(used) => format!("{used:>used_width$}MiB"),
        None => format!("{:>w$}", "N/A", w = used_width + 3),
    };
    let new_cell = format!("{used_text} /{total_text:>total_width$}MiB{trailing}");
    if new_cell.len() != cell.len() {
        return line.to_owned();
    }
    format!("{}{new_cell}{}", &line[..start], &line[end..])
}

/// Where things are in one frame of the default table (line numbers).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    /// The GPU lines with a memory cell, and the GPU each belongs to.
    pub memory_lines: Vec<(usize, Option<u32>)>,
    /// The rows of the processes table.
    pub process_rows: Vec<(usize, ProcessRow)>,
    /// The driver printed `No running processes found`.
    pub no_processes_line: bool,
    /// The `|===…|` line the process rows follow.
    pub rows_separator: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Other,
    Gpus,
    Mig,
    Processes { rows: bool },
}

/// Reads one frame. The MIG devices table has memory cells too; they are
/// the MIG devices' own and are not reported.
pub(crate) fn parse_frame(lines: &[String]) -> Frame {
    let mut frame = Frame::default();
    let mut section = Section::Other;
    let mut gpu = None;
    for (i, line) in lines.iter().enumerate() {
        if line.contains("| MIG devices:") {
            section = Section::Mig;
            continue;
        }
        if line.contains("| Processes:") {
            section = Section::Processes { rows: false };
            continue;
        }
        if line.starts_with("| GPU  Name") {
            section = Section::Gpus;
            continue;
        }
        match section {
            Section::Gpus => {
                if let Some(index) = gpu_index(line) {
                    gpu = Some(index);
                } else if memory_cell(line).is_some() {
                    frame.memory_lines.push((i, gpu));
                }
                if !line.starts_with(['|', '+']) {
                    section = Section::Other;
                }
            }
            Section::Mig => {
                if !line.starts_with(['|', '+']) {
                    section = Section::Other;
                }
            }
            Section::Processes { rows: false } => {
                if line.starts_with("|=") {
                    frame.rows_separator = Some(i);
                    section = Section::Processes { rows: true };
                }
            }
            Section::Processes { rows: true } => {
                if line.contains("No running processes found") {
                    frame.no_processes_line = true;
                } else if let Some(row) = parse_process_row(line) {
                    frame.process_rows.push((i, row));
                } else if line.starts_with('+') {
                    section = Section::Other;
                }
            }
            Section::Other => {}
        }
    }
    frame
}

/// Cuts the default table into frames: a frame ends with the border under
/// the processes table (with `-l` the driver prints one frame after another).
#[derive(Debug, Default)]
pub(crate) struct Frames {
    lines: Vec<String>,
    in_processes: bool,
    in_rows: bool,
}

impl Frames {
    /// Adds a line; returns the frame when the line completes one.
    pub(crate) fn push(&mut self, line: String) -> Option<Vec<String>> {
        if line.contains("| Processes:") {
            self.in_processes = true;
        } else if self.in_processes && line.starts_with("|=") {
            self.in_rows = true;
        }
        let end = self.in_rows && line.starts_with('+');
        self.lines.push(line);
        if end {
            self.in_processes = false;
            self.in_rows = false;
            return Some(std::mem::take(&mut self.lines));
        }
        None
    }

    /// What is left after the last complete frame (a table cut short).
    pub(crate) fn finish(&mut self) -> Vec<String> {
        std::mem::take(&mut self.lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<String> {
        let path = format!(
            "{}/tests/fixtures/nvidia-smi/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn rows(frame: &Frame) -> Vec<(u32, u32, Option<u64>)> {
        frame
            .process_rows
            .iter()
            .map(|(_, r)| (r.gpu, r.pid, r.mib))
            .collect()
    }

    fn gpus(frame: &Frame) -> Vec<Option<u32>> {
        frame.memory_lines.iter().map(|(_, gpu)| *gpu).collect()
    }

    #[test]
    fn narrow_layout() {
        let frame = parse_frame(&fixture("470-v100.txt"));
        assert_eq!(gpus(&frame), [Some(0), Some(1)]);
        assert_eq!(
            rows(&frame),
            [(0, 23824, Some(10725)), (1, 33724, Some(12247))]
        );
        assert!(!frame.no_processes_line);
    }

    #[test]
    fn wide_layout() {
        let frame = parse_frame(&fixture("550-rtx4090.txt"));
        assert_eq!(gpus(&frame), [Some(0), Some(1)]);
        assert_eq!(
            rows(&frame),
            [
                (0, 2480, Some(4)),
                (0, 812345, Some(500)),
                (1, 2480, Some(4)),
                (1, 812346, Some(452)),
            ]
        );
    }

    #[test]
    fn idle_570_layout() {
        let frame = parse_frame(&fixture("570-l4-idle.txt"));
        assert_eq!(gpus(&frame), [Some(0)]);
        assert!(frame.process_rows.is_empty());
        assert!(frame.no_processes_line);
        assert!(frame.rows_separator.is_some());
    }

    #[test]
    fn mig_memory_cells_are_not_gpu_lines() {
        let frame = parse_frame(&fixture("510-a100-mig.txt"));
        assert_eq!(gpus(&frame), [Some(0), Some(1)]);
        // MIG rows carry GI and CI numbers before the pid.
        assert_eq!(
            rows(&frame),
            [
                (0, 23824, Some(10725)),
                (0, 33724, Some(12247)),
                (1, 34965, Some(14195)),
                (1, 42152, Some(149)),
                (1, 46505, Some(9807)),
            ]
        );
    }

    #[test]
    fn process_rows_of_every_shape() {
        let row = |line| parse_process_row(line).map(|r| (r.gpu, r.pid, r.mib));
        assert_eq!(
            row("|    0   N/A  N/A     23824      C   python                          10725MiB |"),
            Some((0, 23824, Some(10725)))
        );
        // Before 450: no GI and CI columns.
        assert_eq!(
            row("|    1      4242      C   python                                      N/A |"),
            Some((1, 4242, None))
        );
        // MIG: GI and CI numbers.
        assert_eq!(
            row("|    1    3    0      51547      C   python                          14347MiB |"),
            Some((1, 51547, Some(14347)))
        );
        assert_eq!(
            row("|  No running processes found                                 |"),
            None
        );
        assert_eq!(
            row("+-----------------------------------------------------------+"),
            None
        );
    }

    #[test]
    fn memory_cells_keep_their_width() {
        let line =
            "| N/A   36C    P0    39W / 300W |  10725MiB / 16160MiB |      1%      Default |";
        let narrow = |used, total| set_memory(line, used, total);
        assert_eq!(
            narrow(Some(42), None),
            "| N/A   36C    P0    39W / 300W |     42MiB / 16160MiB |      1%      Default |"
        );
        assert_eq!(
            narrow(Some(42), Some(4096)),
            "| N/A   36C    P0    39W / 300W |     42MiB /  4096MiB |      1%      Default |"
        );
        assert_eq!(
            narrow(None, None),
            "| N/A   36C    P0    39W / 300W |       N/A / 16160MiB |      1%      Default |"
        );
        // Too wide for the column: as printed.
        assert_eq!(narrow(Some(123_456_789), None), line);
        let wide = "| 30%   29C    P8             22W /  450W |     507MiB /  24564MiB |      0%      Default |";
        assert_eq!(
            set_memory(wide, Some(0), Some(8192)),
            "| 30%   29C    P8             22W /  450W |       0MiB /   8192MiB |      0%      Default |"
        );
    }

    #[test]
    fn frames_end_under_the_processes_table() {
        let table = fixture("550-rtx4090.txt");
        let mut frames = Frames::default();
        let mut done = Vec::new();
        for line in table.iter().chain(table.iter()).cloned() {
            done.extend(frames.push(line));
        }
        assert_eq!(done, [table.clone(), table]);
        assert!(frames.finish().is_empty());
        frames.push("Fri Jun 17 11:40:52 2022".into());
        assert_eq!(frames.finish(), ["Fri Jun 17 11:40:52 2022"]);
    }
}
