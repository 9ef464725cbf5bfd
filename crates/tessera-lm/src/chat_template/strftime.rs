//! `strftime` for the templates' `strftime_now(format)`, in UTC, with the C locale's names and
//! glibc's `-` (no padding) flag: enough for what chat templates ask (`"%d %b %Y"`,
//! `"%Y-%m-%d"`, `"%B %d, %Y"`, ...). Unknown conversions are copied through as glibc does.

use std::fmt::Write as _;

const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// A broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tm {
    pub year: i64,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 0 = Sunday
    pub weekday: u32,
    /// 1..=366
    pub yday: u32,
}

impl Tm {
    /// The UTC time `unix` seconds after 1970-01-01T00:00:00Z.
    pub(crate) fn from_unix(unix: i64) -> Tm {
        let days = unix.div_euclid(86_400);
        let secs = unix.rem_euclid(86_400) as u32;
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        const CUMULATIVE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
        let yday = CUMULATIVE[(month - 1) as usize] + day + u32::from(leap && month > 2);
        Tm {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
            weekday: (days + 4).rem_euclid(7) as u32,
            yday,
        }
    }
}

/// Formats `tm` with a C `strftime` format.
pub(crate) fn strftime(format: &str, tm: &Tm) -> String {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let no_pad = chars.peek() == Some(&'-');
        if no_pad {
            chars.next();
        }
        let Some(conv) = chars.next() else {
            out.push('%');
            if no_pad {
                out.push('-');
            }
            break;
        };
        let num = |out: &mut String, v: i64, width: usize, pad: char| {
            if no_pad {
                let _ = write!(out, "{v}");
            } else if pad == ' ' {
                let _ = write!(out, "{v:>width$}");
            } else {
                let _ = write!(out, "{v:0width$}");
            }
        };
        let hour12 = match tm.hour % 12 {
            0 => 12,
            h => h,
        };
        match conv {
            'a' => out.push_str(&DAYS[tm.weekday as usize][..3]),
            'A' => out.push_str(DAYS[tm.weekday as usize]),
            'b' | 'h' => out.push_str(&MONTHS[(tm.month - 1) as usize][..3]),
            'B' => out.push_str(MONTHS[(tm.month - 1) as usize]),
            'd' => num(&mut out, tm.day.into(), 2, '0'),
            'e' => num(&mut out, tm.day.into(), 2, ' '),
            'H' => num(&mut out, tm.hour.into(), 2, '0'),
            'I' => num(&mut out, hour12.into(), 2, '0'),
            'j' => num(&mut out, tm.yday.into(), 3, '0'),
            'm' => num(&mut out, tm.month.into(), 2, '0'),
            'M' => num(&mut out, tm.minute.into(), 2, '0'),
            'S' => num(&mut out, tm.second.into(), 2, '0'),
            'y' => num(&mut out, tm.year.rem_euclid(100), 2, '0'),
            'Y' => {
                let _ = write!(out, "{}", tm.year);
            }
            'p' => out.push_str(if tm.hour < 12 { "AM" } else { "PM" }),
            'u' => {
                let _ = write!(out, "{}", if tm.weekday == 0 { 7 } else { tm.weekday });
            }
            'w' => {
                let _ = write!(out, "{}", tm.weekday);
            }
            'F' => {
                let _ = write!(out, "{}-{:02}-{:02}", tm.year, tm.month, tm.day);
            }
            'T' => {
                let _ = write!(out, "{:02}:{:02}:{:02}", tm.hour, tm.minute, tm.second);
            }
            'R' => {
                let _ = write!(out, "{:02}:{:02}", tm.hour, tm.minute);
            }
            'D' => {
                let _ = write!(
                    out,
                    "{:02}/{:02}/{:02}",
                    tm.month,
                    tm.day,
                    tm.year.rem_euclid(100)
                );
            }
            'c' => {
                let _ = write!(
                    out,
                    "{} {} {:>2} {:02}:{:02}:{:02} {}",
                    &DAYS[tm.weekday as usize][..3],
                    &MONTHS[(tm.month - 1) as usize][..3],
                    tm.day,
                    tm.hour,
                    tm.minute,
                    tm.second,
                    tm.year
                );
            }
            'Z' => out.push_str("UTC"),
            'z' => out.push_str("+0000"),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            '%' => out.push('%'),
            other => {
                out.push('%');
                if no_pad {
                    out.push('-');
                }
                out.push(other);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        let tm = Tm::from_unix(1_741_356_309); // 2025-03-07 14:05:09 UTC, a Friday
        assert_eq!(
            (
                tm.year, tm.month, tm.day, tm.hour, tm.minute, tm.second, tm.weekday, tm.yday
            ),
            (2025, 3, 7, 14, 5, 9, 5, 66)
        );
        assert_eq!(Tm::from_unix(0).weekday, 4);
        let leap = Tm::from_unix(951_782_400); // 2000-02-29
        assert_eq!(
            (leap.year, leap.month, leap.day, leap.yday),
            (2000, 2, 29, 60)
        );
        let before = Tm::from_unix(-1);
        assert_eq!(
            (before.year, before.month, before.day, before.hour),
            (1969, 12, 31, 23)
        );
    }

    #[test]
    fn formats() {
        let tm = Tm::from_unix(1_741_356_309);
        assert_eq!(strftime("%d %b %Y", &tm), "07 Mar 2025");
        assert_eq!(strftime("%Y-%m-%d", &tm), "2025-03-07");
        assert_eq!(
            strftime("%A, %B %-d, %Y %I:%M %p", &tm),
            "Friday, March 7, 2025 02:05 PM"
        );
        assert_eq!(strftime("%j %e %% %q", &tm), "066  7 % %q");
    }
}
