//! Human-readable ages (kubectl's AGE column) and RFC 3339 timestamps in UTC.
//!
//! Everything here is plain `std`: the calendar arithmetic converts between
//! day counts since the Unix epoch and proleptic Gregorian dates directly, so
//! no time-zone database is needed. Only UTC is ever *printed*; parsing
//! accepts any numeric offset and converts it to UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
const SECONDS_PER_DAY: i64 = 86_400;

/// Formats a duration the way kubectl prints the AGE column.
///
/// The precision shrinks as the duration grows: `"45s"`, `"5m3s"`, `"42m"`,
/// `"3h5m"`, `"20h"`, `"3d4h"`, `"120d"`, `"2y45d"`, `"9y"`. Sub-second parts
/// are ignored, so a zero duration prints `"0s"`.
///
/// The thresholds are:
/// * under 2 minutes: seconds (`"119s"`);
/// * under 10 minutes: minutes and seconds (`"5m3s"`, or `"5m"` on a whole minute);
/// * under 3 hours: minutes (`"179m"`);
/// * under 8 hours: hours and minutes (`"7h59m"`, or `"7h"` on a whole hour);
/// * under 2 days: hours (`"47h"`);
/// * under 8 days: days and hours (`"7d23h"`, or `"7d"` on a whole day);
/// * under 2 years (of 365 days): days (`"729d"`);
/// * under 8 years: years and days (`"7y364d"`, or `"7y"`);
/// * otherwise years (`"8y"`).
///
/// A [`Duration`] cannot be negative; to format the age of an object whose
/// creation time may lie in the future (clock skew), use [`human_age`].
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 2 * MINUTE {
        return format!("{seconds}s");
    }
    let minutes = seconds / MINUTE;
    if minutes < 10 {
        let s = seconds % MINUTE;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 3 * 60 {
        return format!("{minutes}m");
    }
    let hours = seconds / HOUR;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = seconds / DAY;
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        let dy = days % 365;
        return if dy == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{dy}d")
        };
    }
    format!("{years}y")
}

/// Formats the age of something created at `created`, as seen at `now`.
///
/// This is [`human_duration`] of `now - created`, with kubectl's tolerance for
/// clock skew: a creation time less than two whole seconds in the future
/// prints `"0s"`, one further in the future prints `"<invalid>"`.
pub fn human_age(created: SystemTime, now: SystemTime) -> String {
    match now.duration_since(created) {
        Ok(age) => human_duration(age),
        Err(skew) if skew.duration().as_secs() < 2 => "0s".to_string(),
        Err(_) => "<invalid>".to_string(),
    }
}

/// Formats `t` as an RFC 3339 timestamp in UTC with whole seconds, e.g.
/// `"2026-11-27T19:00:00Z"`.
///
/// Fractions of a second are truncated (towards the past), as Kubernetes does
/// for `metadata.creationTimestamp`. Years outside 0000..=9999 are printed
/// with more digits or a leading `-`, which RFC 3339 itself cannot express.
pub fn format_rfc3339_utc(t: SystemTime) -> String {
    let secs: i64 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let before = e.duration();
            let whole = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            // Round towards the past: 0.5 s before the epoch is 23:59:59.
            if before.subsec_nanos() > 0 {
                -whole - 1
            } else {
                -whole
            }
        }
    };
    let days = secs.div_euclid(SECONDS_PER_DAY);
    let second_of_day = secs.rem_euclid(SECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let (hh, mm, ss) = (
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
    );
    format!("{year:04}-{month:02}-{day:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// Parses an RFC 3339 timestamp such as `"2026-11-27T19:00:00Z"`,
/// `"2026-11-27T20:00:00.25+01:00"` or `"2026-11-27t19:00:00z"` into a point in
/// time.
///
/// The offset may be `Z` (either case) or `±HH:MM`; the result is the same
/// instant expressed in UTC. Fractional seconds of any length are accepted and
/// kept to nanosecond precision (further digits are truncated). Returns `None`
/// for anything else: a missing offset, out-of-range fields (including
/// February 29 in a non-leap year and leap second `:60`), or surrounding
/// whitespace.
pub fn parse_rfc3339_utc(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let year = digits(b, 0, 4)? as i64;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let second = digits(b, 17, 2)?;
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }

    let mut pos = 19;
    let mut nanos: u32 = 0;
    if b[pos] == b'.' {
        pos += 1;
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            if pos - start < 9 {
                nanos = nanos * 10 + u32::from(b[pos] - b'0');
            }
            pos += 1;
        }
        let len = pos - start;
        if len == 0 {
            return None;
        }
        for _ in len..9 {
            nanos *= 10;
        }
    }

    let offset_secs: i64 = match &b[pos..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] if rest.len() == 5 && rest[2] == b':' => {
            let oh = digits(rest, 0, 2)?;
            let om = digits(rest, 3, 2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let off = i64::from(oh * 3600 + om * 60);
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };

    let local = days_from_civil(year, month, day) * SECONDS_PER_DAY
        + i64::from(hour * 3600 + minute * 60 + second);
    let utc = local - offset_secs;
    let base = if utc >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(utc.unsigned_abs()))?
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(utc.unsigned_abs()))?
    };
    base.checked_add(Duration::from_nanos(u64::from(nanos)))
}

/// Reads `len` ASCII digits starting at `start`.
fn digits(b: &[u8], start: usize, len: usize) -> Option<u32> {
    let slice = b.get(start..start + len)?;
    slice.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
///
/// Years are shifted to start on March 1 so that the leap day is the last day
/// of the shifted year; the calendar then repeats every 400 years (146 097
/// days), which keeps all divisions on non-negative numbers.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400; // 0..=399
    let m = i64::from(month);
    let shifted_month = if m > 2 { m - 3 } else { m + 9 }; // March = 0
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1; // 0..=365
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719 468 days separate 0000-03-01 from 1970-01-01.
    era * 146_097 + day_of_era - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month, day) of a day count.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097; // 0..=146_096
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // March = 0
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn human_duration_table() {
        let m = 60;
        let h = 60 * m;
        let d = 24 * h;
        let y = 365 * d;
        let cases: &[(u64, &str)] = &[
            (0, "0s"),
            (1, "1s"),
            (59, "59s"),
            (60, "60s"),
            (119, "119s"),
            (120, "2m"),
            (121, "2m1s"),
            (5 * m, "5m"),
            (5 * m + 3, "5m3s"),
            (10 * m - 1, "9m59s"),
            (10 * m, "10m"),
            (10 * m + 59, "10m"),
            (42 * m, "42m"),
            (3 * h - 1, "179m"),
            (3 * h, "3h"),
            (3 * h + 5 * m, "3h5m"),
            (3 * h + 5 * m + 59, "3h5m"),
            (8 * h - 1, "7h59m"),
            (8 * h, "8h"),
            (20 * h + 59 * m, "20h"),
            (48 * h - 1, "47h"),
            (48 * h, "2d"),
            (3 * d + 4 * h, "3d4h"),
            (3 * d + 4 * h + 59 * m, "3d4h"),
            (8 * d - 1, "7d23h"),
            (8 * d, "8d"),
            (120 * d, "120d"),
            (2 * y - 1, "729d"),
            (2 * y, "2y"),
            (2 * y + 45 * d, "2y45d"),
            (8 * y - 1, "7y364d"),
            (8 * y, "8y"),
            (9 * y + 200 * d, "9y"),
            (100 * y, "100y"),
        ];
        for &(s, want) in cases {
            assert_eq!(human_duration(secs(s)), want, "{s} seconds");
        }
    }

    #[test]
    fn human_duration_ignores_subseconds() {
        assert_eq!(human_duration(Duration::from_millis(999)), "0s");
        assert_eq!(human_duration(Duration::from_millis(119_999)), "119s");
        assert_eq!(human_duration(Duration::new(300, 999_999_999)), "5m");
    }

    #[test]
    fn human_age_handles_skew() {
        let now = UNIX_EPOCH + secs(1_000_000);
        assert_eq!(human_age(now, now), "0s");
        assert_eq!(human_age(now - secs(90), now), "90s");
        assert_eq!(human_age(now + Duration::from_millis(1999), now), "0s");
        assert_eq!(human_age(now + secs(2), now), "<invalid>");
        assert_eq!(human_age(now + secs(3600), now), "<invalid>");
    }

    #[test]
    fn format_known_instants() {
        let cases: &[(i64, &str)] = &[
            (0, "1970-01-01T00:00:00Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (1_795_806_000, "2026-11-27T19:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
            (13_574_608_496, "2400-02-29T12:34:56Z"),
            (1_709_251_199, "2024-02-29T23:59:59Z"),
            (2_147_483_647, "2038-01-19T03:14:07Z"),
            (-2_208_988_800, "1900-01-01T00:00:00Z"),
            (-62_135_596_800, "0001-01-01T00:00:00Z"),
            (253_402_300_799, "9999-12-31T23:59:59Z"),
        ];
        for &(s, want) in cases {
            let t = at(s);
            assert_eq!(format_rfc3339_utc(t), want);
            assert_eq!(parse_rfc3339_utc(want), Some(t), "{want}");
        }
    }

    fn at(s: i64) -> SystemTime {
        if s >= 0 {
            UNIX_EPOCH + secs(s as u64)
        } else {
            UNIX_EPOCH - secs(s.unsigned_abs())
        }
    }

    #[test]
    fn format_truncates_subseconds() {
        let t = UNIX_EPOCH + Duration::new(1_795_806_000, 999_999_999);
        assert_eq!(format_rfc3339_utc(t), "2026-11-27T19:00:00Z");
        let t = UNIX_EPOCH - Duration::from_millis(500);
        assert_eq!(format_rfc3339_utc(t), "1969-12-31T23:59:59Z");
        let t = UNIX_EPOCH - Duration::from_millis(1000);
        assert_eq!(format_rfc3339_utc(t), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn parse_offsets_and_fractions() {
        let base = at(1_795_806_000); // 2026-11-27T19:00:00Z
        let same = [
            "2026-11-27T19:00:00Z",
            "2026-11-27t19:00:00z",
            "2026-11-27T19:00:00+00:00",
            "2026-11-27T19:00:00-00:00",
            "2026-11-27T20:00:00+01:00",
            "2026-11-28T04:30:00+09:30",
            "2026-11-27T14:00:00-05:00",
            "2026-11-26T19:01:00-23:59",
            "2026-11-27T19:00:00.000Z",
        ];
        for s in same {
            assert_eq!(parse_rfc3339_utc(s), Some(base), "{s}");
        }
        assert_eq!(
            parse_rfc3339_utc("2026-11-27T19:00:00.5Z"),
            Some(base + Duration::from_millis(500))
        );
        assert_eq!(
            parse_rfc3339_utc("2026-11-27T19:00:00.123456789Z"),
            Some(base + Duration::from_nanos(123_456_789))
        );
        assert_eq!(
            parse_rfc3339_utc("2026-11-27T19:00:00.1234567891234+00:00"),
            Some(base + Duration::from_nanos(123_456_789))
        );
        assert_eq!(
            parse_rfc3339_utc("1969-12-31T23:59:59.25Z"),
            Some(UNIX_EPOCH - Duration::from_millis(750))
        );
        // Offsets that cross a year boundary.
        assert_eq!(
            parse_rfc3339_utc("2027-01-01T01:00:00+02:00"),
            parse_rfc3339_utc("2026-12-31T23:00:00Z")
        );
    }

    #[test]
    fn parse_rejects_malformed() {
        let bad = [
            "",
            "2026-11-27",
            "2026-11-27T19:00:00",
            "2026-11-27 19:00:00Z",
            "2026-11-27T19:00Z",
            "2026-11-27T19:00:00ZZ",
            " 2026-11-27T19:00:00Z",
            "2026-11-27T19:00:00Z ",
            "2026-11-27T19:00:00.Z",
            "2026-11-27T19:00:00+0100",
            "2026-11-27T19:00:00+01",
            "2026-11-27T19:00:00+24:00",
            "2026-11-27T19:00:00+01:60",
            "2026-13-27T19:00:00Z",
            "2026-00-27T19:00:00Z",
            "2026-11-00T19:00:00Z",
            "2026-11-31T19:00:00Z",
            "2026-02-29T19:00:00Z",
            "2100-02-29T00:00:00Z",
            "2026-11-27T24:00:00Z",
            "2026-11-27T19:60:00Z",
            "2026-11-27T19:00:60Z",
            "2026/11/27T19:00:00Z",
            "+026-11-27T19:00:00Z",
            "2026-1a-27T19:00:00Z",
            "2026-11-27T19:00:00.12a Z",
        ];
        for s in bad {
            assert_eq!(parse_rfc3339_utc(s), None, "{s:?}");
        }
        // Leap days that do exist.
        assert!(parse_rfc3339_utc("2000-02-29T00:00:00Z").is_some());
        assert!(parse_rfc3339_utc("2024-02-29T00:00:00Z").is_some());
        assert!(parse_rfc3339_utc("2400-02-29T00:00:00Z").is_some());
    }

    #[test]
    fn round_trips_over_many_timestamps() {
        // About 20 000 instants spread over years 0001..9999, with odd strides so
        // that every month, day and time-of-day field gets exercised.
        let start = -62_135_596_800i64;
        let end = 253_402_300_799i64;
        let stride = 15_778_463; // ~half a year, not a multiple of a day or hour
        let mut s = start;
        while s <= end {
            let t = at(s);
            let text = format_rfc3339_utc(t);
            assert_eq!(parse_rfc3339_utc(&text), Some(t), "{s} -> {text}");
            s += stride;
        }
        // Every second around some interesting boundaries.
        for centre in [
            0i64,
            951_782_400,
            4_107_542_400,
            1_709_251_199,
            13_574_608_496,
        ] {
            for s in centre - 90_000..centre + 90_000 {
                if s % 97 != 0 && (s - centre).abs() > 100 {
                    continue;
                }
                let t = at(s);
                assert_eq!(parse_rfc3339_utc(&format_rfc3339_utc(t)), Some(t));
            }
        }
    }

    #[test]
    fn civil_arithmetic_matches_naive_day_counting() {
        // Walk day by day from 1600-01-01 to 2500-12-31 and compare.
        let mut days = days_from_civil(1600, 1, 1);
        for year in 1600..=2500 {
            for month in 1..=12 {
                for day in 1..=days_in_month(year, month) {
                    assert_eq!(
                        days_from_civil(year, month, day),
                        days,
                        "{year}-{month}-{day}"
                    );
                    assert_eq!(civil_from_days(days), (year, month, day));
                    days += 1;
                }
            }
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
    }

    #[test]
    fn leap_years() {
        assert!(is_leap_year(2000));
        assert!(is_leap_year(2024));
        assert!(is_leap_year(2400));
        assert!(!is_leap_year(1900));
        assert!(!is_leap_year(2100));
        assert!(!is_leap_year(2026));
        // 2024-02-28 + 1 day is Feb 29; 2026-02-28 + 1 day is Mar 1.
        assert_eq!(
            civil_from_days(days_from_civil(2024, 2, 28) + 1),
            (2024, 2, 29)
        );
        assert_eq!(
            civil_from_days(days_from_civil(2026, 2, 28) + 1),
            (2026, 3, 1)
        );
    }
}
