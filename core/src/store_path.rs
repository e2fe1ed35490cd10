//! Nix store paths: `/nix/store/<hash>-<name>`.
//!
//! The hash part is 32 Nix base-32 characters (160 bits); the name is 1 to 211
//! characters of `A-Z a-z 0-9 + - . _ ? =` and does not start with `.`, exactly the
//! rule Nix applies. Store paths arrive from the bucket (manifests, narinfo
//! `StorePath:` and `References:`), so they are parsed strictly: nothing that could
//! name a file outside the store directory gets through.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::nixbase32;

/// The only store directory fleet deploys to.
pub const STORE_DIR: &str = "/nix/store";

/// Length of a store path's hash part.
pub const HASH_LEN: usize = 32;

/// Longest name Nix allows in a store path.
pub const MAX_NAME_LEN: usize = 211;

/// The 32-character hash part of a store path; also the name of its narinfo.
///
/// Held inline rather than as a `String`: a reporter holds several store paths per
/// host, and at 100,000 hosts one allocation each is about 10 MB.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePathHash([u8; HASH_LEN]);

/// A full store path such as `/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-top`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePath {
    hash: StorePathHash,
    name: String,
}

/// Why a string is not a store path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorePathError {
    /// Not under `/nix/store/`.
    #[error("{path:?} is not a store path: it must start with {STORE_DIR}/")]
    NotInStore {
        /// The input.
        path: String,
    },
    /// The hash part is not 32 Nix base-32 characters.
    #[error(
        "{path:?} is not a store path: the part before the first `-` must be 32 Nix base-32 characters"
    )]
    BadHash {
        /// The input.
        path: String,
    },
    /// The name part is empty, too long or holds a character Nix does not allow.
    #[error(
        "{path:?} is not a store path: the name must be 1 to 211 characters of A-Z a-z 0-9 + - . _ ? = and not start with `.`"
    )]
    BadName {
        /// The input.
        path: String,
    },
}

impl StorePathHash {
    /// Validates a 32-character hash part.
    pub fn new(s: &str) -> Option<Self> {
        let bytes: [u8; HASH_LEN] = s.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|&b| nixbase32::is_digit(b))
            .then_some(Self(bytes))
    }

    /// The hash part as a string.
    pub fn as_str(&self) -> &str {
        // Checked in `new`: Nix base-32 digits are ASCII.
        std::str::from_utf8(&self.0).expect("a store path hash is ASCII")
    }
}

impl fmt::Display for StorePathHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for StorePathHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StorePathHash")
            .field(&self.as_str())
            .finish()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b))
}

impl StorePath {
    /// Parses an absolute store path (`/nix/store/<hash>-<name>`), with no trailing
    /// components.
    pub fn new(path: &str) -> Result<Self, StorePathError> {
        let base = path
            .strip_prefix(STORE_DIR)
            .and_then(|p| p.strip_prefix('/'))
            .ok_or_else(|| StorePathError::NotInStore { path: path.into() })?;
        Self::from_base_name(base).map_err(|e| match e {
            StorePathError::BadHash { .. } => StorePathError::BadHash { path: path.into() },
            StorePathError::BadName { .. } => StorePathError::BadName { path: path.into() },
            other => other,
        })
    }

    /// Parses the base name `<hash>-<name>` (the form narinfo `References:` use).
    pub fn from_base_name(base: &str) -> Result<Self, StorePathError> {
        let (hash, name) = base
            .split_at_checked(HASH_LEN)
            .ok_or_else(|| StorePathError::BadHash { path: base.into() })?;
        let hash = StorePathHash::new(hash)
            .ok_or_else(|| StorePathError::BadHash { path: base.into() })?;
        let name = name
            .strip_prefix('-')
            .ok_or_else(|| StorePathError::BadHash { path: base.into() })?;
        if !valid_name(name) {
            return Err(StorePathError::BadName { path: base.into() });
        }
        Ok(Self {
            hash,
            name: name.to_owned(),
        })
    }

    /// The hash part.
    pub fn hash(&self) -> &StorePathHash {
        &self.hash
    }

    /// The name part (after the `-`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<hash>-<name>`, the store path without the store directory.
    pub fn base_name(&self) -> String {
        format!("{}-{}", self.hash, self.name)
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{STORE_DIR}/{}-{}", self.hash, self.name)
    }
}

impl FromStr for StorePath {
    type Err = StorePathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for StorePath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StorePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::serde_str::from_str_with(d, "a Nix store path", StorePath::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-top";

    #[test]
    fn parses_real_paths() {
        let p = StorePath::new(P).unwrap();
        assert_eq!(p.hash().as_str(), "aql5kla6x8r78rrdfyxr471hbn3himl6");
        assert_eq!(p.name(), "top");
        assert_eq!(p.to_string(), P);
        assert_eq!(
            StorePath::from_base_name("aql5kla6x8r78rrdfyxr471hbn3himl6-top").unwrap(),
            p
        );
        assert!(StorePath::new("/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-nixos-system-a-24.05.20240101.abcdef?=+_").is_ok());
    }

    #[test]
    fn refuses_what_is_not_a_store_path() {
        for bad in [
            "/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-top/bin",
            "/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-../../etc",
            "/nix/store/aql5kla6x8r78rrdfyxr471hbn3himle-top",
            "/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6",
            "/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-",
            "/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-.hidden",
            "/etc/passwd",
            "/nix/storeaql5kla6x8r78rrdfyxr471hbn3himl6-top",
            "",
        ] {
            assert!(StorePath::new(bad).is_err(), "{bad}");
        }
        let long = format!(
            "/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-{}",
            "x".repeat(212)
        );
        assert!(matches!(
            StorePath::new(&long),
            Err(StorePathError::BadName { .. })
        ));
    }
}
