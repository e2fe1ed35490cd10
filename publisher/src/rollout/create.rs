//! `fleet-publish release`: checks a release, pushes its closures, signs it and
//! writes it with its first rollout state.
//!
//! Order, so that bad input changes nothing in the bucket: resolve the plan (unknown
//! names, a host in two waves, hosts in no wave, a budget over 100 % are refused);
//! check that the id is free and that every host has a manifest; then push the
//! closures (or check them complete in the bucket, [`crate::deploy::publish_closures`]);
//! only then write the release (create-only) and its state (create-only).
//!
//! A create whose answer was lost is told from a taken key by reading the bytes back.
//! A run that stopped after writing the release but before its state (the bucket
//! failing in between) leaves an id that the same command, run again, finishes:
//! the release there is the same but for its `created_at` and has no state, so the
//! state and the audit entry are written for it.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, bail};
use fleet_core::audit_chain::{ActionKind, AuditAction, ObjectChange};
use fleet_core::bucket::BucketError;
use fleet_core::nixcli::Nix;
use fleet_core::release::{
    Budget, MAX_RELEASE_SIZE, Plan, Release, ReleaseHost, WaveSpec, resolve_waves,
};
use fleet_core::rollout::{MAX_ROLLOUT_SIZE, RolloutState};
use fleet_core::{
    Activation, Bucket, HostName, Key, ObjectName, PublicKey, SecretKey, TrustedKeys,
};
use jiff::Timestamp;
use sha2::{Digest, Sha256};

use crate::DeploySettings;
use crate::deploy::{DeployTarget, cache_keys, publish_closures};

/// What a release is made of.
#[derive(Clone, Debug)]
pub struct ReleaseSpec {
    /// Its id.
    pub id: ObjectName,
    /// Each host's closure.
    pub targets: Vec<DeployTarget>,
    /// How every host activates it.
    pub activation: Activation,
    /// The waves as given.
    pub waves: Vec<WaveSpec>,
    /// Bad hosts allowed over the release.
    pub budget: Budget,
    /// Seconds after its wave started before a host that has not reported is silent.
    pub report_deadline_seconds: u64,
    /// Roll the touched hosts back when the rollout halts.
    pub auto_rollback: bool,
}

/// The release `spec` describes, signed nowhere yet; every plan check is done.
pub fn build(spec: &ReleaseSpec, cache_keys: Vec<PublicKey>) -> anyhow::Result<Release> {
    let mut hosts = BTreeMap::new();
    for t in &spec.targets {
        let host = ReleaseHost {
            closure: t.closure.clone(),
            activation: spec.activation,
        };
        if hosts.insert(t.host.clone(), host).is_some() {
            bail!("host {} is named twice", t.host);
        }
    }
    let names: BTreeSet<HostName> = hosts.keys().cloned().collect();
    let waves = resolve_waves(&names, &spec.waves)?;
    let release = Release {
        version: 1,
        id: spec.id.to_string(),
        created_at: Timestamp::now(),
        cache_keys,
        hosts,
        plan: Plan {
            waves,
            budget: spec.budget,
            report_deadline_seconds: spec.report_deadline_seconds,
        },
    };
    release.check()?;
    Ok(release)
}

/// Refuses hosts without a manifest in the bucket (a typo, a host never deployed).
pub async fn check_hosts_exist(bucket: &Bucket, hosts: &[HostName]) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for h in hosts {
        let key = Key::manifest(h);
        if bucket
            .head(&key)
            .await
            .with_context(|| format!("looking for {key}"))?
            .is_none()
        {
            missing.push(h.as_str());
        }
    }
    if !missing.is_empty() {
        bail!(
            "hosts {} have no manifest in {} (are the names right? a new host gets its first \
             manifest with `fleet-publish deploy`); nothing was written",
            missing.join(", "),
            bucket.url()
        );
    }
    Ok(())
}

/// A release already in the bucket under the id being created.
enum Existing {
    /// None: create it.
    Absent,
    /// The same release (every field but `created_at`), signed with this key, with
    /// no rollout state: an earlier run stopped after writing it. Its stored bytes.
    Unfinished(Vec<u8>),
}

/// Looks at what `releases/<id>.json` and its state hold before creating `release`;
/// refuses a taken id unless it is `release` itself, left unfinished.
async fn existing(
    bucket: &Bucket,
    release: &Release,
    id: &ObjectName,
    signing_key: &SecretKey,
) -> anyhow::Result<Existing> {
    let key = Key::release(id);
    let taken = || {
        anyhow::anyhow!(
            "release {id} already exists in {} (releases are written once); pick another id",
            bucket.url()
        )
    };
    let obj = match bucket.get(&key, MAX_RELEASE_SIZE).await {
        Ok(o) => o,
        Err(BucketError::NotFound { .. }) => return Ok(Existing::Absent),
        Err(e) => return Err(e).with_context(|| format!("looking for {key}")),
    };
    let state_key = Key::rollout(id);
    if bucket
        .head(&state_key)
        .await
        .with_context(|| format!("looking for {state_key}"))?
        .is_some()
    {
        return Err(taken());
    }
    let trusted = TrustedKeys::new([signing_key.public()]);
    match Release::verify(&obj.bytes, id.as_str(), &trusted) {
        Ok(v) if same_release(&v.release, release) => Ok(Existing::Unfinished(obj.bytes.to_vec())),
        _ => Err(taken()),
    }
}

/// Whether `a` and `b` are the same release but for when each was signed.
fn same_release(a: &Release, b: &Release) -> bool {
    Release {
        created_at: b.created_at,
        ..a.clone()
    } == *b
}

/// Creates `key` with `bytes` unless it exists; a create whose answer was lost (the
/// client's retry then finds the object) succeeds when `key` holds these bytes.
/// `Ok(false)`: another writer's object is there.
async fn create_once(
    bucket: &Bucket,
    key: &Key,
    bytes: Vec<u8>,
    limit: u64,
) -> anyhow::Result<bool> {
    let sha256 = fleet_core::audit_chain::sha256_hex(&bytes);
    let err = match bucket.put_if_absent(key, bytes).await {
        Ok(_) => return Ok(true),
        Err(e) => e,
    };
    if let Ok(obj) = bucket.get(key, limit).await {
        if fleet_core::audit_chain::sha256_hex(&obj.bytes) == sha256 {
            tracing::info!(%key, "the write landed though its answer was lost");
            return Ok(true);
        }
        if matches!(
            err,
            BucketError::AlreadyExists { .. } | BucketError::Conflict { .. }
        ) {
            return Ok(false);
        }
    }
    Err(err).with_context(|| format!("writing {key}"))
}

/// Checks, pushes and writes the release and its first state; see the module docs.
/// Run again with the same release after a run that stopped between writing the
/// release and writing its state, it writes the state and the audit entry.
pub async fn create(
    bucket: &Bucket,
    nix: &Nix,
    cache_key: &SecretKey,
    signing_key: &SecretKey,
    spec: &ReleaseSpec,
    settings: &DeploySettings,
) -> anyhow::Result<Release> {
    let mut release = build(spec, cache_keys(cache_key, &settings.extra_cache_keys))?;
    let key = Key::release(&spec.id);
    let existing = existing(bucket, &release, &spec.id, signing_key).await?;
    let hosts: Vec<HostName> = release.hosts.keys().cloned().collect();
    check_hosts_exist(bucket, &hosts).await?;
    let trusted_cache = TrustedKeys::new(release.cache_keys.iter().cloned());
    publish_closures(
        bucket,
        nix,
        cache_key,
        &spec.targets,
        settings,
        &trusted_cache,
    )
    .await
    .context("making the release's closures complete in the bucket")?;
    let bytes = match existing {
        Existing::Absent => {
            let bytes = release.sign(signing_key);
            if !create_once(bucket, &key, bytes.clone(), MAX_RELEASE_SIZE).await? {
                bail!(
                    "release {} was written by someone else meanwhile; pick another id",
                    spec.id
                );
            }
            bytes
        }
        Existing::Unfinished(bytes) => {
            tracing::info!(id = %spec.id, "release written by an earlier run without its rollout state; finishing it");
            let trusted = TrustedKeys::new([signing_key.public()]);
            release = Release::verify(&bytes, spec.id.as_str(), &trusted)?.release;
            bytes
        }
    };
    let digest = hex::encode(Sha256::digest(&bytes));
    let written = ObjectChange::written(&key, &bytes);
    let state = RolloutState::new(
        &release.id,
        &digest,
        release.plan.waves.len(),
        spec.auto_rollback,
        signing_key.name(),
    );
    let state_key = Key::rollout(&spec.id);
    let state_bytes = state.sign(signing_key);
    let state_written = ObjectChange::written(&state_key, &state_bytes);
    let unfinished = || {
        format!(
            "release {} IS written, but its rollout state could not be; run the same \
             `fleet-publish release` again to finish it",
            spec.id
        )
    };
    if !create_once(bucket, &state_key, state_bytes, MAX_ROLLOUT_SIZE)
        .await
        .with_context(unfinished)?
    {
        bail!(
            "release {}: another run wrote its rollout state meanwhile; see `fleet-publish \
             rollout status {}`",
            spec.id,
            spec.id
        );
    }
    let action = AuditAction::objects(
        ActionKind::Release,
        release.hosts.keys().cloned().collect(),
        vec![written, state_written],
        [
            ("release", serde_json::json!(release.id)),
            ("waves", serde_json::json!(release.plan.waves.len())),
        ],
    );
    crate::audit_log::append(bucket, signing_key, action)
        .await
        .with_context(|| {
            format!(
                "release {} IS written, but its audit entry could not be written; record it by hand",
                spec.id
            )
        })?;
    Ok(release)
}
