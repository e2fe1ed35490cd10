//! `rollout advance`: one pass of a rollout, safe to run from cron and twice at
//! once. Each step reads the state and ends in a compare-and-swap
//! ([`super::store::update`]), then the pass starts again from the read, until there
//! is nothing left to do now:
//!
//! 1. **claim** the first wave not completed, if not started: record each host's
//!    current manifest (`previous`), mark held hosts `skipped-held` and retired ones (a tombstone)
//!    `skipped-retired` (unless forced),
//!    set `started_at`. Only the writer that wins the swap goes on with it; the
//!    other reads again and finds the wave started.
//! 2. **deploy** its hosts whose `sequence` is not recorded: write the release's
//!    closure through [`crate::manifest_write::write_next`] (audit `action:
//!    "rollout"`), unless the host's current manifest already carries that closure
//!    above its `previous` sequence (another run wrote it), then record the
//!    sequences. So a wave is deployed once however many runs race.
//! 3. **observe** the started waves' hosts ([`super::health`]); a spent budget
//!    **halts** the rollout (and rolls the touched hosts back with `auto_rollback`).
//! 4. **settle** the wave when no host is pending; **complete** it once its soak
//!    time has passed since; after the last wave the rollout is **done**. A
//!    completed wave lets the pass go on to step 1 for the next.
//!
//! A wave N+1 is only claimed once wave N is completed in the state, so no wave is
//! skipped. The pass never sleeps: `--wait` calls it again.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use fleet_core::release::{Release, VerifiedRelease};
use fleet_core::rollout::{HostOutcome, HostState, Phase, Previous, RolloutState};
use fleet_core::{Activation, Bucket, HostName, ObjectName, PublicKey, SecretKey, TrustedKeys};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::health::{observe, over_budget};
use super::revert::{RevertOutcome, revert};
use super::store::{read_release, read_state, update};
use crate::DeployOutcome;
use crate::hold::held;
use crate::manifest_write::{NextManifest, WriteSettings, read_current, write_next};

/// How to advance.
#[derive(Clone, Debug)]
pub struct AdvanceSettings {
    /// Lifetime of the manifests written.
    pub expires_in: SignedDuration,
    /// Other publisher keys trusted on what is in the bucket.
    pub trusted: Vec<PublicKey>,
    /// Compare-and-swap attempts per manifest.
    pub max_attempts: u32,
    /// Deploy held hosts too.
    pub force: bool,
    /// Turn on automatic rollback on halt for this rollout (recorded in its state).
    pub auto_rollback: bool,
}

impl Default for AdvanceSettings {
    fn default() -> Self {
        Self {
            expires_in: crate::deploy::DEFAULT_EXPIRES_IN,
            trusted: Vec::new(),
            max_attempts: crate::deploy::DEFAULT_MAX_ATTEMPTS,
            force: false,
            auto_rollback: false,
        }
    }
}

/// What one pass did.
#[derive(Clone, Debug, Serialize)]
pub struct Advanced {
    /// The state after the pass.
    pub state: RolloutState,
    /// What this pass did, in order (empty: nothing to do now).
    pub steps: Vec<String>,
    /// Manifests this pass wrote for the rollout.
    pub deployed: Vec<DeployOutcome>,
    /// Rollbacks this pass wrote (with `auto_rollback`).
    pub rolled_back: Vec<RevertOutcome>,
    /// What the rollout waits for, if running.
    pub waiting_for: Option<String>,
}

/// The publisher keys trusted on the bucket's objects.
pub fn trusted_keys(signing_key: &SecretKey, others: &[PublicKey]) -> TrustedKeys {
    TrustedKeys::new(std::iter::once(signing_key.public()).chain(others.iter().cloned()))
}

/// One pass; see the module docs.
pub async fn advance(
    bucket: &Bucket,
    signing_key: &SecretKey,
    id: &ObjectName,
    settings: &AdvanceSettings,
) -> anyhow::Result<Advanced> {
    let trusted = trusted_keys(signing_key, &settings.trusted);
    let release = read_release(bucket, id, &trusted).await?;
    let by = signing_key.name().to_owned();
    let mut out = Advanced {
        state: read_state(bucket, id, &trusted).await?.state,
        steps: Vec::new(),
        deployed: Vec::new(),
        rolled_back: Vec::new(),
        waiting_for: None,
    };
    if out.state.release_sha256 != release.digest {
        anyhow::bail!(
            "the rollout state of {id} is for another release object (SHA-256 {}, the release \
             is {}); the release was replaced, which fleet never does: investigate",
            out.state.release_sha256,
            release.digest
        );
    }
    if settings.auto_rollback || settings.force {
        let (s, _) = update(bucket, id, &trusted, signing_key, |s| {
            let changed =
                (settings.auto_rollback && !s.auto_rollback) || (settings.force && !s.force);
            s.auto_rollback |= settings.auto_rollback;
            s.force |= settings.force;
            if changed {
                let e = format!(
                    "options set: auto-rollback {}, force {}",
                    s.auto_rollback, s.force
                );
                s.record(&by, e);
            }
            Ok(changed)
        })
        .await?;
        out.state = s;
    }
    // Each round ends in a write or a return; the bound only stops a runaway.
    for _ in 0..(4 * release.release.plan.waves.len() + 20) {
        let state = read_state(bucket, id, &trusted).await?.state;
        out.state = state.clone();
        match state.phase {
            Phase::Running => {}
            Phase::Halted if state.auto_rollback => {
                let r = revert(bucket, signing_key, id, settings.trusted.clone()).await?;
                if !r.is_empty() {
                    out.steps.push(format!("rolled back {} host(s)", r.len()));
                }
                out.rolled_back.extend(r);
                out.state = read_state(bucket, id, &trusted).await?.state;
                return Ok(out);
            }
            _ => return Ok(out),
        }
        let Some(k) = state.current_wave() else {
            return Ok(out);
        };
        if state.waves[k].started_at.is_none() {
            if let Some(step) = claim(bucket, signing_key, &trusted, &release, k).await? {
                out.steps.push(step);
            }
            continue;
        }
        let unwritten: Vec<HostName> = state.waves[k]
            .hosts
            .iter()
            .filter(|(_, s)| s.sequence.is_none() && !s.outcome.is_skipped())
            .map(|(h, _)| h.clone())
            .collect();
        if !unwritten.is_empty() {
            let (written, step) = deploy_wave(
                bucket,
                signing_key,
                &trusted,
                &release,
                &state,
                k,
                &unwritten,
                settings,
            )
            .await?;
            out.deployed.extend(written);
            out.steps.extend(step);
            continue;
        }
        let now = Timestamp::now();
        let mut probe = state.clone();
        observe(bucket, &release.release, &mut probe, now).await;
        let mut events: Vec<String> = Vec::new();
        let (s, wrote) = update(bucket, id, &trusted, signing_key, |s| {
            events = match decide(&release.release, &probe, s, k, now, &by) {
                Some(e) => e,
                None => return Ok(false),
            };
            Ok(true)
        })
        .await?;
        out.state = s.clone();
        if wrote {
            out.steps.extend(events);
        }
        if wrote && (s.phase == Phase::Halted || s.current_wave() != Some(k)) {
            continue;
        }
        if !wrote && (s.phase != Phase::Running || s.current_wave() != Some(k)) {
            continue;
        }
        let w = &s.waves[k];
        out.waiting_for = Some(match w.settled_at {
            None => {
                let pending: Vec<&str> = w
                    .hosts
                    .iter()
                    .filter(|(_, h)| h.outcome == HostOutcome::Pending)
                    .map(|(h, _)| h.as_str())
                    .collect();
                format!("wave {}: waiting for {}", k + 1, pending.join(", "))
            }
            Some(t) => format!(
                "wave {}: soaking until {}",
                k + 1,
                t + soak(&release.release, k)
            ),
        });
        return Ok(out);
    }
    Ok(out)
}

/// The soak time of wave `k`.
fn soak(release: &Release, k: usize) -> SignedDuration {
    SignedDuration::from_secs(release.plan.waves[k].soak_seconds.min(i64::MAX as u64) as i64)
}

/// Steps 3 and 4 on the state `s`, whose current wave `k` is written: take the
/// outcomes observed on `probe`, halt on a spent budget, settle, complete, finish.
/// Returns the events recorded, or `None` when nothing changed (also when `s` moved
/// on meanwhile).
pub fn decide(
    release: &Release,
    probe: &RolloutState,
    s: &mut RolloutState,
    k: usize,
    now: Timestamp,
    by: &str,
) -> Option<Vec<String>> {
    if s.phase != Phase::Running || s.current_wave() != Some(k) {
        return None;
    }
    let mut changed = apply_outcomes(probe, s);
    let mut events = Vec::new();
    if let Some(reason) = over_budget(release, s) {
        s.phase = Phase::Halted;
        s.halt_reason = Some(reason.clone());
        s.record(by, format!("halted: {reason}"));
        return Some(vec![format!("halted: {reason}")]);
    }
    let soak = soak(release, k);
    let last = k + 1 == s.waves.len();
    let w = &mut s.waves[k];
    let pending = w.hosts.values().any(|h| h.outcome == HostOutcome::Pending);
    if !pending && w.settled_at.is_none() {
        w.settled_at = Some(now);
        events.push(format!("wave {} settled; soaking for {soak:#}", k + 1));
    }
    if let Some(settled) = w.settled_at
        && !pending
        && now >= settled + soak
    {
        w.completed_at = Some(now);
        events.push(format!("wave {} completed", k + 1));
        if last {
            s.phase = Phase::Done;
            events.push("rollout done".to_owned());
        }
    }
    for e in &events {
        s.record(by, e.clone());
    }
    changed |= !events.is_empty();
    changed.then_some(events)
}

/// Copies the outcomes observed on `probe` to the written hosts of `state` (which
/// may be newer than `probe`); returns whether any changed.
fn apply_outcomes(probe: &RolloutState, state: &mut RolloutState) -> bool {
    let mut changed = false;
    for (seen, w) in probe.waves.iter().zip(&mut state.waves) {
        for (h, st) in &mut w.hosts {
            let Some(o) = seen.hosts.get(h) else { continue };
            if st.sequence.is_some()
                && st.sequence == o.sequence
                && st.rolled_back_to.is_none()
                && st.outcome != o.outcome
            {
                st.outcome = o.outcome;
                changed = true;
            }
        }
    }
    changed
}

/// Step 1: records the hosts of wave `k` with their current manifests.
async fn claim(
    bucket: &Bucket,
    signing_key: &SecretKey,
    trusted: &TrustedKeys,
    release: &VerifiedRelease,
    k: usize,
) -> anyhow::Result<Option<String>> {
    let id = crate::rollout::store::release_id(&release.release.id)?;
    let hosts = &release.release.plan.waves[k].hosts;
    let holds = held(bucket, hosts, trusted).await?;
    let mut recorded = BTreeMap::new();
    let mut retired = BTreeSet::new();
    for h in hosts {
        let cur = read_current(bucket, h, trusted, false)
            .await
            .with_context(|| format!("host {h}"))?;
        if cur
            .manifest
            .as_ref()
            .is_some_and(|m| m.activation == Activation::Retire)
        {
            retired.insert(h.clone());
        }
        recorded.insert(
            h.clone(),
            HostState {
                previous: cur.manifest.map(|m| Previous {
                    sequence: m.sequence,
                    closure: m.closure,
                }),
                sequence: None,
                outcome: HostOutcome::Pending,
                rolled_back_to: None,
            },
        );
    }
    let by = signing_key.name().to_owned();
    let mut step = None;
    update(bucket, &id, trusted, signing_key, |s| {
        if s.phase != Phase::Running
            || s.current_wave() != Some(k)
            || s.waves[k].started_at.is_some()
        {
            return Ok(false);
        }
        let mut hosts = recorded.clone();
        let mut skipped = Vec::new();
        for (h, v) in &holds {
            if !s.force
                && let Some(st) = hosts.get_mut(h)
            {
                st.outcome = HostOutcome::SkippedHeld;
                skipped.push(format!("{h} ({})", v.hold.reason));
            }
        }
        let mut skipped_retired = Vec::new();
        for h in &retired {
            if !s.force
                && let Some(st) = hosts.get_mut(h)
            {
                st.outcome = HostOutcome::SkippedRetired;
                skipped_retired.push(h.as_str());
            }
        }
        s.waves[k].started_at = Some(Timestamp::now());
        s.waves[k].hosts = hosts;
        let names: Vec<&str> = recorded.keys().map(|h| h.as_str()).collect();
        let mut e = format!("wave {} started: {}", k + 1, names.join(", "));
        if !skipped.is_empty() {
            e.push_str(&format!("; held, skipped: {}", skipped.join(", ")));
        }
        if !skipped_retired.is_empty() {
            e.push_str(&format!(
                "; retired, skipped: {}",
                skipped_retired.join(", ")
            ));
        }
        s.record(&by, e.clone());
        step = Some(e);
        Ok(true)
    })
    .await?;
    Ok(step)
}

/// Step 2: writes the manifests of `hosts` of wave `k`, then records their sequences.
#[allow(clippy::too_many_arguments)]
async fn deploy_wave(
    bucket: &Bucket,
    signing_key: &SecretKey,
    trusted: &TrustedKeys,
    release: &VerifiedRelease,
    state: &RolloutState,
    k: usize,
    hosts: &[HostName],
    settings: &AdvanceSettings,
) -> anyhow::Result<(Vec<DeployOutcome>, Option<String>)> {
    let id = crate::rollout::store::release_id(&release.release.id)?;
    let write = WriteSettings {
        signing_key,
        trusted: &settings.trusted,
        force_sequence: None,
        max_attempts: settings.max_attempts,
        action: "rollout",
    };
    let mut sequences: BTreeMap<HostName, u64> = BTreeMap::new();
    let mut written = Vec::new();
    for h in hosts {
        let target = &release.release.hosts[h];
        let previous = state.waves[k].hosts[h]
            .previous
            .as_ref()
            .map(|p| p.sequence);
        let mut already = None;
        let o = write_next(bucket, h, &write, |cur| {
            if let Some(m) = &cur.manifest
                && m.closure == target.closure
                && Some(m.sequence) > previous
            {
                already = Some(m.sequence);
                return Ok(None);
            }
            Ok(Some(NextManifest {
                closure: target.closure.clone(),
                activation: target.activation,
                cache_keys: release.release.cache_keys.clone(),
                expires_in: settings.expires_in,
                // A wave's soak time starts when it is written: applied at once
                // (hosts' own maintenance windows still apply).
                activate_after: None,
                maintenance_windows: None,
            }))
        })
        .await
        .with_context(|| format!("rollout {id}, wave {}: host {h}", k + 1))?;
        match (o, already) {
            (Some(o), _) => {
                sequences.insert(h.clone(), o.sequence);
                written.push(o);
            }
            (None, Some(seq)) => {
                sequences.insert(h.clone(), seq);
            }
            (None, None) => unreachable!("the plan returns None only with `already` set"),
        }
    }
    let by = signing_key.name().to_owned();
    let mut step = None;
    let names: Vec<&str> = written.iter().map(|o| o.host.as_str()).collect();
    update(bucket, &id, trusted, signing_key, |s| {
        let mut changed = false;
        for (h, seq) in &sequences {
            if let Some(st) = s.waves[k].hosts.get_mut(h)
                && st.sequence.is_none()
            {
                st.sequence = Some(*seq);
                changed = true;
            }
        }
        if changed {
            let e = format!(
                "wave {} deployed: {} manifest(s) written by this run{}",
                k + 1,
                names.len(),
                if names.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", names.join(", "))
                }
            );
            s.record(&by, e.clone());
            step = Some(e);
        }
        Ok(changed)
    })
    .await?;
    Ok((written, step))
}

#[cfg(test)]
mod tests;
