//! `fleet-publish rollout status ID`: a rollout's progress, read from its state
//! (`releases/<id>/rollout.json`). A table by default:
//!
//! ```text
//! rollout 2026-12-02-a: halted (wave 2: 2 bad host(s) (…), over its budget of 1 host(s) (1 allowed))
//! wave  stage        hosts  healthy  pending  bad  skipped  rolled back
//! 1     completed        2        2        0    0        0            0
//! 2     in progress      4        2        0    2        0            0
//! 3     not started      6        0        0    0        0            0
//! ```
//!
//! `--json` prints `{release, phase, halt_reason, current_wave, waves: [{wave,
//! stage, counts, hosts}], log}`; `--follow` redraws a progress bar per wave every
//! `--interval` until the rollout is done, halted or aborted. Exit code: 0 done, 3
//! in progress (running or paused), 4 halted or aborted.

use clap::Args;
use fleet_core::duration::{Zero, parse_duration};
use fleet_core::release::Release;
use fleet_core::rollout::{HostState, Phase, RolloutState, WaveCounts};
use fleet_core::{HostName, ObjectName, TrustedKeys};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::cmd::resign::SigningOptions;
use crate::cmd::rollout::{PhaseExit, reader};
use crate::config::ConfigFile;
use crate::rollout::store::{read_release, read_state, release_id};

/// `rollout status` arguments.
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// Bucket and publisher keys (also config-file keys).
    #[command(flatten)]
    pub options: SigningOptions,
    /// The release id.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Print JSON.
    #[arg(long, conflicts_with = "follow")]
    pub json: bool,
    /// Redraw progress until the rollout is done, halted or aborted.
    #[arg(long)]
    pub follow: bool,
    /// Pause between reads with --follow [default: 5s].
    #[arg(long, value_name = "DURATION", requires = "follow")]
    pub interval: Option<String>,
}

/// One wave in the JSON output.
#[derive(Serialize)]
struct WaveStatus<'a> {
    wave: usize,
    stage: &'static str,
    counts: WaveCounts,
    hosts: &'a std::collections::BTreeMap<HostName, HostState>,
}

/// The JSON output.
#[derive(Serialize)]
struct Status<'a> {
    release: &'a str,
    phase: Phase,
    halt_reason: Option<&'a str>,
    current_wave: Option<usize>,
    waves: Vec<WaveStatus<'a>>,
    log: &'a [fleet_core::rollout::LogEntry],
}

/// The table of the module docs.
pub fn table(release: &Release, state: &RolloutState) -> String {
    let mut s = format!("rollout {}: {}", state.release, state.phase);
    if let Some(r) = &state.halt_reason {
        s.push_str(&format!(" ({r})"));
    }
    s.push_str("\nwave  stage        hosts  healthy  pending  bad  skipped  rolled back\n");
    for (i, (w, p)) in state.waves.iter().zip(&release.plan.waves).enumerate() {
        let c = w.counts(p.hosts.len());
        s.push_str(&format!(
            "{:<5} {:<12} {:>5} {:>8} {:>8} {:>4} {:>8} {:>12}\n",
            i + 1,
            w.stage(),
            c.hosts,
            c.healthy,
            c.pending,
            c.bad,
            c.skipped,
            c.reverted
        ));
    }
    s
}

async fn read(
    bucket: &fleet_core::Bucket,
    id: &ObjectName,
    trusted: &TrustedKeys,
) -> anyhow::Result<(Release, RolloutState)> {
    let release = read_release(bucket, id, trusted).await?.release;
    let state = read_state(bucket, id, trusted).await?.state;
    Ok((release, state))
}

/// `fleet-publish rollout status`.
pub async fn run(args: StatusArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let o = config_file.layer(args.options)?;
    let (bucket, trusted) = reader(&o)?;
    let id = release_id(&args.id)?;
    if !args.follow {
        let (release, state) = read(&bucket, &id, &trusted).await?;
        if args.json {
            let out = Status {
                release: &state.release,
                phase: state.phase,
                halt_reason: state.halt_reason.as_deref(),
                current_wave: state.current_wave().map(|w| w + 1),
                waves: state
                    .waves
                    .iter()
                    .zip(&release.plan.waves)
                    .enumerate()
                    .map(|(i, (w, p))| WaveStatus {
                        wave: i + 1,
                        stage: w.stage(),
                        counts: w.counts(p.hosts.len()),
                        hosts: &w.hosts,
                    })
                    .collect(),
                log: &state.log,
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            print!("{}", table(&release, &state));
        }
        return PhaseExit::result(state.phase);
    }
    let interval = parse_duration(
        "interval",
        args.interval.as_deref().unwrap_or("5s"),
        Zero::Refused,
    )?;
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("wave {prefix:>3} [{bar:30}] {pos}/{len} {msg}")
        .expect("the template is valid")
        .progress_chars("=> ");
    let header = bars.add(ProgressBar::new_spinner());
    let mut waves: Vec<ProgressBar> = Vec::new();
    loop {
        let (release, state) = read(&bucket, &id, &trusted).await?;
        if waves.is_empty() {
            for (i, p) in release.plan.waves.iter().enumerate() {
                let b = bars.add(ProgressBar::new(p.hosts.len() as u64));
                b.set_style(style.clone());
                b.set_prefix((i + 1).to_string());
                waves.push(b);
            }
        }
        header.set_message(format!(
            "rollout {}: {}{}",
            state.release,
            state.phase,
            state
                .halt_reason
                .as_deref()
                .map_or_else(String::new, |r| format!(" ({r})"))
        ));
        for ((w, p), b) in state.waves.iter().zip(&release.plan.waves).zip(&waves) {
            let c = w.counts(p.hosts.len());
            b.set_position((c.healthy + c.bad + c.skipped) as u64);
            b.set_message(format!(
                "{}: {} healthy, {} pending, {} bad",
                w.stage(),
                c.healthy,
                c.pending,
                c.bad
            ));
        }
        if !matches!(state.phase, Phase::Running | Phase::Paused) {
            header.finish();
            for b in &waves {
                b.finish();
            }
            print!("{}", table(&release, &state));
            return PhaseExit::result(state.phase);
        }
        tokio::time::sleep(interval).await;
    }
}
