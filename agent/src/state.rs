//! The agent's local state: `<state-dir>/state.json`, one JSON object rewritten
//! whole with [`fleet_core::fsutil::write_atomic`] (temporary file, fsync, rename,
//! fsync of the directory) after every step, so `kill -9` or a power cut leaves either
//! the old state or the new one.
//!
//! ```json
//! {
//!   "version": 1,
//!   "highest_seen": {"sequence": 8, "digest": "<sha-256 of the manifest bytes>"},
//!   "manifest": {"etag": "\"5f2…\"", "outcome": "applied", "error": null,
//!                "digest": "<sha-256>", "expires_at": "2026-12-03T21:25:00Z",
//!                "retry_after": null},
//!   "desired": {"sequence": 8, "closure": "/nix/store/…-nixos-system-web-1"},
//!   "current": {"sequence": 8, "closure": "/nix/store/…-nixos-system-web-1"},
//!   "previous": {"sequence": 7, "closure": "/nix/store/…-nixos-system-web-1"},
//!   "in_flight": null,
//!   "reported": {"state": "healthy", "last_error": null},
//!   "event_counter": 12,
//!   "pending_events": [],
//!   "dropped_events": 0
//! }
//! ```
//!
//! - `highest_seen` is updated only when a manifest verifies; a refused one never
//!   moves it.
//! - `manifest` remembers the ETag of the last manifest object the agent finished
//!   with and how that ended, so an unchanged object (HTTP 304) is neither downloaded
//!   nor acted on again: an applied manifest is a heartbeat, a refused or rolled-back
//!   one keeps being reported as such without a second activation.
//! - `in_flight` is written *before* activation starts and names the target, the
//!   generation to return to and the step reached (`activating`, `checking-health`,
//!   `confirming-connectivity`, `awaiting-reboot`, `rolling-back`, as `"step": {"kind": …}`). A restarted agent finishes from there (see `cycle.rs`).
//! - `pending_events` are status events not yet written to the bucket, oldest first,
//!   at most `max-queued-events` (the oldest are dropped and counted).
//!
//! A lock file (`<state-dir>/lock`, `flock`) keeps two agents off one state directory.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;
use fleet_core::Activation;
use fleet_core::manifest::SeenManifest;
use fleet_core::status::{AgentState, Generation, PauseNote, ReportedError, StatusReport};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Name of the state file in the state directory.
pub const STATE_FILE: &str = "state.json";
/// Name of the lock file in the state directory.
pub const LOCK_FILE: &str = "lock";
/// Largest state file read back.
const MAX_STATE_FILE: u64 = 16 * 1024 * 1024;

/// How the agent finished with a manifest object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemoOutcome {
    /// Verified and running (or already running).
    Applied,
    /// The manifest or its closure was refused.
    Refused,
    /// Activated, failed, and the previous generation was restored.
    RolledBack,
    /// Activated, failed, and nothing could be restored.
    Failed,
    /// A tombstone (`fleet-publish retire`): nothing is applied any more.
    Retired,
}

impl MemoOutcome {
    /// The agent state this outcome is reported as.
    pub fn agent_state(self) -> AgentState {
        match self {
            MemoOutcome::Applied => AgentState::Healthy,
            MemoOutcome::Refused => AgentState::Refused,
            MemoOutcome::RolledBack => AgentState::RolledBack,
            MemoOutcome::Failed => AgentState::Failed,
            MemoOutcome::Retired => AgentState::Retired,
        }
    }
}

/// The last manifest object the agent finished with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestMemo {
    /// Its ETag (`None` when the store gave none: then every poll reads it again).
    pub etag: Option<String>,
    /// How it ended.
    pub outcome: MemoOutcome,
    /// The error it ended with, reported again while the object is unchanged.
    pub error: Option<ReportedError>,
    /// SHA-256 of its bytes, hex: the same bytes under a new ETag (a re-upload) are
    /// not acted on again.
    pub digest: Option<String>,
    /// Expiry of the applied manifest, to report a freeze even when the object is
    /// unchanged.
    pub expires_at: Option<Timestamp>,
    /// For a closure refused by the fetch: when to download and check it again
    /// (the bucket may have been repaired without a new manifest).
    pub retry_after: Option<Timestamp>,
}

impl ManifestMemo {
    /// Whether a refusal is due for another try at `now`.
    pub fn retry_due(&self, now: Timestamp) -> bool {
        self.retry_after.is_some_and(|t| now >= t)
    }
}

/// The step an activation reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Step {
    /// Profile switch and `switch-to-configuration` started; outcome unknown until
    /// the next write.
    Activating,
    /// `switch-to-configuration` succeeded; health checks started.
    CheckingHealth,
    /// Health checks passed; the agent is proving it still reaches the bucket
    /// (`connectivity-timeout`) before it commits.
    ConfirmingConnectivity,
    /// Mode `boot`: the target is the boot default; waiting for the reboot into it.
    AwaitingReboot {
        /// Reboots the agent asked for (at most one).
        reboots: u32,
        /// The boot id when it asked, to tell that a reboot happened.
        boot_id: Option<String>,
    },
    /// The target failed; restoring `previous` started.
    RollingBack {
        /// Why the target failed.
        reason: ReportedError,
    },
}

/// An activation in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InFlight {
    /// The generation being activated.
    pub target: Generation,
    /// How it is activated.
    pub activation: Activation,
    /// The generation to return to if it fails.
    pub previous: Option<Generation>,
    /// ETag of the manifest object that asked for it.
    pub etag: Option<String>,
    /// Expiry of that manifest.
    pub expires_at: Timestamp,
    /// When activation started.
    pub started_at: Timestamp,
    /// How far it got.
    pub step: Step,
}

/// What the status object says now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reported {
    /// The agent state.
    pub state: AgentState,
    /// The last error, kept until a cycle succeeds.
    pub last_error: Option<ReportedError>,
    /// The local pause while one holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseNote>,
}

impl Default for Reported {
    fn default() -> Self {
        Self {
            state: AgentState::Starting,
            last_error: None,
            pause: None,
        }
    }
}

/// A status event not yet written to the bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingEvent {
    /// Its object name (`<time>-<counter>`).
    pub name: String,
    /// The report.
    pub report: StatusReport,
}

/// The whole state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Format version; always 1 here.
    pub version: u32,
    /// The newest manifest that verified.
    pub highest_seen: Option<SeenManifest>,
    /// The last manifest object finished with.
    pub manifest: Option<ManifestMemo>,
    /// What the newest verified manifest asks for.
    pub desired: Option<Generation>,
    /// What runs now.
    pub current: Option<Generation>,
    /// What ran before `current`.
    pub previous: Option<Generation>,
    /// An activation in progress.
    pub in_flight: Option<InFlight>,
    /// What the status says.
    pub reported: Reported,
    /// Counter for event names; never goes down.
    pub event_counter: u64,
    /// Events not yet written, oldest first.
    pub pending_events: VecDeque<PendingEvent>,
    /// Events dropped because the queue was full.
    pub dropped_events: u64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            version: 1,
            highest_seen: None,
            manifest: None,
            desired: None,
            current: None,
            previous: None,
            in_flight: None,
            reported: Reported::default(),
            event_counter: 0,
            pending_events: VecDeque::new(),
            dropped_events: 0,
        }
    }
}

/// The state file and the lock that goes with it.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    _lock: File,
}

impl StateStore {
    /// Creates the state directory if needed, takes its lock and loads the state (a
    /// missing file is a fresh state).
    pub fn open(dir: &Path) -> anyhow::Result<(Self, State)> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating state directory {}", dir.display()))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening lock file {}", lock_path.display()))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .with_context(|| {
                format!(
                    "another fleet-agent holds {}; only one agent may use a state directory",
                    lock_path.display()
                )
            })?;
        let path = dir.join(STATE_FILE);
        let state = Self::load(&path)?;
        Ok((Self { path, _lock: lock }, state))
    }

    /// Reads the state file without taking the lock (for `fleet-agent state`).
    pub fn load(path: &Path) -> anyhow::Result<State> {
        use std::io::Read;
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut bytes = Vec::new();
        f.take(MAX_STATE_FILE + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        let bad = || {
            format!(
                "state file {} is unreadable; it is only ever replaced atomically, so it was \
                 damaged or edited. Move it away to start afresh (the agent then forgets the \
                 highest manifest sequence it accepted, and trusts the next valid manifest)",
                path.display()
            )
        };
        anyhow::ensure!(bytes.len() as u64 <= MAX_STATE_FILE, "{}: too large", bad());
        let state: State = serde_json::from_slice(&bytes).with_context(bad)?;
        anyhow::ensure!(
            state.version == 1,
            "state file {} has version {}; this agent understands version 1",
            path.display(),
            state.version
        );
        Ok(state)
    }

    /// Writes `state` atomically.
    pub fn save(&self, state: &State) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(state).context("serialising the state")?;
        fleet_core::fsutil::write_atomic(&self.path, &bytes, 0o600, true)
            .with_context(|| format!("writing state file {}", self.path.display()))
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_core::StorePath;

    fn generation(seq: u64) -> Generation {
        Generation {
            sequence: Some(seq),
            closure: StorePath::new("/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-top").unwrap(),
        }
    }

    #[test]
    fn round_trips_and_locks() {
        let d = tempfile::tempdir().unwrap();
        let (store, fresh) = StateStore::open(d.path()).unwrap();
        assert_eq!(fresh, State::default());
        let mut s = State {
            current: Some(generation(3)),
            ..State::default()
        };
        s.in_flight = Some(InFlight {
            target: generation(4),
            activation: Activation::Switch,
            previous: Some(generation(3)),
            etag: Some("\"e\"".into()),
            expires_at: Timestamp::UNIX_EPOCH,
            started_at: Timestamp::UNIX_EPOCH,
            step: Step::RollingBack {
                reason: ReportedError {
                    kind: fleet_core::ErrorKind::HealthCheckFailed,
                    message: "m".into(),
                    at: Timestamp::UNIX_EPOCH,
                },
            },
        });
        store.save(&s).unwrap();
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(text.contains("\"kind\": \"rolling-back\""), "{text}");
        // A second agent on the same directory is refused while the first holds it.
        let e = StateStore::open(d.path()).unwrap_err().to_string();
        assert!(e.contains("another fleet-agent"), "{e}");
        drop(store);
        let (_store, again) = StateStore::open(d.path()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(STATE_FILE), "{\"version\": 1, \"junk\"").unwrap();
        let e = format!("{:#}", StateStore::open(d.path()).unwrap_err());
        assert!(
            e.contains("state.json") && e.contains("Move it away"),
            "{e}"
        );
    }
}
