//! Maintenance windows: when the agent may activate a new generation (and, with
//! `reboot = "window"`, reboot).
//!
//! A window is text: days, a space, a time range, in the host's time zone
//! (`time-zone`, default the system's):
//!
//! ```text
//! Mon-Fri 02:00-04:00     weekdays, two hours from 02:00
//! Sat,Sun 22:00-02:00     crosses midnight: Saturday 22:00 to Sunday 02:00, and
//!                         Sunday 22:00 to Monday 02:00
//! daily 03:00-03:30       every day (also `*`)
//! Wed 00:00-24:00         all of Wednesday
//! ```
//!
//! Days are `Mon` … `Sun` (or full English names, any case), comma-separated, each a
//! day or a range (`Fri-Mon` wraps). Times are `HH:MM` or `HH:MM:SS`. The range's start is inside the window, its end
//! is not. A window whose start equals its end would never open and is refused, like
//! any text that does not parse, with the setting's name.

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// Why a window could not be read.
#[derive(Debug, thiserror::Error)]
#[error(
    "{field} = {text:?}: {why}; write a window like \"Mon-Fri 02:00-04:00\", \"Sat,Sun 22:00-02:00\" or \"daily 03:00-03:30\""
)]
pub struct WindowError {
    field: String,
    text: String,
    why: String,
}

/// One maintenance window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// The days it opens on (index 0 = Monday).
    days: [bool; 7],
    /// Seconds after midnight it opens.
    start: u32,
    /// Seconds after midnight it closes (86400 = midnight at the end of the day); at
    /// or before `start` when it crosses midnight.
    end: u32,
    text: String,
}

const DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

fn day(text: &str) -> Option<usize> {
    let t = text.to_ascii_lowercase();
    DAYS.iter()
        .position(|d| t.len() >= 3 && d.starts_with(t.as_str()) && (t.len() == 3 || *d == t))
}

const DAY: u32 = 24 * 3600;

fn seconds(text: &str) -> Option<u32> {
    let mut parts = text.split(':');
    let h: u32 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let s: u32 = match parts.next() {
        Some(s) => s.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() || m >= 60 || s >= 60 {
        return None;
    }
    let t = h * 3600 + m * 60 + s;
    (t <= DAY).then_some(t)
}

fn index(w: Weekday) -> usize {
    w.to_monday_zero_offset() as usize
}

impl Window {
    /// Parses `text` (see the module docs); `field` names the setting in errors.
    pub fn parse(field: &str, text: &str) -> Result<Self, WindowError> {
        let err = |why: &str| WindowError {
            field: field.to_owned(),
            text: text.to_owned(),
            why: why.to_owned(),
        };
        let (days_text, range) = text
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| err("days and a time range are needed"))?;
        let mut days = [false; 7];
        if matches!(days_text.to_ascii_lowercase().as_str(), "daily" | "*") {
            days = [true; 7];
        } else {
            for part in days_text.split(',') {
                let (a, b) = part.split_once('-').unwrap_or((part, part));
                let (Some(a), Some(b)) = (day(a), day(b)) else {
                    return Err(err(&format!("{part:?} is not a day or a range of days")));
                };
                let mut d = a;
                loop {
                    days[d] = true;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
        }
        let (start, end) = range
            .trim()
            .split_once('-')
            .ok_or_else(|| err("the time range needs a start and an end, HH:MM-HH:MM"))?;
        let (Some(start), Some(end)) = (seconds(start.trim()), seconds(end.trim())) else {
            return Err(err("times are HH:MM or HH:MM:SS, from 00:00 to 24:00"));
        };
        if start == DAY {
            return Err(err("a window cannot start at 24:00"));
        }
        if start == end {
            return Err(err("it starts where it ends, so it would never open"));
        }
        Ok(Self {
            days,
            start,
            end,
            text: text.trim().to_owned(),
        })
    }

    /// Whether the window is open at the zoned time `at`.
    pub fn is_open(&self, at: &Zoned) -> bool {
        let d = index(at.weekday());
        let m = at.hour() as u32 * 3600 + at.minute() as u32 * 60 + at.second() as u32;
        if self.start < self.end {
            self.days[d] && m >= self.start && m < self.end
        } else {
            // Crosses midnight: the evening of an opening day, or the morning after.
            (self.days[d] && m >= self.start) || (self.days[(d + 6) % 7] && m < self.end)
        }
    }

    /// The first time at or after `from` when the window opens (or `from` itself
    /// when it is open).
    pub fn next_open(&self, from: &Zoned) -> Option<Zoned> {
        if self.is_open(from) {
            return Some(from.clone());
        }
        let start = Time::new(
            (self.start / 3600) as i8,
            (self.start / 60 % 60) as i8,
            (self.start % 60) as i8,
            0,
        )
        .ok()?;
        (0..8).find_map(|offset| {
            let date = from
                .date()
                .checked_add(jiff::Span::new().days(offset))
                .ok()?;
            let z = date
                .to_datetime(start)
                .to_zoned(from.time_zone().clone())
                .ok()?;
            (self.days[index(z.weekday())] && z >= *from).then_some(z)
        })
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The host's windows and time zone. No windows: always open.
#[derive(Clone, Debug)]
pub struct Windows {
    /// The windows; empty means no restriction.
    pub windows: Vec<Window>,
    /// The zone their times are in.
    pub tz: TimeZone,
}

impl Windows {
    /// Parses `texts` as the setting `field`.
    pub fn parse(field: &str, texts: &[String], tz: TimeZone) -> Result<Self, WindowError> {
        let windows = texts
            .iter()
            .enumerate()
            .map(|(i, t)| Window::parse(&format!("{field}[{i}]"), t))
            .collect::<Result<_, _>>()?;
        Ok(Self { windows, tz })
    }

    /// Whether activation may happen at `now`: no windows, or one is open.
    pub fn is_open(&self, now: Timestamp) -> bool {
        let z = now.to_zoned(self.tz.clone());
        self.windows.is_empty() || self.windows.iter().any(|w| w.is_open(&z))
    }

    /// When the next window opens (`now` when one is open; `None` without windows).
    pub fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        let z = now.to_zoned(self.tz.clone());
        self.windows
            .iter()
            .filter_map(|w| w.next_open(&z))
            .map(|z| z.timestamp())
            .min()
    }

    /// The windows as text, for messages.
    pub fn describe(&self) -> String {
        let list: Vec<String> = self.windows.iter().map(|w| w.to_string()).collect();
        format!(
            "{} ({})",
            list.join(", "),
            self.tz.iana_name().unwrap_or("local")
        )
    }
}

/// A time zone by IANA name, for the setting `field`.
pub fn time_zone(field: &str, name: Option<&str>) -> anyhow::Result<TimeZone> {
    match name {
        None => Ok(TimeZone::system()),
        Some(n) => TimeZone::get(n).map_err(|e| {
            anyhow::anyhow!("{field} = {n:?} is not a time zone this host knows (an IANA name like \"Europe/Berlin\"): {e}")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Zoned {
        format!("{text}[UTC]").parse().unwrap()
    }

    #[test]
    fn windows_open_on_their_days_and_times() {
        let w = Window::parse("w", "Mon-Fri 02:00-04:00").unwrap();
        // 2026-12-02 is a Wednesday.
        assert!(w.is_open(&at("2026-12-02T02:00")));
        assert!(w.is_open(&at("2026-12-02T03:59")));
        assert!(!w.is_open(&at("2026-12-02T04:00")));
        assert!(!w.is_open(&at("2026-12-05T03:00")), "Saturday");
        let night = Window::parse("w", "Sat 22:00-02:00").unwrap();
        assert!(night.is_open(&at("2026-12-05T23:00")));
        assert!(night.is_open(&at("2026-12-06T01:00")), "Sunday morning");
        assert!(!night.is_open(&at("2026-12-06T23:00")));
        let all = Window::parse("w", "daily 00:00-24:00").unwrap();
        assert!(all.is_open(&at("2026-12-06T23:59")));
        let wrap = Window::parse("w", "fri-mon 10:00-11:00").unwrap();
        assert!(wrap.is_open(&at("2026-12-07T10:30")), "Monday");
        assert!(!wrap.is_open(&at("2026-12-08T10:30")), "Tuesday");
    }

    #[test]
    fn the_next_opening_is_found_across_days() {
        let w = Window::parse("w", "Mon 02:00-04:00").unwrap();
        let next = w.next_open(&at("2026-12-02T12:00")).unwrap();
        assert_eq!(next, at("2026-12-07T02:00"));
        let now = at("2026-12-07T03:00");
        assert_eq!(w.next_open(&now).unwrap(), now);
    }

    #[test]
    fn windows_that_never_open_or_do_not_parse_are_refused_by_name() {
        for bad in [
            "Mon 02:00-02:00",
            "Mon",
            "Funday 01:00-02:00",
            "Mon 25:00-26:00",
            "Mon 24:00-01:00",
            "Mon 01:00",
        ] {
            let e = Window::parse("maintenance-windows[0]", bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("maintenance-windows[0]"), "{bad}: {e}");
        }
        let e = Window::parse("w", "Tue 03:00-03:00")
            .unwrap_err()
            .to_string();
        assert!(e.contains("never open"), "{e}");
    }
}
