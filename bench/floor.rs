//! The floor for a command over a big state: read `envs.json` and
//! `devices.json` from `$GENV_TMPDIR`, parse them into genv's own state
//! types, and print one CSV row per environment (what
//! `genv envs ps --format csv --timestamp` prints), with nothing else: no
//! lock, no liveness checks, no escaping.
//!
//!     cargo run --release --example floor             # the table on stdout
//!     cargo run --release --example floor -- --rss    # and the parsed size on stderr
//!     cargo run --release --example floor -- --change # the floor of a change
//!
//! `--change` is the floor of `genv envs config`: under the global lock
//! (`flock` on `genv.lock`), parse `envs.json`, rename one environment,
//! serialise the state as genv writes it, write a temporary file and put it
//! in the place of `envs.json` as genv does; no checks, no last good copy.
//!
//! `--rss` reports the resident memory before reading and after parsing
//! (kB, from /proc/self/status): the difference is the parsed state's size.
use std::io::Write;

use genv::state::{Devices, Envs};

/// Parsed as genv parses a state file: UTF-8 checked once, then the JSON.
fn parse<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> T {
    let bytes = std::fs::read(path).unwrap();
    serde_json::from_str(std::str::from_utf8(&bytes).unwrap()).unwrap()
}

/// `envs.json` as genv parses it: its own parser for the plain layout.
fn parse_envs(path: &std::path::Path) -> Envs {
    let bytes = std::fs::read(path).unwrap();
    genv::state::envs_json::parse(std::str::from_utf8(&bytes).unwrap()).unwrap()
}

fn change(dir: &std::path::Path) {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("genv.lock"))
        .unwrap();
    lock.lock().unwrap();
    let size = std::fs::metadata(dir.join("envs.json")).unwrap().len() as usize;
    let mut envs = parse_envs(&dir.join("envs.json"));
    let middle = envs.envs.len() / 2;
    if let Some(env) = envs.envs.get_mut(middle) {
        env.config.name = Some("floor".into());
    }
    let mut bytes = Vec::with_capacity(size + size / 8);
    genv::state::envs_json::write(&envs, &mut bytes);
    let tmp = dir.join(format!(".envs.json.{}", std::process::id()));
    std::fs::File::create(&tmp)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    // As genv replaces a file: the names exchanged, then the old one
    // removed (a rename over it makes ext4 write the new file out at once).
    let target = dir.join("envs.json");
    match rustix::fs::renameat_with(
        rustix::fs::CWD,
        &tmp,
        rustix::fs::CWD,
        &target,
        rustix::fs::RenameFlags::EXCHANGE,
    ) {
        Ok(()) => std::fs::remove_file(&tmp).unwrap(),
        Err(_) => std::fs::rename(&tmp, &target).unwrap(),
    }
}

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let rss = std::env::args().any(|a| a == "--rss");
    let dir =
        std::path::PathBuf::from(std::env::var_os("GENV_TMPDIR").unwrap_or("/tmp/genv".into()));
    if std::env::args().any(|a| a == "--change") {
        change(&dir);
        return;
    }
    let before = rss_kb();
    let envs = parse_envs(&dir.join("envs.json"));
    let devices: Devices = parse(&dir.join("devices.json"));
    let parsed = rss_kb();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let _ = writeln!(out, "ID,USER,NAME,CREATED,PID(S)");
    for env in &envs.envs {
        let _ = write!(
            out,
            "{},{},{},{},",
            env.eid,
            env.user(),
            env.config.name.as_deref().unwrap_or(""),
            env.creation
        );
        for (i, pid) in env.pids.iter().enumerate() {
            let _ = write!(out, "{}{pid}", if i == 0 { "" } else { " " });
        }
        let _ = writeln!(out);
    }
    let _ = out.flush();
    if rss {
        let attached: usize = devices.devices.iter().map(|d| d.attachments.len()).sum();
        eprintln!(
            "envs {} attachments {} rss before {before} kB, after parse {parsed} kB, parsed size {} kB",
            envs.envs.len(),
            attached,
            parsed.saturating_sub(before)
        );
    }
}
