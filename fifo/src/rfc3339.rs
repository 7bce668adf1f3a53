//! A minimal RFC 3339 formatter and parser for UTC timestamps, so that the crate needs no
//! date library. Dates are proleptic Gregorian; conversion uses Howard Hinnant's
//! days-from-civil / civil-from-days algorithms.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

const SECS_PER_DAY: i64 = 86_400;
/// 0000-01-01T00:00:00Z, the first instant with a four-digit year.
const MIN_SECS: i64 = -62_167_219_200;
/// 9999-12-31T23:59:59Z, the last second with a four-digit year.
const MAX_SECS: i64 = 253_402_300_799;

/// Days since 1970-01-01 of the civil date `y-m-d` (`m` in 1..=12, `d` in 1..=31).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let mp = i64::from((m + 9) % 12); // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The civil date `(y, m, d)` of `days` since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    // Both are small and positive (m in [1, 12], d in [1, 31]), so the conversions hold.
    (y, small_u32(m), small_u32(d))
}

fn small_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// `t` as RFC 3339 UTC with nanoseconds, e.g. `"2026-11-23T03:24:45.123456789Z"`.
/// Times outside years 0000–9999 are clamped to that range (RFC 3339 has four-digit years),
/// so the result always parses back with [`parse`].
pub fn format(t: SystemTime) -> String {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(before) => {
            let d = before.duration();
            let s = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => (-s, 0),
                n => (-s - 1, 1_000_000_000 - n),
            }
        }
    };
    let (secs, nanos) = if secs < MIN_SECS {
        (MIN_SECS, 0)
    } else if secs > MAX_SECS {
        (MAX_SECS, 999_999_999)
    } else {
        (secs, nanos)
    };
    let (y, m, d) = civil_from_days(secs.div_euclid(SECS_PER_DAY));
    let sod = secs.rem_euclid(SECS_PER_DAY);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// A cursor over the bytes of a timestamp.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Exactly `n` ASCII digits as a number.
    fn digits(&mut self, n: usize, what: &'static str) -> std::result::Result<u32, &'static str> {
        let end = self.pos.checked_add(n).ok_or(what)?;
        let s = self.bytes.get(self.pos..end).ok_or(what)?;
        let mut v: u32 = 0;
        for &b in s {
            if !b.is_ascii_digit() {
                return Err(what);
            }
            v = v * 10 + u32::from(b - b'0');
        }
        self.pos = end;
        Ok(v)
    }

    fn byte(&mut self, accept: &[u8], what: &'static str) -> std::result::Result<u8, &'static str> {
        match self.peek() {
            Some(b) if accept.contains(&b) => {
                self.pos += 1;
                Ok(b)
            }
            _ => Err(what),
        }
    }
}

/// Parses an RFC 3339 timestamp: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; 't' and 'z'
/// may be lower case. Fraction digits beyond nanoseconds are ignored; leap seconds (":60")
/// are rejected. Errors: `Error::BadTimestamp` with the text and the reason.
pub fn parse(text: &str) -> Result<SystemTime> {
    parse_inner(text).map_err(|reason| Error::BadTimestamp {
        text: crate::error::snippet(text),
        reason,
    })
}

fn parse_inner(text: &str) -> std::result::Result<SystemTime, &'static str> {
    let mut c = Cursor {
        bytes: text.as_bytes(),
        pos: 0,
    };
    let year = c.digits(4, "expected a four-digit year")?;
    c.byte(b"-", "expected '-' after the year")?;
    let month = c.digits(2, "expected a two-digit month")?;
    c.byte(b"-", "expected '-' after the month")?;
    let day = c.digits(2, "expected a two-digit day")?;
    c.byte(b"Tt", "expected 'T' after the date")?;
    let hour = c.digits(2, "expected a two-digit hour")?;
    c.byte(b":", "expected ':' after the hour")?;
    let minute = c.digits(2, "expected two-digit minutes")?;
    c.byte(b":", "expected ':' after the minutes")?;
    let second = c.digits(2, "expected two-digit seconds")?;

    let mut nanos: u32 = 0;
    if c.peek() == Some(b'.') {
        c.pos += 1;
        let mut count = 0usize;
        while let Some(b) = c.peek().filter(u8::is_ascii_digit) {
            if count < 9 {
                nanos = nanos * 10 + u32::from(b - b'0');
            }
            count += 1;
            c.pos += 1;
        }
        if count == 0 {
            return Err("expected digits after '.'");
        }
        for _ in count..9 {
            nanos *= 10;
        }
    }

    let zone = c.byte(b"Zz+-", "expected 'Z' or a UTC offset")?;
    let offset_secs: i64 = match zone {
        b'+' | b'-' => {
            let sign = if zone == b'-' { -1 } else { 1 };
            let oh = c.digits(2, "expected a two-digit offset hour")?;
            c.byte(b":", "expected ':' in the UTC offset")?;
            let om = c.digits(2, "expected two-digit offset minutes")?;
            if oh > 23 || om > 59 {
                return Err("UTC offset out of range");
            }
            sign * (i64::from(oh) * 3600 + i64::from(om) * 60)
        }
        _ => 0,
    };
    if c.pos != c.bytes.len() {
        return Err("unexpected characters after the timestamp");
    }

    let year = i64::from(year);
    if !(1..=12).contains(&month) {
        return Err("month out of range");
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err("day out of range for that month");
    }
    if hour > 23 || minute > 59 {
        return Err("time of day out of range");
    }
    if second > 59 {
        return Err("seconds out of range (leap seconds are not supported)");
    }
    let secs = days_from_civil(year, month, day) * SECS_PER_DAY
        + i64::from(hour) * 3600
        + i64::from(minute) * 60
        + i64::from(second)
        - offset_secs;
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs.unsigned_abs(), nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
    };
    t.ok_or("out of the range this system can represent")
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
        // Every day from 1900 to 2200 converts both ways.
        let first = days_from_civil(1900, 1, 1);
        let last = days_from_civil(2200, 12, 31);
        let mut prev = civil_from_days(first - 1);
        for days in first..=last {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            assert!(d >= 1 && d <= days_in_month(y, m));
            assert!((y, m, d) > prev);
            prev = (y, m, d);
        }
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
            "2024-01-01 00:00:00Z",
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
