//! `fleet-agent run`: the daemon.
//!
//! Loop: cycle → write queued events and status.json if anything changed → wait.
//! The wait is `poll-interval` plus up to `poll-jitter` after a cycle that reached
//! the bucket, exponential backoff with jitter (capped at `backoff-max`) after
//! failures (see [`crate::schedule`]). An idle poll is one conditional GET and nothing
//! else; status.json is rewritten as a heartbeat every `heartbeat-interval` on its
//! own timer (one PUT).
//!
//! SIGTERM / SIGINT: a wait or a fetch is abandoned at once (the staging directory and
//! the state file stay consistent); an activation, health check or rollback is
//! finished first, so the daemon never leaves by choice with an activation half done.
//!
//! With `restart-after-switch`, the daemon exits (status 0) after a cycle that switched
//! the system, once its status is written. On NixOS the agent's own unit is not
//! restarted by `switch-to-configuration` (that would kill the switch halfway), so this
//! is how a new agent binary or configuration takes effect: systemd's `Restart=always`
//! starts the unit again from the new system.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Instant, sleep_until};

use crate::config::Settings;
use crate::cycle::phase;
use crate::schedule::{self, Jitter};
use crate::{Agent, notify};

async fn tick(t: &mut Option<tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let mut agent = Agent::open(settings)?;
    let s = agent.settings().clone();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut watchdog = notify::watchdog_interval().map(tokio::time::interval);
    let phase = agent.phase();
    let mut rng = Jitter::new();
    let mut failures: u32 = 0;
    let mut next_heartbeat = Instant::now() + s.heartbeat_interval;
    tracing::info!(
        host = %s.host,
        bucket = %s.bucket,
        poll = ?s.poll_interval,
        "fleet-agent {} running",
        fleet_core::VERSION
    );
    notify::ready();

    loop {
        // One cycle, pinging the watchdog meanwhile.
        let mut stop = false;
        let running_before = agent.state().current.clone();
        let outcome = {
            let cycle = agent.cycle();
            tokio::pin!(cycle);
            loop {
                tokio::select! {
                    o = &mut cycle => break Some(o),
                    _ = tick(&mut watchdog) => notify::watchdog(),
                    _ = term.recv() => stop = true,
                    _ = int.recv() => stop = true,
                }
                if stop {
                    if phase.load(Ordering::SeqCst) == phase::ACTIVATING {
                        tracing::info!("stop requested: finishing the activation first");
                        notify::status("stopping after the activation in progress");
                        continue;
                    }
                    break None;
                }
            }
        };
        let Some(outcome) = outcome else {
            tracing::info!("stop requested: leaving (nothing half done)");
            break;
        };
        if !agent.bucket_unreachable() {
            agent.flush_quietly().await;
        }
        let st = &agent.state().reported;
        notify::status(&match &st.last_error {
            Some(e) => format!("{}: {}", st.state, e.kind),
            None => st.state.to_string(),
        });
        if stop {
            break;
        }
        // A new closure running (not merely the running system discovered at first
        // start, nor a sequence number attached to it), or a rollback.
        let switched = outcome == crate::cycle::Outcome::RolledBack
            || match (&running_before, &agent.state().current) {
                (_, None) => false,
                (None, Some(now)) => now.sequence.is_some(),
                (Some(before), Some(now)) => before.closure != now.closure,
            };
        if switched && s.restart_after_switch {
            tracing::info!(
                "the system was switched: exiting so the service manager restarts the agent from the new system (restart-after-switch)"
            );
            break;
        }

        let wait = if outcome.backs_off() {
            failures = failures.saturating_add(1);
            let d = schedule::backoff(failures, s.poll_interval, s.backoff_max, &mut rng);
            tracing::info!(failures, wait = ?d, "backing off");
            d
        } else {
            failures = 0;
            schedule::next_poll(s.poll_interval, s.poll_jitter, &mut rng)
        };
        // A staged closure is activated as soon as its wait ends, not a poll later.
        let wait = match agent.wake_at() {
            Some(t) => {
                let until = Duration::try_from(t.duration_since(jiff::Timestamp::now()))
                    .unwrap_or(Duration::ZERO);
                wait.min(until + Duration::from_millis(200))
            }
            None => wait,
        };
        let deadline = Instant::now() + wait;
        loop {
            tokio::select! {
                _ = sleep_until(deadline) => break,
                _ = sleep_until(next_heartbeat) => {
                    next_heartbeat = Instant::now() + s.heartbeat_interval;
                    if let Err(e) = agent.flush(true).await {
                        tracing::warn!("heartbeat: could not write status: {e}");
                    }
                }
                _ = tick(&mut watchdog) => notify::watchdog(),
                _ = term.recv() => { stop = true; break }
                _ = int.recv() => { stop = true; break }
            }
        }
        if stop {
            tracing::info!("stop requested: leaving");
            break;
        }
    }
    notify::stopping();
    // Give the last status write a moment if one is queued, without blocking exit.
    let _ = tokio::time::timeout(Duration::from_secs(5), agent.flush(false)).await;
    Ok(())
}
