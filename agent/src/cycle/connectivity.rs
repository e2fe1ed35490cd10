//! The connectivity check after a switch: the pull equivalent of deploy-rs's "magic
//! rollback".
//!
//! A generation can pass its health checks and still cut the host off from the
//! bucket (a firewall rule, a route, DNS, a proxy setting, the agent's credentials):
//! then no later manifest could ever repair it. So before committing, the agent
//! proves it can still do what every later deploy needs: a conditional GET of its own
//! manifest (`If-None-Match` with the ETag just applied; 304 and 200 both count) and
//! the status PUT (queued events first, then status.json). It tries again with
//! backoff (1 s doubling to 15 s) until `connectivity-timeout` (5 minutes by
//! default) has passed; if no try succeeded it rolls back to the previous generation
//! with `last_error.kind = connectivity-lost`. That report is queued like every
//! event, so it reaches the bucket once the restored generation can.
//!
//! The step is recorded (`confirming-connectivity`) before the first try, so a
//! restarted agent tries again rather than committing unchecked. Mode `boot` is
//! checked after the reboot into the new generation (`boot.rs`).
//! `connectivity-timeout = "0s"` turns the check off; a first deploy, with no previous
//! generation to return to, is not checked.

use std::sync::atomic::Ordering;
use std::time::Duration;

use fleet_core::manifest::MAX_MANIFEST_SIZE;
use fleet_core::{BucketError, ErrorKind, Key};
use tokio::time::Instant;

use super::{Agent, Outcome, describe, phase};
use crate::report;
use crate::state::{InFlight, Step};

/// Longest pause between two tries.
const MAX_WAIT: Duration = Duration::from_secs(15);

impl Agent {
    /// Proves the bucket is still reachable after activating `flight.target`, then
    /// commits; rolls back as `connectivity-lost` when the window passes without it.
    pub(super) async fn confirm_connectivity(
        &mut self,
        flight: InFlight,
    ) -> anyhow::Result<Outcome> {
        let window = self.settings.connectivity_timeout;
        if window.is_zero() {
            return self.commit(flight);
        }
        if flight.previous.is_none() {
            // A first deploy has nothing to return to: failing it would only report
            // `failed` for a host that runs the new generation anyway.
            tracing::info!("no previous generation to return to: connectivity not checked");
            return self.commit(flight);
        }
        self.phase.store(phase::ACTIVATING, Ordering::SeqCst);
        let flight = InFlight {
            step: Step::ConfirmingConnectivity,
            ..flight
        };
        self.state.in_flight = Some(flight.clone());
        self.save()?;
        let started = Instant::now();
        let deadline = started + window;
        let mut wait = Duration::from_secs(1);
        let mut tries = 0u32;
        let last = loop {
            tries += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let why = match tokio::time::timeout(
                left.max(Duration::from_millis(100)),
                self.reach_bucket(flight.etag.as_deref()),
            )
            .await
            {
                Ok(Ok(())) => {
                    tracing::info!(
                        tries,
                        after = ?started.elapsed(),
                        "the bucket is reachable from the new generation"
                    );
                    return self.commit(flight);
                }
                Ok(Err(why)) => why,
                Err(_) => format!("no answer within the {window:?} window"),
            };
            tracing::warn!(tries, "cannot reach the bucket after the switch: {why}");
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break why;
            }
            tokio::time::sleep(wait.min(left)).await;
            wait = (wait * 2).min(MAX_WAIT);
        };
        let reason = report::error(
            ErrorKind::ConnectivityLost,
            format!(
                "after activating {} the agent could not reach the bucket within connectivity-timeout ({window:?}, {tries} tries): {last}",
                describe(&flight.target)
            ),
        );
        self.rollback(flight, reason).await
    }

    /// One try: the conditional GET of the manifest, then the status PUT.
    async fn reach_bucket(&mut self, etag: Option<&str>) -> Result<(), String> {
        let key = Key::manifest(&self.settings.host);
        match self
            .bucket
            .get_if_changed(&key, etag, MAX_MANIFEST_SIZE)
            .await
        {
            // A missing or oversized manifest is still an answer from the bucket.
            Ok(_) | Err(BucketError::NotFound { .. } | BucketError::TooLarge { .. }) => {}
            Err(e) => return Err(format!("reading {key}: {e}")),
        }
        self.flush(true)
            .await
            .map_err(|e| format!("writing the status: {e}"))
    }
}
