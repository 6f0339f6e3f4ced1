//! The two timestamp formats clients parse: ISO 8601 as EC2 writes it in
//! credential documents (`2024-01-02T03:04:05Z`, whole seconds, because
//! botocore parses it with `%Y-%m-%dT%H:%M:%SZ`) and the HTTP date of
//! `Last-Modified`. Pure functions; no locale, no time zone but UTC.

use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC calendar date and time, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Sunday.
    weekday: u32,
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Before 1970: only reachable with a broken clock; round toward the past.
        Err(e) => {
            let d = e.duration();
            let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            -whole - i64::from(d.subsec_nanos() > 0)
        }
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`, exact for every representable day).
fn civil_from_unix(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month: month as u32,
        day: day as u32,
        hour: (rem / 3600) as u32,
        minute: (rem / 60 % 60) as u32,
        second: (rem % 60) as u32,
        // 1970-01-01 was a Thursday.
        weekday: (days + 4).rem_euclid(7) as u32,
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the form of `Expiration` and `LastUpdated`.
pub fn iso8601(t: SystemTime) -> String {
    let c = civil_from_unix(unix_seconds(t));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// `YYYYMMDDTHHMMSSZ`, SigV4's `X-Amz-Date`.
pub fn amz_date(t: SystemTime) -> String {
    let c = civil_from_unix(unix_seconds(t));
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// RFC 9110 IMF-fixdate, the form of `Last-Modified`.
pub fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let c = civil_from_unix(unix_seconds(t));
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[c.weekday as usize],
        c.day,
        MONTHS[(c.month - 1) as usize],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn iso8601_known_instants() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_709_251_199, "2024-02-29T23:59:59Z"),
            (4_102_444_800, "2100-01-01T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20Z"),
        ];
        for (secs, want) in cases {
            assert_eq!(iso8601(at(secs)), want, "{secs}");
        }
    }

    #[test]
    fn amz_date_known_instant() {
        assert_eq!(amz_date(at(1_700_000_000)), "20231114T221320Z");
    }

    #[test]
    fn iso8601_drops_subseconds() {
        let t = at(1_700_000_000) + Duration::from_millis(999);
        assert_eq!(iso8601(t), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn http_date_known_instants() {
        assert_eq!(http_date(at(0)), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(at(784_111_777)), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            http_date(at(1_709_251_199)),
            "Thu, 29 Feb 2024 23:59:59 GMT"
        );
    }

    #[test]
    fn before_epoch_does_not_panic() {
        let t = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(iso8601(t), "1969-12-31T23:59:59Z");
        let t = UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(iso8601(t), "1969-12-31T23:59:58Z");
    }
}
