//! Reading releases and rollout states, and replacing a state by compare-and-swap.
//!
//! [`update`] is the one writer of `releases/<id>/rollout.json` after its creation:
//! read and verify the state, let the caller change it, sign it with the revision
//! incremented, and `put_if_match` on the ETag read; on a conflict start again from
//! the read. A write that failed is read back first ([`landed`]): one that landed
//! with its answer lost (the client's retry then meets it as a conflict) is this
//! writer's step, and gets its audit entry.

use std::time::Duration;

use anyhow::{Context, bail};
use fleet_core::audit_chain::{ActionKind, AuditAction, ObjectChange, sha256_hex};
use fleet_core::bucket::{BucketError, Object};
use fleet_core::release::{MAX_RELEASE_SIZE, Release, VerifiedRelease};
use fleet_core::rollout::{LogEntry, MAX_ROLLOUT_SIZE, RolloutState};
use fleet_core::{Bucket, Key, ObjectName, SecretKey, TrustedKeys};

/// Compare-and-swap attempts on a rollout state.
pub const MAX_STATE_ATTEMPTS: u32 = 20;

/// A rollout state as read, with the ETag to replace it on.
#[derive(Clone, Debug)]
pub struct StoredState {
    /// The verified state.
    pub state: RolloutState,
    /// Its ETag.
    pub etag: String,
}

/// Parses a release id given by a user.
pub fn release_id(text: &str) -> anyhow::Result<ObjectName> {
    ObjectName::new(text).with_context(|| format!("release id {text:?}"))
}

/// Reads `key`; a missing one is an error saying `missing()` and naming the key.
async fn read_object(
    bucket: &Bucket,
    key: &Key,
    limit: u64,
    missing: impl FnOnce() -> String,
) -> anyhow::Result<Object> {
    match bucket.get(key, limit).await {
        Ok(o) => Ok(o),
        Err(BucketError::NotFound { .. }) => {
            bail!("{} ({key} does not exist); is the id right?", missing())
        }
        Err(e) => Err(e).with_context(|| format!("reading {key}")),
    }
}

/// Reads and verifies release `id`.
pub async fn read_release(
    bucket: &Bucket,
    id: &ObjectName,
    trusted: &TrustedKeys,
) -> anyhow::Result<VerifiedRelease> {
    let obj = read_object(bucket, &Key::release(id), MAX_RELEASE_SIZE, || {
        format!("there is no release {id} in {}", bucket.url())
    })
    .await?;
    Ok(Release::verify(&obj.bytes, id.as_str(), trusted)?)
}

/// Reads and verifies the rollout state of release `id`.
pub async fn read_state(
    bucket: &Bucket,
    id: &ObjectName,
    trusted: &TrustedKeys,
) -> anyhow::Result<StoredState> {
    let key = Key::rollout(id);
    let obj = read_object(bucket, &key, MAX_ROLLOUT_SIZE, || {
        format!("release {id} has no rollout state in {}", bucket.url())
    })
    .await?;
    let v = RolloutState::verify(&obj.bytes, id.as_str(), trusted)?;
    let etag = obj.etag.with_context(|| {
        format!(
            "{} gave no ETag for {key}, so the rollout cannot be moved on by compare-and-swap",
            bucket.url()
        )
    })?;
    Ok(StoredState {
        state: v.state,
        etag,
    })
}

/// Replaces the state of release `id`: `change` gets a copy of the current state
/// and says whether it changed it (`Ok(false)`: nothing to write). Retries from the
/// read when another writer won. Returns the state now stored and whether this call
/// wrote it.
pub async fn update(
    bucket: &Bucket,
    id: &ObjectName,
    trusted: &TrustedKeys,
    signing_key: &SecretKey,
    mut change: impl FnMut(&mut RolloutState) -> anyhow::Result<bool>,
) -> anyhow::Result<(RolloutState, bool)> {
    let key = Key::rollout(id);
    for attempt in 1..=MAX_STATE_ATTEMPTS {
        let stored = read_state(bucket, id, trusted).await?;
        let mut next = stored.state.clone();
        if !change(&mut next)? {
            return Ok((stored.state, false));
        }
        next.revision = stored.state.revision + 1;
        let bytes = next.sign(signing_key);
        let written = ObjectChange::written(&key, &bytes);
        match bucket.put_if_match(&key, bytes, &stored.etag).await {
            Ok(_) => {
                record_step(bucket, id, signing_key, &stored.state, &next, written).await?;
                return Ok((next, true));
            }
            // The write may have landed with its answer lost (a reset, a timeout): the
            // client's retry then meets our own state as a compare-and-swap conflict,
            // and reading again would find the step done but never audited. Only the
            // bytes tell ours from another writer's.
            Err(_) if landed(bucket, id, trusted, &written, &stored.state, &next).await => {
                tracing::info!(%id, revision = next.revision, "the rollout state write landed though its answer was lost");
                record_step(bucket, id, signing_key, &stored.state, &next, written).await?;
                return Ok((next, true));
            }
            Err(BucketError::Conflict { .. }) => {
                tracing::info!(%id, attempt, "another publisher moved the rollout on; reading again");
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "writing {key} (revision {}); whether it landed is not known: \
                         `rollout status` shows the revision stored, and a later `rollout \
                         advance` goes on from whatever is there",
                        next.revision
                    )
                });
            }
        }
    }
    bail!(
        "gave up writing {key} after {MAX_STATE_ATTEMPTS} attempts: other publishers kept \
         changing it; try again"
    )
}

/// Appends the `rollout-step` audit entry of one state change: the new revision,
/// the log lines it added and the state object's SHA-256.
async fn record_step(
    bucket: &Bucket,
    id: &ObjectName,
    signing_key: &SecretKey,
    before: &RolloutState,
    after: &RolloutState,
    written: ObjectChange,
) -> anyhow::Result<()> {
    let new_events: Vec<&str> = added(before, after)
        .iter()
        .map(|e| e.event.as_str())
        .collect();
    let action = AuditAction::objects(
        ActionKind::RolloutStep,
        Vec::new(),
        vec![written],
        [
            ("release", serde_json::json!(id.to_string())),
            ("revision", serde_json::json!(after.revision)),
            ("events", serde_json::json!(new_events)),
        ],
    );
    crate::audit_log::append(bucket, signing_key, action)
        .await
        .with_context(|| {
            format!(
                "the rollout state of {id} IS written (revision {}), but its audit entry could \
                 not be written; record it by hand",
                after.revision
            )
        })?;
    Ok(())
}

/// The log entries `after` added to `before`. The log keeps the newest entries
/// only, so this matches on the last one seen before.
fn added<'a>(before: &RolloutState, after: &'a RolloutState) -> &'a [LogEntry] {
    match before.log.last() {
        Some(last) => match after.log.iter().rposition(|e| e == last) {
            Some(i) => &after.log[i + 1..],
            None => &after.log,
        },
        None => &after.log,
    }
}

/// Whether the state `next` (read as `before`, written as `written`) landed though
/// its write failed: the state object holds its bytes, or a later state that
/// another writer built on it, which carries the log entries it added (each
/// stamped to the nanosecond, so no other write has them). A write that added no
/// log entry and was overwritten before this read cannot be told; it changed
/// outcomes only, which the next write carries anyway.
async fn landed(
    bucket: &Bucket,
    id: &ObjectName,
    trusted: &TrustedKeys,
    written: &ObjectChange,
    before: &RolloutState,
    next: &RolloutState,
) -> bool {
    let Ok(obj) = bucket.get(&Key::rollout(id), MAX_ROLLOUT_SIZE).await else {
        return false;
    };
    if written.sha256.as_deref() == Some(sha256_hex(&obj.bytes).as_str()) {
        return true;
    }
    let ours = added(before, next);
    match RolloutState::verify(&obj.bytes, id.as_str(), trusted) {
        Ok(v) => {
            v.state.revision > next.revision
                && !ours.is_empty()
                && ours.iter().all(|e| v.state.log.contains(e))
        }
        Err(_) => false,
    }
}
