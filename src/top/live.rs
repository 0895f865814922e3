//! The full-screen loop: a new snapshot every `delay`, a redraw after each
//! snapshot, key and resize. `q`, Esc or Ctrl-C quits; `s` changes the
//! sort; arrows and Page Up/Down scroll.

use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;

use super::TopSort;
use super::frame;
use crate::backend::DeviceBackend;
use crate::error::{Error, Result};
use crate::monitor::Snapshot;
use crate::os::signals::Blocked;
use crate::state::StateDir;

fn next(sort: TopSort) -> TopSort {
    match sort {
        TopSort::Memory => TopSort::Env,
        TopSort::Env => TopSort::User,
        TopSort::User => TopSort::Pid,
        TopSort::Pid => TopSort::Memory,
    }
}

fn terminal_error(e: std::io::Error) -> Error {
    Error::hinted(
        format!("cannot drive the terminal: {e}"),
        "run genv top in a terminal, or use genv top --once",
    )
}

/// Puts the terminal back however the loop ends.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

pub(crate) fn run(
    dir: &StateDir,
    backend: &dyn DeviceBackend,
    delay: Duration,
    mut sort: TopSort,
) -> Result<()> {
    // The first look before the screen changes, so an error reads plainly.
    let mut snapshot = Snapshot::take(dir, backend)?;
    // SIGTERM and SIGHUP (the terminal closed) end the view like `q`, with
    // the terminal restored; the loop looks for them between events.
    let signals = Blocked::block();
    let mut problem: Option<String> = None;
    let mut terminal = ratatui::try_init().map_err(terminal_error)?;
    let _restore = Restore;
    let mut due = Instant::now() + delay;
    let mut scroll: u16 = 0;
    loop {
        let mut lines = frame::lines(&snapshot, sort);
        if let Some(problem) = &problem {
            lines.insert(
                1,
                Line::styled(problem.clone(), Style::new().fg(Color::Red)),
            );
        }
        let total = lines.len() as u16;
        terminal
            .draw(|f| {
                let area = f.area();
                let [body, footer] = ratatui::layout::Layout::vertical([
                    ratatui::layout::Constraint::Min(1),
                    ratatui::layout::Constraint::Length(1),
                ])
                .areas(area);
                scroll = scroll.min(total.saturating_sub(body.height));
                f.render_widget(Paragraph::new(lines).scroll((scroll, 0)), body);
                f.render_widget(
                    Paragraph::new("q quit · s sort · ↑↓ PgUp PgDn scroll")
                        .style(Style::new().fg(Color::DarkGray)),
                    footer,
                );
            })
            .map_err(terminal_error)?;
        if signals.wait(Duration::ZERO).is_some() {
            return Ok(());
        }
        let now = Instant::now();
        if now >= due {
            match Snapshot::take(dir, backend) {
                Ok(s) => {
                    snapshot = s;
                    problem = None;
                }
                Err(e) => problem = Some(format!("could not refresh: {e}")),
            }
            due = Instant::now() + delay;
            continue;
        }
        // At most a quarter second, to notice the signals above.
        let wait = (due - now).min(Duration::from_millis(250));
        if !event::poll(wait).map_err(terminal_error)? {
            continue;
        }
        match event::read().map_err(terminal_error)? {
            Event::Key(key) if key.kind == KeyEventKind::Press => match key.code {
                KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    return Ok(());
                }
                KeyCode::Char('s') => sort = next(sort),
                KeyCode::Up => scroll = scroll.saturating_sub(1),
                KeyCode::Down => scroll = scroll.saturating_add(1),
                KeyCode::PageUp => scroll = scroll.saturating_sub(10),
                KeyCode::PageDown => scroll = scroll.saturating_add(10),
                KeyCode::Home => scroll = 0,
                _ => {}
            },
            _ => {}
        }
    }
}
