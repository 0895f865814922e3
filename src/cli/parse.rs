//! The values of `genv enforce`'s, `genv remote enforce`'s and `genv
//! monitor`'s options, read for clap (`value_parser`): a quota's
//! `username=amount`, a memory amount, the grace period, intervals.

use crate::memory;

/// `username=maximum`, as genv 1.4.3 reads `--max-devices-for-user`.
pub(crate) fn parse_devices_spec(value: &str) -> std::result::Result<(String, u64), String> {
    let invalid = || format!("not a valid spec: {value}");
    let (user, maximum) = value.split_once('=').ok_or_else(invalid)?;
    if user.is_empty() || maximum.contains('=') {
        return Err(invalid());
    }
    Ok((
        user.to_owned(),
        maximum.trim().parse().map_err(|_| invalid())?,
    ))
}

/// A memory amount (`40g`, `512mi`), in bytes.
pub(crate) fn parse_memory(value: &str) -> std::result::Result<u64, String> {
    memory::to_bytes(value).map_err(|_| {
        format!(
            "not a memory amount: {value} (a number with an optional unit b, k, m, g, ki, mi or gi)"
        )
    })
}

/// `username=amount`.
pub(crate) fn parse_memory_spec(value: &str) -> std::result::Result<(String, u64), String> {
    let invalid =
        || format!("not a valid spec: {value} (expected username=amount, e.g. alice=40g)");
    let (user, amount) = value.split_once('=').ok_or_else(invalid)?;
    if user.is_empty() {
        return Err(invalid());
    }
    Ok((user.to_owned(), parse_memory(amount)?))
}

pub(crate) fn parse_grace(value: &str) -> std::result::Result<f64, String> {
    match value.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && (0.0..=86_400.0).contains(&seconds) => Ok(seconds),
        _ => Err(format!(
            "not a number of seconds between 0 and 86400: {value}"
        )),
    }
}

/// `genv enforce --interval`: whole seconds, 0 for one cycle.
pub(crate) fn parse_enforce_interval(value: &str) -> std::result::Result<u64, String> {
    value.trim().parse().map_err(|_| {
        format!("expected a whole number of seconds between cycles, or 0 to run one cycle: {value}")
    })
}

/// `genv monitor --interval`: whole seconds, at least one.
pub(crate) fn parse_monitor_interval(value: &str) -> std::result::Result<u64, String> {
    match value.trim().parse::<u64>() {
        Ok(seconds) if seconds >= 1 => Ok(seconds),
        _ => Err(format!(
            "expected a whole number of seconds between collections, 1 or more: {value}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_say_what_is_allowed() {
        assert_eq!(parse_enforce_interval("0"), Ok(0));
        assert_eq!(parse_enforce_interval("15"), Ok(15));
        assert!(
            parse_enforce_interval("-1")
                .unwrap_err()
                .contains("whole number of seconds")
        );
        assert_eq!(parse_monitor_interval("1"), Ok(1));
        assert!(
            parse_monitor_interval("0")
                .unwrap_err()
                .contains("1 or more")
        );
        assert!(parse_monitor_interval("-3").is_err());
    }

    #[test]
    fn a_devices_spec_is_a_user_and_a_count() {
        assert_eq!(parse_devices_spec("alice=2"), Ok(("alice".into(), 2)));
        assert_eq!(parse_devices_spec("alice= 2"), Ok(("alice".into(), 2)));
        for bad in ["alice", "=2", "alice=2=3", "alice=two"] {
            assert_eq!(
                parse_devices_spec(bad),
                Err(format!("not a valid spec: {bad}"))
            );
        }
    }

    #[test]
    fn a_memory_spec_is_a_user_and_an_amount() {
        assert_eq!(parse_memory("1k"), Ok(1000));
        assert_eq!(parse_memory_spec("alice=1ki"), Ok(("alice".into(), 1024)));
        assert!(parse_memory_spec("=1k").is_err());
        assert!(parse_memory_spec("alice=lots").is_err());
    }

    #[test]
    fn the_grace_period_is_a_day_at_most() {
        assert_eq!(parse_grace("2.5"), Ok(2.5));
        for bad in ["-1", "86401", "inf", "NaN", "soon"] {
            assert!(parse_grace(bad).is_err(), "{bad}");
        }
    }
}
