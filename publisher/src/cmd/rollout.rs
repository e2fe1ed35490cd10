//! `fleet-publish rollout …`: the subcommands that move and show a release's
//! rollout ([`mod@crate::rollout`]), each in its own file: `advance`
//! ([`super::rollout_advance`]), `status` ([`super::rollout_status`]), `pause`,
//! `resume`, `abort` ([`super::rollout_control`]), `plan`
//! ([`super::rollout_plan`]) and `rollback` ([`super::rollout_rollback`]).
//!
//! Exit codes of `rollout status` and `rollout advance`: 0 done, 3 in progress
//! (running or paused), 4 halted or aborted; 1 an error, 2 bad usage.

use clap::{Args, Subcommand};
use fleet_core::{Bucket, TrustedKeys};

use crate::cmd::resign::SigningOptions;
use crate::config::{self, ConfigFile};
use fleet_core::rollout::Phase;

/// `rollout` arguments.
#[derive(Args, Debug, Clone)]
pub struct RolloutArgs {
    /// The subcommand.
    #[command(subcommand)]
    pub command: RolloutCommand,
}

/// The `rollout` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum RolloutCommand {
    /// Move the rollout on: start the next wave, record health, halt or complete
    /// (idempotent; safe from cron and twice at once).
    Advance(Box<super::rollout_advance::AdvanceArgs>),
    /// Print the rollout's progress (exit 0 done, 3 in progress, 4 halted/aborted).
    Status(Box<super::rollout_status::StatusArgs>),
    /// Stop advancing until `resume`.
    Pause(Box<super::rollout_control::ControlArgs>),
    /// Go on after `pause`.
    Resume(Box<super::rollout_control::ControlArgs>),
    /// Stop the rollout for good.
    Abort(Box<super::rollout_control::ControlArgs>),
    /// Print what each wave changes, host by host.
    Plan(Box<super::rollout_plan::PlanArgs>),
    /// Roll a halted or aborted rollout's touched hosts back to their previous closure.
    Rollback(Box<super::rollout_rollback::RollbackArgs>),
}

/// A rollout's phase as an exit status (see the module docs); carried as an error
/// so `main.rs` can exit with it after the output was printed.
#[derive(Debug, thiserror::Error)]
#[error("rollout {phase}")]
pub struct PhaseExit {
    /// The phase.
    pub phase: Phase,
}

impl PhaseExit {
    /// The exit code.
    pub fn code(&self) -> u8 {
        match self.phase {
            Phase::Done => 0,
            Phase::Running | Phase::Paused => 3,
            Phase::Halted | Phase::Aborted => 4,
        }
    }

    /// `Ok` for done, else this as an error.
    pub fn result(phase: Phase) -> anyhow::Result<()> {
        match phase {
            Phase::Done => Ok(()),
            phase => Err(PhaseExit { phase }.into()),
        }
    }
}

/// The bucket and the publisher keys trusted on it, for the commands that only
/// read: the signing key's public half if one is given, and every `--trusted-key`.
pub fn reader(o: &SigningOptions) -> anyhow::Result<(Bucket, TrustedKeys)> {
    let url = config::bucket(&o.bucket, &o.store)?;
    let mut keys = o.trusted.keys()?;
    if let Some(f) = &o.signing_key {
        keys.push(crate::load_secret_key(f, "signing key (--signing-key)")?.public());
    }
    if keys.is_empty() {
        anyhow::bail!(
            "no publisher key to check the release with: pass --trusted-key(-file) or --signing-key"
        );
    }
    Ok((crate::open_bucket(url)?, TrustedKeys::new(keys)))
}

/// `fleet-publish rollout …`.
pub async fn run(args: RolloutArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    use super::rollout_control::run as control;
    use crate::rollout::control::Control;
    match args.command {
        RolloutCommand::Advance(a) => super::rollout_advance::run(*a, config_file).await,
        RolloutCommand::Status(a) => super::rollout_status::run(*a, config_file).await,
        RolloutCommand::Pause(a) => control(*a, Control::Pause, config_file).await,
        RolloutCommand::Resume(a) => control(*a, Control::Resume, config_file).await,
        RolloutCommand::Abort(a) => control(*a, Control::Abort, config_file).await,
        RolloutCommand::Plan(a) => super::rollout_plan::run(*a, config_file).await,
        RolloutCommand::Rollback(a) => super::rollout_rollback::run(*a, config_file).await,
    }
}
