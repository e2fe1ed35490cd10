//! The one duration syntax of every fleet setting (`poll-interval`, `expires-in`,
//! `stale-after`, …), so a value means the same in every binary and file.
//!
//! Accepted: jiff's friendly format (`"90s"`, `"5m"`, `"12h"`, `"7d"`, `"1w 2d"`,
//! `"1h 30m"`) and ISO 8601 (`"PT3M"`, `"P7D"`). A day is always 24 hours and a week
//! 7 days: these are lifetimes and intervals, not calendar dates. Months and years
//! are refused (their length depends on the date). Negative values are refused; zero
//! only where the setting says it means something ([`Zero::Allowed`]).

use std::time::Duration;

/// Whether a setting may be zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zero {
    /// Zero means something for this setting (for example "no jitter", "no cache").
    Allowed,
    /// Zero would make the setting useless or dangerous; it is refused.
    Refused,
}

/// Why a duration setting could not be read. The message names the setting, quotes
/// the value and shows how to write one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{field} = {text:?} {why}; write a duration like \"90s\", \"5m\", \"12h\", \"7d\" or \"PT3M\""
)]
pub struct DurationError {
    /// The setting, as its config key (`poll-interval`).
    pub field: String,
    /// The value given.
    pub text: String,
    /// What is wrong with it.
    pub why: String,
}

/// Parses the value `text` of the setting `field`.
pub fn parse_duration(field: &str, text: &str, zero: Zero) -> Result<Duration, DurationError> {
    let fail = |why: String| DurationError {
        field: field.to_owned(),
        text: text.to_owned(),
        why,
    };
    let span: jiff::Span = text
        .trim()
        .parse()
        .map_err(|e: jiff::Error| fail(format!("is not a duration ({e})")))?;
    if span.get_months() != 0 || span.get_years() != 0 {
        return Err(fail(
            "uses months or years, whose length depends on the date".into(),
        ));
    }
    let d = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|e| fail(format!("is out of range ({e})")))?;
    if d.is_negative() {
        return Err(fail("is negative".into()));
    }
    if d.is_zero() && zero == Zero::Refused {
        return Err(fail("must be longer than zero".into()));
    }
    Duration::try_from(d).map_err(|e| fail(format!("is out of range ({e})")))
}

/// Parses an optional setting, giving `default` when it is not set.
pub fn duration_or(
    field: &str,
    text: Option<&str>,
    zero: Zero,
    default: Duration,
) -> Result<Duration, DurationError> {
    text.map_or(Ok(default), |t| parse_duration(field, t, zero))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> u64 {
        parse_duration("x", text, Zero::Refused).unwrap().as_secs()
    }

    #[test]
    fn friendly_and_iso_forms_agree() {
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("5m"), 300);
        assert_eq!(secs("1h 30m"), 5400);
        assert_eq!(secs("7d"), 7 * 86_400);
        assert_eq!(secs("1w"), 7 * 86_400);
        assert_eq!(secs("1w 2d"), 9 * 86_400);
        assert_eq!(secs("PT3M"), 180);
        assert_eq!(secs("P2D"), 2 * 86_400);
        assert_eq!(secs(" 12h "), 12 * 3600);
        assert_eq!(
            parse_duration("x", "250ms", Zero::Refused).unwrap(),
            Duration::from_millis(250)
        );
    }

    #[test]
    fn zero_only_where_allowed() {
        assert_eq!(
            parse_duration("poll-jitter", "0s", Zero::Allowed).unwrap(),
            Duration::ZERO
        );
        let e = parse_duration("poll-interval", "0s", Zero::Refused).unwrap_err();
        assert!(e.to_string().contains("poll-interval"), "{e}");
        assert!(e.to_string().contains("longer than zero"), "{e}");
    }

    #[test]
    fn bad_values_name_the_setting_and_the_fix() {
        for bad in ["", "soon", "-5m", "5 parsecs", "1mo", "1y", "P1M"] {
            let e = parse_duration("expires-in", bad, Zero::Refused)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("expires-in = "), "{bad}: {e}");
            assert!(e.contains("write a duration like"), "{bad}: {e}");
        }
    }

    #[test]
    fn unset_gives_the_default() {
        let d = Duration::from_secs(60);
        assert_eq!(duration_or("x", None, Zero::Refused, d).unwrap(), d);
        assert_eq!(
            duration_or("x", Some("2m"), Zero::Refused, d).unwrap(),
            Duration::from_secs(120)
        );
    }
}
