//! Durations as operators write them: `90s`, `15m`, `12h`, `30d`, `2w`.

use std::time::Duration;

/// Parses `<number><unit>` with unit `s`, `m`, `h`, `d` or `w`. A bare number is seconds.
///
/// # Errors
/// [`DurationError`] when the text is empty, not a whole number with a known unit, zero,
/// or overflows.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let bad = || DurationError(text.to_string());
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let scale: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        // A year of 365 days, as CA lifetimes are given (`init --root-ttl 10y`).
        "y" => 365 * 86_400,
        _ => return Err(bad()),
    };
    let seconds = number.checked_mul(scale).ok_or_else(bad)?;
    if seconds == 0 || seconds > 100 * 365 * 86_400 {
        return Err(bad());
    }
    Ok(Duration::from_secs(seconds))
}

/// Formats a duration the way [`parse`] reads it, in the largest exact unit.
pub fn format(duration: Duration) -> String {
    let secs = duration.as_secs();
    for (unit, scale) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= scale && secs.is_multiple_of(scale) {
            return format!("{}{unit}", secs / scale);
        }
    }
    format!("{secs}s")
}

/// Formats a span for people: `29d 23h`, `5h 02m`, `42s`; negative spans get `-`.
pub fn human(seconds: i64) -> String {
    let sign = if seconds < 0 { "-" } else { "" };
    let s = seconds.unsigned_abs();
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    if d > 0 {
        format!("{sign}{d}d {h}h")
    } else if h > 0 {
        format!("{sign}{h}h {m:02}m")
    } else if m > 0 {
        format!("{sign}{m}m {:02}s", s % 60)
    } else {
        format!("{sign}{s}s")
    }
}

/// A point in time as people and logs read it: `2026-11-26 05:41:20Z` (UTC, seconds).
pub fn timestamp(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    at.format(time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]Z"
    ))
    .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// A point in time for machines: RFC 3339 in UTC, whole seconds
/// (`2026-11-26T05:41:20Z`), the form of every time in the tools' JSON.
pub fn rfc3339(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    at.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// Reads a time written by [`timestamp`] or [`rfc3339`] (UTC, whole seconds).
pub fn parse_timestamp(text: &str) -> Option<time::OffsetDateTime> {
    let text = text.trim().replacen(' ', "T", 1);
    time::PrimitiveDateTime::parse(
        text.strip_suffix('Z')?,
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
    )
    .ok()
    .map(time::PrimitiveDateTime::assume_utc)
}

/// A duration that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {0:?}: write a positive whole number with a unit, like 90s, 15m, 12h, 30d or 2w (a bare number is seconds)"
)]
pub struct DurationError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_times_are_rfc3339_utc_and_both_forms_read_back() {
        let at = time::macros::datetime!(2026-12-03 01:11:36 +02:00);
        assert_eq!(rfc3339(at), "2026-12-02T23:11:36Z");
        assert_eq!(timestamp(at), "2026-12-02 23:11:36Z");
        assert_eq!(parse_timestamp(&rfc3339(at)), Some(at));
        assert_eq!(parse_timestamp(&timestamp(at)), Some(at));
        assert_eq!(parse_timestamp("2026-12-02 23:11:36"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn reads_every_unit() {
        assert_eq!(parse("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse("12h").unwrap(), Duration::from_secs(43_200));
        assert_eq!(parse("30d").unwrap(), Duration::from_secs(2_592_000));
        assert_eq!(parse("2w").unwrap(), Duration::from_secs(1_209_600));
        assert_eq!(parse("45").unwrap(), Duration::from_secs(45));
    }

    #[test]
    fn rejects_zero_negative_fractional_and_unknown_units() {
        for bad in [
            "",
            "0s",
            "-5m",
            "1.5h",
            "3q",
            "h",
            "99999999999999999999d",
            "1000000d",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn format_round_trips() {
        for text in ["90s", "15m", "12h", "30d"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }

    #[test]
    fn timestamps_are_utc_seconds() {
        let t = time::macros::datetime!(2026-11-26 7:41:20.5 +2);
        assert_eq!(timestamp(t), "2026-11-26 05:41:20Z");
    }

    #[test]
    fn human_spans() {
        assert_eq!(human(30 * 86_400 - 3600), "29d 23h");
        assert_eq!(human(5 * 3600 + 120), "5h 02m");
        assert_eq!(human(-42), "-42s");
    }
}
