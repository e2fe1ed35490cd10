//! The root-of-trust settings: `trust-root-keys` (and its `-file` twin),
//! `trust-root-version` and `labels`, checked into [`TrustSettings`].
//!
//! A host pins either a root of trust or static keys, never both: a publisher key
//! revoked in the root must stop working on every host, which a static
//! `trusted-publisher-keys` entry beside the root would quietly undo.

use std::path::PathBuf;

use anyhow::{Context, ensure};
use fleet_core::{PublicKey, TrustedKeys};

use super::Config;

/// The pinned root of trust.
#[derive(Debug, Clone)]
pub struct TrustSettings {
    /// The pinned root public keys.
    pub root_keys: TrustedKeys,
    /// The first root version trusted (the one the keys were taken from).
    pub initial_version: u64,
}

fn key_files(files: &[PathBuf]) -> anyhow::Result<Vec<PublicKey>> {
    files
        .iter()
        .map(|f| {
            PublicKey::load(f).with_context(|| format!("trust-root-keys-file {}", f.display()))
        })
        .collect()
}

/// The pinned root, or `None` when no root key is given.
pub(super) fn settings(c: &Config) -> anyhow::Result<Option<TrustSettings>> {
    let mut keys = c
        .trust_root_keys
        .iter()
        .enumerate()
        .map(|(i, t)| PublicKey::parse(t, &format!("trust-root-keys[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    keys.extend(key_files(&c.trust_root_keys_file)?);
    if keys.is_empty() {
        ensure!(
            c.trust_root_version.is_none(),
            "trust-root-version is set but no trust-root-keys (or trust-root-keys-file) are: give the root keys the version was signed with"
        );
        return Ok(None);
    }
    ensure!(
        c.trusted_publisher_keys.is_empty() && c.trusted_cache_keys.is_empty(),
        "trust-root-keys is set together with trusted-publisher-keys or trusted-cache-keys: with a root of trust the publisher and cache keys come from trust/root.json; remove the static keys (a key revoked in the root would otherwise still be trusted here)"
    );
    let initial_version = c.trust_root_version.unwrap_or(1);
    ensure!(initial_version >= 1, "trust-root-version starts at 1");
    Ok(Some(TrustSettings {
        root_keys: TrustedKeys::new(keys),
        initial_version,
    }))
}

/// The host's labels, each checked like a scope's labels.
pub(super) fn labels(labels: &[String]) -> anyhow::Result<Vec<String>> {
    for (i, l) in labels.iter().enumerate() {
        fleet_core::trust::scope::check_label(l)
            .map_err(|e| anyhow::anyhow!("labels[{i}]: {e}"))?;
    }
    Ok(labels.to_vec())
}
