//! The project's stand-in for `nvidia-smi`; see `genv::smi::sim`.

fn main() {
    std::process::exit(genv::smi::sim::main());
}
