//! One frame of `genv top`, as a pure function of a [`Snapshot`]: lines of
//! styled text that the live view draws and `--once` prints plain.

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};

use super::TopSort;
use crate::escape;
use crate::monitor::{Process, Snapshot};
use crate::state::Env;
use crate::state::device_locks::Holder;

const BAR: usize = 20;

fn title(text: &str) -> Line<'static> {
    Line::from(Span::styled(
        text.to_owned(),
        Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED),
    ))
}

/// `text` from the shared state, safe for a terminal, cut or padded to
/// `width` columns (one space after it).
fn cell(text: &str, width: usize) -> String {
    let safe = escape::terminal(text);
    let count = safe.chars().count();
    if count > width {
        let cut: String = safe.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}~ ")
    } else {
        format!("{safe:<width$} ")
    }
}

fn plural(n: usize, word: &str) -> String {
    match (n, word.ends_with('s')) {
        (1, _) => format!("{n} {word}"),
        (_, true) => format!("{n} {word}es"),
        _ => format!("{n} {word}s"),
    }
}

fn mib(value: u64) -> String {
    format!("{value} MiB")
}

fn sort_name(sort: TopSort) -> &'static str {
    match sort {
        TopSort::Memory => "memory",
        TopSort::Env => "environment",
        TopSort::User => "user",
        TopSort::Pid => "pid",
    }
}

/// The user an environment belongs to, as the tables show it.
fn user_of(s: &Snapshot, eid: Option<&str>) -> String {
    eid.and_then(|eid| s.envs.iter().find(|e| e.eid == eid))
        .map(Env::user)
        .unwrap_or_default()
}

fn env_used_mib(s: &Snapshot, eid: &str) -> u64 {
    s.processes_of(eid)
        .flat_map(|p| p.usage.iter().map(|&(_, m)| m))
        .sum()
}

fn process_mib(p: &Process) -> u64 {
    p.usage.iter().map(|&(_, m)| m).sum()
}

/// The frame's lines, sorted as asked.
pub(crate) fn lines(s: &Snapshot, sort: TopSort) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    out.push(Line::from(vec![
        Span::styled("genv top", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "  {} · {} · {} · {}  (sorted by {})",
            plural(s.gpus.len().max(s.devices.len()), "GPU"),
            plural(s.envs.len(), "environment"),
            plural(s.usernames().len(), "user"),
            plural(s.processes.len(), "process"),
            sort_name(sort)
        )),
    ]));
    out.push(Line::default());
    devices(s, &mut out);
    out.push(Line::default());
    environments(s, sort, &mut out);
    out.push(Line::default());
    processes(s, sort, &mut out);
    if !s.locks.is_empty() {
        out.push(Line::default());
        locks(s, &mut out);
    }
    out
}

fn devices(s: &Snapshot, out: &mut Vec<Line<'static>>) {
    out.push(title(&format!(
        "{:<4}{:<29}{:<22}{:<6}{:<6}{}",
        "GPU", "MEMORY", "USED / TOTAL", "UTIL", "TEMP", "ENVIRONMENTS"
    )));
    for device in &s.devices {
        let status = s.gpus.iter().find(|g| g.index == device.index);
        let total = status
            .map(|g| g.total_memory_mib)
            .unwrap_or_else(|| device.total_bytes() >> 20);
        let used = status.and_then(|g| g.used_memory_mib);
        let fraction = match (used, total) {
            (Some(u), t) if t > 0 => (u as f64 / t as f64).min(1.0),
            _ => 0.0,
        };
        let filled = (fraction * BAR as f64).round() as usize;
        let color = match fraction {
            f if f >= 0.9 => Color::Red,
            f if f >= 0.6 => Color::Yellow,
            _ => Color::Green,
        };
        let na = || "N/A".to_owned();
        let envs: Vec<String> = device
            .attachments
            .iter()
            .map(|a| {
                let name = s
                    .envs
                    .iter()
                    .find(|e| e.eid == a.eid)
                    .and_then(|e| e.config.name.as_deref())
                    .filter(|n| !n.is_empty());
                let mut text = escape::terminal(&a.eid).into_owned();
                if let Some(name) = name {
                    text.push_str(&format!(" ({})", escape::terminal(name)));
                }
                if let Some(memory) = &a.gpu_memory {
                    text.push_str(&format!(" {}", escape::terminal(memory)));
                }
                text
            })
            .collect();
        out.push(Line::from(vec![
            Span::raw(format!("{:<4}", device.index)),
            Span::raw("["),
            Span::styled("█".repeat(filled), Style::new().fg(color)),
            Span::raw("░".repeat(BAR - filled)),
            Span::raw(format!("] {:>4}  ", format!("{:.0}%", fraction * 100.0))),
            Span::raw(format!(
                "{:<22}",
                format!(
                    "{} / {}",
                    used.map(|u| u.to_string()).unwrap_or_else(na),
                    mib(total)
                )
            )),
            Span::raw(format!(
                "{:<6}",
                status
                    .and_then(|g| g.utilization)
                    .map(|u| format!("{u}%"))
                    .unwrap_or_else(na)
            )),
            Span::raw(format!(
                "{:<6}",
                status
                    .and_then(|g| g.temperature)
                    .map(|t| format!("{t}C"))
                    .unwrap_or_else(na)
            )),
            Span::raw(if envs.is_empty() {
                "-".to_owned()
            } else {
                envs.join(", ")
            }),
        ]));
    }
}

fn environments(s: &Snapshot, sort: TopSort, out: &mut Vec<Line<'static>>) {
    out.push(title(&format!(
        "{:<13}{:<17}{:<17}{:<9}{:<10}{:<7}{}",
        "ENVIRONMENT", "NAME", "USER", "GPUS", "CAPACITY", "PROCS", "USED"
    )));
    let mut envs: Vec<&Env> = s.envs.iter().collect();
    match sort {
        TopSort::Memory => envs.sort_by(|a, b| {
            env_used_mib(s, &b.eid)
                .cmp(&env_used_mib(s, &a.eid))
                .then_with(|| a.eid.cmp(&b.eid))
        }),
        TopSort::Env => envs.sort_by(|a, b| a.eid.cmp(&b.eid)),
        TopSort::User => envs.sort_by(|a, b| a.user().cmp(&b.user()).then(a.eid.cmp(&b.eid))),
        TopSort::Pid => envs.sort_by_key(|e| e.pids.iter().min().copied().unwrap_or(i64::MAX)),
    }
    if envs.is_empty() {
        out.push(Line::from("(no environments)"));
    }
    for env in envs {
        let gpus: Vec<String> = s.attached(&env.eid).map(|d| d.index.to_string()).collect();
        out.push(Line::from(format!(
            "{}{}{}{}{}{}{}",
            cell(&env.eid, 12),
            cell(env.config.name.as_deref().unwrap_or(""), 16),
            cell(&env.user(), 16),
            cell(
                &if gpus.is_empty() {
                    "-".into()
                } else {
                    gpus.join(",")
                },
                8
            ),
            cell(env.config.gpu_memory.as_deref().unwrap_or("-"), 9),
            cell(&s.processes_of(&env.eid).count().to_string(), 6),
            mib(env_used_mib(s, &env.eid)),
        )));
    }
}

fn processes(s: &Snapshot, sort: TopSort, out: &mut Vec<Line<'static>>) {
    out.push(title(&format!(
        "{:<9}{:<13}{:<17}{:<9}{}",
        "PID", "ENVIRONMENT", "USER", "GPUS", "USED"
    )));
    let mut processes: Vec<&Process> = s.processes.iter().collect();
    let eid = |p: &Process| p.eid.clone().unwrap_or_default();
    match sort {
        TopSort::Memory => {
            processes.sort_by(|a, b| process_mib(b).cmp(&process_mib(a)).then(a.pid.cmp(&b.pid)))
        }
        TopSort::Env => processes.sort_by(|a, b| eid(a).cmp(&eid(b)).then(a.pid.cmp(&b.pid))),
        TopSort::User => processes.sort_by(|a, b| {
            user_of(s, a.eid.as_deref())
                .cmp(&user_of(s, b.eid.as_deref()))
                .then(a.pid.cmp(&b.pid))
        }),
        TopSort::Pid => processes.sort_by_key(|p| p.pid),
    }
    if processes.is_empty() {
        out.push(Line::from("(no processes on the GPUs)"));
    }
    for p in processes {
        let gpus: Vec<String> = p.usage.iter().map(|(i, _)| i.to_string()).collect();
        out.push(Line::from(format!(
            "{}{}{}{}{}",
            cell(&p.pid.to_string(), 8),
            cell(p.eid.as_deref().unwrap_or("-"), 12),
            cell(&user_of(s, p.eid.as_deref()), 16),
            cell(&gpus.join(","), 8),
            mib(process_mib(p)),
        )));
    }
}

fn locks(s: &Snapshot, out: &mut Vec<Line<'static>>) {
    out.push(title(&format!(
        "{:<5}{:<9}{:<13}{:<17}{:<9}{}",
        "GPU", "LOCK", "ENVIRONMENT", "USER", "PID", "MODE"
    )));
    for device in &s.locks {
        for h in &device.holders {
            let holder: &Holder = h;
            out.push(Line::from(format!(
                "{}{}{}{}{}{}",
                cell(&device.index.to_string(), 4),
                cell(if holder.waiting { "waiting" } else { "holding" }, 8),
                cell(holder.eid.as_deref().unwrap_or("-"), 12),
                cell(&user_of(s, holder.eid.as_deref()), 16),
                cell(&holder.pid.to_string(), 8),
                holder.mode(),
            )));
        }
    }
}

/// The frame as plain text, without trailing spaces.
pub(crate) fn plain(lines: &[Line<'_>]) -> String {
    let mut text = String::new();
    for line in lines {
        let content: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
        text.push_str(content.trim_end());
        text.push('\n');
    }
    text
}
