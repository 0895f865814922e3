//! Times short commands interleaved, one run of each in turn, so that a
//! shared machine's changing load falls on all of them alike (hyperfine
//! runs all of one command, then all of the next). Each run is the wall
//! time from spawning the command (stdout to /dev/null) to reaping it.
//!
//!     cargo run --release --example interleave -- RUNS 'CMD ARGS' 'PREP ;; CMD ARGS'...
//!
//! A command may be preceded by a preparation (`PREP ;; CMD`), run untimed
//! before each of its runs (to undo a change the command makes). Prints,
//! per command, the median, quartiles and the median's ratio to the first
//! command's (put `/bin/true` first for the floor), in ms; with
//! `INTERLEAVE_TSV=1`, `median q1 q3 min max` a line, tab-separated.
//! Arguments are split at spaces (no quoting). Leading `NAME=VALUE` words
//! set variables for that command alone (no `env` process in the timing),
//! e.g. `GENV_TMPDIR=/a genv envs` beside `GENV_TMPDIR=/b genv envs`.
use std::process::{Command, Stdio};
use std::time::Instant;

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

fn run(command: &[String]) {
    let program = command
        .iter()
        .position(|word| !word.contains('='))
        .expect("a command after its variables");
    let status = Command::new(&command[program])
        .args(&command[program + 1..])
        .envs(command[..program].iter().filter_map(|w| w.split_once('=')))
        .stdout(Stdio::null())
        .status()
        .expect("spawn");
    assert!(status.success(), "{command:?} failed");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args
        .next()
        .and_then(|n| n.parse().ok())
        .expect("usage: interleave RUNS '[PREP ;; ]CMD ARGS'...");
    let commands: Vec<(Option<Vec<String>>, Vec<String>)> = args
        .map(|c| match c.rsplit_once(";;") {
            Some((prep, cmd)) => (Some(words(prep)), words(cmd)),
            None => (None, words(&c)),
        })
        .collect();
    let warmup = if runs >= 50 { 10 } else { 1 };
    let mut times = vec![Vec::with_capacity(runs); commands.len()];
    for round in 0..runs + warmup {
        for (i, (prep, command)) in commands.iter().enumerate() {
            if let Some(prep) = prep {
                run(prep);
            }
            let start = Instant::now();
            run(command);
            let took = start.elapsed().as_secs_f64() * 1e3;
            // The first rounds warm the caches.
            if round >= warmup {
                times[i].push(took);
            }
        }
    }
    let tsv = std::env::var_os("INTERLEAVE_TSV").is_some();
    let quantile = |t: &[f64], q: f64| t[((t.len() - 1) as f64 * q).round() as usize];
    let mut floor = None;
    for ((_, command), t) in commands.iter().zip(&mut times) {
        t.sort_by(f64::total_cmp);
        let median = quantile(t, 0.5);
        if tsv {
            let (q1, q3) = (quantile(t, 0.25), quantile(t, 0.75));
            let (min, max) = (t[0], t[t.len() - 1]);
            println!("{median:.3}\t{q1:.3}\t{q3:.3}\t{min:.3}\t{max:.3}");
            continue;
        }
        let floor = *floor.get_or_insert(median);
        println!(
            "{:8.3} ({:.3}–{:.3}) {:5.2}x  {}",
            median,
            quantile(t, 0.25),
            quantile(t, 0.75),
            median / floor,
            command.join(" ")
        );
    }
}
