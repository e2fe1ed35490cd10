//! Publisher key scopes: the hosts a scoped publisher key may sign manifests for.
//!
//! In a root's `publisher_keys` a scope is `{"hosts": [PATTERN, …], "labels":
//! [LABEL, …]}`. A host is in scope when its name matches one of the patterns or it
//! carries one of the labels. A pattern is a host name in which `*` stands for any
//! run of characters (`web-*`, `*-eu`, `db-1`); a label is 1 to 63 characters of
//! `a-z 0-9 - _ . =` (`role=web`). Labels come from the host's own configuration
//! (`labels`), which only its administrator can change, so they are as trusted as
//! the host name.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::host::HostName;

/// Longest label or pattern accepted.
pub const MAX_SCOPE_ITEM_LEN: usize = 63;

/// A host name pattern with `*` wildcards.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPattern(String);

/// What a scope admits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Host name patterns.
    #[serde(default)]
    pub hosts: Vec<HostPattern>,
    /// Host labels.
    #[serde(default)]
    pub labels: Vec<String>,
}

impl HostPattern {
    /// Parses a pattern: 1 to 63 characters of `a-z 0-9 - *`.
    pub fn new(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > MAX_SCOPE_ITEM_LEN {
            return Err(format!(
                "host pattern {text:?} must be 1 to {MAX_SCOPE_ITEM_LEN} characters"
            ));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'*')
        {
            return Err(format!(
                "host pattern {text:?} may hold only a-z 0-9 - and the wildcard *"
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// Whether `host` matches.
    pub fn matches(&self, host: &HostName) -> bool {
        glob(self.0.as_bytes(), host.as_str().as_bytes())
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `*`-only glob: iterative, with one backtrack point, so it is linear-ish and
/// cannot blow up on hostile patterns.
fn glob(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pat.len() && pat[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&b| b == b'*')
}

/// Checks a label: 1 to 63 characters of `a-z 0-9 - _ . =`.
pub fn check_label(text: &str) -> Result<(), String> {
    if text.is_empty()
        || text.len() > MAX_SCOPE_ITEM_LEN
        || !text.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.' | b'=')
        })
    {
        return Err(format!(
            "label {text:?} must be 1 to {MAX_SCOPE_ITEM_LEN} characters of a-z 0-9 - _ . ="
        ));
    }
    Ok(())
}

impl Scope {
    /// Whether a host named `host` carrying `labels` is in this scope.
    pub fn admits(&self, host: &HostName, labels: &[String]) -> bool {
        self.hosts.iter().any(|p| p.matches(host)) || self.labels.iter().any(|l| labels.contains(l))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts: Vec<&str> = self.hosts.iter().map(HostPattern::as_str).collect();
        write!(f, "hosts {hosts:?}, labels {:?}", self.labels)
    }
}

impl Serialize for HostPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HostPattern::new(&s).map_err(serde::de::Error::custom)
    }
}
