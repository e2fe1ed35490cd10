//! `fleet-agent pause [--until TIME] [--reason TEXT]`: stops deploys on this host
//! until `fleet-agent resume` or `TIME`, by writing `<state-dir>/pause.json` (see
//! [`crate::pause`]). The running agent notices at its next poll: it keeps polling
//! and reporting, as state `paused`, and applies nothing. An activation already
//! under way is finished first. Pausing again replaces the pause.

use std::path::PathBuf;

use anyhow::{Context, bail};
use fleet_core::duration::{Zero, parse_duration};
use jiff::Timestamp;

use crate::pause::{self, MAX_REASON_LEN, Pause};

/// The arguments of `pause`.
#[derive(clap::Args, Debug)]
pub struct PauseArgs {
    /// State directory of the agent [default: /var/lib/fleet-agent].
    #[arg(long, env = "FLEET_AGENT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// When the pause ends by itself: an RFC 3339 time (`2026-12-03T06:00:00Z`) or a
    /// duration from now (`2h`, `1d`) [default: never; `fleet-agent resume` ends it].
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Why, shown in the agent's log and by `fleet-agent pause` again.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

/// Parses `--until`: a time, or a duration from `now`.
pub fn parse_until(text: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    let until = match text.parse::<Timestamp>() {
        Ok(t) => t,
        Err(_) => {
            let d = parse_duration("--until", text, Zero::Refused).with_context(|| {
                format!("--until {text:?} is neither an RFC 3339 time nor a duration")
            })?;
            let d = jiff::SignedDuration::try_from(d).context("--until is too far away")?;
            now.checked_add(d).context("--until is too far away")?
        }
    };
    if until <= now {
        bail!("--until {text:?} ({until}) is not in the future");
    }
    Ok(until)
}

/// Writes the pause file.
pub fn pause(args: PauseArgs) -> anyhow::Result<()> {
    let state_dir = args
        .state_dir
        .unwrap_or_else(|| crate::config::DEFAULT_STATE_DIR.into());
    let now = Timestamp::now();
    let until = args
        .until
        .as_deref()
        .map(|t| parse_until(t, now))
        .transpose()?;
    if let Some(r) = &args.reason
        && r.len() > MAX_REASON_LEN
    {
        bail!("--reason is {} bytes; at most {MAX_REASON_LEN}", r.len());
    }
    let p = Pause {
        since: now,
        until,
        reason: args.reason,
    };
    pause::save(&state_dir, &p)?;
    println!(
        "{} ({}); the agent applies nothing from its next poll on",
        p.describe(),
        pause::path(&state_dir).display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_is_a_time_or_a_duration_in_the_future() {
        let now: Timestamp = "2026-12-02T20:00:00Z".parse().unwrap();
        assert_eq!(
            parse_until("2h", now).unwrap(),
            "2026-12-02T22:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            parse_until("2026-12-03T06:00:00Z", now).unwrap(),
            "2026-12-03T06:00:00Z".parse::<Timestamp>().unwrap()
        );
        let e = parse_until("2026-12-01T06:00:00Z", now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not in the future"), "{e}");
        let e = format!("{:#}", parse_until("tomorrow", now).unwrap_err());
        assert!(e.contains("--until"), "{e}");
    }
}
