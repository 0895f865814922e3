//! genv's timestamps: local time as `%d/%m/%Y %H:%M:%S`, and "N units ago".

use chrono::{Local, NaiveDateTime};

pub const DATETIME_FMT: &str = "%d/%m/%Y %H:%M:%S";

pub fn now() -> String {
    Local::now().format(DATETIME_FMT).to_string()
}

pub fn parse(value: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(value, DATETIME_FMT).ok()
}

/// "5 seconds ago", "1 minute ago", ... as genv 1.4.3 prints them; a
/// timestamp that does not parse, or that lies in the future (another
/// host's clock, a hand-edited file), is printed as it is rather than as a
/// negative age.
pub fn since(value: &str, now: NaiveDateTime) -> String {
    match parse(value) {
        Some(then) if then <= now => ago((now - then).num_seconds()),
        _ => value.to_owned(),
    }
}

pub fn local_now() -> NaiveDateTime {
    Local::now().naive_local()
}

fn ago(seconds: i64) -> String {
    let mut value = seconds;
    let mut unit = "second";
    for (amount, next) in [(60, "minute"), (60, "hour"), (24, "day"), (7, "week")] {
        if value < amount {
            break;
        }
        value = value.div_euclid(amount);
        unit = next;
    }
    let plural = if value > 1 { "s" } else { "" };
    format!("{value} {unit}{plural} ago")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_plurals() {
        assert_eq!(ago(0), "0 second ago");
        assert_eq!(ago(1), "1 second ago");
        assert_eq!(ago(59), "59 seconds ago");
        assert_eq!(ago(60), "1 minute ago");
        assert_eq!(ago(3599), "59 minutes ago");
        assert_eq!(ago(3600), "1 hour ago");
        assert_eq!(ago(86400 * 2), "2 days ago");
        assert_eq!(ago(86400 * 7 * 3), "3 weeks ago");
    }

    #[test]
    fn round_trip() {
        let then = parse("24/11/2026 13:05:09").unwrap();
        assert_eq!(then.format(DATETIME_FMT).to_string(), "24/11/2026 13:05:09");
        let now = parse("24/11/2026 13:06:10").unwrap();
        assert_eq!(since("24/11/2026 13:05:09", now), "1 minute ago");
        assert_eq!(since("garbage", now), "garbage");
        assert_eq!(since("24/11/2027 13:05:09", now), "24/11/2027 13:05:09");
    }
}
