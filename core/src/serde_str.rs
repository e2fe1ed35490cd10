//! Deserialising a value that is parsed from a string, without allocating that
//! string first.
//!
//! `String::deserialize` copies every string out of the input, and types such as
//! [`crate::HostName`] then copy it again into their own. Reading a 100,000-host
//! dashboard snapshot spent a tenth of its time in `malloc` and `free`; most strings
//! in it are store paths, host names and digests, each parsed from a `&str` that
//! [`from_str_with`] hands over borrowed from the input where the format allows
//! (JSON strings without escapes), or from a short-lived buffer where it does not.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserializer;
use serde::de::{Error, Visitor};

/// Deserialises a string and parses it with `parse`; `expecting` names what the
/// string should be (for the error when it is not a string at all).
pub fn from_str_with<'de, D, T, E, F>(
    d: D,
    expecting: &'static str,
    parse: F,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    E: fmt::Display,
    F: FnOnce(&str) -> Result<T, E>,
{
    struct StrVisitor<T, E, F> {
        expecting: &'static str,
        parse: F,
        out: PhantomData<fn() -> Result<T, E>>,
    }

    impl<T, E, F> Visitor<'_> for StrVisitor<T, E, F>
    where
        E: fmt::Display,
        F: FnOnce(&str) -> Result<T, E>,
    {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_str<X: Error>(self, s: &str) -> Result<T, X> {
            (self.parse)(s).map_err(X::custom)
        }
    }

    d.deserialize_str(StrVisitor {
        expecting,
        parse,
        out: PhantomData,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Upper(String);

    impl<'de> serde::Deserialize<'de> for Upper {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            from_str_with(d, "an upper-case word", |s| {
                if s.chars().all(|c| c.is_ascii_uppercase()) {
                    Ok(Upper(s.to_owned()))
                } else {
                    Err(format!("{s:?} is not upper-case"))
                }
            })
        }
    }

    #[test]
    fn parses_borrowed_and_escaped_strings_and_says_what_is_wrong() {
        let ok: Upper = serde_json::from_str(r#""ABC""#).unwrap();
        assert_eq!(ok, Upper("ABC".into()));
        // An escape makes serde_json hand over a buffer rather than the input.
        let escaped: Upper = serde_json::from_str(r#""A\u0042C""#).unwrap();
        assert_eq!(escaped, Upper("ABC".into()));
        let bad = serde_json::from_str::<Upper>(r#""AbC""#).unwrap_err();
        assert!(
            bad.to_string().contains("\"AbC\" is not upper-case"),
            "{bad}"
        );
        let not_str = serde_json::from_str::<Upper>("7").unwrap_err();
        assert!(
            not_str.to_string().contains("an upper-case word"),
            "{not_str}"
        );
    }
}
