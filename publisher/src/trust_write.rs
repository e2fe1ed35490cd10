//! The engine of `fleet-publish trust …`: reads the root of trust from the bucket
//! (every version from 1, each checked by TUF's rule, [`fleet_core::trust::chain`])
//! and writes the next version, signed with the root key files given.
//!
//! A new version is checked before it is written exactly as hosts will check it
//! ([`TrustedRoot::next`]): signed by a threshold of the current version's root
//! keys and of its own. It is written create-only to `trust/<version>.root.json`
//! (a version is never replaced; two admins racing get one winner), then copied to
//! `trust/root.json`. Only the root key files sign the version; the publisher or
//! admin key given with `--signing-key` signs the audit entry that records it
//! ([`record`], action `trust`, [`fleet_core::audit_trust`]).

use std::time::Duration;

use anyhow::{Context, bail};
use fleet_core::trust::chain::claimed_version;
use fleet_core::trust::{MAX_ROOT_SIZE, ROOT_FORMAT, Root, TrustedRoot};
use fleet_core::{Bucket, BucketError, Key, SecretKey};
use jiff::{SignedDuration, Timestamp};

/// Reads `key`, or `None` when it does not exist.
async fn read(bucket: &Bucket, key: &Key) -> anyhow::Result<Option<Vec<u8>>> {
    match bucket.get(key, MAX_ROOT_SIZE).await {
        Ok(o) => Ok(Some(o.bytes.to_vec())),
        Err(BucketError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {key}")),
    }
}

/// The newest root in the bucket with every step from version 1 verified, or
/// `None` when there is none yet. Version 1 is taken on its own signatures: compare
/// its root keys with your records (`trust show`).
pub async fn current(bucket: &Bucket) -> anyhow::Result<Option<TrustedRoot>> {
    let Some(pointer) = read(bucket, &Key::trust_root()).await? else {
        return Ok(None);
    };
    let claimed = claimed_version(&pointer)
        .with_context(|| format!("{} is not a root of trust", Key::trust_root()))?;
    let first = Key::trust_root_version(1);
    let bytes = read(bucket, &first)
        .await?
        .with_context(|| format!("{first} is missing"))?;
    let mut root = TrustedRoot::reload(&bytes, first.as_str())?;
    for v in 2..=claimed {
        let key = Key::trust_root_version(v);
        let bytes = read(bucket, &key)
            .await?
            .with_context(|| format!("{key} is missing"))?;
        root = root.next(&bytes, key.as_str())?;
    }
    Ok(Some(root))
}

/// The expiry of a version signed now.
pub fn expiry(now: Timestamp, expires_in: Duration) -> anyhow::Result<Timestamp> {
    Ok(now.checked_add(SignedDuration::try_from(expires_in)?)?)
}

/// Signs and writes version 1 (`fleet-publish trust init`); refuses when the
/// bucket has a root already.
pub async fn write_first(
    bucket: &Bucket,
    keys: &[SecretKey],
    root: Root,
) -> anyhow::Result<TrustedRoot> {
    if read(bucket, &Key::trust_root()).await?.is_some() {
        bail!(
            "{} exists: this bucket has a root of trust already (fleet-publish trust show); change it with the other trust subcommands",
            Key::trust_root()
        );
    }
    let bytes = root.sign(keys);
    let pinned = fleet_core::TrustedKeys::new(keys.iter().map(SecretKey::public));
    let trusted = TrustedRoot::bootstrap(&bytes, "the new root", &pinned, 1)?;
    write(bucket, &trusted).await?;
    Ok(trusted)
}

/// Writes the next version: a copy of the current one changed by `change`, with
/// the next version number, issued now and expiring after `expires_in`, signed with
/// `keys`.
pub async fn write_next(
    bucket: &Bucket,
    keys: &[SecretKey],
    expires_in: Duration,
    change: impl FnOnce(&mut Root) -> anyhow::Result<()>,
) -> anyhow::Result<TrustedRoot> {
    let Some(current) = current(bucket).await? else {
        bail!(
            "{} does not exist: write the first version with fleet-publish trust init",
            Key::trust_root()
        );
    };
    let mut root = current.root().clone();
    change(&mut root)?;
    let now = Timestamp::now();
    root.format = ROOT_FORMAT;
    root.version = current.version() + 1;
    root.issued_at = now;
    root.expires_at = expiry(now, expires_in)?;
    let what = Key::trust_root_version(root.version).to_string();
    root.validate(&what)?;
    let bytes = root.sign(keys);
    let next = current
        .next(&bytes, &what)
        .context("the root key files given cannot sign this version (hosts would refuse it)")?;
    write(bucket, &next).await?;
    Ok(next)
}

async fn write(bucket: &Bucket, root: &TrustedRoot) -> anyhow::Result<()> {
    let key = Key::trust_root_version(root.version());
    match bucket.put_if_absent(&key, root.bytes().to_vec()).await {
        Ok(_) => {}
        Err(BucketError::AlreadyExists { .. }) => bail!(
            "{key} was written meanwhile by someone else; nothing was changed: run the command again"
        ),
        Err(e) => return Err(e).with_context(|| format!("writing {key}")),
    }
    bucket
        .put(&Key::trust_root(), root.bytes().to_vec())
        .await
        .with_context(|| format!("writing {}", Key::trust_root()))?;
    Ok(())
}

/// One line describing `root`, for the commands' output.
pub fn describe(root: &Root) -> String {
    let names =
        |k: &[fleet_core::PublicKey]| k.iter().map(|k| k.name().to_owned()).collect::<Vec<_>>();
    let publishers: Vec<String> = root
        .publisher_keys
        .iter()
        .map(|k| match &k.scope {
            Some(s) => format!("{} ({s})", k.key.name()),
            None => k.key.name().to_owned(),
        })
        .collect();
    format!(
        "{}: version {}, expires {}, root keys {:?} (threshold {}), publisher keys {publishers:?}, cache keys {:?}, admin keys {:?}",
        Key::trust_root_version(root.version),
        root.version,
        root.expires_at,
        names(&root.root_keys),
        root.threshold,
        names(&root.cache_keys),
        names(&root.admin_keys),
    )
}

/// Appends the audit entry recording that `root` was written by the trust
/// subcommand `change`, signed with `key`.
pub async fn record(
    bucket: &Bucket,
    key: &SecretKey,
    root: &TrustedRoot,
    change: &str,
) -> anyhow::Result<()> {
    let action = fleet_core::audit_trust::trust_action(root, change);
    crate::audit_log::append(bucket, key, action)
        .await
        .with_context(|| {
            format!(
                "{} was written, but its audit entry was not: `fleet-publish audit verify` will report it as unexplained",
                Key::trust_root_version(root.version())
            )
        })?;
    Ok(())
}
