//! Rolls a halted (or aborted) rollout's touched hosts back: every host whose
//! manifest the rollout wrote, and that still carries that manifest, gets its
//! `previous` closure again, through the rollback engine ([`crate::rollback`]: the
//! closure is found in the host's audit history and checked complete in the bucket,
//! audit `action: "rollback"`). Hosts without an earlier manifest, already rolled
//! back, or changed since by someone else are left alone, and said so. Each
//! rollback is recorded in the state (`rolled_back_to`), so running this twice
//! writes nothing the second time.

use std::collections::BTreeMap;

use anyhow::bail;
use fleet_core::rollout::Phase;
use fleet_core::{Bucket, HostName, ObjectName, PublicKey, SecretKey, StorePath};
use serde::Serialize;

use super::advance::trusted_keys;
use super::store::{read_release, read_state, update};
use crate::manifest_write::read_current;
use crate::rollback::{RollbackSettings, apply, plan};

/// One host rolled back.
#[derive(Clone, Debug, Serialize)]
pub struct RevertOutcome {
    /// The host.
    pub host: HostName,
    /// The rollback manifest's sequence.
    pub sequence: u64,
    /// The closure it runs again.
    pub closure: StorePath,
    /// The sequence the rollout replaced.
    pub previous_sequence: u64,
}

/// Rolls the touched hosts of rollout `id` back; see the module docs.
pub async fn revert(
    bucket: &Bucket,
    signing_key: &SecretKey,
    id: &ObjectName,
    trusted_others: Vec<PublicKey>,
) -> anyhow::Result<Vec<RevertOutcome>> {
    let trusted = trusted_keys(signing_key, &trusted_others);
    let state = read_state(bucket, id, &trusted).await?.state;
    if !matches!(state.phase, Phase::Halted | Phase::Aborted) {
        bail!(
            "rollout {id} is {}: only a halted or aborted rollout is rolled back (run \
             `fleet-publish rollout abort {id}` first); nothing was written",
            state.phase
        );
    }
    let release = read_release(bucket, id, &trusted).await?.release;
    let mut done = Vec::new();
    let mut errors = Vec::new();
    for w in &state.waves {
        for (h, st) in &w.hosts {
            let (Some(seq), None) = (st.sequence, st.rolled_back_to) else {
                continue;
            };
            let Some(prev) = &st.previous else {
                tracing::warn!("host {h} had no manifest before the rollout: left as is");
                continue;
            };
            if prev.closure == release.hosts[h].closure {
                continue;
            }
            let cur = read_current(bucket, h, &trusted, false).await?;
            if cur.manifest.as_ref().map(|m| m.sequence) != Some(seq) {
                tracing::warn!(
                    "host {h}'s manifest changed since the rollout wrote sequence {seq}: left as is"
                );
                continue;
            }
            let settings = RollbackSettings {
                to_closures: Some(BTreeMap::from([(h.clone(), prev.closure.clone())])),
                trusted: trusted_others.clone(),
                force: state.force,
                ..RollbackSettings::default()
            };
            let hosts = std::slice::from_ref(h);
            let result = async {
                let plans = plan(bucket, signing_key, hosts, &settings).await?;
                apply(bucket, signing_key, &plans, &settings).await
            }
            .await;
            match result {
                Ok(outcomes) => done.extend(outcomes.into_iter().map(|o| RevertOutcome {
                    host: o.host,
                    sequence: o.sequence,
                    closure: o.closure,
                    previous_sequence: seq,
                })),
                Err(e) => errors.push(format!("{h}: {e:#}")),
            }
        }
    }
    if !done.is_empty() {
        let by = signing_key.name().to_owned();
        update(bucket, id, &trusted, signing_key, |s| {
            let mut changed = false;
            for o in &done {
                for w in &mut s.waves {
                    if let Some(st) = w.hosts.get_mut(&o.host)
                        && st.rolled_back_to.is_none()
                    {
                        st.rolled_back_to = Some(o.sequence);
                        changed = true;
                    }
                }
                let e = format!(
                    "rolled back {}: sequence {} -> {} ({})",
                    o.host, o.previous_sequence, o.sequence, o.closure
                );
                s.record(&by, e);
            }
            Ok(changed)
        })
        .await?;
    }
    if !errors.is_empty() {
        bail!(
            "{} host(s) could not be rolled back ({} were): {}",
            errors.len(),
            done.len(),
            errors.join("; ")
        );
    }
    Ok(done)
}
