//! `cache/gc-condemned.json`: the cache objects `fleet-publish gc --apply` found
//! unreachable and will delete on a later run, and when it found them.
//!
//! ```json
//! {"version": 1, "time": "2026-12-02T22:00:00Z", "keys": ["cache/<hash>.narinfo", "cache/nar/<filehash>.nar.zst"]}
//! ```
//!
//! This list is what makes a push racing a gc safe without a lock: a push that
//! starts after the list exists treats every key on it as missing and uploads it
//! again (so it is young, and kept); a push that started before had the whole grace
//! period to write its narinfos, which are then young roots. A key is only deleted
//! when it was on a list at least the grace period old and is still unreachable.

use std::collections::BTreeSet;

use anyhow::Context;
use fleet_core::bucket::BucketError;
use fleet_core::{Bucket, Key};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Largest list read (a key is under 100 bytes: about 80,000 keys).
pub const MAX_CONDEMNED_SIZE: u64 = 8 * 1024 * 1024;

/// The stored list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condemned {
    /// Format version; 1.
    pub version: u32,
    /// When these keys were found unreachable.
    pub time: Timestamp,
    /// The keys, relative to the bucket's root prefix.
    pub keys: BTreeSet<String>,
}

/// Reads the list; `None` when there is none.
pub async fn read(bucket: &Bucket) -> anyhow::Result<Option<Condemned>> {
    let key = Key::gc_condemned();
    match bucket.get(&key, MAX_CONDEMNED_SIZE).await {
        Ok(o) => {
            let c: Condemned = serde_json::from_slice(&o.bytes).with_context(|| {
                format!("{key} is not a gc list; delete it and run `fleet-publish gc` again")
            })?;
            anyhow::ensure!(c.version == 1, "{key} has unknown version {}", c.version);
            Ok(Some(c))
        }
        Err(BucketError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {key}")),
    }
}

/// Writes `keys` as condemned now, or removes the list when `keys` is empty.
pub async fn write(bucket: &Bucket, keys: BTreeSet<String>, time: Timestamp) -> anyhow::Result<()> {
    let key = Key::gc_condemned();
    if keys.is_empty() {
        return bucket
            .delete(&key)
            .await
            .with_context(|| format!("removing {key}"));
    }
    let c = Condemned {
        version: 1,
        time,
        keys,
    };
    let bytes = serde_json::to_vec(&c).expect("list serialises");
    bucket
        .put(&key, bytes)
        .await
        .map(|_| ())
        .with_context(|| format!("writing {key}"))
}
