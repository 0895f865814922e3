//! Docker's (and Podman's) command line as genv reads it, for the `docker`
//! shim and `genv-docker`: which global options take a value, and how many
//! arguments an option of `run`/`create` spans.

/// Docker's global options that take a value (`docker -H host run …`).
pub(crate) const GLOBAL_WITH_VALUE: [&str; 10] = [
    "--config",
    "-c",
    "--context",
    "-H",
    "--host",
    "-l",
    "--log-level",
    "--tlscacert",
    "--tlscert",
    "--tlskey",
];

/// Options of `docker run`/`create` that take no value; every other option
/// without `=` takes the next argument.
const RUN_BOOLEAN_LONG: [&str; 15] = [
    "--detach",
    "--interactive",
    "--tty",
    "--rm",
    "--init",
    "--privileged",
    "--read-only",
    "--publish-all",
    "--no-healthcheck",
    "--oom-kill-disable",
    "--sig-proxy",
    "--disable-content-trust",
    "--quiet",
    "--help",
    "--use-api-socket",
];
const RUN_BOOLEAN_SHORT: [char; 5] = ['d', 'i', 't', 'P', 'q'];

/// How many arguments an option of `run`/`create` spans: 1 when it takes
/// no value or holds it (`--name=x`, `-eX=1`), 2 when its value follows.
pub(crate) fn option_width(arg: &str) -> usize {
    if let Some(long) = arg.strip_prefix("--") {
        if long.contains('=') || RUN_BOOLEAN_LONG.contains(&arg) {
            1
        } else {
            2
        }
    } else {
        let letters: Vec<char> = arg.chars().skip(1).collect();
        match letters.iter().position(|c| !RUN_BOOLEAN_SHORT.contains(c)) {
            // A value option last (`-it -e`, `-e`) takes the next
            // argument; one with letters after it (`-eX=1`) has its value.
            Some(at) if at == letters.len() - 1 => 2,
            _ => 1,
        }
    }
}
