//! Host names, the one piece of user input that becomes part of bucket keys.
//!
//! A host name is a single DNS label (RFC 1123): 1 to 63 characters of ASCII
//! lowercase letters, digits and `-`, not starting or ending with `-`. That rules
//! out `/`, `..`, empty and over-long names by construction, so a `HostName` can be
//! spliced into `hosts/<host>/…` and `status/<host>/…` without escaping and can never
//! address another host's prefix. Upper-case input is refused rather than folded, so
//! the name an admin types is exactly the name in the bucket and in IAM policies.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest DNS label.
pub const MAX_HOST_NAME_LEN: usize = 63;

/// A validated host name (one DNS label).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostName(String);

/// Why a string is not a valid host name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostNameError {
    /// The name is empty.
    #[error("host name is empty; give a DNS label such as `web-1`")]
    Empty,
    /// The name is longer than a DNS label may be.
    #[error("host name {name:?} is {len} characters long; a DNS label has at most 63")]
    TooLong {
        /// The offending name (truncated for display).
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The name holds a character outside `a-z`, `0-9` and `-`.
    #[error(
        "host name {name:?} contains {ch:?}; use only lowercase letters a-z, digits and `-` (one DNS label, no dots or slashes)"
    )]
    BadChar {
        /// The offending name.
        name: String,
        /// The first character that is not allowed.
        ch: char,
    },
    /// The name starts or ends with `-`.
    #[error("host name {name:?} starts or ends with `-`; a DNS label may not")]
    EdgeHyphen {
        /// The offending name.
        name: String,
    },
}

impl HostName {
    /// Validates `name` as a host name.
    pub fn new(name: &str) -> Result<Self, HostNameError> {
        if name.is_empty() {
            return Err(HostNameError::Empty);
        }
        if name.len() > MAX_HOST_NAME_LEN {
            return Err(HostNameError::TooLong {
                name: name.chars().take(70).collect(),
                len: name.len(),
            });
        }
        if let Some(ch) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(HostNameError::BadChar {
                name: name.to_owned(),
                ch,
            });
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(HostNameError::EdgeHyphen {
                name: name.to_owned(),
            });
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for HostName {
    type Err = HostNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl AsRef<str> for HostName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for HostName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for HostName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::serde_str::from_str_with(d, "a host name", HostName::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "web-1", "host-a", "0", &"x".repeat(63)] {
            assert_eq!(HostName::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_everything_that_could_escape_a_prefix() {
        assert_eq!(HostName::new(""), Err(HostNameError::Empty));
        for bad in ["..", ".", "a/b", "a.b", "A", "host a", "ho\0st", "é", "%2e"] {
            assert!(
                matches!(HostName::new(bad), Err(HostNameError::BadChar { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            HostName::new(&"x".repeat(64)),
            Err(HostNameError::TooLong { len: 64, .. })
        ));
        assert!(matches!(
            HostName::new("-a"),
            Err(HostNameError::EdgeHyphen { .. })
        ));
        assert!(matches!(
            HostName::new("a-"),
            Err(HostNameError::EdgeHyphen { .. })
        ));
    }

    #[test]
    fn error_names_the_host_and_the_fix() {
        let msg = HostName::new("web/1").unwrap_err().to_string();
        assert!(msg.contains("web/1") && msg.contains("'/'"), "{msg}");
    }

    #[test]
    fn deserialize_validates() {
        assert!(serde_json::from_str::<HostName>("\"../x\"").is_err());
        assert_eq!(
            serde_json::from_str::<HostName>("\"ok\"").unwrap().as_str(),
            "ok"
        );
    }
}
