//! The activation steps of a cycle: the in-flight record written before anything
//! runs, profile and switch, health checks, the connectivity check
//! (`connectivity.rs`), then commit or roll back; and resuming from the step an
//! interrupted activation recorded.

use fleet_core::ErrorKind;
use std::sync::atomic::Ordering;

use fleet_core::status::{AgentState, ReportedError};
use fleet_core::{Activation, StorePath};

use super::{Agent, Outcome, describe, phase};
use crate::state::{InFlight, ManifestMemo, MemoOutcome, Step};
use crate::{activate, health, report};

impl Agent {
    /// Activates `flight.target`; `in_flight` is on disk before anything runs.
    pub(super) async fn activate(&mut self, flight: InFlight) -> anyhow::Result<Outcome> {
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
                ErrorKind::ActivationFailed,
                format!("activating {} failed: {e}", describe(target)),
            );
            return self.rollback(flight, reason).await;
        }
        if flight.activation == Activation::Boot {
            return self.await_reboot(flight).await;
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
        activate::switch(
            &s.store_root,
            closure,
            mode,
            s.activation_timeout,
            &s.child_env,
        )
        .await
    }

    pub(super) async fn check_health(&mut self, flight: InFlight) -> anyhow::Result<Outcome> {
        self.phase.store(phase::ACTIVATING, Ordering::SeqCst);
        if let Err(f) = health::run_all(
            &self.settings.health_checks,
            &self.settings.child_env,
            &self.settings.facts_root,
        )
        .await
        {
            let reason = report::error(
                ErrorKind::HealthCheckFailed,
                format!("after activating {}: {f}", describe(&flight.target)),
            );
            return self.rollback(flight, reason).await;
        }
        self.confirm_connectivity(flight).await
    }

    pub(super) fn commit(&mut self, flight: InFlight) -> anyhow::Result<Outcome> {
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

    pub(super) async fn rollback(
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
                    reason.kind.clone(),
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
                            reason.kind.clone(),
                            format!("{}; rolled back to {}", reason.message, describe(prev)),
                        ),
                    ),
                    Err(e) => (
                        MemoOutcome::Failed,
                        report::error(
                            ErrorKind::RollbackFailed,
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
            etag: flight.etag.clone(),
            outcome,
            error: Some(err.clone()),
            digest: self.state.highest_seen.as_ref().map(|s| s.digest.clone()),
            expires_at: Some(flight.expires_at),
            retry_after: None,
        });
        tracing::error!(kind = %err.kind, "{}", err.message);
        self.set(outcome.agent_state(), Some(err));
        self.save()?;
        if outcome == MemoOutcome::RolledBack {
            self.reboot_back(&flight).await;
        }
        Ok(Outcome::of_memo(outcome))
    }

    pub(super) async fn resume(&mut self, flight: InFlight) -> anyhow::Result<Outcome> {
        match flight.step.clone() {
            Step::Activating => {
                let reason = report::error(
                    ErrorKind::ActivationInterrupted,
                    format!(
                        "the agent stopped (killed, crashed or power lost) while activating {}; whether switch-to-configuration finished is unknown, so it is not run again",
                        describe(&flight.target)
                    ),
                );
                self.rollback(flight, reason).await
            }
            Step::CheckingHealth => self.check_health(flight).await,
            Step::ConfirmingConnectivity => self.confirm_connectivity(flight).await,
            Step::AwaitingReboot { .. } => self.await_reboot(flight).await,
            Step::RollingBack { reason } => self.rollback(flight, reason).await,
        }
    }
}
