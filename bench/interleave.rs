//! Times short commands interleaved, one run of each in turn, so that a
//! shared machine's changing load falls on all of them alike (hyperfine
//! runs all of one command, then all of the next). Each run is the wall
//! time from spawning the command (stdout to /dev/null) to reaping it.
//!
//!     cargo run --release --example interleave -- RUNS 'CMD ARGS' 'CMD ARGS'...
//!
//! Prints, per command, the median, quartiles and the median's ratio to the
//! first command's (put `/bin/true` first for the floor), in ms.
use std::process::{Command, Stdio};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args
        .next()
        .and_then(|n| n.parse().ok())
        .expect("usage: interleave RUNS 'CMD ARGS'...");
    let commands: Vec<Vec<String>> = args
        .map(|c| c.split_whitespace().map(str::to_owned).collect())
        .collect();
    let mut times = vec![Vec::with_capacity(runs); commands.len()];
    for round in 0..runs + 10 {
        for (i, command) in commands.iter().enumerate() {
            let start = Instant::now();
            let status = Command::new(&command[0])
                .args(&command[1..])
                .stdout(Stdio::null())
                .status()
                .expect("spawn");
            let took = start.elapsed().as_secs_f64() * 1e3;
            assert!(status.success(), "{command:?} failed");
            // The first ten rounds warm the caches.
            if round >= 10 {
                times[i].push(took);
            }
        }
    }
    let quantile = |t: &[f64], q: f64| t[((t.len() - 1) as f64 * q).round() as usize];
    let mut floor = None;
    for (command, t) in commands.iter().zip(&mut times) {
        t.sort_by(f64::total_cmp);
        let median = quantile(t, 0.5);
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
