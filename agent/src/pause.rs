//! The local pause: `<state-dir>/pause.json`, written by `fleet-agent pause` and
//! removed by `fleet-agent resume` (or by the agent once `until` has passed).
//!
//! ```json
//! {"since": "2026-12-02T19:40:00Z", "until": "2026-12-02T21:40:00Z", "reason": "disk swap"}
//! ```
//!
//! `until` and `reason` may be `null`. The file is written whole with
//! [`fleet_core::fsutil::write_atomic`], so an agent reading it at any moment sees
//! the old pause or the new one, and it survives restarts of the agent and of the
//! host. It lives beside the state file but is not part of it: the running agent
//! holds the state directory's lock, and pausing must not need that lock.
//!
//! While a pause is active, each cycle still reads and verifies the manifest and
//! reports `paused` with the manifest's generation as `desired`, but fetches and
//! activates nothing (see `cycle/mod.rs`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Name of the pause file in the state directory.
pub const PAUSE_FILE: &str = "pause.json";
/// Longest reason kept, in bytes.
pub const MAX_REASON_LEN: usize = 1024;

/// An operator's pause.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pause {
    /// When it was set.
    pub since: Timestamp,
    /// When it ends by itself; `None`: only `fleet-agent resume` ends it.
    pub until: Option<Timestamp>,
    /// Why, in the operator's words.
    pub reason: Option<String>,
}

impl Pause {
    /// Whether the pause holds at `now`.
    pub fn active(&self, now: Timestamp) -> bool {
        self.until.is_none_or(|u| now < u)
    }

    /// The pause as the status reports it.
    pub fn note(&self) -> fleet_core::status::PauseNote {
        fleet_core::status::PauseNote {
            since: self.since,
            until: self.until,
            reason: self.reason.clone(),
        }
    }

    /// One line for logs and `fleet-agent pause`'s output.
    pub fn describe(&self) -> String {
        let until = match self.until {
            Some(u) => format!("until {u}"),
            None => "until `fleet-agent resume`".to_owned(),
        };
        match &self.reason {
            Some(r) => format!("paused since {} {until}: {r}", self.since),
            None => format!("paused since {} {until}", self.since),
        }
    }
}

/// The pause file of `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(PAUSE_FILE)
}

/// The pause recorded in `state_dir`, active or not; `None` without a file.
pub fn load(state_dir: &Path) -> anyhow::Result<Option<Pause>> {
    let p = path(state_dir);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    };
    let pause = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is not a pause file; remove it with `fleet-agent resume`",
            p.display()
        )
    })?;
    Ok(Some(pause))
}

/// Writes `pause` to `state_dir` (created if missing), atomically.
pub fn save(state_dir: &Path, pause: &Pause) -> anyhow::Result<()> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let p = path(state_dir);
    let mut bytes = serde_json::to_vec(pause)?;
    bytes.push(b'\n');
    fleet_core::fsutil::write_atomic(&p, &bytes, 0o644, true)
        .with_context(|| format!("writing {}", p.display()))
}

/// Removes the pause of `state_dir`; whether there was one.
pub fn remove(state_dir: &Path) -> anyhow::Result<bool> {
    let p = path(state_dir);
    match std::fs::remove_file(&p) {
        Ok(()) => {
            fleet_core::fsutil::sync_dir(state_dir)
                .with_context(|| format!("syncing {}", state_dir.display()))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", p.display())),
    }
}

/// The pause in force at `now`, for a cycle: an expired one is removed (logged), and
/// an unreadable file counts as a pause, so a damaged file never lets deploys
/// through.
pub fn active(state_dir: &Path, now: Timestamp) -> Option<Pause> {
    match load(state_dir) {
        Ok(Some(p)) if p.active(now) => Some(p),
        Ok(Some(p)) => {
            tracing::info!("the pause has expired ({}); resuming", p.describe());
            if let Err(e) = remove(state_dir) {
                tracing::warn!("{e:#}");
            }
            None
        }
        Ok(None) => None,
        Err(e) => {
            tracing::error!("{e:#}; staying paused");
            Some(Pause {
                since: now,
                until: None,
                reason: Some(format!("{e:#}")),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    #[test]
    fn saved_pauses_load_expire_and_go_away() {
        let d = tempfile::tempdir().unwrap();
        let now = Timestamp::now();
        assert_eq!(load(d.path()).unwrap(), None);
        assert!(active(d.path(), now).is_none());
        let p = Pause {
            since: now,
            until: Some(now + SignedDuration::from_hours(1)),
            reason: Some("disk swap".into()),
        };
        save(d.path(), &p).unwrap();
        assert_eq!(load(d.path()).unwrap(), Some(p.clone()));
        assert_eq!(active(d.path(), now), Some(p.clone()));
        // Past `until` it is over, and the file is gone.
        assert!(active(d.path(), now + SignedDuration::from_hours(2)).is_none());
        assert!(!path(d.path()).exists());
        save(d.path(), &p).unwrap();
        assert!(remove(d.path()).unwrap());
        assert!(!remove(d.path()).unwrap());
    }

    #[test]
    fn a_damaged_file_keeps_the_host_paused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(path(d.path()), "{not json").unwrap();
        let p = active(d.path(), Timestamp::now()).unwrap();
        assert!(p.reason.unwrap().contains("pause.json"));
    }
}
