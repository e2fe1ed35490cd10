//! One configuration schema per binary, read from three places.
//!
//! Each binary defines one struct that derives `clap::Parser` (flags, each with an
//! `env = "FLEET_…"` variable) and `serde::{Serialize, Deserialize}` (the TOML file,
//! keys spelled like the long flags: `kebab-case`). Every field that may come from the
//! file is an `Option` (or a `Vec`) with no clap default, so "not given" is visible.
//! [`layer`] then fills what flags and environment left unset from the TOML file:
//! flag > environment > file > built-in default (applied by the binary afterwards).
//!
//! ```toml
//! # /etc/fleet/agent.toml
//! store = "s3://fleet-prod?region=eu-west-1"
//! host = "web-1"
//! trusted-publisher-keys = ["publisher-1:…"]
//! ```
//!
//! Unknown keys in the file are errors that name the key, so a typo is not silently
//! ignored.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config file {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error (part of the message, so not also a `source`).
        error: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config file {path} is invalid: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key and line).
        message: String,
    },
}

/// Fills every unset field of `cli` (flags and environment) from the TOML file at
/// `file`, if one is given. A field counts as unset when it is `None` or an empty list.
pub fn layer<T: Serialize + DeserializeOwned>(
    cli: T,
    file: Option<&Path>,
) -> Result<T, ConfigError> {
    let Some(path) = file else {
        return Ok(cli);
    };
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
        path: path.to_owned(),
        error,
    })?;
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    // Parse the file into the schema first, so unknown keys and wrong types are
    // reported with the file's own line numbers.
    let from_file: T = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let mut merged = serde_json::to_value(&from_file).map_err(|e| invalid(e.to_string()))?;
    let given = serde_json::to_value(&cli).map_err(|e| invalid(e.to_string()))?;
    if let (Some(m), serde_json::Value::Object(g)) = (merged.as_object_mut(), given) {
        for (k, v) in g {
            let unset = v.is_null() || v.as_array().is_some_and(|a| a.is_empty());
            if !unset {
                m.insert(k, v);
            }
        }
    }
    serde_json::from_value(merged).map_err(|e| invalid(e.to_string()))
}

/// One setting given under its current name (`new`) or the name it had before
/// (`old`): a renamed setting keeps loading from old configs, flags and environments,
/// with a warning that names the new spelling. When both are given the new one wins.
pub fn renamed<T>(new: Option<T>, new_name: &str, old: Option<T>, old_name: &str) -> Option<T> {
    match (new, old) {
        (Some(v), None) => Some(v),
        (None, None) => None,
        (None, Some(v)) => {
            tracing::warn!(
                "{old_name} is deprecated: use {new_name} instead (it means the same; the old \
                 spelling will be removed in a later release)"
            );
            Some(v)
        }
        (Some(v), Some(_)) => {
            tracing::warn!(
                "both {new_name} and the deprecated {old_name} are set: using {new_name}"
            );
            Some(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    struct Conf {
        #[serde(default)]
        store: Option<String>,
        #[serde(default)]
        host: Option<String>,
        #[serde(default)]
        keys: Vec<String>,
        #[serde(default, skip_serializing)]
        config: Option<PathBuf>,
    }

    #[test]
    fn flags_win_file_fills_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c.toml");
        std::fs::write(&f, "store = \"file:///x\"\nhost = \"a\"\nkeys = [\"k1\"]\n").unwrap();
        let cli = Conf {
            host: Some("b".into()),
            ..Default::default()
        };
        let c = layer(cli, Some(&f)).unwrap();
        assert_eq!(c.store.as_deref(), Some("file:///x"));
        assert_eq!(c.host.as_deref(), Some("b"));
        assert_eq!(c.keys, ["k1"]);
    }

    #[test]
    fn typos_and_bad_types_name_the_key() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c.toml");
        std::fs::write(&f, "hots = \"a\"\n").unwrap();
        let e = layer(Conf::default(), Some(&f)).unwrap_err().to_string();
        assert!(e.contains("hots") && e.contains("c.toml"), "{e}");
        std::fs::write(&f, "host = 3\n").unwrap();
        let e = layer(Conf::default(), Some(&f)).unwrap_err().to_string();
        assert!(e.contains("host"), "{e}");
        let e = layer(Conf::default(), Some(&d.path().join("missing.toml")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }
}
