//! The root-of-trust step of a cycle, before the manifest is polled: bring the
//! trusted root up to date ([`crate::trust`]), or stop the cycle with the refusal.
//! Also the keys the manifest steps verify with: the root's when there is one, the
//! static settings otherwise.

use fleet_core::status::AgentState;
use fleet_core::{BucketError, ErrorKind, HostName, TrustedKeys, VerifiedManifest};
use fleet_core::{Manifest, ManifestError, manifest::VerifyPolicy};
use jiff::Timestamp;

use super::{Agent, Outcome};
use crate::report;
use crate::state::MemoOutcome;
use crate::trust::{Refresh, TrustFailure};

impl Agent {
    /// Refreshes the root of trust; `Some` ends the cycle (refused, or the bucket
    /// could not be read). A no-op without `trust-root-keys`.
    pub(super) async fn check_trust(&mut self, now: Timestamp) -> anyhow::Result<Option<Outcome>> {
        let Some(settings) = self.settings.trust.clone() else {
            return Ok(None);
        };
        let failure = match self.trust.refresh(&self.bucket, &settings, now).await? {
            Ok(Refresh::Unchanged) => return Ok(None),
            Ok(Refresh::Advanced { from, to }) => {
                tracing::info!(?from, to, "root of trust now at version {to}");
                // A manifest refused under the old root gets a second look under the new
                // one (its key may have been added); an applied one stays applied.
                if let Some(memo) = self.state.manifest.as_mut()
                    && memo.outcome == MemoOutcome::Refused
                {
                    memo.retry_after = Some(now);
                    self.save()?;
                }
                return Ok(None);
            }
            Err(f) => f,
        };
        let (state, kind, message, outcome) = match failure {
            TrustFailure::Refused { kind, message } if kind == ErrorKind::TrustRootMissing => {
                (AgentState::Failed, kind, message, Outcome::Failed)
            }
            TrustFailure::Refused { kind, message } => (
                AgentState::Refused,
                kind,
                format!("{message}; applying nothing until the root of trust is fixed"),
                Outcome::Refused,
            ),
            TrustFailure::Bucket(e) => {
                let (kind, outcome) = match &e {
                    BucketError::AccessDenied { .. } => {
                        (ErrorKind::AccessDenied, Outcome::AccessDenied)
                    }
                    BucketError::Unreachable { .. } => {
                        (ErrorKind::BucketUnreachable, Outcome::Retry)
                    }
                    _ => (ErrorKind::BucketError, Outcome::Retry),
                };
                let msg = format!(
                    "reading the root of trust: {e}; keeping the running generation and retrying with backoff"
                );
                (self.state.reported.state, kind, msg, outcome)
            }
        };
        tracing::warn!(kind = kind.as_str(), "{message}");
        // Keep the first report of the same refusal (and its time) while it lasts.
        let err = match &self.state.reported.last_error {
            Some(old) if old.kind == kind => old.clone(),
            _ => report::error(kind, message),
        };
        self.set(state, Some(err));
        self.save()?;
        Ok(Some(outcome))
    }

    /// Checks a manifest's size, signature (by a publisher key of the root whose
    /// scope admits this host, or a static trusted key), host, sequence and expiry.
    pub(super) fn verify_manifest(
        &self,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<VerifiedManifest, ManifestError> {
        let host: &HostName = &self.settings.host;
        let highest_seen = self.state.highest_seen.as_ref();
        let result = self.verify_manifest_at(bytes, host, highest_seen, self.skewed(now));
        match result {
            // The message tells the host's own clock, not the allowance's.
            Err(ManifestError::Expired { expires_at, .. }) => {
                Err(ManifestError::Expired { expires_at, now })
            }
            other => other,
        }
    }

    /// `now` less the `clock-skew` allowance: the time expiries are checked at.
    pub(super) fn skewed(&self, now: Timestamp) -> Timestamp {
        jiff::SignedDuration::try_from(self.settings.clock_skew)
            .ok()
            .and_then(|d| now.checked_sub(d).ok())
            .unwrap_or(now)
    }

    fn verify_manifest_at(
        &self,
        bytes: &[u8],
        host: &HostName,
        highest_seen: Option<&fleet_core::manifest::SeenManifest>,
        now: Timestamp,
    ) -> Result<VerifiedManifest, ManifestError> {
        if let Some(root) = self.trust.root()
            && self.settings.trust.is_some()
        {
            return root.verify_manifest(
                bytes,
                host,
                &self.settings.labels,
                highest_seen,
                Some(now),
            );
        }
        let policy = VerifyPolicy {
            trusted: &self.settings.publisher_keys,
            host,
            highest_seen,
            now: Some(now),
        };
        Manifest::verify(bytes, &policy)
    }

    /// The cache keys this host trusts: the root's, or `trusted-cache-keys`.
    pub(super) fn cache_key_set(&self) -> TrustedKeys {
        match self.trust.root() {
            Some(root) if self.settings.trust.is_some() => root.root().cache_key_set(),
            _ => self.settings.cache_keys.clone(),
        }
    }
}
