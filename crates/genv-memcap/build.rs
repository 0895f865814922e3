//! The library must load in any glibc image, and some (distroless/base,
//! busybox:glibc) have no `libgcc_s.so.1`. Rust's standard library asks
//! the linker for that shared unwinder (`-lgcc_s`); here a linker script
//! of that name, found first, hands it GCC's static unwinder instead
//! (`libgcc_eh.a`, which `gcc -static-libgcc` uses), as hidden symbols of
//! the library. The library then needs libc and its loader only
//! (tests/it/memcap.rs reads its NEEDED entries). Nothing unwinds in it at
//! run time: a panic aborts where it is raised (src/unwind.rs, which also
//! keeps the unwinder's glibc 2.35 lookup out).
//!
//! Why not `#![no_std]`: without std, rustc accepts only `panic = "abort"`,
//! which cargo cannot set for one package, and setting it for the
//! workspace's dev profile builds every dependency twice for the tests
//! (their harness always unwinds).

use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        panic!("cargo sets OUT_DIR for build scripts");
    };
    let dir = out.join("static-unwinder");
    let script = dir.join("libgcc_s.so");
    let text = "/* genv-memcap's build.rs: link GCC's static unwinder where std asks for libgcc_s */\nINPUT(-lgcc_eh)\n";
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&script, text)) {
        panic!("writing {}: {e}", script.display());
    }
    // For the library only: the gcc driver puts every -L before its own
    // folders (where the real libgcc_s.so is), wherever it stands.
    println!("cargo::rustc-cdylib-link-arg=-L{}", dir.display());
}
