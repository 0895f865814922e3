//! `genv remote`: the GPUs of many machines from one terminal, over the
//! system's OpenSSH. Hosts are asked in parallel ([`ssh`]) with genv
//! 1.4.3's protocol (`genv usage snapshot --type …` answering JSON), so a
//! fleet may mix this genv and genv 1.4.3; what is printed is made from
//! the answers by pure functions ([`report`]).

pub(crate) mod asker;
pub(crate) mod enforce;
pub(crate) mod llm;
pub(crate) mod monitor;
pub(crate) mod report;
pub(crate) mod ssh;

use crate::error::{Error, Result};

/// One host to ask: as written on the command line or in the host file,
/// with the login name from `user@host` or `-l`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Host {
    pub hostname: String,
    pub username: Option<String>,
}

/// The hosts of `-H a,user@b` (`spec`) or of a host file's text (one a
/// line, blank lines and `#` comments skipped); `user@` wins over `-l`.
pub(crate) fn parse_hosts(
    spec: Option<&str>,
    hostfile: Option<&str>,
    username: Option<&str>,
) -> Result<Vec<Host>> {
    let names: Vec<&str> = match (spec, hostfile) {
        (_, Some(text)) => text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect(),
        (Some(spec), None) => spec.split(',').map(str::trim).collect(),
        (None, None) => Vec::new(),
    };
    let mut hosts = Vec::with_capacity(names.len());
    for name in names {
        let (user, hostname) = match name.rsplit_once('@') {
            Some((user, host)) => (Some(user), host),
            None => (username, name),
        };
        // A leading '-' would reach ssh as an option.
        if hostname.is_empty() || hostname.starts_with('-') {
            return Err(Error::hinted(
                format!("'{name}' is not a host name"),
                "give hosts as host or user@host, separated by commas (-H) or one a line (--hostfile)",
            ));
        }
        if user.is_some_and(|u| u.is_empty() || u.starts_with('-')) {
            return Err(Error::new(format!("'{name}' does not name a login")));
        }
        hosts.push(Host {
            hostname: hostname.to_owned(),
            username: user.map(str::to_owned),
        });
    }
    if hosts.is_empty() {
        return Err(Error::hinted(
            "no hosts given",
            "name them with -H host1,user@host2 or --hostfile FILE",
        ));
    }
    Ok(hosts)
}

/// `arg` as one word for a POSIX shell: ssh joins its arguments into one
/// command line for the remote login shell, so every word is quoted.
pub(crate) fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        return arg.to_owned();
    }
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// A remote command line made of quoted words.
pub(crate) fn command_line<S: AsRef<str>>(args: &[S]) -> String {
    args.iter()
        .map(|a| quote(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_take_their_own_login_or_the_default() {
        let hosts = parse_hosts(Some("a,bob@b"), None, Some("alice")).unwrap();
        assert_eq!(hosts[0].username.as_deref(), Some("alice"));
        assert_eq!(hosts[1].hostname, "b");
        assert_eq!(hosts[1].username.as_deref(), Some("bob"));
    }

    #[test]
    fn a_hostfile_skips_blanks_and_comments() {
        let hosts = parse_hosts(None, Some("# fleet\n a \n\nb\n"), None).unwrap();
        let names: Vec<_> = hosts.iter().map(|h| h.hostname.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn hosts_that_would_be_options_are_refused() {
        assert!(parse_hosts(Some("-oProxyCommand=x"), None, None).is_err());
        assert!(parse_hosts(Some("-x@h"), None, None).is_err());
        assert!(parse_hosts(Some(""), None, None).is_err());
        assert!(parse_hosts(Some("a,,b"), None, None).is_err());
    }

    #[test]
    fn words_are_quoted_for_the_remote_shell() {
        assert_eq!(quote("snapshot"), "snapshot");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's $(x)"), r"'it'\''s $(x)'");
        assert_eq!(
            command_line(&["genv", "usage", "snapshot", "--type", "devices"]),
            "genv usage snapshot --type devices"
        );
    }
}
