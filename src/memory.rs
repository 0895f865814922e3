//! Memory strings as genv writes them: an integer with an optional unit,
//! `b k m g` (powers of 1000) or `ki mi gi` (powers of 1024); no unit is bytes.

use crate::error::Error;

const UNITS: [(&str, u64); 7] = [
    ("ki", 1 << 10),
    ("mi", 1 << 20),
    ("gi", 1 << 30),
    ("b", 1),
    ("k", 1_000),
    ("m", 1_000_000),
    ("g", 1_000_000_000),
];

/// Parses a memory string into bytes.
pub(crate) fn to_bytes(value: &str) -> Result<u64, Error> {
    let invalid = || Error::InvalidMemory(value.to_owned());
    let (digits, multiplier) = UNITS
        .iter()
        .find_map(|(unit, m)| value.strip_suffix(unit).map(|d| (d, *m)))
        .unwrap_or((value, 1));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(invalid)
}

/// Checks a memory string and returns it unchanged, as it is stored.
pub(crate) fn validate(value: &str) -> Result<String, Error> {
    to_bytes(value).map(|_| value.to_owned())
}

/// Bytes in whole MiB, as nvidia-smi and genv's tables print them.
pub(crate) fn to_mib(bytes: u64) -> u64 {
    bytes >> 20
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(to_bytes("42").unwrap(), 42);
        assert_eq!(to_bytes("3b").unwrap(), 3);
        assert_eq!(to_bytes("4k").unwrap(), 4_000);
        assert_eq!(to_bytes("4m").unwrap(), 4_000_000);
        assert_eq!(to_bytes("4g").unwrap(), 4_000_000_000);
        assert_eq!(to_bytes("4ki").unwrap(), 4096);
        assert_eq!(to_bytes("4mi").unwrap(), 4 << 20);
        assert_eq!(to_bytes("16gi").unwrap(), 16 << 30);
        assert_eq!(to_bytes("0").unwrap(), 0);
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            "",
            "4x",
            "-1",
            "g",
            "mi",
            "1.5g",
            "4G",
            " 4g",
            "4 g",
            "99999999999999999999g",
            "18446744073709551615g",
        ] {
            assert!(to_bytes(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn mib() {
        assert_eq!(to_mib(to_bytes("16g").unwrap()), 15258);
        assert_eq!(to_mib(to_bytes("16gi").unwrap()), 16384);
    }
}
