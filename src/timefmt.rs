//! genv's timestamps: local time as `%d/%m/%Y %H:%M:%S`, and "N units ago".

use chrono::{Local, NaiveDateTime};

pub(crate) const DATETIME_FMT: &str = "%d/%m/%Y %H:%M:%S";

pub(crate) fn now() -> String {
    Local::now().format(DATETIME_FMT).to_string()
}

/// Parses `%d/%m/%Y %H:%M:%S`. genv writes every timestamp in exactly
/// that shape (`24/11/2026 13:05:09`), so it is read field by field
/// without a format-string interpreter (tables print one per row); any
/// other shape that Python's strptime accepts (unpadded fields) goes
/// through chrono's parser.
pub(crate) fn parse(value: &str) -> Option<NaiveDateTime> {
    parse_fixed(value.as_bytes())
        .or_else(|| NaiveDateTime::parse_from_str(value, DATETIME_FMT).ok())
}

fn parse_fixed(b: &[u8]) -> Option<NaiveDateTime> {
    if b.len() != 19
        || b[2] != b'/'
        || b[5] != b'/'
        || b[10] != b' '
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(number(6..10)?).ok()?,
        number(3..5)?,
        number(0..2)?,
    )?;
    date.and_hms_opt(number(11..13)?, number(14..16)?, number(17..19)?)
}

/// "5 seconds ago", "1 minute ago", ... as genv 1.4.3 prints them; a
/// timestamp that does not parse, or that lies in the future (another
/// host's clock, a hand-edited file), is printed as it is rather than as a
/// negative age.
pub(crate) fn since(value: &str, now: NaiveDateTime) -> String {
    let mut out = String::new();
    write_since(&mut out, value, now);
    out
}

/// [`since`] appended to `out` (a table row).
pub(crate) fn write_since(out: &mut String, value: &str, now: NaiveDateTime) {
    match parse(value) {
        Some(then) if then <= now => ago(out, (now - then).num_seconds()),
        _ => out.push_str(value),
    }
}

pub(crate) fn local_now() -> NaiveDateTime {
    Local::now().naive_local()
}

fn ago(out: &mut String, seconds: i64) {
    let mut value = seconds;
    let mut unit = "second";
    for (amount, next) in [(60, "minute"), (60, "hour"), (24, "day"), (7, "week")] {
        if value < amount {
            break;
        }
        value = value.div_euclid(amount);
        unit = next;
    }
    out.push_str(itoa::Buffer::new().format(value));
    out.push(' ');
    out.push_str(unit);
    if value > 1 {
        out.push('s');
    }
    out.push_str(" ago");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ago(seconds: i64) -> String {
        let mut out = String::new();
        super::ago(&mut out, seconds);
        out
    }

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
    fn the_fixed_shape_and_others_parse_alike() {
        for text in [
            "24/11/2026 13:05:09",
            "01/01/1970 00:00:00",
            "29/02/2024 23:59:59",
        ] {
            assert_eq!(
                parse(text),
                NaiveDateTime::parse_from_str(text, DATETIME_FMT).ok(),
                "{text}"
            );
        }
        // Unpadded fields, as strptime accepts them.
        assert_eq!(parse("1/2/2024 3:04:05"), parse("01/02/2024 03:04:05"));
        for bad in [
            "31/02/2024 00:00:00",
            "24/11/2026 25:00:00",
            "2a/11/2026 13:05:09",
            "",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
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
