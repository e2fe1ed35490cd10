//! A rollout's state: how far the rollout of one release ([`crate::release`]) got.
//!
//! Stored at `releases/<id>/rollout.json` ([`crate::layout::Key::rollout`]) beside
//! its release, as a DSSE envelope of payload type [`ROLLOUT_PAYLOAD_TYPE`] signed
//! with a publisher key, and only ever replaced by compare-and-swap on its ETag: the
//! object is the rollout's one coordinator, so any number of `fleet-publish rollout
//! advance` runs (cron, CI, an operator) can move it on at once. The payload:
//!
//! ```json
//! {
//!   "version": 1,
//!   "release": "2026-12-02-a",
//!   "release_sha256": "9f86d0…",
//!   "revision": 4,
//!   "phase": "running",
//!   "auto_rollback": false,
//!   "force": false,
//!   "halt_reason": null,
//!   "waves": [
//!     {"started_at": "2026-12-02T21:30:00Z", "settled_at": "2026-12-02T21:32:00Z",
//!      "completed_at": null,
//!      "hosts": {"web-1": {"previous": {"sequence": 7, "closure": "/nix/store/…-a"},
//!                          "sequence": 8, "outcome": "healthy", "rolled_back_to": null}}},
//!     {"started_at": null, "settled_at": null, "completed_at": null, "hosts": {}}
//!   ],
//!   "log": [{"time": "2026-12-02T21:30:00Z", "by": "publisher-1", "event": "wave 1 started: web-1"}],
//!   "updated_at": "2026-12-02T21:32:00Z"
//! }
//! ```
//!
//! `phase` is `running`, `paused`, `halted`, `done` or `aborted`. A wave is
//! *started* once its hosts and their previous manifests are recorded (the claim),
//! its hosts' `sequence` once their manifests are written, *settled* once every host
//! is healthy or bad within budget, *completed* once it stayed so for its soak time.
//! `log` keeps every step (the newest [`MAX_LOG`]).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::envelope::{self, EnvelopeError};
use crate::host::HostName;
use crate::keys::{SecretKey, TrustedKeys};
use crate::store_path::StorePath;

/// DSSE payload type of a rollout state.
pub const ROLLOUT_PAYLOAD_TYPE: &str = "application/vnd.fleet.rollout.v1+json";
/// Largest rollout state accepted.
pub const MAX_ROLLOUT_SIZE: u64 = 16 * 1024 * 1024;
/// Log entries kept.
pub const MAX_LOG: usize = 1000;

/// Where a rollout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// `advance` moves it on.
    Running,
    /// Stopped by an operator; `resume` continues.
    Paused,
    /// Stopped on its failure budget; only a rollback or a new release goes on.
    Halted,
    /// Every wave completed.
    Done,
    /// Stopped by an operator for good.
    Aborted,
}

impl Phase {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Paused => "paused",
            Phase::Halted => "halted",
            Phase::Done => "done",
            Phase::Aborted => "aborted",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a host of a started wave is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostOutcome {
    /// Its manifest is (being) written; it has not reported the new closure yet.
    Pending,
    /// It runs the release's closure and is healthy.
    Healthy,
    /// It failed or refused the release's closure.
    Failed,
    /// It tried the closure and rolled itself back.
    RolledBack,
    /// It did not report within the report deadline.
    Silent,
    /// Held (`fleet-publish hold`): left alone.
    SkippedHeld,
    /// Retired (`fleet-publish retire`, its manifest a tombstone): left alone.
    SkippedRetired,
}

impl HostOutcome {
    /// Whether the rollout left it alone (held or retired): it gets no manifest and
    /// counts neither for nor against a budget.
    pub fn is_skipped(self) -> bool {
        matches!(self, HostOutcome::SkippedHeld | HostOutcome::SkippedRetired)
    }

    /// Whether it counts against a failure budget.
    pub fn is_bad(self) -> bool {
        matches!(
            self,
            HostOutcome::Failed | HostOutcome::RolledBack | HostOutcome::Silent
        )
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            HostOutcome::Pending => "pending",
            HostOutcome::Healthy => "healthy",
            HostOutcome::Failed => "failed",
            HostOutcome::RolledBack => "rolled-back",
            HostOutcome::Silent => "silent",
            HostOutcome::SkippedHeld => "skipped-held",
            HostOutcome::SkippedRetired => "skipped-retired",
        }
    }
}

/// A manifest a host had: sequence and closure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Previous {
    /// Its sequence.
    pub sequence: u64,
    /// Its closure.
    pub closure: StorePath,
}

/// One host of a started wave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostState {
    /// Its manifest when the wave started, if it had one.
    pub previous: Option<Previous>,
    /// The sequence of the manifest the rollout wrote, once written.
    pub sequence: Option<u64>,
    /// How it is doing.
    pub outcome: HostOutcome,
    /// The sequence of the rollback manifest, once rolled back.
    pub rolled_back_to: Option<u64>,
}

/// One wave.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaveState {
    /// When it was claimed.
    pub started_at: Option<Timestamp>,
    /// When every host was healthy or bad within budget.
    pub settled_at: Option<Timestamp>,
    /// When its soak ended and the next wave could start.
    pub completed_at: Option<Timestamp>,
    /// Its hosts, once started.
    pub hosts: BTreeMap<HostName, HostState>,
}

/// How many hosts of a wave are in each outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WaveCounts {
    /// Hosts in the wave's plan.
    pub hosts: usize,
    /// Healthy on the release's closure.
    pub healthy: usize,
    /// Written, no answer yet (or not written yet, once started).
    pub pending: usize,
    /// Failed, rolled back or silent.
    pub bad: usize,
    /// Held, skipped.
    pub skipped: usize,
    /// Rolled back by the publisher after a halt.
    pub reverted: usize,
}

impl WaveState {
    /// Counts its hosts by outcome; `planned` is the wave's size in the release.
    pub fn counts(&self, planned: usize) -> WaveCounts {
        let mut c = WaveCounts {
            hosts: planned,
            ..WaveCounts::default()
        };
        for s in self.hosts.values() {
            match s.outcome {
                HostOutcome::Pending => c.pending += 1,
                HostOutcome::Healthy => c.healthy += 1,
                HostOutcome::SkippedHeld | HostOutcome::SkippedRetired => c.skipped += 1,
                _ => c.bad += 1,
            }
            if s.rolled_back_to.is_some() {
                c.reverted += 1;
            }
        }
        c
    }

    /// `not started`, `in progress`, `soaking` or `completed`.
    pub fn stage(&self) -> &'static str {
        match (self.started_at, self.settled_at, self.completed_at) {
            (_, _, Some(_)) => "completed",
            (_, Some(_), None) => "soaking",
            (Some(_), None, None) => "in progress",
            (None, _, _) => "not started",
        }
    }
}

/// One step, for the record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEntry {
    /// When.
    pub time: Timestamp,
    /// The publisher key that signed the state it was written in.
    pub by: String,
    /// What happened.
    pub event: String,
}

/// The state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutState {
    /// Format version; 1.
    pub version: u32,
    /// The release's id.
    pub release: String,
    /// SHA-256 (hex) of the release object.
    pub release_sha256: String,
    /// Incremented by every write.
    pub revision: u64,
    /// Where it is.
    pub phase: Phase,
    /// Roll the touched hosts back when it halts.
    pub auto_rollback: bool,
    /// Deploy held and retired hosts too.
    pub force: bool,
    /// Why it halted (or was aborted).
    pub halt_reason: Option<String>,
    /// One per wave of the plan.
    pub waves: Vec<WaveState>,
    /// Every step.
    pub log: Vec<LogEntry>,
    /// When it was last written.
    pub updated_at: Timestamp,
}

/// Why a rollout state cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    /// The envelope does not verify.
    #[error("the rollout state of release {release} does not verify: {error}")]
    Envelope {
        /// The release.
        release: String,
        /// The envelope's error.
        error: EnvelopeError,
    },
    /// The payload is not a rollout state.
    #[error("the rollout state of release {release} is malformed: {why}")]
    Malformed {
        /// The release.
        release: String,
        /// What is wrong.
        why: String,
    },
}

/// A verified rollout state.
#[derive(Clone, Debug)]
pub struct VerifiedRollout {
    /// The payload.
    pub state: RolloutState,
    /// The publisher key that signed it.
    pub signed_by: String,
}

impl RolloutState {
    /// A fresh state for a release of `waves` waves, signed by `by`.
    pub fn new(
        release: &str,
        release_sha256: &str,
        waves: usize,
        auto_rollback: bool,
        by: &str,
    ) -> Self {
        let now = Timestamp::now();
        Self {
            version: 1,
            release: release.to_owned(),
            release_sha256: release_sha256.to_owned(),
            revision: 0,
            phase: Phase::Running,
            auto_rollback,
            force: false,
            halt_reason: None,
            waves: vec![WaveState::default(); waves],
            log: vec![LogEntry {
                time: now,
                by: by.to_owned(),
                event: format!("release {release} created, {waves} wave(s)"),
            }],
            updated_at: now,
        }
    }

    /// The first wave not completed (0-based), or `None` when all are.
    pub fn current_wave(&self) -> Option<usize> {
        self.waves.iter().position(|w| w.completed_at.is_none())
    }

    /// Records a step (keeping the newest [`MAX_LOG`]).
    pub fn record(&mut self, by: &str, event: impl Into<String>) {
        let now = Timestamp::now();
        self.log.push(LogEntry {
            time: now,
            by: by.to_owned(),
            event: event.into(),
        });
        if self.log.len() > MAX_LOG {
            let cut = self.log.len() - MAX_LOG;
            self.log.drain(..cut);
        }
        self.updated_at = now;
    }

    /// Every host of a started wave whose outcome counts against a budget.
    pub fn bad_hosts(&self) -> Vec<(&HostName, HostOutcome)> {
        self.waves
            .iter()
            .flat_map(|w| w.hosts.iter())
            .filter(|(_, s)| s.outcome.is_bad())
            .map(|(h, s)| (h, s.outcome))
            .collect()
    }

    /// Serialises and signs the state; returns the bytes to store.
    pub fn sign(&self, key: &SecretKey) -> Vec<u8> {
        let payload = serde_json::to_vec_pretty(self).expect("rollout state serialises");
        envelope::seal(ROLLOUT_PAYLOAD_TYPE, &payload, key)
    }

    /// Verifies stored bytes read as the rollout of `release`.
    pub fn verify(
        bytes: &[u8],
        release: &str,
        trusted: &TrustedKeys,
    ) -> Result<VerifiedRollout, RolloutError> {
        let opened = envelope::open(bytes, ROLLOUT_PAYLOAD_TYPE, trusted, MAX_ROLLOUT_SIZE)
            .map_err(|error| RolloutError::Envelope {
                release: release.to_owned(),
                error,
            })?;
        let malformed = |why: String| RolloutError::Malformed {
            release: release.to_owned(),
            why,
        };
        let state: RolloutState = serde_json::from_slice(&opened.payload)
            .map_err(|e| malformed(format!("payload: {e}")))?;
        if state.version != 1 {
            return Err(malformed(format!("unsupported version {}", state.version)));
        }
        if state.release != release {
            return Err(malformed(format!("it names release {:?}", state.release)));
        }
        Ok(VerifiedRollout {
            state,
            signed_by: opened.signed_by,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_verify_for_their_release_only() {
        let key = SecretKey::generate("publisher-1").unwrap();
        let mut s = RolloutState::new("r-1", "00", 3, true, "publisher-1");
        assert_eq!(s.current_wave(), Some(0));
        s.waves[0].completed_at = Some(Timestamp::now());
        assert_eq!(s.current_wave(), Some(1));
        for i in 0..(MAX_LOG + 5) {
            s.record("publisher-1", format!("step {i}"));
        }
        assert_eq!(s.log.len(), MAX_LOG);
        let bytes = s.sign(&key);
        let trusted = TrustedKeys::new([key.public()]);
        assert_eq!(
            RolloutState::verify(&bytes, "r-1", &trusted).unwrap().state,
            s
        );
        let e = RolloutState::verify(&bytes, "r-2", &trusted).unwrap_err();
        assert!(e.to_string().contains("names release \"r-1\""), "{e}");
        let other = SecretKey::generate("publisher-2").unwrap();
        assert!(RolloutState::verify(&bytes, "r-1", &TrustedKeys::new([other.public()])).is_err());
        assert!(HostOutcome::Silent.is_bad() && !HostOutcome::SkippedHeld.is_bad());
    }
}
