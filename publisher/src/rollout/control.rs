//! `rollout pause`, `resume` and `abort`: phase changes by compare-and-swap on the
//! rollout state, each logged with the operator's reason.
//!
//! | from \ command | pause | resume | abort |
//! |---|---|---|---|
//! | running | paused | (no change) | aborted |
//! | paused | (no change) | running | aborted |
//! | halted | refused | refused | aborted |
//! | done, aborted | refused | refused | refused |

use anyhow::bail;
use fleet_core::rollout::{Phase, RolloutState};
use fleet_core::{Bucket, ObjectName, PublicKey, SecretKey};

use super::advance::trusted_keys;
use super::store::update;

/// What to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Stop advancing until resumed.
    Pause,
    /// Go on after a pause.
    Resume,
    /// Stop for good.
    Abort,
}

/// Applies `control` to rollout `id`; returns the state now stored.
pub async fn control(
    bucket: &Bucket,
    signing_key: &SecretKey,
    trusted_others: &[PublicKey],
    id: &ObjectName,
    control: Control,
    reason: &str,
) -> anyhow::Result<RolloutState> {
    let trusted = trusted_keys(signing_key, trusted_others);
    let by = signing_key.name().to_owned();
    let verb = match control {
        Control::Pause => "paused",
        Control::Resume => "resumed",
        Control::Abort => "aborted",
    };
    let (s, _) = update(bucket, id, &trusted, signing_key, |s| {
        let next = match (control, s.phase) {
            (Control::Pause, Phase::Running) => Phase::Paused,
            (Control::Resume, Phase::Paused) => Phase::Running,
            (Control::Pause, Phase::Paused) | (Control::Resume, Phase::Running) => {
                return Ok(false);
            }
            (Control::Abort, Phase::Running | Phase::Paused | Phase::Halted) => Phase::Aborted,
            (Control::Resume, Phase::Halted) => bail!(
                "rollout {id} halted ({}); a halted rollout does not resume: roll its hosts \
                 back (`fleet-publish rollout rollback {id}`) or make a new release",
                s.halt_reason.as_deref().unwrap_or("no reason recorded")
            ),
            (_, p) => bail!("rollout {id} is {p}; it cannot be {verb}"),
        };
        if control == Control::Abort && s.halt_reason.is_none() {
            s.halt_reason = Some(format!("aborted: {reason}"));
        }
        s.phase = next;
        s.record(&by, format!("{verb}: {reason}"));
        Ok(true)
    })
    .await?;
    Ok(s)
}
