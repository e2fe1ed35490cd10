//! The `boot` activation after `switch-to-configuration boot`: the new generation is
//! the boot default but does not run yet.
//!
//! ```text
//! step awaiting-reboot{reboots: 0}   → reboot-pending
//!   policy allows (crate::reboot) ──► reboots := 1, boot id noted, reboot-command
//! next cycles (the same process, or the agent after the reboot):
//!   booted-system = target ─────────► checking-health → connectivity → healthy
//!                                     (failure: previous made the boot default,
//!                                      one reboot back, rolled-back)
//!   boot id changed, booted ≠ target ► roll back (boot-failed): previous made the
//!                                      boot default; no reboot, it already runs
//!   otherwise ───────────────────────► reboot-pending (a reboot asked for is not
//!                                      asked again)
//! ```
//!
//! The agent asks for at most one reboot into the target and one back, counted in the
//! step on disk before the command runs, so no failure can make it reboot in a loop.

use std::sync::atomic::Ordering;

use fleet_core::status::AgentState;
use fleet_core::{Activation, ErrorKind};
use jiff::Timestamp;

use super::{Agent, Outcome, describe, phase};
use crate::state::{InFlight, Step};
use crate::{reboot, report};

impl Agent {
    /// Waits for, or starts, the reboot into `flight.target`; checks it once booted.
    pub(super) async fn await_reboot(&mut self, flight: InFlight) -> anyhow::Result<Outcome> {
        self.phase.store(phase::ACTIVATING, Ordering::SeqCst);
        let (reboots, asked_in) = match &flight.step {
            Step::AwaitingReboot { reboots, boot_id } => (*reboots, boot_id.clone()),
            _ => (0, None),
        };
        let root = self.settings.facts_root.clone();
        let booted = reboot::booted_system(&root);
        if booted.as_ref() == Some(&flight.target.closure) {
            tracing::info!(target = %describe(&flight.target), "booted into the new generation; checking its health");
            let flight = InFlight {
                step: Step::CheckingHealth,
                ..flight
            };
            self.state.in_flight = Some(flight.clone());
            self.set(AgentState::CheckingHealth, None);
            self.save()?;
            self.flush_quietly().await;
            return self.check_health(flight).await;
        }
        let boot_id = reboot::boot_id(&root);
        if reboots > 0 && boot_id.is_some() && boot_id != asked_in {
            let reason = report::error(
                ErrorKind::BootFailed,
                format!(
                    "the host rebooted to run {} but booted {}: the boot loader fell back to another entry, or the boot default was changed",
                    describe(&flight.target),
                    booted
                        .map(|b| b.to_string())
                        .unwrap_or_else(|| "an unknown system".into())
                ),
            );
            return self.rollback(flight, reason).await;
        }
        let mut pending = InFlight {
            step: Step::AwaitingReboot {
                reboots,
                boot_id: asked_in,
            },
            ..flight
        };
        self.state.in_flight = Some(pending.clone());
        let keep = self
            .state
            .reported
            .last_error
            .clone()
            .filter(|e| e.kind == ErrorKind::RebootFailed);
        self.set(AgentState::RebootPending, keep);
        self.save()?;
        if reboots > 0 {
            tracing::info!("a reboot was asked for; waiting for it");
            return Ok(Outcome::RebootPending);
        }
        let s = &self.settings;
        if let Err(why) = s.reboot.allows(&root, &s.windows, Timestamp::now()) {
            tracing::info!(target = %describe(&pending.target), "the new generation runs after a reboot; {why}");
            return Ok(Outcome::RebootPending);
        }
        // Counted on disk before the command runs: a restart never asks twice.
        pending.step = Step::AwaitingReboot {
            reboots: 1,
            boot_id: boot_id.clone(),
        };
        self.state.in_flight = Some(pending.clone());
        self.save()?;
        self.flush_quietly().await;
        let (command, env) = (
            self.settings.reboot_command.clone(),
            self.settings.child_env.clone(),
        );
        if let Err(e) = reboot::run(&command, &env).await {
            tracing::error!("{e}");
            pending.step = Step::AwaitingReboot {
                reboots: 0,
                boot_id: None,
            };
            self.state.in_flight = Some(pending);
            self.set(
                AgentState::RebootPending,
                Some(report::error(ErrorKind::RebootFailed, e)),
            );
            self.save()?;
        }
        Ok(Outcome::RebootPending)
    }

    /// After a `boot` rollback: when the failed generation is the one running, reboot
    /// once into the restored default (unless `reboot = "never"`).
    pub(super) async fn reboot_back(&mut self, flight: &InFlight) {
        let root = &self.settings.facts_root;
        if flight.activation != Activation::Boot
            || reboot::booted_system(root).as_ref() != Some(&flight.target.closure)
        {
            return;
        }
        if self.settings.reboot == reboot::RebootPolicy::Never {
            tracing::warn!(
                "the failed generation runs until the next reboot (reboot = \"never\"); the previous one is the boot default again"
            );
            return;
        }
        self.flush_quietly().await;
        if let Err(e) = reboot::run(&self.settings.reboot_command, &self.settings.child_env).await {
            tracing::error!("rebooting back into the previous generation: {e}");
        }
    }
}
