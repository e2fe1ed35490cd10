//! One agent cycle: the state machine of the issue.
//!
//! ```text
//! resume an in-flight activation, if any (after kill -9, crash or power cut)
//! GET hosts/<host>/manifest.json, If-None-Match: <ETag of the last one finished>
//!   304 ──────────────────────────────► report what the last one ended as (heartbeat),
//!                                       or `paused` while a pause holds
//!   same bytes as the last one ───────► the same (a re-upload is not a new deploy)
//!   200 → verify (size, signature by a trusted key, host, sequence ≥ highest seen,
//!         not expired) ── refused ────► state `refused`, last_error.kind manifest-*
//!       → a tombstone (`retire`) ─────► `retired`: nothing applied, now or later
//!       → paused (`fleet-agent pause`) ► `paused`, desired = this manifest, nothing applied
//!       → closure already current ───► `healthy` (heartbeat)
//!       → fetch missing paths, verify, import ── refused ─► `refused` (fetch kind)
//!                                      └─ network, disk… ─► `failed`, retried with backoff
//!       → windows closed or before activate_after ► `staged` (`staged.rs`)
//!       → in_flight := {target, previous, step: activating}  (written before anything runs)
//!       → nix-env --profile P --set CLOSURE; CLOSURE/bin/switch-to-configuration MODE
//!           fails ──────────────────► roll back
//!       → mode boot: step awaiting-reboot, `reboot-pending` until the host booted
//!         the target (`boot.rs`: reboot policy, bounded reboots), then on as below
//!       → step: checking-health; health checks
//!           fail ───────────────────► roll back
//!       → step: confirming-connectivity; GET manifest + PUT status, retried up to
//!         connectivity-timeout
//!           never reached ──────────► roll back (connectivity-lost)
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
//! - `confirming-connectivity`: the connectivity check starts again.
//! - `awaiting-reboot`: checks whether the host booted the target (`boot.rs`).
//! - `rolling-back`: the rollback is done again (restoring the previous generation is
//!   idempotent), with the original reason.
//!
//! A manifest object the agent has finished with (applied, refused, rolled back) is
//! remembered by ETag and digest, so an unchanged one is never acted on twice; a
//! publisher retries a failed generation by publishing a new sequence number.
//! A closure refused by the fetch is downloaded and checked again after `backoff-max`.
//!
//! A host that pins a root of trust (`trust-root-keys`) first brings its root up to
//! date (`trust.rs`: one conditional GET while unchanged) and applies nothing while
//! the root is refused; its publisher and cache keys are the root's.
//!
//! Outcomes map to `once`'s exit codes ([`Outcome::exit_code`]). This file holds
//! the agent and the poll; `manifest.rs` the steps from a new manifest object to
//! its fetched closure, `activation.rs` those from there to healthy or rolled back.

mod activation;
mod boot;
mod connectivity;
mod manifest;
mod staged;
mod trust;

use fleet_core::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use fleet_core::bucket::Fetched;
use fleet_core::manifest::MAX_MANIFEST_SIZE;
use fleet_core::status::{AgentState, Generation, ReportedError};
use fleet_core::{Bucket, BucketError, BucketOptions, Key};
use jiff::Timestamp;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::pause::{self, Pause};
use crate::state::{ManifestMemo, MemoOutcome, State, StateStore};
use crate::{activate, facts, report};
use manifest::target_of;

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
    /// An operator paused deploys here (`fleet-agent pause`); nothing was applied.
    Paused,
    /// A `boot` deploy waits for the reboot into it.
    RebootPending,
    /// The desired closure is fetched and verified, waiting for a maintenance window
    /// or `activate_after`.
    Staged,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 9] = [
        Outcome::Healthy,
        Outcome::Refused,
        Outcome::RolledBack,
        Outcome::Failed,
        Outcome::Retry,
        Outcome::AccessDenied,
        Outcome::Paused,
        Outcome::RebootPending,
        Outcome::Staged,
    ];

    /// The outcome's name in metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Healthy => "healthy",
            Outcome::Refused => "refused",
            Outcome::RolledBack => "rolled-back",
            Outcome::Failed => "failed",
            Outcome::Retry => "retry",
            Outcome::AccessDenied => "access-denied",
            Outcome::Paused => "paused",
            Outcome::RebootPending => "reboot-pending",
            Outcome::Staged => "staged",
        }
    }

    /// Exit code of `fleet-agent once`: 0 healthy, 2 refused, 3 rolled back, 4 failed,
    /// 5 retry later (unreachable, transient), 6 access denied, 7 paused, 8 reboot
    /// pending, 9 staged. (1 is a configuration or local error before any cycle.)
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Healthy => 0,
            Outcome::Refused => 2,
            Outcome::RolledBack => 3,
            Outcome::Failed => 4,
            Outcome::Retry => 5,
            Outcome::AccessDenied => 6,
            Outcome::Paused => 7,
            Outcome::RebootPending => 8,
            Outcome::Staged => 9,
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
            // Retired is where the host should be: nothing to retry.
            MemoOutcome::Retired => Outcome::Healthy,
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
    metrics: Metrics,
    /// The host's identity key, which signs its reports (none: reports unsigned).
    identity: Option<fleet_core::SecretKey>,
    /// The root of trust, when the host pins one.
    trust: crate::trust::TrustState,
    /// When the closure the last cycle staged may be activated.
    wake_at: Option<Timestamp>,
}

/// The kind and message of an error that ended a cycle early: a full or read-only
/// state or staging directory gets its own kind and says what to do, anything else
/// is `agent-error`. The state file is only ever replaced whole (`state.rs`), so a
/// write that failed here left the last complete state on disk.
fn local_error(e: &anyhow::Error) -> (ErrorKind, String) {
    let kind = e
        .chain()
        .find_map(|c| {
            c.downcast_ref::<std::io::Error>()
                .and_then(crate::fetch::local_io_kind)
        })
        .unwrap_or(ErrorKind::AgentError);
    let advice = match kind {
        ErrorKind::DiskFull => {
            "; the filesystem is full: free space there. Nothing was changed (the state file still holds the last complete state) and the running generation is kept; the agent retries with backoff"
        }
        ErrorKind::DiskReadOnly => {
            "; the filesystem is read-only: remount it read-write (and check dmesg for why it went read-only). Nothing was changed and the running generation is kept; the agent retries with backoff"
        }
        _ => "",
    };
    (kind, format!("{e:#}{advice}"))
}

fn describe(g: &Generation) -> String {
    match g.sequence {
        Some(s) => format!("sequence {s} ({})", g.closure),
        None => format!("{} (found running before any deploy)", g.closure),
    }
}

impl Agent {
    /// Opens the bucket (with the credentials of `$CREDENTIALS_DIRECTORY` if there
    /// are any, else the AWS environment) and the state directory (taking its lock).
    pub fn open(settings: Settings) -> anyhow::Result<Self> {
        let credentials = crate::credentials::from_environment()?;
        if credentials.is_some() {
            tracing::info!("S3 credentials from $CREDENTIALS_DIRECTORY");
        }
        let opts = BucketOptions {
            credentials,
            request_timeout: settings.request_timeout,
            connect_timeout: settings.request_timeout.min(Duration::from_secs(10)),
            // Few retries inside one cycle: the daemon's own backoff takes over.
            max_retries: 2,
        };
        let bucket = Bucket::open(&settings.bucket, &opts)?;
        Self::with_bucket(settings, bucket)
    }

    /// Like [`Agent::open`] with a bucket opened by the caller (explicit credentials).
    pub fn with_bucket(settings: Settings, bucket: Bucket) -> anyhow::Result<Self> {
        let (store, state) = StateStore::open(&settings.state_dir)?;
        let trust = crate::trust::TrustState::load(&settings.state_dir, settings.trust.as_ref())?;
        // What the last run reported counts as reported: a restart alone is no event.
        let last_change = (state.reported.state != AgentState::Starting).then(|| {
            report::change_key(
                state.reported.state,
                state.reported.last_error.as_ref(),
                state.desired.as_ref(),
                state.current.as_ref(),
            )
        });
        let identity = crate::identity::load(&settings.state_dir)?;
        if let Some(k) = &identity {
            tracing::info!(
                key = k.name(),
                "status reports are signed with the host identity key"
            );
        }
        let mut agent = Self {
            identity,
            settings,
            bucket,
            store,
            state,
            last_change,
            status_dirty: true,
            phase: Arc::new(AtomicU8::new(phase::IDLE)),
            metrics: Metrics::default(),
            trust,
            wake_at: None,
        };
        if let Some(reset) = agent.store.reset().cloned() {
            // An event of its own, so the operator learns of it even though the
            // cycle that follows usually ends healthy and clears the error.
            let msg = format!(
                "{}; moved it to {} and started afresh: the running system is read from the profile and the manifest is read again; the highest manifest sequence accepted before, queued status events and any activation in progress were forgotten",
                reset.why,
                reset.moved_to.display()
            );
            agent.set(
                AgentState::Starting,
                Some(report::error(ErrorKind::StateReset, msg)),
            );
            agent.save()?;
        }
        Ok(agent)
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
            .is_some_and(|e| e.kind == ErrorKind::BucketUnreachable)
    }

    /// What the agent is doing now (see [`phase`]).
    pub fn phase(&self) -> Arc<AtomicU8> {
        self.phase.clone()
    }

    /// Runs one cycle. Never panics on anything the bucket serves; local failures
    /// (state directory not writable) are reported and retried with backoff.
    pub async fn cycle(&mut self) -> Outcome {
        self.wake_at = None;
        let outcome = match self.cycle_inner().await {
            Ok(o) => o,
            Err(e) => {
                let (kind, msg) = local_error(&e);
                tracing::error!(kind = kind.as_str(), "cycle failed: {msg}");
                let err = report::error(kind, &msg);
                // A step cut short by a local error is not under way any more.
                let state = match self.state.reported.state {
                    AgentState::Fetching | AgentState::Starting => AgentState::Failed,
                    s => s,
                };
                self.set(state, Some(err));
                // Most likely fails the same way; the error is reported all the same.
                let _ = self.save();
                Outcome::Retry
            }
        };
        self.phase.store(phase::IDLE, Ordering::SeqCst);
        self.metrics.cycle(&outcome, Timestamp::now());
        if let Some(path) = &self.settings.metrics_file
            && let Err(e) = self.metrics.write(path, &self.state)
        {
            tracing::warn!("could not write metrics-file {}: {e}", path.display());
        }
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
        if let Some(stopped) = self.check_trust(Timestamp::now()).await? {
            return Ok(stopped);
        }
        let key = Key::manifest(&self.settings.host);
        let now = Timestamp::now();
        let pause = pause::active(&self.settings.state_dir, now);
        let note = pause.as_ref().map(Pause::note);
        if self.state.reported.pause != note {
            // The status says why deploys wait (and stops saying so at once).
            self.state.reported.pause = note;
            self.status_dirty = true;
            self.save()?;
        }
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
            // A retired host stays `retired` under a pause: the tombstone is final,
            // while a pause only holds back what is still to be applied.
            Ok(Fetched::NotModified) => match &pause {
                Some(p) if !self.is_retired() => self.paused(p),
                _ => self.unchanged(),
            },
            Ok(Fetched::Object(o)) => {
                self.new_manifest(&key, o.bytes.as_ref(), o.etag, pause.as_ref())
                    .await
            }
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

    /// Deploys are paused: report `paused`, keeping the last error, and apply nothing.
    /// `desired` already holds the newest verified manifest's generation.
    fn paused(&mut self, p: &Pause) -> anyhow::Result<Outcome> {
        let pending = self
            .state
            .desired
            .as_ref()
            .filter(|d| self.state.current.as_ref().map(|c| &c.closure) != Some(&d.closure));
        match pending {
            Some(d) => {
                tracing::info!(pending = %describe(d), "{}; nothing is applied", p.describe())
            }
            None => tracing::info!("{}; nothing is pending", p.describe()),
        }
        let keep = self.state.reported.last_error.clone();
        if self.set(AgentState::Paused, keep) {
            self.save()?;
        }
        Ok(Outcome::Paused)
    }

    /// The manifest did not change: report what it ended as.
    /// Whether the last manifest taken was a tombstone (`fleet-publish retire`).
    fn is_retired(&self) -> bool {
        self.state
            .manifest
            .as_ref()
            .is_some_and(|m| m.outcome == MemoOutcome::Retired)
    }

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
                Some(exp) if self.skewed(now) >= exp => (
                    AgentState::Refused,
                    Some(report::error(
                        ErrorKind::ManifestExpired,
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
            while report::send_one_event(
                &self.bucket,
                &host,
                &mut self.state,
                self.identity.as_ref(),
            )
            .await?
            {
                sent = true;
            }
            if self.status_dirty || force {
                let r = report::build(&host, &self.state, facts::gather(&self.settings.facts_root));
                report::write_status(&self.bucket, &host, &r, self.identity.as_ref()).await?;
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
