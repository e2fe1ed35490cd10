//! Scheduled activation: a fetched and verified closure waits (state `staged`) while
//! the maintenance windows are closed or the manifest's `activate_after` lies ahead.
//!
//! The windows are the manifest's `maintenance_windows` when it has them, else the
//! host's `maintenance-windows` (none: always open); both are read in the host's
//! `time-zone` by [`crate::window`]. Waiting happens after the fetch, so the closure
//! is downloaded and verified ahead of time (prefetch) and activation at the window's
//! start takes only the switch. A staged manifest is not remembered as finished: every
//! poll reads it again (the fetch finds every path present), and the daemon also
//! wakes at [`Agent::wake_at`], the time the wait ends, so activation starts within
//! a second of it rather than at the next poll.

use fleet_core::Manifest;
use fleet_core::status::AgentState;
use jiff::Timestamp;

use super::{Agent, Outcome, describe, target_of};
use crate::window::{WindowError, Windows};

impl Agent {
    /// The windows that govern `m`: its own, or the host's.
    pub(super) fn windows_for(&self, m: &Manifest) -> Result<Windows, WindowError> {
        match &m.maintenance_windows {
            Some(texts) => Windows::parse(
                "the manifest's maintenance_windows",
                texts,
                self.settings.windows.tz.clone(),
            ),
            None => Ok(self.settings.windows.clone()),
        }
    }

    /// `Some(Staged)` when `m` must wait (see the module docs); the wait's end is
    /// kept for [`Agent::wake_at`].
    pub(super) fn hold_for_schedule(
        &mut self,
        m: &Manifest,
        windows: &Windows,
    ) -> anyhow::Result<Option<Outcome>> {
        let now = Timestamp::now();
        let (wake, why) = match m.activate_after {
            Some(t) if now < t => (Some(t), format!("the manifest says activate_after {t}")),
            _ if !windows.is_open(now) => (
                windows.next_open(now),
                format!("outside the maintenance windows {}", windows.describe()),
            ),
            _ => return Ok(None),
        };
        self.wake_at = wake;
        tracing::info!(
            target = %describe(&target_of(m)),
            until = ?wake,
            "staged: fetched and verified; {why}"
        );
        if self.set(AgentState::Staged, None) {
            self.save()?;
        }
        Ok(Some(Outcome::Staged))
    }

    /// When a staged closure may be activated, if the last cycle staged one.
    pub fn wake_at(&self) -> Option<Timestamp> {
        self.wake_at
    }
}
