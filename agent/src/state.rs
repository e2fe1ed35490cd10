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
//! On a state directory that went read-only the lock is taken on a read-only
//! descriptor, so the agent still runs its cycle and reports `disk-read-only` from the
//! first write that fails, instead of dying before it can say anything.
//!
//! A state file that does not parse (a disk that tore it, a hand edit) is moved to
//! `state.json.damaged` and the agent starts afresh ([`StateStore::reset`] says so,
//! and the agent reports it as a `state-reset` event). What a fresh state assumes is
//! in `docs/agent.md` ("Lost state"): the running system is read from the profile,
//! the manifest is read again, and the highest sequence accepted is forgotten. A
//! state file of another format version is not damage (an older agent after a newer
//! one) and stays an error.

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

/// Name the damaged state file is moved to before the agent starts afresh.
pub const DAMAGED_STATE_FILE: &str = "state.json.damaged";

/// The state file and the lock that goes with it.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    _lock: File,
    reset: Option<StateReset>,
}

/// A state file that did not parse and was moved aside when the store was opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateReset {
    /// Where the damaged file is now.
    pub moved_to: PathBuf,
    /// Why it was refused.
    pub why: String,
}

/// Why the state file could not be loaded.
enum LoadError {
    /// It is there but does not parse: damage or a hand edit.
    Damaged(anyhow::Error),
    /// Anything else (I/O, another format version): not repaired automatically.
    Other(anyhow::Error),
}

/// Opens the lock file; on a read-only filesystem, read-only (`flock` needs no write
/// access), so the agent can still run and report what is wrong.
fn open_lock(lock_path: &Path) -> anyhow::Result<File> {
    let rw = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path);
    match rw {
        Ok(f) => Ok(f),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::ROFS.raw_os_error()) => {
            tracing::warn!(
                "{} is on a read-only filesystem; running anyway to report it",
                lock_path.display()
            );
            File::open(lock_path)
                .with_context(|| format!("opening lock file {} read-only", lock_path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("opening lock file {}", lock_path.display())),
    }
}

impl StateStore {
    /// Creates the state directory if needed, takes its lock and loads the state (a
    /// missing file is a fresh state; a damaged one is moved aside, see
    /// [`StateStore::reset`]).
    pub fn open(dir: &Path) -> anyhow::Result<(Self, State)> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating state directory {}", dir.display()))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = open_lock(&lock_path)?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .with_context(|| {
                format!(
                    "another fleet-agent holds {}; only one agent may use a state directory",
                    lock_path.display()
                )
            })?;
        let path = dir.join(STATE_FILE);
        let (state, reset) = match Self::read(&path) {
            Ok(state) => (state, None),
            Err(LoadError::Other(e)) => return Err(e),
            Err(LoadError::Damaged(e)) => {
                let why = format!("{e:#}");
                let moved_to = dir.join(DAMAGED_STATE_FILE);
                std::fs::rename(&path, &moved_to)
                    .and_then(|()| fleet_core::fsutil::sync_dir(dir))
                    .with_context(|| {
                        format!("{why}; moving it to {} failed too", moved_to.display())
                    })?;
                tracing::error!(
                    "{why}; moved it to {} and starting afresh from the running system",
                    moved_to.display()
                );
                (State::default(), Some(StateReset { moved_to, why }))
            }
        };
        Ok((
            Self {
                path,
                _lock: lock,
                reset,
            },
            state,
        ))
    }

    /// Reads the state file without taking the lock (for `fleet-agent state`).
    pub fn load(path: &Path) -> anyhow::Result<State> {
        Self::read(path).map_err(|(LoadError::Damaged(e) | LoadError::Other(e))| e)
    }

    fn read(path: &Path) -> Result<State, LoadError> {
        use std::io::Read;
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => {
                return Err(LoadError::Other(
                    anyhow::Error::new(e).context(format!("reading {}", path.display())),
                ));
            }
        };
        let mut bytes = Vec::new();
        f.take(MAX_STATE_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| {
                LoadError::Other(
                    anyhow::Error::new(e).context(format!("reading {}", path.display())),
                )
            })?;
        let bad = || {
            format!(
                "state file {} is unreadable; it is only ever replaced atomically, so it was \
                 damaged or edited. The agent moves it to {DAMAGED_STATE_FILE} and starts \
                 afresh (forgetting the highest manifest sequence it accepted)",
                path.display()
            )
        };
        if bytes.len() as u64 > MAX_STATE_FILE {
            return Err(LoadError::Damaged(anyhow::anyhow!("{}: too large", bad())));
        }
        let state: State = serde_json::from_slice(&bytes)
            .with_context(bad)
            .map_err(LoadError::Damaged)?;
        if state.version != 1 {
            return Err(LoadError::Other(anyhow::anyhow!(
                "state file {} has version {}; this agent understands version 1 (an older agent after a newer one: upgrade the agent again)",
                path.display(),
                state.version
            )));
        }
        Ok(state)
    }

    /// The damaged state file this store moved aside when it was opened, if any.
    pub fn reset(&self) -> Option<&StateReset> {
        self.reset.as_ref()
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
    fn a_damaged_file_is_moved_aside_and_named() {
        let d = tempfile::tempdir().unwrap();
        let junk = "{\"version\": 1, \"junk\"";
        std::fs::write(d.path().join(STATE_FILE), junk).unwrap();
        let e = format!(
            "{:#}",
            StateStore::load(&d.path().join(STATE_FILE)).unwrap_err()
        );
        assert!(e.contains("state.json") && e.contains("damaged"), "{e}");
        let (store, state) = StateStore::open(d.path()).unwrap();
        assert_eq!(state, State::default());
        let reset = store.reset().expect("a reset");
        assert!(reset.why.contains("state.json"), "{}", reset.why);
        assert_eq!(reset.moved_to, d.path().join(DAMAGED_STATE_FILE));
        assert_eq!(std::fs::read_to_string(&reset.moved_to).unwrap(), junk);
        assert!(!d.path().join(STATE_FILE).exists());
    }

    #[test]
    fn another_version_is_an_error_not_a_reset() {
        let d = tempfile::tempdir().unwrap();
        let mut v = serde_json::to_value(State::default()).unwrap();
        v["version"] = 2.into();
        std::fs::write(d.path().join(STATE_FILE), v.to_string()).unwrap();
        let e = format!("{:#}", StateStore::open(d.path()).unwrap_err());
        assert!(e.contains("version 2"), "{e}");
        assert!(d.path().join(STATE_FILE).exists());
    }
}
