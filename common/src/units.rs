//! Sizes and rates as people type them (`500M`, `2G`, `1.5GiB`, `50M` for 50 MB/s) and as
//! output prints them: one unit system, binary, for both (`1.5 GiB`, `219 MiB/s`), so a
//! size divided by a time reads as the rate printed beside it.

/// The text is not a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {0:?}: expected bytes or a number with K, M, G or T (e.g. 500M, 2G, 1.5GiB)")]
pub struct SizeParseError(pub String);

/// Parses a byte count: a plain number, or a number with a decimal (`K`, `M`, `G`, `T`, with
/// an optional `B`) or binary (`KiB`, `MiB`, `GiB`, `TiB`) suffix. Case-insensitive.
///
/// # Errors
/// [`SizeParseError`] for anything else, negative values, or values past `u64::MAX`.
pub fn parse_size(text: &str) -> Result<u64, SizeParseError> {
    let err = || SizeParseError(crate::names::printable(text, 40));
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return Err(err());
    }
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(err()),
    };
    if let Ok(whole) = num.parse::<u64>() {
        return whole.checked_mul(mult).ok_or_else(err);
    }
    let value: f64 = num.parse().map_err(|_| err())?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes.round() as u64)
}

/// The text is not a rate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateParseError {
    /// The number and unit are not a size.
    #[error(transparent)]
    Size(#[from] SizeParseError),
    /// Zero would stall every transfer.
    #[error("a rate must be more than 0 bytes per second")]
    Zero,
}

/// Parses a rate in bytes per second: a size as [`parse_size`] reads it, with an optional
/// `/s` suffix (`50M` and `50MB/s` are both 50 MB/s).
///
/// # Errors
/// [`RateParseError::Size`] when the rest is not a size, [`RateParseError::Zero`] for zero.
pub fn parse_rate(text: &str) -> Result<u64, RateParseError> {
    let t = text.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    match parse_size(t)? {
        0 => Err(RateParseError::Zero),
        v => Ok(v),
    }
}

/// `1536` → `1.5 KiB`: binary units, as file managers show sizes.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if v < 10.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.0} {}", UNITS[u])
    }
}

/// `230_000_000` → `219 MiB/s`: the units of [`format_size`], per second.
pub fn format_rate(bytes_per_sec: f64) -> String {
    const UNITS: [&str; 6] = ["B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s", "PiB/s"];
    let mut v = bytes_per_sec.max(0.0);
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if v < 10.0 && u > 0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.0} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_people_type() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("500M"), Ok(500_000_000));
        assert_eq!(parse_size("2G"), Ok(2_000_000_000));
        assert_eq!(parse_size("2gb"), Ok(2_000_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(1_610_612_736));
        assert_eq!(parse_size("64 KiB"), Ok(65_536));
        for bad in [
            "",
            "M",
            "-1",
            "1.2.3",
            "5X",
            ".5M",
            "99999999999999999999",
            "1e9",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("20000000T").is_err());
    }

    #[test]
    fn parses_rates_with_or_without_per_second() {
        assert_eq!(parse_rate("50M"), Ok(50_000_000));
        assert_eq!(parse_rate("2MB/s"), Ok(2_000_000));
        assert_eq!(parse_rate(" 1.5GiB/s "), Ok(1_610_612_736));
        assert_eq!(parse_rate("0"), Err(RateParseError::Zero));
        assert_eq!(parse_rate("0K/s"), Err(RateParseError::Zero));
        assert_eq!(
            parse_rate("0").unwrap_err().to_string(),
            "a rate must be more than 0 bytes per second"
        );
        for bad in ["fast", "", "/s", "5M/s/s", "-1/s", "5/m"] {
            assert!(
                matches!(parse_rate(bad), Err(RateParseError::Size(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn formats_for_tables() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(64 << 20), "64 MiB");
        assert_eq!(format_rate(230e6), "219 MiB/s");
        assert_eq!(format_rate(1.5 * f64::from(1u32 << 30)), "1.5 GiB/s");
        assert_eq!(format_rate(999.0), "999 B/s");
        assert_eq!(format_rate(1536.0), "1.5 KiB/s");
    }
}
