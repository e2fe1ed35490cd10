//! One agent cycle: the state machine of the issue.
//!
//! ```text
//! resume an in-flight activation, if any (after kill -9, crash or power cut)
//! GET hosts/<host>/manifest.json, If-None-Match: <ETag of the last one finished>
//!   304 ──────────────────────────────► report what the last one ended as (heartbeat)
//!   same bytes as the last one ───────► the same (a re-upload is not a new deploy)
//!   200 → verify (size, signature by a trusted key, host, sequence ≥ highest seen,
//!         not expired) ── refused ────► state `refused`, last_error.kind manifest-*
//!       → closure already current ───► `healthy` (heartbeat)
//!       → fetch missing paths, verify, import ── refused ─► `refused` (fetch kind)
//!                                      └─ network, disk… ─► `failed`, retried with backoff
//!       → in_flight := {target, previous, step: activating}  (written before anything runs)
//!       → nix-env --profile P --set CLOSURE; CLOSURE/bin/switch-to-configuration MODE
//!           fails ──────────────────► roll back
//!       → step: checking-health; health checks (skipped for mode `boot`)
//!           fail ───────────────────► roll back
//!       → current := target, previous := old current, in_flight := none → `healthy`
//! roll back: step: rolling-back{reason}; profile and switch of `previous`
//!   → `rolled-back` (reason in last_error) | `failed` when there is nothing to return
//!     to or restoring it fails
//! ```
//!
//! Restart rules, from the step recorded in `in_flight` (see `state.rs`):
//!
//! - `activating`: `switch-to-configuration` of the target was started and may or may
//!   not have finished. It is never run a second time: the agent rolls back to the
//!   previous generation and reports `rolled-back` with kind `activation-interrupted`.
//! - `checking-health`: the switch finished; the health checks run again and decide
//!   between committing and rolling back (verify, not re-activate).
//! - `rolling-back`: the rollback is done again (restoring the previous generation is
//!   idempotent), with the original reason.
//!
//! A manifest object the agent has finished with (applied, refused, rolled back) is
//! remembered by ETag and digest, so an unchanged one is never acted on twice; a
//! publisher retries a failed generation by publishing a new sequence number.
//! A closure refused by the fetch is downloaded and checked again after `backoff-max`.
//!
//! Outcomes map to `once`'s exit codes ([`Outcome::exit_code`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use fleet_core::bucket::Fetched;
use fleet_core::manifest::{MAX_MANIFEST_SIZE, VerifyPolicy};
use fleet_core::status::{AgentState, Generation, ReportedError};
use fleet_core::{
    Activation, Bucket, BucketError, BucketOptions, Key, Manifest, ManifestError, StorePath,
    TrustedKeys, VerifiedManifest,
};
use jiff::Timestamp;
use sha2::{Digest, Sha256};

use crate::config::Settings;
use crate::state::{InFlight, ManifestMemo, MemoOutcome, State, StateStore, Step};
use crate::{activate, facts, health, report};

/// How a cycle ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The desired generation runs and is healthy (or there was nothing to do).
    Healthy,
    /// The manifest or its closure was refused; the running generation is kept.
    Refused,
    /// The new generation failed and the previous one was restored.
    RolledBack,
    /// Activation failed and nothing could be restored, or no manifest exists.
    Failed,
    /// A step failed in a way a later try may fix (network, disk, publish in
    /// progress); retried with backoff.
    Retry,
    /// The bucket refused access (HTTP 403); retried with backoff.
    AccessDenied,
}

impl Outcome {
    /// Exit code of `fleet-agent once`: 0 healthy, 2 refused, 3 rolled back, 4 failed,
    /// 5 retry later (unreachable, transient), 6 access denied. (1 is a configuration or
    /// local error before any cycle.)
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Healthy => 0,
            Outcome::Refused => 2,
            Outcome::RolledBack => 3,
            Outcome::Failed => 4,
            Outcome::Retry => 5,
            Outcome::AccessDenied => 6,
        }
    }

    /// Whether the next wait is a backoff rather than a plain poll interval.
    pub fn backs_off(&self) -> bool {
        matches!(self, Outcome::Retry | Outcome::AccessDenied)
    }

    fn of_memo(m: MemoOutcome) -> Self {
        match m {
            MemoOutcome::Applied => Outcome::Healthy,
            MemoOutcome::Refused => Outcome::Refused,
            MemoOutcome::RolledBack => Outcome::RolledBack,
            MemoOutcome::Failed => Outcome::Failed,
        }
    }
}

/// What the agent is doing, for deciding whether a stop request may interrupt it.
pub mod phase {
    /// Waiting or reading the manifest: may be interrupted.
    pub const IDLE: u8 = 0;
    /// Fetching: may be interrupted (the staging directory survives).
    pub const FETCHING: u8 = 1;
    /// Activating, checking health or rolling back: finish before stopping.
    pub const ACTIVATING: u8 = 2;
}

/// The agent: settings, bucket, state.
#[derive(Debug)]
pub struct Agent {
    settings: Settings,
    bucket: Bucket,
    store: StateStore,
    state: State,
    /// Change key of the last event queued in this process.
    last_change: Option<String>,
    /// status.json is behind the state.
    status_dirty: bool,
    phase: Arc<AtomicU8>,
}

fn manifest_kind(e: &ManifestError) -> &'static str {
    match e {
        ManifestError::TooLarge { .. } => "manifest-too-large",
        ManifestError::Malformed(_) => "manifest-malformed",
        ManifestError::UnknownKey { .. } => "manifest-unknown-key",
        ManifestError::BadSignature { .. } => "manifest-bad-signature",
        ManifestError::WrongHost { .. } => "manifest-wrong-host",
        ManifestError::SequenceRollback { .. } => "manifest-rollback",
        ManifestError::SequenceReused { .. } => "manifest-sequence-reused",
        ManifestError::Expired { .. } => "manifest-expired",
        ManifestError::UnsupportedVersion(_) => "manifest-unsupported-version",
    }
}

fn describe(g: &Generation) -> String {
    match g.sequence {
        Some(s) => format!("sequence {s} ({})", g.closure),
        None => format!("{} (found running before any deploy)", g.closure),
    }
}

/// The generation a manifest asks for.
fn target_of(m: &Manifest) -> Generation {
    Generation {
        sequence: Some(m.sequence),
        closure: m.closure.clone(),
    }
}

impl Agent {
    /// Opens the bucket and the state directory (taking its lock).
    pub fn open(settings: Settings) -> anyhow::Result<Self> {
        let opts = BucketOptions {
            credentials: None,
            request_timeout: settings.request_timeout,
            connect_timeout: settings.request_timeout.min(Duration::from_secs(10)),
            // Few retries inside one cycle: the daemon's own backoff takes over.
            max_retries: 2,
        };
        let bucket = Bucket::open(&settings.store, &opts)?;
        Self::with_bucket(settings, bucket)
    }

    /// Like [`Agent::open`] with a bucket opened by the caller (explicit credentials).
    pub fn with_bucket(settings: Settings, bucket: Bucket) -> anyhow::Result<Self> {
        let (store, state) = StateStore::open(&settings.state_dir)?;
        // What the last run reported counts as reported: a restart alone is no event.
        let last_change = (state.reported.state != AgentState::Starting).then(|| {
            report::change_key(
                state.reported.state,
                state.reported.last_error.as_ref(),
                state.desired.as_ref(),
                state.current.as_ref(),
            )
        });
        Ok(Self {
            settings,
            bucket,
            store,
            state,
            last_change,
            status_dirty: true,
            phase: Arc::new(AtomicU8::new(phase::IDLE)),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The state as it stands.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Whether the last error reported is that the bucket cannot be reached, when
    /// writing the status would only fail again.
    pub fn bucket_unreachable(&self) -> bool {
        self.state
            .reported
            .last_error
            .as_ref()
            .is_some_and(|e| e.kind == "bucket-unreachable")
    }

    /// What the agent is doing now (see [`phase`]).
    pub fn phase(&self) -> Arc<AtomicU8> {
        self.phase.clone()
    }

    /// Runs one cycle. Never panics on anything the bucket serves; local failures
    /// (state directory not writable) are reported and retried with backoff.
    pub async fn cycle(&mut self) -> Outcome {
        let outcome = match self.cycle_inner().await {
            Ok(o) => o,
            Err(e) => {
                let msg = format!("{e:#}");
                tracing::error!("cycle failed: {msg}");
                let err = report::error("agent-error", &msg);
                let state = self.state.reported.state;
                self.set(state, Some(err));
                let _ = self.save();
                Outcome::Retry
            }
        };
        self.phase.store(phase::IDLE, Ordering::SeqCst);
        outcome
    }

    async fn cycle_inner(&mut self) -> anyhow::Result<Outcome> {
        if let Some(f) = self.state.in_flight.clone() {
            tracing::warn!(
                target = %describe(&f.target),
                step = ?f.step,
                "resuming an activation that was interrupted"
            );
            return self.resume(f).await;
        }
        self.discover_current()?;
        let key = Key::manifest(&self.settings.host);
        let now = Timestamp::now();
        let etag = self
            .state
            .manifest
            .as_ref()
            .filter(|m| !m.retry_due(now))
            .and_then(|m| m.etag.clone());
        tracing::debug!(%key, etag = ?etag, "polling the manifest");
        match self
            .bucket
            .get_if_changed(&key, etag.as_deref(), MAX_MANIFEST_SIZE)
            .await
        {
            Ok(Fetched::NotModified) => self.unchanged(),
            Ok(Fetched::Object(o)) => self.new_manifest(&key, o.bytes.as_ref(), o.etag).await,
            Err(e) => self.manifest_unreadable(&key, e),
        }
    }

    /// Records the running system as `current` when the agent knows none yet.
    fn discover_current(&mut self) -> anyhow::Result<()> {
        if self.state.current.is_some() {
            return Ok(());
        }
        if let Some(closure) = activate::profile_target(&self.settings.profile) {
            tracing::info!(%closure, profile = %self.settings.profile.display(), "found the running system");
            self.state.current = Some(Generation {
                sequence: None,
                closure,
            });
            self.save()?;
        }
        Ok(())
    }

    /// The manifest did not change: report what it ended as.
    fn unchanged(&mut self) -> anyhow::Result<Outcome> {
        let Some(memo) = self.state.manifest.clone() else {
            // 304 without an ETag sent: only a broken server does that.
            anyhow::bail!("the store answered 304 Not Modified to an unconditional GET");
        };
        tracing::debug!("manifest unchanged");
        Ok(self.report_memo(&memo))
    }

    fn report_memo(&mut self, memo: &ManifestMemo) -> Outcome {
        let now = Timestamp::now();
        let (state, err, outcome) = match memo.outcome {
            MemoOutcome::Applied => match memo.expires_at {
                Some(exp) if now >= exp => (
                    AgentState::Refused,
                    Some(report::error(
                        "manifest-expired",
                        format!(
                            "the manifest this host runs ({}) expired at {exp} and no newer one is published (freeze?); keeping the running generation until the publisher re-signs it",
                            self.state
                                .current
                                .as_ref()
                                .map(describe)
                                .unwrap_or_default()
                        ),
                    )),
                    Outcome::Refused,
                ),
                _ => (AgentState::Healthy, None, Outcome::Healthy),
            },
            other => (
                other.agent_state(),
                memo.error.clone(),
                Outcome::of_memo(other),
            ),
        };
        // Keep the original error (and its time) while nothing changes.
        let err = match (&self.state.reported.last_error, err) {
            (Some(old), Some(new)) if old.kind == new.kind => Some(old.clone()),
            (_, new) => new,
        };
        if self.set(state, err) {
            let _ = self.save();
        }
        outcome
    }

    /// A new manifest object: verify it, then fetch and activate its closure unless
    /// it is a re-upload, is refused or names the system already running.
    async fn new_manifest(
        &mut self,
        key: &Key,
        bytes: &[u8],
        etag: Option<String>,
    ) -> anyhow::Result<Outcome> {
        let now = Timestamp::now();
        // The ETag is the server's word and lands in the state file: keep it short.
        let etag = etag.filter(|e| e.len() <= 1024);
        let digest = hex::encode(Sha256::digest(bytes));
        if let Some(memo) = self.reuploaded(&digest, &etag, now)? {
            return Ok(self.report_memo(&memo));
        }
        let verified = match self.verify_manifest(bytes, now) {
            Ok(v) => v,
            Err(e) => {
                let message = format!("{key} refused: {e}");
                return self.refuse(manifest_kind(&e), message, etag, Some(digest), None);
            }
        };
        let m = self.accept(verified)?;
        if self.already_running(&m, &etag, &digest)? {
            return Ok(Outcome::Healthy);
        }
        let Some(cache_keys) = self.trusted_cache_keys(&m) else {
            return self.refuse_cache_keys(key, &m, etag, digest);
        };
        if let Some(stopped) = self.fetch(&m, &cache_keys, &etag, &digest, now).await? {
            return Ok(stopped);
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

    /// Checks size, signature, host, sequence and expiry against this host's policy.
    fn verify_manifest(
        &self,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<VerifiedManifest, ManifestError> {
        let policy = VerifyPolicy {
            trusted: &self.settings.publisher_keys,
            host: &self.settings.host,
            highest_seen: self.state.highest_seen.as_ref(),
            now: Some(now),
        };
        Manifest::verify(bytes, &policy)
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

    /// The cache keys `m` names that this host trusts; `None` when there is none.
    fn trusted_cache_keys(&self, m: &Manifest) -> Option<TrustedKeys> {
        let keys = TrustedKeys::new(
            m.cache_keys
                .iter()
                .filter(|k| self.settings.cache_keys.keys().contains(k))
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
        let trusted: Vec<&str> = self
            .settings
            .cache_keys
            .keys()
            .iter()
            .map(|k| k.name())
            .collect();
        let message = format!(
            "{key} sequence {} field cache_keys lists {names:?}, none of which this host trusts (trusted-cache-keys: {trusted:?}); add the cache's public key to trusted-cache-keys if it is legitimate",
            m.sequence
        );
        self.refuse(
            "manifest-untrusted-cache-keys",
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
                tracing::warn!(kind, "{msg}");
                self.set(AgentState::Failed, Some(report::error(kind, msg)));
                self.save()?;
                Ok(Some(if kind == "access-denied" {
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
        kind: &str,
        message: String,
        etag: Option<String>,
        digest: Option<String>,
        retry_after: Option<Timestamp>,
    ) -> anyhow::Result<Outcome> {
        tracing::warn!(kind, "refused: {message}");
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

    fn manifest_unreadable(&mut self, key: &Key, e: BucketError) -> anyhow::Result<Outcome> {
        let (kind, outcome, state) = match &e {
            BucketError::TooLarge { etag, .. } => {
                // Remembering the ETag makes the next polls conditional GETs answered
                // 304, instead of downloading up to the bound again every time.
                let etag = etag.clone().filter(|e| e.len() <= 1024);
                return self.refuse("manifest-too-large", e.to_string(), etag, None, None);
            }
            BucketError::NotFound { .. } => {
                ("manifest-missing", Outcome::Failed, AgentState::Failed)
            }
            BucketError::AccessDenied { .. } => {
                ("access-denied", Outcome::AccessDenied, AgentState::Failed)
            }
            // The host keeps running what it runs; only the error is new.
            BucketError::Unreachable { .. } => (
                "bucket-unreachable",
                Outcome::Retry,
                self.state.reported.state,
            ),
            _ => ("bucket-error", Outcome::Retry, self.state.reported.state),
        };
        let msg = match kind {
            "manifest-missing" => format!(
                "{key} does not exist: nothing is published for host {} yet (fleet-publish deploy)",
                self.settings.host
            ),
            "access-denied" => format!(
                "{e}; the manifest {key} is missing or these credentials may not read it (without list rights S3 answers 403 for both); keeping the running generation and backing off"
            ),
            _ => format!("{e}; keeping the running generation and retrying with backoff"),
        };
        tracing::warn!(kind, "{msg}");
        self.set(state, Some(report::error(kind, msg)));
        self.save()?;
        Ok(outcome)
    }

    /// Activates `flight.target`; `in_flight` is on disk before anything runs.
    async fn activate(&mut self, flight: InFlight) -> anyhow::Result<Outcome> {
        self.phase.store(phase::ACTIVATING, Ordering::SeqCst);
        self.state.in_flight = Some(flight.clone());
        let keep = self.state.reported.last_error.clone();
        self.set(AgentState::Activating, keep);
        if let Err(e) = self.save() {
            // Nothing ran: forget the record, or the next cycle would "resume" it.
            self.state.in_flight = None;
            return Err(
                e.context("recording the activation before starting it (nothing was activated)")
            );
        }
        self.flush_quietly().await;
        let target = &flight.target;
        tracing::info!(target = %describe(target), mode = %flight.activation, "activating");
        if let Err(e) = self.switch_to(&target.closure, flight.activation).await {
            let reason = report::error(
                "activation-failed",
                format!("activating {} failed: {e}", describe(target)),
            );
            return self.rollback(flight, reason).await;
        }
        let flight = InFlight {
            step: Step::CheckingHealth,
            ..flight
        };
        self.state.in_flight = Some(flight.clone());
        let keep = self.state.reported.last_error.clone();
        self.set(AgentState::CheckingHealth, keep);
        self.save()?;
        self.flush_quietly().await;
        self.check_health(flight).await
    }

    /// Makes `closure` the running system in `mode`: points the profile at it (mode
    /// `test` leaves the profile alone, as `nixos-rebuild test` does), then runs its
    /// `switch-to-configuration`.
    async fn switch_to(
        &self,
        closure: &StorePath,
        mode: Activation,
    ) -> Result<(), activate::ActivationError> {
        let s = &self.settings;
        if mode != Activation::Test {
            activate::set_profile(&s.nix, &s.profile, closure).await?;
        }
        activate::switch(&s.store_root, closure, mode, s.activation_timeout).await
    }

    async fn check_health(&mut self, flight: InFlight) -> anyhow::Result<Outcome> {
        self.phase.store(phase::ACTIVATING, Ordering::SeqCst);
        if flight.activation == Activation::Boot {
            tracing::info!(
                "activation mode boot: the new generation runs after the next reboot; health checks skipped"
            );
        } else if let Err(f) = health::run_all(&self.settings.health_checks).await {
            let reason = report::error(
                "health-check-failed",
                format!("after activating {}: {f}", describe(&flight.target)),
            );
            return self.rollback(flight, reason).await;
        }
        self.commit(flight)
    }

    fn commit(&mut self, flight: InFlight) -> anyhow::Result<Outcome> {
        let target = flight.target.clone();
        if self.state.current.as_ref().map(|c| &c.closure) != Some(&target.closure) {
            self.state.previous = self.state.current.take();
        }
        self.state.current = Some(target.clone());
        self.state.in_flight = None;
        self.state.manifest = Some(ManifestMemo {
            etag: flight.etag,
            outcome: MemoOutcome::Applied,
            error: None,
            digest: self.state.highest_seen.as_ref().map(|s| s.digest.clone()),
            expires_at: Some(flight.expires_at),
            retry_after: None,
        });
        self.set(AgentState::Healthy, None);
        self.save()?;
        tracing::info!(current = %describe(&target), "healthy");
        Ok(Outcome::Healthy)
    }

    async fn rollback(
        &mut self,
        flight: InFlight,
        reason: ReportedError,
    ) -> anyhow::Result<Outcome> {
        self.phase.store(phase::ACTIVATING, Ordering::SeqCst);
        tracing::warn!(kind = %reason.kind, "{}", reason.message);
        let flight = InFlight {
            step: Step::RollingBack {
                reason: reason.clone(),
            },
            ..flight
        };
        self.state.in_flight = Some(flight.clone());
        self.save()?;
        let (outcome, err) = match &flight.previous {
            None => (
                MemoOutcome::Failed,
                report::error(
                    &reason.kind,
                    format!(
                        "{}; there is no previous generation to roll back to",
                        reason.message
                    ),
                ),
            ),
            Some(prev) => {
                tracing::warn!(previous = %describe(prev), "rolling back");
                match self.switch_to(&prev.closure, flight.activation).await {
                    Ok(()) => (
                        MemoOutcome::RolledBack,
                        report::error(
                            &reason.kind,
                            format!("{}; rolled back to {}", reason.message, describe(prev)),
                        ),
                    ),
                    Err(e) => (
                        MemoOutcome::Failed,
                        report::error(
                            "rollback-failed",
                            format!(
                                "{}; rolling back to {} failed too: {e}",
                                reason.message,
                                describe(prev)
                            ),
                        ),
                    ),
                }
            }
        };
        self.state.in_flight = None;
        self.state.manifest = Some(ManifestMemo {
            etag: flight.etag,
            outcome,
            error: Some(err.clone()),
            digest: self.state.highest_seen.as_ref().map(|s| s.digest.clone()),
            expires_at: Some(flight.expires_at),
            retry_after: None,
        });
        tracing::error!(kind = %err.kind, "{}", err.message);
        self.set(outcome.agent_state(), Some(err));
        self.save()?;
        Ok(Outcome::of_memo(outcome))
    }

    async fn resume(&mut self, flight: InFlight) -> anyhow::Result<Outcome> {
        match flight.step.clone() {
            Step::Activating => {
                let reason = report::error(
                    "activation-interrupted",
                    format!(
                        "the agent stopped (killed, crashed or power lost) while activating {}; whether switch-to-configuration finished is unknown, so it is not run again",
                        describe(&flight.target)
                    ),
                );
                self.rollback(flight, reason).await
            }
            Step::CheckingHealth => self.check_health(flight).await,
            Step::RollingBack { reason } => self.rollback(flight, reason).await,
        }
    }

    /// Sets what the status says; queues an event when that is a change. Returns
    /// whether it changed.
    fn set(&mut self, state: AgentState, last_error: Option<ReportedError>) -> bool {
        self.state.reported.state = state;
        self.state.reported.last_error = last_error;
        let key = report::change_key(
            state,
            self.state.reported.last_error.as_ref(),
            self.state.desired.as_ref(),
            self.state.current.as_ref(),
        );
        if self.last_change.as_ref() == Some(&key) {
            return false;
        }
        self.last_change = Some(key);
        let r = report::build(
            &self.settings.host,
            &self.state,
            facts::gather(&self.settings.facts_root),
        );
        report::queue_event(&mut self.state, r, self.settings.max_queued_events);
        self.status_dirty = true;
        true
    }

    fn save(&self) -> anyhow::Result<()> {
        self.store.save(&self.state)
    }

    /// Writes queued events, then status.json if it is behind (or `force`). Stops at
    /// the first failed write; what is left stays queued.
    pub async fn flush(&mut self, force: bool) -> Result<(), BucketError> {
        let host = self.settings.host.clone();
        let mut sent = false;
        let result = async {
            while report::send_one_event(&self.bucket, &host, &mut self.state).await? {
                sent = true;
            }
            if self.status_dirty || force {
                let r = report::build(&host, &self.state, facts::gather(&self.settings.facts_root));
                report::write_status(&self.bucket, &host, &r).await?;
                self.status_dirty = false;
            }
            Ok(())
        }
        .await;
        if sent && let Err(e) = self.save() {
            tracing::error!("{e:#}");
        }
        result
    }

    /// [`Agent::flush`], logging instead of failing.
    pub async fn flush_quietly(&mut self) {
        if let Err(e) = self.flush(false).await {
            tracing::warn!(
                queued = self.state.pending_events.len(),
                "could not write status (kept queued): {e}"
            );
        }
    }
}
