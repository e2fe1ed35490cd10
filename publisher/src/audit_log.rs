//! Appending to and reading the signed audit chain ([`fleet_core::audit_chain`]).
//!
//! [`append`] is the one call every action makes after it changed the bucket:
//! `append(bucket, signing_key, AuditAction)`. It signs entry `head + 1` naming
//! the head's hash and creates it with `If-None-Match` (`put_if_absent`). Two
//! writers that pick the same index cannot both win: the loser finds the new head
//! and tries the next index, so the chain stays linear with no coordinator.
//!
//! Finding the head: this process remembers the last head it wrote or found per
//! bucket (most appends cost one PUT); otherwise it reads the hint
//! `audit/head.json`, lists `audit/chain/` after the hinted key (`start-after`),
//! and falls back to listing it all when the hint is missing or points past the
//! chain. The hint is refreshed every [`HINT_EVERY`] entries; it is never trusted,
//! only a place to start listing.
//!
//! [`read_chain`] reads every stored entry (for `audit log`, `audit verify` and
//! rollback's history) and [`read_legacy`] the older unsigned entries.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::{Context, bail};
use fleet_core::audit::AuditEntry;
use fleet_core::audit_chain::{
    AuditAction, ChainEntry, HeadHint, MAX_AUDIT_ENTRY_SIZE, sha256_hex,
};
use fleet_core::bucket::BucketError;
use fleet_core::{Bucket, Key, KeyPrefix, ObjectName, SecretKey};
use tokio::sync::Mutex;

/// The head hint is rewritten when an entry's index is a multiple of this.
pub const HINT_EVERY: u64 = 16;
/// Appends tried before giving up under contention.
const MAX_APPEND_ATTEMPTS: u32 = 64;
/// Tries of an append when the bucket fails (see [`append`]).
pub const APPEND_TRIES: u32 = 3;
/// Largest head hint read.
const MAX_HINT_SIZE: u64 = 4096;

/// Where the chain ends: the last index and the hash of its stored bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Head {
    index: u64,
    sha256: String,
}

/// The head this process last wrote or found, per bucket URL. Only a starting
/// guess: a stale one costs one refused create and a fresh look.
static HEADS: LazyLock<Mutex<HashMap<String, Option<Head>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// An entry written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Its index.
    pub index: u64,
    /// Its key.
    pub key: Key,
}

/// Signs `action` with `key` and appends it to the chain; see the module docs.
/// When the bucket fails (not another writer taking the index), the append is
/// tried again, [`APPEND_TRIES`] times in all; an entry whose write had no answer
/// is looked for first, so the action is never appended twice.
pub async fn append(
    bucket: &Bucket,
    key: &SecretKey,
    action: AuditAction,
) -> anyhow::Result<Appended> {
    let url = bucket.url().to_string();
    // One append at a time per process: its own appends never race each other.
    let mut heads = HEADS.lock().await;
    // Entries written with no answer: (index, key, SHA-256 of the bytes).
    let mut unsure: Vec<(u64, Key, String)> = Vec::new();
    let mut failed = None;
    'tries: for t in 1..=APPEND_TRIES {
        if t > 1 {
            tokio::time::sleep(Duration::from_millis(250 * u64::from(t))).await;
        }
        let mut still_unsure = Vec::new();
        for (index, k, sha256) in unsure.drain(..) {
            match bucket.get(&k, MAX_AUDIT_ENTRY_SIZE).await {
                Ok(obj) if sha256_hex(&obj.bytes) == sha256 => {
                    tracing::info!(%k, "the audit entry landed though its answer was lost");
                    heads.insert(url, Some(Head { index, sha256 }));
                    return Ok(Appended { index, key: k });
                }
                // Another writer's entry, or none: ours did not land.
                Ok(_) | Err(BucketError::NotFound { .. }) => {}
                Err(e) => {
                    still_unsure.push((index, k, sha256));
                    failed = Some(anyhow::Error::new(e).context("reading back an audit entry"));
                }
            }
        }
        if !still_unsure.is_empty() {
            // Appending again before knowing could record the action twice.
            unsure = still_unsure;
            continue 'tries;
        }
        match append_once(bucket, key, &action, &mut heads, &url, &mut unsure).await {
            Ok(a) => return Ok(a),
            Err(e) => {
                tracing::warn!(try_ = t, "appending to the audit chain failed: {e:#}");
                failed = Some(e);
            }
        }
    }
    Err(failed.expect("every try failed"))
}

/// One try of [`append`]; a write whose outcome is not known is added to `unsure`.
async fn append_once(
    bucket: &Bucket,
    key: &SecretKey,
    action: &AuditAction,
    heads: &mut HashMap<String, Option<Head>>,
    url: &str,
    unsure: &mut Vec<(u64, Key, String)>,
) -> anyhow::Result<Appended> {
    let url = url.to_owned();
    let mut head = match heads.get(&url) {
        Some(h) => h.clone(),
        None => find_head(bucket, None).await?,
    };
    for attempt in 1..=MAX_APPEND_ATTEMPTS {
        let index = head.as_ref().map_or(1, |h| h.index + 1);
        let entry = ChainEntry::new(
            index,
            head.as_ref().map(|h| h.sha256.clone()),
            key.name(),
            action.clone(),
        );
        let entry_key = entry.key();
        let bytes = entry.sign(key);
        let sha256 = sha256_hex(&bytes);
        let written = match bucket.put_if_absent(&entry_key, bytes).await {
            Ok(_) => Ok(()),
            // Taken: by another writer, or by this very create when its answer was
            // lost and the client retried. Only the bytes tell which.
            Err(BucketError::AlreadyExists { .. } | BucketError::Conflict { .. }) => {
                let there = bucket
                    .get(&entry_key, MAX_AUDIT_ENTRY_SIZE)
                    .await
                    .with_context(|| format!("reading back audit entry {entry_key}"));
                match there {
                    Ok(obj) if sha256_hex(&obj.bytes) == sha256 => Ok(()),
                    Ok(_) => {
                        tracing::debug!(index, attempt, "another writer took the audit index");
                        head = find_head(bucket, Some(index)).await?;
                        tokio::time::sleep(backoff(attempt)).await;
                        continue;
                    }
                    Err(e) => {
                        unsure.push((index, entry_key.clone(), sha256.clone()));
                        Err(e)
                    }
                }
            }
            // A create that landed though the answer was an error.
            Err(_) if holds(bucket, &entry_key, &sha256).await => Ok(()),
            Err(e) => {
                unsure.push((index, entry_key.clone(), sha256.clone()));
                Err(anyhow::Error::new(e))
            }
        };
        if let Err(e) = written {
            heads.remove(&url);
            return Err(e).with_context(|| format!("writing audit entry {entry_key}"));
        }
        heads.insert(url, Some(Head { index, sha256 }));
        if index % HINT_EVERY == 0 {
            write_hint(bucket, index).await;
        }
        return Ok(Appended {
            index,
            key: entry_key,
        });
    }
    heads.remove(&url);
    bail!(
        "gave up appending to the audit chain of {} after {MAX_APPEND_ATTEMPTS} attempts: \
         other writers kept taking the next index",
        bucket.url()
    )
}

/// The chain's head, listing after `known` (an index known to exist) or else after
/// the hint; `None` for an empty chain.
async fn find_head(bucket: &Bucket, known: Option<u64>) -> anyhow::Result<Option<Head>> {
    let start = match known {
        Some(i) => Some(i),
        None => read_hint(bucket).await.map(|h| h.index),
    };
    let prefix = KeyPrefix::audit_chain();
    let mut last = None;
    if let Some(start) = start {
        let after = bucket
            .list_after(&prefix, &Key::audit_chain(start))
            .await
            .with_context(|| format!("listing {prefix} for the audit chain's head"))?;
        last = after
            .iter()
            .filter_map(|o| Key::audit_chain_index(&o.key))
            .max();
        if last.is_none() && bucket.head(&Key::audit_chain(start)).await?.is_some() {
            last = Some(start);
        }
    }
    if last.is_none() {
        // No hint, or one past the end: list it all.
        last = bucket
            .list(&prefix)
            .await
            .with_context(|| format!("listing {prefix} for the audit chain's head"))?
            .iter()
            .filter_map(|o| Key::audit_chain_index(&o.key))
            .max();
    }
    let Some(index) = last else {
        return Ok(None);
    };
    let key = Key::audit_chain(index);
    let obj = bucket
        .get(&key, MAX_AUDIT_ENTRY_SIZE)
        .await
        .with_context(|| format!("reading the audit chain's head {key}"))?;
    Ok(Some(Head {
        index,
        sha256: sha256_hex(&obj.bytes),
    }))
}

/// The head hint, if there is a readable one.
pub async fn read_hint(bucket: &Bucket) -> Option<HeadHint> {
    let obj = bucket.get(&Key::audit_head(), MAX_HINT_SIZE).await.ok()?;
    serde_json::from_slice(&obj.bytes).ok()
}

async fn write_hint(bucket: &Bucket, index: u64) {
    let body = serde_json::to_vec(&HeadHint { index }).expect("hint serialises");
    if let Err(e) = bucket.put(&Key::audit_head(), body).await {
        // Only an optimisation: the next writer lists a little more.
        tracing::warn!(error = %e, "could not refresh the audit head hint");
    }
}

/// Every stored entry of the chain as (index, stored bytes), in index order, and
/// the keys under `audit/chain/` that are not entry keys.
pub async fn read_chain(bucket: &Bucket) -> anyhow::Result<(Vec<(u64, Vec<u8>)>, Vec<String>)> {
    let prefix = KeyPrefix::audit_chain();
    let listed = bucket
        .list(&prefix)
        .await
        .with_context(|| format!("listing {prefix}"))?;
    let mut stray = Vec::new();
    let mut indexed: Vec<(u64, Key)> = Vec::new();
    for o in listed {
        match Key::audit_chain_index(&o.key) {
            Some(i) => indexed.push((i, Key::audit_chain(i))),
            None => stray.push(o.key),
        }
    }
    indexed.sort();
    let keys: Vec<Key> = indexed.iter().map(|(_, k)| k.clone()).collect();
    let mut out = Vec::with_capacity(keys.len());
    for ((i, key), obj) in indexed
        .iter()
        .zip(bucket.get_many(&keys, MAX_AUDIT_ENTRY_SIZE).await)
    {
        let obj = obj.with_context(|| format!("reading {key}"))?;
        out.push((*i, obj.bytes.to_vec()));
    }
    Ok((out, stray))
}

/// Largest entry of the older format read.
const MAX_LEGACY_ENTRY_SIZE: u64 = 64 * 1024;

/// The older unsigned entries (`audit/<time>-<host>-<seq>.json`) whose names pass
/// `keep` (given the name without `.json`), in name (time) order; ones that do not
/// parse are skipped with a warning.
pub async fn read_legacy(
    bucket: &Bucket,
    keep: impl Fn(&str) -> bool,
) -> anyhow::Result<Vec<AuditEntry>> {
    let listed = bucket
        .list(&KeyPrefix::audit())
        .await
        .context("listing audit/ for entries of the older format")?;
    let mut keys: Vec<Key> = listed
        .iter()
        .filter_map(|e| {
            let name = e.key.strip_prefix("audit/")?.strip_suffix(".json")?;
            (name != "head" && keep(name)).then(|| ObjectName::new(name).ok())?
        })
        .map(|n| Key::audit(&n))
        .collect();
    keys.sort();
    let mut out = Vec::new();
    for (key, obj) in keys
        .iter()
        .zip(bucket.get_many(&keys, MAX_LEGACY_ENTRY_SIZE).await)
    {
        let obj = obj.with_context(|| format!("reading {key}"))?;
        match serde_json::from_slice::<AuditEntry>(&obj.bytes) {
            Ok(e) => out.push(e),
            Err(e) => tracing::warn!(%key, error = %e, "not an audit entry of the older format"),
        }
    }
    Ok(out)
}

/// Whether `key` holds exactly the bytes whose SHA-256 is `sha256`.
async fn holds(bucket: &Bucket, key: &Key, sha256: &str) -> bool {
    match bucket.get(key, MAX_AUDIT_ENTRY_SIZE).await {
        Ok(obj) => sha256_hex(&obj.bytes) == sha256,
        Err(_) => false,
    }
}

/// A short, jittered pause after losing an index to another writer.
fn backoff(attempt: u32) -> Duration {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() % 20_000_000);
    Duration::from_millis(5 * u64::from(attempt.min(20))) + Duration::from_nanos(u64::from(jitter))
}
