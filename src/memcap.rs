//! The hard memory cap: `libgenv_memcap.so` (crates/genv-memcap), which
//! activation puts in `LD_PRELOAD` when the environment has a memory
//! capacity. Installed next to the `genv` binary, or in `lib/genv/` beside
//! its `bin/` (where `pip install` puts the wheel's copy).

use std::path::PathBuf;

use crate::env_vars::{self as ev, get};

/// The ledger's name and binary layout, the library's own file.
#[path = "../crates/genv-memcap/src/layout.rs"]
pub(crate) mod layout;

/// The library's file name.
pub(crate) const LIBRARY: &str = "libgenv_memcap.so";

/// The installed library: next to the running `genv`, else in
/// `<prefix>/lib/genv/` for `<prefix>/bin/genv` (the wheel's data).
pub(crate) fn library() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    candidates(exe.parent()?)
        .into_iter()
        .find(|path| path.is_file())
}

/// Where the library may be, for a `genv` in `bin`, in order.
fn candidates(bin: &std::path::Path) -> Vec<PathBuf> {
    let mut paths = vec![bin.join(LIBRARY)];
    if let Some(prefix) = bin.parent() {
        paths.push(prefix.join("lib").join("genv").join(LIBRARY));
    }
    paths
}

/// Whether a path can stand in `LD_PRELOAD`, which splits at spaces and
/// colons.
pub(crate) fn preloadable(path: &str) -> bool {
    !path.is_empty() && !path.contains([' ', ':', '\t', '\n'])
}

/// The library as this process's `LD_PRELOAD` names it, if it does.
pub(crate) fn preloaded() -> Option<String> {
    let value = get(ev::LD_PRELOAD)?;
    value
        .split([' ', ':'])
        .find(|entry| entry.rsplit('/').next() == Some(LIBRARY))
        .map(str::to_owned)
}

/// The name of an environment's ledger in the state folder, as the
/// library names it ([`layout`]): `memcap-<uid>-<eid>`, or the eid's
/// FNV-1a hash when it is not one plain short name.
pub(crate) fn ledger_name(uid: u32, eid: &str) -> String {
    let prefix = layout::NAME_PREFIX;
    if layout::name_is_plain(eid.as_bytes()) {
        format!("{prefix}{uid}-{eid}")
    } else {
        format!("{prefix}{uid}-h{}", layout::name_hash(eid.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preloadable_paths() {
        assert!(preloadable("/opt/genv/libgenv_memcap.so"));
        assert!(!preloadable("/opt/my genv/libgenv_memcap.so"));
        assert!(!preloadable("/opt/a:b/libgenv_memcap.so"));
    }

    #[test]
    fn the_library_is_looked_for_next_to_genv_then_in_the_prefix() {
        assert_eq!(
            candidates(std::path::Path::new("/venv/bin")),
            [
                PathBuf::from("/venv/bin/libgenv_memcap.so"),
                PathBuf::from("/venv/lib/genv/libgenv_memcap.so"),
            ]
        );
    }

    #[test]
    fn ledger_names_are_one_plain_component() {
        assert_eq!(ledger_name(0, "1a2b"), "memcap-0-1a2b");
        let hashed = ledger_name(5, "../x");
        assert!(hashed.starts_with("memcap-5-h") && !hashed.contains('/'));
    }
}
