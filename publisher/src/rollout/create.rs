//! `fleet-publish release`: checks a release, pushes its closures, signs it and
//! writes it with its first rollout state.
//!
//! Order, so that bad input changes nothing in the bucket: resolve the plan (unknown
//! names, a host in two waves, hosts in no wave, a budget over 100 % are refused);
//! check that the id is free and that every host has a manifest; then push the
//! closures (or check them complete in the bucket, [`crate::deploy::publish_closures`]);
//! only then write the release (create-only) and its state (create-only).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, bail};
use fleet_core::audit_chain::{ActionKind, AuditAction, ObjectChange};
use fleet_core::bucket::BucketError;
use fleet_core::nixcli::Nix;
use fleet_core::release::{Budget, Plan, Release, ReleaseHost, WaveSpec, resolve_waves};
use fleet_core::rollout::RolloutState;
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

/// Checks, pushes and writes the release and its first state; see the module docs.
pub async fn create(
    bucket: &Bucket,
    nix: &Nix,
    cache_key: &SecretKey,
    signing_key: &SecretKey,
    spec: &ReleaseSpec,
    settings: &DeploySettings,
) -> anyhow::Result<Release> {
    let release = build(spec, cache_keys(cache_key, &settings.extra_cache_keys))?;
    let key = Key::release(&spec.id);
    if bucket.head(&key).await?.is_some() {
        bail!(
            "release {} already exists in {} (releases are written once); pick another id",
            spec.id,
            bucket.url()
        );
    }
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
    let bytes = release.sign(signing_key);
    let digest = hex::encode(Sha256::digest(&bytes));
    let written = ObjectChange::written(&key, &bytes);
    match bucket.put_if_absent(&key, bytes).await {
        Ok(_) => {}
        Err(BucketError::AlreadyExists { .. }) => bail!(
            "release {} was written by someone else meanwhile; pick another id",
            spec.id
        ),
        Err(e) => return Err(e).with_context(|| format!("writing {key}")),
    }
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
    bucket
        .put_if_absent(&state_key, state_bytes)
        .await
        .with_context(|| {
            format!(
                "release {} IS written, but its rollout state could not be; make a new release",
                spec.id
            )
        })?;
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
