//! The values of `genv enforce`'s and `genv remote enforce`'s options,
//! read for clap (`value_parser`): a quota's `username=amount`, a memory
//! amount, the grace period.

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
