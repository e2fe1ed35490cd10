//! `fleet-agent once`: one cycle (resuming an interrupted activation first, if any),
//! then the status objects; the exit code tells the outcome
//! ([`crate::Outcome::exit_code`]) and stdout holds the status report as written.

use crate::config::Settings;
use crate::{Agent, Outcome, facts, report};

/// Runs one cycle and writes the status; returns the outcome.
pub async fn once(settings: Settings) -> anyhow::Result<Outcome> {
    let mut agent = Agent::open(settings)?;
    let outcome = agent.cycle().await;
    if !agent.bucket_unreachable()
        && let Err(e) = agent.flush(true).await
    {
        tracing::error!(
            queued = agent.state().pending_events.len(),
            "could not write status (events stay queued for the next run): {e}"
        );
    }
    let s = agent.settings();
    let r = report::build(&s.host, agent.state(), facts::gather(&s.facts_root));
    println!("{}", String::from_utf8_lossy(&r.to_bytes()).trim_end());
    tracing::info!(outcome = ?outcome, code = outcome.exit_code(), "cycle done");
    Ok(outcome)
}
