//! The floor of one state transaction as a process: take the global lock
//! (`flock` on `$GENV_TMPDIR/genv.lock`), read `envs.json`, write it to a
//! temporary file and rename that over it, and exit. No parsing, no
//! checks: what any program keeping genv's state must at least do.
//!
//!     cargo build --release --example txfloor
//!     GENV_TMPDIR=/tmp/s hyperfine -N target/release/examples/txfloor
use std::fs::{self, File, OpenOptions};
use std::io::Write;

fn main() {
    let dir =
        std::path::PathBuf::from(std::env::var_os("GENV_TMPDIR").unwrap_or("/tmp/genv".into()));
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("genv.lock"))
        .unwrap();
    lock.lock().unwrap();
    let bytes = fs::read(dir.join("envs.json")).unwrap_or_else(|_| b"{\"envs\": []}".to_vec());
    let tmp = dir.join(format!(".envs.json.{}", std::process::id()));
    File::create(&tmp).unwrap().write_all(&bytes).unwrap();
    fs::rename(&tmp, dir.join("envs.json")).unwrap();
}
