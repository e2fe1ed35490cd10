//! `fleet-publish rollout advance ID`: one pass of the rollout
//! ([`crate::rollout::advance`]); idempotent and safe to run from cron or CI, and
//! twice at once. Prints what it did, one line per step, then the phase:
//!
//! ```text
//! wave 1 started: web-1, web-2
//! wave 1 deployed: 2 manifest(s) written by this run (web-1, web-2)
//! running: wave 1: waiting for web-1, web-2
//! ```
//!
//! `--wait` repeats the pass every `--interval` until the rollout is done, halted,
//! aborted or paused. Exit code: 0 done, 3 in progress, 4 halted or aborted.

use clap::Args;
use fleet_core::duration::{Zero, parse_duration};
use fleet_core::rollout::Phase;

use crate::cmd::resign::ResignOptions;
use crate::cmd::rollout::PhaseExit;
use crate::config::ConfigFile;
use crate::rollout::advance::{AdvanceSettings, advance};
use crate::rollout::store::release_id;

/// `rollout advance` arguments.
#[derive(Args, Debug, Clone)]
pub struct AdvanceArgs {
    /// Bucket, publisher key, manifest lifetime (also config-file keys).
    #[command(flatten)]
    pub options: ResignOptions,
    /// The release id.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Deploy held and retired hosts too (recorded in the rollout's state).
    #[arg(long)]
    pub force: bool,
    /// Roll the touched hosts back automatically if the rollout halts (recorded in
    /// its state; on an already halted rollout, rolls back now).
    #[arg(long)]
    pub auto_rollback: bool,
    /// Repeat until the rollout is done, halted, aborted or paused.
    #[arg(long)]
    pub wait: bool,
    /// Pause between passes with --wait [default: 30s].
    #[arg(long, value_name = "DURATION", requires = "wait")]
    pub interval: Option<String>,
    /// Print each pass as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `fleet-publish rollout advance`.
pub async fn run(args: AdvanceArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let o = config_file.layer(args.options)?;
    let r = o.resolve()?;
    let id = release_id(&args.id)?;
    let interval = parse_duration(
        "interval",
        args.interval.as_deref().unwrap_or("30s"),
        Zero::Refused,
    )?;
    let settings = AdvanceSettings {
        expires_in: r.expires_in,
        trusted: r.trusted,
        force: args.force,
        auto_rollback: args.auto_rollback,
        ..AdvanceSettings::default()
    };
    loop {
        let a = advance(&r.bucket, &r.signing_key, &id, &settings).await?;
        if args.json {
            println!("{}", serde_json::to_string(&a)?);
        } else {
            for s in &a.steps {
                println!("{s}");
            }
            for o in &a.rolled_back {
                println!(
                    "{}: rolled back to the closure of sequence {} -> sequence {} ({})",
                    o.host, o.previous_sequence, o.sequence, o.closure
                );
            }
            match (&a.state.halt_reason, &a.waiting_for) {
                (Some(r), _) if a.state.phase != Phase::Running => {
                    println!("{}: {r}", a.state.phase);
                }
                (_, Some(w)) => println!("{}: {w}", a.state.phase),
                _ => println!("{}", a.state.phase),
            }
        }
        if !args.wait || a.state.phase != Phase::Running {
            return PhaseExit::result(a.state.phase);
        }
        tokio::time::sleep(interval).await;
    }
}
