//! The hold engine: writes and reads the signed holds of `hosts/<host>/hold.json`
//! ([`fleet_core::hold`]).
//!
//! [`set_hold`] writes one hold (or release) per host, after checking that every host
//! has a manifest, so a typo changes nothing, and records each in the signed audit
//! chain ([`crate::audit_log::append`], `hold` or `unhold`). Writes are plain PUTs: a hold is the
//! operator's last word, and two operators holding one host at once both mean "hold".
//! [`held`] reads the holds of some hosts and keeps those in force; `deploy` and
//! `rollback` skip those hosts, and retired ones (their manifest a tombstone), unless
//! forced ([`skip_held_or_retired`]).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, bail};
use fleet_core::audit_chain::{ActionKind, AuditAction, AuditDetails, ObjectChange};
use fleet_core::bucket::BucketError;
use fleet_core::hold::{Hold, MAX_HOLD_SIZE, MAX_REASON_LEN, VerifiedHold};
use fleet_core::manifest::{MAX_MANIFEST_SIZE, VerifyPolicy};
use fleet_core::{Activation, Bucket, HostName, Key, Manifest, SecretKey, TrustedKeys};
use jiff::Timestamp;

/// Signs and writes a hold (`held`) or its release for each of `hosts`; returns
/// the holds written.
pub async fn set_hold(
    bucket: &Bucket,
    signing_key: &SecretKey,
    hosts: &[HostName],
    held: bool,
    reason: &str,
) -> anyhow::Result<Vec<Hold>> {
    if hosts.is_empty() {
        bail!("no host to hold: {} has no manifest", bucket.url());
    }
    if held && reason.trim().is_empty() {
        bail!("give a --reason: it is shown with the hold on the dashboard");
    }
    if reason.len() > MAX_REASON_LEN {
        bail!("--reason is longer than {MAX_REASON_LEN} bytes");
    }
    for h in hosts {
        let key = Key::manifest(h);
        let found = bucket
            .head(&key)
            .await
            .with_context(|| format!("looking for {key}"))?;
        if found.is_none() {
            bail!(
                "host {h} has no manifest in {} (is the name right?); no hold was written",
                bucket.url()
            );
        }
    }
    let time = Timestamp::now();
    let mut out = Vec::with_capacity(hosts.len());
    for h in hosts {
        let hold = Hold {
            version: 1,
            host: h.clone(),
            held,
            reason: reason.to_owned(),
            time,
        };
        let key = Key::hold(h);
        let bytes = hold.sign(signing_key);
        let object = ObjectChange::written(&key, &bytes);
        bucket
            .put(&key, bytes)
            .await
            .with_context(|| format!("writing the hold of {h}"))?;
        let action = AuditAction {
            kind: if held {
                ActionKind::Hold
            } else {
                ActionKind::Unhold
            },
            hosts: vec![h.clone()],
            details: AuditDetails {
                objects: vec![object],
                reason: Some(reason.to_owned()).filter(|r| !r.is_empty()),
                ..AuditDetails::default()
            },
        };
        crate::audit_log::append(bucket, signing_key, action)
            .await
            .with_context(|| {
                format!(
                    "the hold of {h} IS written, but its audit entry could not be written; \
                     record it by hand"
                )
            })?;
        out.push(hold);
    }
    Ok(out)
}

/// The holds in force among `hosts`. A hold object that does not verify with
/// `trusted` is an error: someone without the publisher key wrote it.
pub async fn held(
    bucket: &Bucket,
    hosts: &[HostName],
    trusted: &TrustedKeys,
) -> anyhow::Result<BTreeMap<HostName, VerifiedHold>> {
    let keys: Vec<Key> = hosts.iter().map(Key::hold).collect();
    let mut out = BTreeMap::new();
    for (h, r) in hosts
        .iter()
        .zip(bucket.get_many(&keys, MAX_HOLD_SIZE).await)
    {
        let obj = match r {
            Ok(o) => o,
            Err(BucketError::NotFound { .. }) => continue,
            Err(e) => return Err(e).with_context(|| format!("reading the hold of {h}")),
        };
        let v = Hold::verify(&obj.bytes, h, trusted).with_context(|| {
            format!(
                "{} is not a hold signed by a trusted publisher key; look at it, then \
                 `fleet-publish hold`/`unhold` the host again",
                Key::hold(h)
            )
        })?;
        if v.hold.held {
            out.insert(h.clone(), v);
        }
    }
    Ok(out)
}

/// The hosts among `hosts` whose current manifest is a tombstone
/// (`fleet-publish retire`) that verifies with `trusted`. A manifest that is missing
/// or does not verify is not a tombstone here: the write that follows deals with it.
pub async fn retired(
    bucket: &Bucket,
    hosts: &[HostName],
    trusted: &TrustedKeys,
) -> anyhow::Result<BTreeSet<HostName>> {
    let keys: Vec<Key> = hosts.iter().map(Key::manifest).collect();
    let mut out = BTreeSet::new();
    for (h, r) in hosts
        .iter()
        .zip(bucket.get_many(&keys, MAX_MANIFEST_SIZE).await)
    {
        let obj = match r {
            Ok(o) => o,
            Err(BucketError::NotFound { .. }) => continue,
            Err(e) => return Err(e).with_context(|| format!("reading the manifest of {h}")),
        };
        let policy = VerifyPolicy {
            trusted,
            host: h,
            highest_seen: None,
            now: None,
        };
        if let Ok(v) = Manifest::verify(&obj.bytes, &policy)
            && v.manifest.activation == Activation::Retire
        {
            out.insert(h.clone());
        }
    }
    Ok(out)
}

/// `hosts` without the held and the retired ones (each skipped with a warning),
/// unless `force`. An error when every host is held or retired.
pub async fn skip_held_or_retired(
    bucket: &Bucket,
    hosts: Vec<HostName>,
    trusted: &TrustedKeys,
    force: bool,
    verb: &str,
) -> anyhow::Result<Vec<HostName>> {
    if force || hosts.is_empty() {
        return Ok(hosts);
    }
    let holds = held(bucket, &hosts, trusted).await?;
    let retired = retired(bucket, &hosts, trusted).await?;
    if holds.is_empty() && retired.is_empty() {
        return Ok(hosts);
    }
    for (h, v) in &holds {
        tracing::warn!(
            "host {h} is held ({}, by {} at {}): not {verb}; `fleet-publish unhold {h}` \
             releases it, --force overrides it",
            v.hold.reason,
            v.signed_by,
            v.hold.time
        );
    }
    for h in retired.iter().filter(|h| !holds.contains_key(*h)) {
        tracing::warn!(
            "host {h} is retired (its manifest is a tombstone): not {verb}; --force \
             brings it back (then restart its agent)"
        );
    }
    let left: Vec<HostName> = hosts
        .into_iter()
        .filter(|h| !holds.contains_key(h) && !retired.contains(h))
        .collect();
    if left.is_empty() {
        let mut why: Vec<String> = holds
            .iter()
            .map(|(h, v)| format!("{h}: held, {}", v.hold.reason))
            .collect();
        why.extend(
            retired
                .iter()
                .filter(|h| !holds.contains_key(*h))
                .map(|h| format!("{h}: retired")),
        );
        bail!(
            "every host given is held or retired ({}); nothing was written. Release held \
             hosts with `fleet-publish unhold`, or pass --force",
            why.join("; ")
        );
    }
    Ok(left)
}
