//! The manifest steps of a cycle: a new manifest object is verified and accepted,
//! its closure fetched, and then handed to the activation (`activation.rs`); or it
//! is refused, with the `last_error.kind` that says why.

use fleet_core::ErrorKind;
use std::sync::atomic::Ordering;

use fleet_core::status::{AgentState, Generation};
use fleet_core::{
    Activation, BucketError, Key, Manifest, ManifestError, TrustedKeys, VerifiedManifest,
};
use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::{Agent, Outcome, describe, phase};
use crate::pause::Pause;
use crate::report;
use crate::state::{InFlight, ManifestMemo, MemoOutcome, Step};

fn manifest_kind(e: &ManifestError) -> ErrorKind {
    match e {
        ManifestError::TooLarge { .. } => ErrorKind::ManifestTooLarge,
        ManifestError::Malformed(_) => ErrorKind::ManifestMalformed,
        ManifestError::UnknownKey { .. } => ErrorKind::ManifestUnknownKey,
        ManifestError::BadSignature { .. } => ErrorKind::ManifestBadSignature,
        ManifestError::WrongHost { .. } => ErrorKind::ManifestWrongHost,
        ManifestError::SequenceRollback { .. } => ErrorKind::ManifestRollback,
        ManifestError::SequenceReused { .. } => ErrorKind::ManifestSequenceReused,
        ManifestError::Expired { .. } => ErrorKind::ManifestExpired,
        ManifestError::UnsupportedVersion(_) => ErrorKind::ManifestUnsupportedVersion,
        ManifestError::OutOfScope { .. } => ErrorKind::ManifestOutOfScope,
    }
}

/// The generation a manifest asks for.
pub(super) fn target_of(m: &Manifest) -> Generation {
    Generation {
        sequence: Some(m.sequence),
        closure: m.closure.clone(),
    }
}

impl Agent {
    /// A new manifest object: verify it, then fetch and activate its closure unless
    /// it is a re-upload, is refused, names the system already running, or `pause`
    /// holds.
    pub(super) async fn new_manifest(
        &mut self,
        key: &Key,
        bytes: &[u8],
        etag: Option<String>,
        pause: Option<&Pause>,
    ) -> anyhow::Result<Outcome> {
        let now = Timestamp::now();
        // The ETag is the server's word and lands in the state file: keep it short.
        let etag = etag.filter(|e| e.len() <= 1024);
        let digest = hex::encode(Sha256::digest(bytes));
        if let Some(memo) = self.reuploaded(&digest, &etag, now)? {
            return match pause {
                Some(p) if memo.outcome != MemoOutcome::Retired => self.paused(p),
                _ => Ok(self.report_memo(&memo)),
            };
        }
        let verified = match self.verify_manifest(bytes, now) {
            Ok(v) => v,
            Err(e @ ManifestError::Expired { .. }) => {
                // Not remembered by ETag or digest: whether it expired depends on this
                // host's clock as much as on the object, so a clock that was wrong
                // (and is set right) gets the manifest verified again at the next poll.
                let message = format!("{key} refused: {e}");
                return self.refuse(ErrorKind::ManifestExpired, message, None, None, None);
            }
            Err(e) => {
                let message = format!("{key} refused: {e}");
                return self.refuse(manifest_kind(&e), message, etag, Some(digest), None);
            }
        };
        let m = self.accept(verified)?;
        if m.activation == Activation::Retire {
            return self.retired(&m, etag, digest);
        }
        if let Some(p) = pause {
            // Verified and recorded as desired, so the status shows what is pending;
            // not remembered as finished, so it is applied once the pause ends.
            return self.paused(p);
        }
        if self.already_running(&m, &etag, &digest)? {
            return Ok(Outcome::Healthy);
        }
        let Some(cache_keys) = self.trusted_cache_keys(&m) else {
            return self.refuse_cache_keys(key, &m, etag, digest);
        };
        let windows = match self.windows_for(&m) {
            Ok(w) => w,
            Err(e) => {
                let message = format!("{key} refused: {e}");
                return self.refuse(
                    ErrorKind::ManifestMalformed,
                    message,
                    etag,
                    Some(digest),
                    None,
                );
            }
        };
        if let Some(stopped) = self.fetch(&m, &cache_keys, &etag, &digest, now).await? {
            return Ok(stopped);
        }
        if let Some(staged) = self.hold_for_schedule(&m, &windows)? {
            return Ok(staged);
        }
        let flight = InFlight {
            target: target_of(&m),
            activation: m.activation,
            previous: self.state.current.clone(),
            etag,
            expires_at: m.expires_at,
            started_at: Timestamp::now(),
            step: Step::Activating,
        };
        // The in-flight record carries the ETag from here on; the memo is written
        // when the activation ends.
        self.state.manifest = None;
        self.activate(flight).await
    }

    /// When the manifest's bytes are those of the last one finished, under a new
    /// ETag (a re-upload), records the ETag and returns that memo: nothing new to
    /// do, unless a refused closure is due for another try.
    fn reuploaded(
        &mut self,
        digest: &str,
        etag: &Option<String>,
        now: Timestamp,
    ) -> anyhow::Result<Option<ManifestMemo>> {
        let Some(memo) = self.state.manifest.as_mut() else {
            return Ok(None);
        };
        if memo.digest.as_deref() != Some(digest) || memo.retry_due(now) {
            return Ok(None);
        }
        memo.etag = etag.clone();
        let memo = memo.clone();
        self.save()?;
        Ok(Some(memo))
    }

    /// Takes a verified manifest as the desired state: its sequence becomes the
    /// highest seen (so an older one is never taken again) before anything runs.
    fn accept(&mut self, verified: VerifiedManifest) -> anyhow::Result<Manifest> {
        let m = verified.manifest.clone();
        tracing::info!(
            sequence = m.sequence,
            closure = %m.closure,
            signed_by = %verified.signed_by,
            activation = %m.activation,
            "accepted manifest"
        );
        self.state.highest_seen = Some(verified.seen());
        self.state.desired = Some(target_of(&m));
        self.save()?;
        Ok(m)
    }

    /// Whether `m` names the system already running (republished, or rolled
    /// forward onto it); if so it is recorded as applied and the host is healthy.
    fn already_running(
        &mut self,
        m: &Manifest,
        etag: &Option<String>,
        digest: &str,
    ) -> anyhow::Result<bool> {
        let Some(cur) = self.state.current.as_mut() else {
            return Ok(false);
        };
        if cur.closure != m.closure {
            return Ok(false);
        }
        cur.sequence = Some(m.sequence);
        self.state.manifest = Some(ManifestMemo {
            etag: etag.clone(),
            outcome: MemoOutcome::Applied,
            error: None,
            digest: Some(digest.to_owned()),
            expires_at: Some(m.expires_at),
            retry_after: None,
        });
        self.set(AgentState::Healthy, None);
        self.save()?;
        Ok(true)
    }

    /// `m` is a tombstone: the host is retired. Nothing is fetched or activated; the
    /// running system stays as it is, and the memo makes every later poll of the
    /// same object report `retired` again (a 304 costs nothing).
    fn retired(
        &mut self,
        m: &Manifest,
        etag: Option<String>,
        digest: String,
    ) -> anyhow::Result<Outcome> {
        tracing::warn!(
            sequence = m.sequence,
            "this host is retired (tombstone manifest): applying nothing from now on"
        );
        self.state.manifest = Some(ManifestMemo {
            etag,
            outcome: MemoOutcome::Retired,
            error: None,
            digest: Some(digest),
            expires_at: None,
            retry_after: None,
        });
        self.set(AgentState::Retired, None);
        self.save()?;
        Ok(Outcome::Healthy)
    }

    /// The cache keys `m` names that this host trusts; `None` when there is none.
    fn trusted_cache_keys(&self, m: &Manifest) -> Option<TrustedKeys> {
        let trusted = self.cache_key_set();
        let keys = TrustedKeys::new(
            m.cache_keys
                .iter()
                .filter(|k| trusted.keys().contains(k))
                .cloned(),
        );
        (!keys.is_empty()).then_some(keys)
    }

    /// Refuses `m` because this host trusts none of its cache keys.
    fn refuse_cache_keys(
        &mut self,
        key: &Key,
        m: &Manifest,
        etag: Option<String>,
        digest: String,
    ) -> anyhow::Result<Outcome> {
        let names: Vec<&str> = m.cache_keys.iter().map(|k| k.name()).collect();
        let trusted_set = self.cache_key_set();
        let trusted: Vec<&str> = trusted_set.keys().iter().map(|k| k.name()).collect();
        let message = format!(
            "{key} sequence {} field cache_keys lists {names:?}, none of which this host trusts (trusted-cache-keys: {trusted:?}); add the cache's public key to trusted-cache-keys if it is legitimate",
            m.sequence
        );
        self.refuse(
            ErrorKind::ManifestUntrustedCacheKeys,
            message,
            etag,
            Some(digest),
            None,
        )
    }

    /// Fetches `m`'s closure into the store. `Some` is the cycle's outcome when it
    /// is not there: refused (tried again after `backoff-max`), or failed (retried
    /// with backoff, the running generation kept).
    async fn fetch(
        &mut self,
        m: &Manifest,
        cache_keys: &TrustedKeys,
        etag: &Option<String>,
        digest: &str,
        now: Timestamp,
    ) -> anyhow::Result<Option<Outcome>> {
        let keep = self.state.reported.last_error.clone();
        self.set(AgentState::Fetching, keep);
        self.save()?;
        self.flush_quietly().await;
        self.phase.store(phase::FETCHING, Ordering::SeqCst);
        let started = std::time::Instant::now();
        let fetched = crate::fetch::fetch_closure(crate::fetch::FetchRequest {
            bucket: &self.bucket,
            closure: &m.closure,
            trusted_cache_keys: cache_keys,
            nix: &self.settings.nix,
            staging_dir: &self.settings.staging_dir,
            limits: self.settings.fetch_limits.clone(),
        })
        .await;
        match fetched {
            Ok(r) => {
                tracing::info!(closure = %m.closure, report = ?r, "closure fetched and imported");
                self.metrics.fetched(r.bytes_downloaded, started.elapsed());
                Ok(None)
            }
            Err(e) if e.is_refusal() => {
                let retry = now
                    .checked_add(jiff::SignedDuration::try_from(self.settings.backoff_max)?)
                    .ok();
                let message = format!(
                    "closure {} of manifest sequence {} refused: {e}",
                    m.closure, m.sequence
                );
                let outcome = self.refuse(
                    e.kind(),
                    message,
                    etag.clone(),
                    Some(digest.to_owned()),
                    retry,
                )?;
                Ok(Some(outcome))
            }
            Err(e) => {
                let kind = e.kind();
                let msg = format!(
                    "fetching closure {} of manifest sequence {} failed: {e}; keeping {} and retrying with backoff",
                    m.closure,
                    m.sequence,
                    self.state
                        .current
                        .as_ref()
                        .map(describe)
                        .unwrap_or_else(|| "the running system".into())
                );
                tracing::warn!(kind = kind.as_str(), "{msg}");
                let denied = kind == ErrorKind::AccessDenied;
                self.set(AgentState::Failed, Some(report::error(kind, msg)));
                self.save()?;
                Ok(Some(if denied {
                    Outcome::AccessDenied
                } else {
                    Outcome::Retry
                }))
            }
        }
    }

    /// Refuses a manifest (or its closure): the running generation is kept and
    /// `highest_seen` is not touched by the refusal.
    fn refuse(
        &mut self,
        kind: ErrorKind,
        message: String,
        etag: Option<String>,
        digest: Option<String>,
        retry_after: Option<Timestamp>,
    ) -> anyhow::Result<Outcome> {
        tracing::warn!(kind = kind.as_str(), "refused: {message}");
        let err = report::error(kind, message);
        self.state.manifest = Some(ManifestMemo {
            etag,
            outcome: MemoOutcome::Refused,
            error: Some(err.clone()),
            digest,
            expires_at: None,
            retry_after,
        });
        self.set(AgentState::Refused, Some(err));
        self.save()?;
        Ok(Outcome::Refused)
    }

    pub(super) fn manifest_unreadable(
        &mut self,
        key: &Key,
        e: BucketError,
    ) -> anyhow::Result<Outcome> {
        let (kind, outcome, state) = match &e {
            BucketError::TooLarge { etag, .. } => {
                // Remembering the ETag makes the next polls conditional GETs answered
                // 304, instead of downloading up to the bound again every time.
                let etag = etag.clone().filter(|e| e.len() <= 1024);
                return self.refuse(ErrorKind::ManifestTooLarge, e.to_string(), etag, None, None);
            }
            BucketError::NotFound { .. } => (
                ErrorKind::ManifestMissing,
                Outcome::Failed,
                AgentState::Failed,
            ),
            BucketError::AccessDenied { .. } => (
                ErrorKind::AccessDenied,
                Outcome::AccessDenied,
                AgentState::Failed,
            ),
            // The host keeps running what it runs; only the error is new.
            BucketError::Unreachable { .. } => (
                ErrorKind::BucketUnreachable,
                Outcome::Retry,
                self.state.reported.state,
            ),
            _ => (
                ErrorKind::BucketError,
                Outcome::Retry,
                self.state.reported.state,
            ),
        };
        let msg = match kind {
            ErrorKind::ManifestMissing => format!(
                "{key} does not exist: nothing is published for host {} yet (fleet-publish deploy)",
                self.settings.host
            ),
            ErrorKind::AccessDenied => format!(
                "{e}; the manifest {key} is missing or these credentials may not read it (without list rights S3 answers 403 for both); keeping the running generation and backing off"
            ),
            _ => format!("{e}; keeping the running generation and retrying with backoff"),
        };
        tracing::warn!(kind = kind.as_str(), "{msg}");
        self.set(state, Some(report::error(kind, msg)));
        self.save()?;
        Ok(outcome)
    }
}
