//! RFC 3339 timestamps, read and written through the `time` crate: the one format the
//! process-directory contract (`exitcode`), containerd's `exit.json` and logrus lines use.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::error::{Error, Result};

/// 0000-01-01T00:00:00Z, the first instant with a four-digit year.
const MIN_SECS: i64 = -62_167_219_200;
/// 9999-12-31T23:59:59Z, the last second with a four-digit year.
const MAX_SECS: i64 = 253_402_300_799;

/// `t` as RFC 3339 UTC with nanoseconds, e.g. `"2026-11-23T03:24:45.123456789Z"`.
/// Times outside years 0000–9999 are clamped to that range (RFC 3339 has four-digit years),
/// so the result always parses back with [`parse`].
pub fn format(t: SystemTime) -> String {
    let nanos: i128 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(before) => i128::try_from(before.duration().as_nanos()).map_or(i128::MIN, |n| -n),
    };
    const NANOS: i128 = 1_000_000_000;
    let nanos = nanos.clamp(
        i128::from(MIN_SECS) * NANOS,
        i128::from(MAX_SECS) * NANOS + (NANOS - 1),
    );
    let Ok(at) = OffsetDateTime::from_unix_timestamp_nanos(nanos) else {
        // The clamp keeps `nanos` inside what the crate represents (years -9999..=9999).
        return "0000-01-01T00:00:00.000000000Z".to_string();
    };
    at.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
    ))
    .unwrap_or_else(|_| "0000-01-01T00:00:00.000000000Z".to_string())
}

/// Parses an RFC 3339 timestamp: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; 't' and 'z'
/// may be lower case. Errors: `Error::BadTimestamp` with the text and the reason.
pub fn parse(text: &str) -> Result<SystemTime> {
    let bad = |reason: String| Error::BadTimestamp {
        text: crate::error::snippet(text),
        reason,
    };
    let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| bad(e.to_string()))?;
    let (secs, nanos) = (at.unix_timestamp(), at.nanosecond());
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs.unsigned_abs(), nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
    };
    t.ok_or_else(|| bad("out of the range this system can represent".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, nanos: u32) -> SystemTime {
        if let Ok(secs) = u64::try_from(secs) {
            UNIX_EPOCH + Duration::new(secs, nanos)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
                + Duration::from_nanos(nanos.into())
        }
    }

    #[test]
    fn known_dates() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000000Z"),
            (1_795_404_285, 123_456_789, "2026-11-23T03:24:45.123456789Z"),
            (1_709_208_000, 0, "2024-02-29T12:00:00.000000000Z"),
            (951_782_400, 0, "2000-02-29T00:00:00.000000000Z"),
            (4_107_542_399, 1, "2100-02-28T23:59:59.000000001Z"),
            (4_107_542_400, 0, "2100-03-01T00:00:00.000000000Z"),
            (-1, 500_000_000, "1969-12-31T23:59:59.500000000Z"),
            (MIN_SECS, 0, "0000-01-01T00:00:00.000000000Z"),
            (MAX_SECS, 999_999_999, "9999-12-31T23:59:59.999999999Z"),
        ];
        for (secs, nanos, text) in cases {
            let t = at(secs, nanos);
            assert_eq!(format(t), text);
            assert_eq!(parse(text).unwrap(), t, "{text}");
        }
    }

    #[test]
    fn every_day_round_trips() {
        // Every day from 1900 to 2200, at 12:34:56.789: formatted, parsed back to the same
        // instant, and the texts in order.
        let first = -2_208_988_800; // 1900-01-01T00:00:00Z
        let last = 7_289_654_400; // 2201-01-01T00:00:00Z
        let mut prev = String::new();
        for day in (first..last).step_by(86_400) {
            let t = at(day + 45_296, 789_000_000);
            let text = format(t);
            assert_eq!(parse(&text).unwrap(), t, "{text}");
            assert!(text > prev, "{text} after {prev}");
            prev = text;
        }
        assert_eq!(prev, "2200-12-31T12:34:56.789000000Z");
    }

    #[test]
    fn clamps_out_of_range() {
        assert_eq!(
            format(at(MIN_SECS - 10, 5)),
            "0000-01-01T00:00:00.000000000Z"
        );
        assert_eq!(
            format(at(MAX_SECS + 10, 5)),
            "9999-12-31T23:59:59.999999999Z"
        );
    }

    #[test]
    fn parses_variants() {
        let t = at(1_709_208_000, 0);
        assert_eq!(parse("2024-02-29T12:00:00Z").unwrap(), t);
        assert_eq!(parse("2024-02-29t12:00:00z").unwrap(), t);
        // RFC 3339 lets a space stand for the 'T' (section 5.6); the time crate takes it.
        assert_eq!(parse("2024-02-29 12:00:00Z").unwrap(), t);
        assert_eq!(parse("2024-02-29T13:30:00+01:30").unwrap(), t);
        assert_eq!(parse("2024-02-29T07:00:00-05:00").unwrap(), t);
        assert_eq!(
            parse("2024-02-29T12:00:00.5Z").unwrap(),
            at(1_709_208_000, 500_000_000)
        );
        assert_eq!(
            parse("2024-02-29T12:00:00.1234567891234Z").unwrap(),
            at(1_709_208_000, 123_456_789)
        );
    }

    #[test]
    fn rejects_garbage() {
        for text in [
            "",
            "garbage",
            "2024",
            "2024-02-30T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-00-01T00:00:00Z",
            "2024-01-00T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:60:00Z",
            "2024-01-01T00:00:60Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00Zjunk",
            "2024-01-01T00:00:00+1:00",
            "2024-01-01T00:00:00+24:00",
            "+024-01-01T00:00:00Z",
            "2024-1-01T00:00:00Z",
            "２０２４-01-01T00:00:00Z",
        ] {
            match parse(text) {
                Err(Error::BadTimestamp { .. }) => {}
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }
}
