//! The cache garbage collector: deletes the NARs and narinfos of `cache/` that
//! nothing needs any more.
//!
//! 1. List `cache/` once (keys, sizes, ages).
//! 2. Collect the root closures ([`roots::SOURCES`]: live manifests, the last N
//!    generations of each host's audit history, every generation of a held host),
//!    add every narinfo younger than [`GcSettings::grace`] (a push in progress), and
//!    walk their narinfo references (`fleet_core::cache_walk::reachable`).
//! 3. Unreachable = narinfos and `cache/nar/` files that are not reachable, not the
//!    NAR of a reachable narinfo, and older than the grace period.
//! 4. With `apply`: delete what is unreachable now *and* was on the condemned list
//!    ([`condemned`]) of a run at least the grace period ago, narinfos before their
//!    NARs (so no reader meets a narinfo without its NAR); condemn the rest for the
//!    next run. Without `apply` nothing changes.
//!
//! Why two runs: a push lists `cache/` once and skips what is there. A gc deleting
//! such a path before the push writes the narinfo that references it would leave
//! a closure incomplete. Condemning first, and pushes re-uploading what is
//! condemned (`push::CacheListing::read`), closes that race without a lock.

pub mod condemned;
pub mod roots;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use anyhow::Context;
use fleet_core::audit_chain::{ActionKind, AuditAction, ObjectChange};
use fleet_core::bucket::ObjectInfo;
use fleet_core::narinfo::{MAX_NARINFO_SIZE, NarInfo};
use fleet_core::{Bucket, Key, KeyPrefix, SecretKey, TrustedKeys};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::manifest_write::manifest_hosts;

/// Default distinct closures kept per host from its history.
pub const DEFAULT_KEEP_GENERATIONS: usize = 5;
/// Default grace period: objects younger than this are never deleted.
pub const DEFAULT_GRACE: SignedDuration = SignedDuration::from_hours(24);

/// How to collect.
#[derive(Clone, Debug)]
pub struct GcSettings {
    /// Signs the audit entry of an applied run (required when `apply`).
    pub signing_key: Option<SecretKey>,
    /// Publisher keys the manifests and holds must verify with.
    pub trusted: TrustedKeys,
    /// Distinct closures kept per host from its audit history.
    pub keep_generations: usize,
    /// Objects younger than this are kept; a condemned list must be this old.
    pub grace: SignedDuration,
    /// Delete (else a dry run).
    pub apply: bool,
}

/// A number of objects and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Objects.
    pub objects: usize,
    /// Bytes.
    pub bytes: u64,
}

impl Tally {
    fn of<'a>(infos: impl IntoIterator<Item = &'a ObjectInfo>) -> Self {
        infos.into_iter().fold(Self::default(), |t, i| Tally {
            objects: t.objects + 1,
            bytes: t.bytes + i.size,
        })
    }
}

/// What a gc run found and did.
#[derive(Clone, Debug, Serialize)]
pub struct GcReport {
    /// Whether it deleted (`--apply`).
    pub applied: bool,
    /// Root closures per source.
    pub roots: BTreeMap<&'static str, usize>,
    /// Objects kept (reachable, young, or not cache data).
    pub kept: Tally,
    /// Objects unreachable now.
    pub unreachable: Tally,
    /// Objects deleted (with `apply`), or that `--apply` would delete now.
    pub freed: Tally,
    /// Their keys.
    pub freed_keys: Vec<String>,
    /// Objects condemned and waiting for a later run.
    pub condemned: Tally,
    /// When those may be deleted (by a run from then on).
    pub delete_after: Option<Timestamp>,
}

/// Whether `key` is cache data gc may delete: a narinfo or a NAR file.
fn collectable(key: &str) -> bool {
    match key.strip_prefix("cache/") {
        Some(rest) => rest.starts_with("nar/") || rest.ends_with(".narinfo"),
        None => false,
    }
}

/// Runs the collector; see the module docs.
pub async fn gc(bucket: &Bucket, settings: &GcSettings) -> anyhow::Result<GcReport> {
    let now = Timestamp::now();
    let listing: BTreeMap<String, ObjectInfo> = bucket
        .list(&KeyPrefix::cache())
        .await
        .context("listing cache/")?
        .into_iter()
        .map(|i| (i.key.clone(), i))
        .collect();
    let young = |i: &ObjectInfo| now.duration_since(i.last_modified) < settings.grace;

    let hosts = manifest_hosts(bucket).await?;
    let history = crate::rollback::history(bucket, &hosts, &settings.trusted).await?;
    let ctx = roots::RootContext {
        bucket,
        trusted: &settings.trusted,
        hosts,
        history,
        keep_generations: settings.keep_generations,
    };
    let found = roots::collect(&ctx).await?;
    let mut root_counts: BTreeMap<&'static str, usize> =
        roots::SOURCES.iter().map(|(n, _)| (*n, 0)).collect();
    for r in &found {
        *root_counts.entry(r.source).or_default() += 1;
    }
    let mut closures: Vec<_> = found.into_iter().map(|r| r.closure).collect();
    closures.extend(young_narinfo_paths(bucket, &listing, &young).await?);

    let present: HashSet<String> = listing
        .keys()
        .filter_map(|k| k.strip_prefix("cache/")?.strip_suffix(".narinfo"))
        .map(str::to_owned)
        .collect();
    let reached = fleet_core::cache_walk::reachable(bucket, closures, &present)
        .await
        .context("walking the closures to keep; nothing was deleted")?;
    let mut keep: HashSet<String> = HashSet::new();
    for (hash, ni) in &reached {
        keep.insert(format!("cache/{hash}.narinfo"));
        if let Ok(k) = Key::nar(&ni.url) {
            keep.insert(k.as_str().to_owned());
        }
    }
    let unreachable: BTreeMap<&String, &ObjectInfo> = listing
        .iter()
        .filter(|(k, i)| collectable(k) && !keep.contains(*k) && !young(i))
        .collect();

    let previous = condemned::read(bucket).await?;
    let ripe = previous
        .as_ref()
        .filter(|c| now.duration_since(c.time) >= settings.grace);
    // Deleted narinfos first, then NARs (see the module docs).
    let (mut freed, rest): (Vec<_>, Vec<_>) = unreachable
        .iter()
        .partition(|(k, _)| ripe.is_some_and(|c| c.keys.contains(k.as_str())));
    freed.sort_by_key(|(k, _)| (k.starts_with("cache/nar/"), k.to_string()));
    let freed_tally = Tally::of(freed.iter().map(|(_, i)| **i));
    let freed_keys: Vec<String> = freed.iter().map(|(k, _)| k.to_string()).collect();

    // What waits: with a young list still standing, its own keys (and time); new
    // candidates join only a fresh list, so none waits less than the grace period.
    let (waiting, since): (BTreeSet<String>, Timestamp) = match (&previous, ripe) {
        (Some(c), None) => (
            c.keys
                .iter()
                .filter(|k| unreachable.contains_key(k))
                .cloned()
                .collect(),
            c.time,
        ),
        _ => (rest.iter().map(|(k, _)| k.to_string()).collect(), now),
    };
    if settings.apply {
        for k in &freed_keys {
            let key = key_of(k)?;
            bucket
                .delete(&key)
                .await
                .with_context(|| format!("deleting {k} (the gc needs the admin role)"))?;
        }
        if previous.is_none() || ripe.is_some() {
            condemned::write(bucket, waiting.clone(), since).await?;
        }
        if !freed_keys.is_empty() || previous.is_none() || ripe.is_some() {
            record(bucket, settings, &freed_keys, freed_tally, waiting.len()).await?;
        }
    }
    let condemned_tally = Tally::of(waiting.iter().filter_map(|k| listing.get(k)));
    Ok(GcReport {
        applied: settings.apply,
        roots: root_counts,
        kept: Tally::of(
            listing
                .values()
                .filter(|i| !unreachable.contains_key(&i.key)),
        ),
        unreachable: Tally::of(unreachable.values().copied()),
        freed: freed_tally,
        freed_keys,
        condemned: condemned_tally,
        delete_after: (!waiting.is_empty())
            .then(|| since.checked_add(settings.grace).ok())
            .flatten(),
    })
}

/// The store paths of the narinfos younger than the grace period: a push in
/// progress, whose references must stay.
async fn young_narinfo_paths(
    bucket: &Bucket,
    listing: &BTreeMap<String, ObjectInfo>,
    young: &impl Fn(&ObjectInfo) -> bool,
) -> anyhow::Result<Vec<fleet_core::StorePath>> {
    let keys: Vec<Key> = listing
        .iter()
        .filter(|(k, i)| k.ends_with(".narinfo") && young(i))
        .map(|(k, _)| key_of(k))
        .collect::<anyhow::Result<_>>()?;
    let mut out = Vec::new();
    for (key, got) in keys
        .iter()
        .zip(bucket.get_many(&keys, MAX_NARINFO_SIZE).await)
    {
        match got {
            Ok(o) => {
                let ni = NarInfo::parse(&o.bytes, key.as_str()).with_context(|| {
                    format!("{key}: its references are unknown, so nothing was deleted")
                })?;
                out.push(ni.store_path);
            }
            Err(fleet_core::BucketError::NotFound { .. }) => {}
            Err(e) => return Err(e).with_context(|| format!("reading {key}")),
        }
    }
    Ok(out)
}

/// The [`Key`] of a listed cache key.
fn key_of(listed: &str) -> anyhow::Result<Key> {
    if let Some(url) = listed
        .strip_prefix("cache/")
        .filter(|r| r.starts_with("nar/"))
    {
        return Key::nar(url).with_context(|| format!("listed key {listed}"));
    }
    let hash = listed
        .strip_prefix("cache/")
        .and_then(|k| k.strip_suffix(".narinfo"))
        .with_context(|| format!("{listed} is no cache object"))?;
    let path = fleet_core::StorePath::new(&format!("/nix/store/{hash}-x"))
        .with_context(|| format!("{listed} is not named for a store path hash"))?;
    Ok(Key::narinfo(path.hash()))
}

/// The most deleted keys one audit entry names; beyond it the entry gives counts
/// only, which keeps it far below the entry size limit.
const MAX_AUDITED_KEYS: usize = 2000;

/// Appends the `gc` audit entry of an applied run: what it deleted (keys, up to
/// [`MAX_AUDITED_KEYS`]) and counts.
async fn record(
    bucket: &Bucket,
    settings: &GcSettings,
    freed: &[String],
    tally: Tally,
    condemned: usize,
) -> anyhow::Result<()> {
    let Some(key) = &settings.signing_key else {
        anyhow::bail!("gc --apply needs a signing key for its audit entry");
    };
    let mut objects = Vec::new();
    for k in freed.iter().take(MAX_AUDITED_KEYS) {
        objects.push(ObjectChange::deleted(&key_of(k)?));
    }
    let action = AuditAction::objects(
        ActionKind::Gc,
        Vec::new(),
        objects,
        [
            ("freed_objects", serde_json::json!(tally.objects)),
            ("freed_bytes", serde_json::json!(tally.bytes)),
            ("condemned_objects", serde_json::json!(condemned)),
        ],
    );
    crate::audit_log::append(bucket, key, action)
        .await
        .context("gc deleted what it reported, but its audit entry could not be written")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_narinfos_and_nars_are_collectable() {
        assert!(collectable(
            "cache/aql5kla6x8r78rrdfyxr471hbn3himl6.narinfo"
        ));
        assert!(collectable("cache/nar/x.nar.zst"));
        assert!(!collectable("cache/nix-cache-info"));
        assert!(!collectable("cache/gc-condemned.json"));
        assert!(!collectable("hosts/a/manifest.json"));
    }

    #[test]
    fn listed_keys_round_trip() {
        for k in [
            "cache/aql5kla6x8r78rrdfyxr471hbn3himl6.narinfo",
            "cache/nar/1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar.zst",
        ] {
            assert_eq!(key_of(k).unwrap().as_str(), k);
        }
        assert!(key_of("cache/nix-cache-info").is_err());
    }
}
