//! `genv version`: the genv release whose files and command lines this one
//! speaks.

pub fn run(out: &mut String) {
    out.push_str(env!("CARGO_PKG_VERSION"));
    out.push('\n');
}
