fn main() {
    std::process::exit(genv::main());
}
