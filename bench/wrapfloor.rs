//! The floor of a wrapper such as the `nvidia-smi` shim: run the program
//! the arguments name with its stdout through a pipe, copy what it prints
//! to stdout, and exit with its exit code. Nothing else: no state read, no
//! line rewritten. What the shim adds over the program, less what this
//! adds, is the shim's own work; what this adds is a second process.
//!
//!     target/release/examples/wrapfloor nvidia-smi [ARGS...]
//!
//! bench/daemon.sh builds it as genv-static is built (static, the dist
//! profile), so that the two start alike.
use std::process::{Command, Stdio};

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: wrapfloor PROGRAM [ARGS...]");
        std::process::exit(2);
    };
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the program");
    let mut output = child.stdout.take().expect("its stdout");
    std::io::copy(&mut output, &mut std::io::stdout().lock()).expect("copy its output");
    let status = child.wait().expect("wait for it");
    std::process::exit(status.code().unwrap_or(1));
}
