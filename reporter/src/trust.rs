//! The root of trust as the reporter reads it: with `trust-root-keys` configured,
//! the keys that verify manifests, registry entries, holds and rollouts are the
//! static `trusted-key`s plus the publisher and admin keys of the newest root
//! version in the bucket, walked from the pinned version by TUF's rule
//! ([`fleet_core::audit_trust::walk_roots`], the same walk `fleet-publish audit
//! verify` makes).
//!
//! Each refresh reads `trust/root.json` (one GET); only when its bytes changed are
//! the versions listed and walked again. A version that does not chain stops the
//! walk at the last good one (as a host stops there) and is logged; a bucket that
//! cannot be read keeps the keys of the last walk. Scopes of publisher keys are not
//! applied here: the reporter does not know hosts' labels, so the hosts themselves
//! and `audit verify` enforce them.

use std::sync::Arc;

use fleet_core::audit_trust::{read_roots, walk_roots};
use fleet_core::trust::MAX_ROOT_SIZE;
use fleet_core::{BucketError, Key, PublicKey, TrustedKeys};
use jiff::Timestamp;

use crate::Reporter;
use crate::fleet::RefreshParams;

/// The last walk: the bytes of `trust/root.json` it started from and the keys of
/// the newest version it trusted.
#[derive(Debug, Default)]
pub(crate) struct RootCache(tokio::sync::Mutex<Option<(Vec<u8>, Vec<PublicKey>)>>);

impl Reporter {
    /// The keys trusted now: the static ones, plus the newest root version's
    /// publisher and admin keys when a root is pinned.
    pub async fn trusted_now(&self) -> TrustedKeys {
        let Some(pin) = &self.opts.root else {
            return self.opts.trusted.clone();
        };
        let mut cache = self.root_cache.0.lock().await;
        let pointer = match self.bucket.get(&Key::trust_root(), MAX_ROOT_SIZE).await {
            Ok(o) => Some(o.bytes.to_vec()),
            Err(BucketError::NotFound { .. }) => None,
            Err(e) => {
                tracing::warn!(
                    "cannot read {}: {e}; keeping the keys read before",
                    Key::trust_root()
                );
                return self.with_static(cache.as_ref().map(|(_, k)| k.as_slice()));
            }
        };
        let fresh = match (&pointer, cache.as_ref()) {
            (Some(p), Some((was, _))) if p == was => false,
            (None, _) => {
                tracing::warn!(
                    "{} does not exist, but a root of trust is pinned (trust-root-keys): only the static trusted keys verify",
                    Key::trust_root()
                );
                *cache = None;
                return self.with_static(None);
            }
            _ => true,
        };
        if fresh {
            let (stored, pointer_now) = match read_roots(&self.bucket).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(
                        "cannot read the root of trust (trust/): {e}; keeping the keys read before"
                    );
                    return self.with_static(cache.as_ref().map(|(_, k)| k.as_slice()));
                }
            };
            let walk = walk_roots(&stored, pointer_now.as_deref(), Some(pin));
            for f in &walk.findings {
                tracing::warn!(key = %f.key, "root of trust: {}", f.message);
            }
            let keys = match walk.roots.values().next_back() {
                Some(newest) => {
                    if let Err(e) = newest.check_fresh(Timestamp::now()) {
                        tracing::warn!("root of trust: {e}");
                    }
                    let r = newest.root();
                    r.publisher_keys
                        .iter()
                        .map(|k| k.key.clone())
                        .chain(r.admin_keys.iter().cloned())
                        .collect()
                }
                None => Vec::new(),
            };
            *cache = Some((pointer.unwrap_or_default(), keys));
        }
        self.with_static(cache.as_ref().map(|(_, k)| k.as_slice()))
    }

    fn with_static(&self, root_keys: Option<&[PublicKey]>) -> TrustedKeys {
        let mut keys = self.opts.trusted.keys().to_vec();
        for k in root_keys.unwrap_or_default() {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
        TrustedKeys::new(keys)
    }

    /// The refresh parameters with the keys trusted now.
    pub(crate) async fn params_now(&self) -> RefreshParams {
        if self.opts.root.is_none() {
            return self.params.clone();
        }
        let trusted = self.trusted_now().await;
        RefreshParams {
            trusted_fingerprint: crate::snapshot::fingerprint(&trusted),
            trusted: Arc::new(trusted),
            ..self.params.clone()
        }
    }
}
