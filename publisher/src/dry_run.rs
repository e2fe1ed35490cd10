//! `deploy --dry-run`: what a deploy would change, host by host, writing nothing.
//!
//! For each target: the current manifest (verified with the publisher key(s)), its
//! closure and the new one; the paths of the new closure the host lacks, which is
//! the new closure minus the current one, and their bytes to download (the
//! narinfos' `FileSize`, compressed, and `NarSize`, unpacked). Closure contents come
//! from the bucket's signed narinfos ([`fleet_core::cache_walk`]); a new closure not
//! pushed yet comes from the local Nix store (then only NAR sizes are known). A
//! current closure that is no longer complete in the cache counts as nothing in
//! common (an upper bound, and said so). Held hosts are listed as skipped.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, bail};
use fleet_core::cache_walk::{BucketClosure, walk_closure};
use fleet_core::nixcli::Nix;
use fleet_core::{Activation, Bucket, HostName, StorePath, TrustedKeys};
use serde::Serialize;

use crate::DeployTarget;
use crate::hold::held;
use crate::manifest_write::read_current;

/// Sizes of one store path: the NAR, and the compressed file if known.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    nar: u64,
    file: Option<u64>,
}

/// What deploying one host would do.
#[derive(Clone, Debug, Serialize)]
pub struct HostDiff {
    /// The host.
    pub host: HostName,
    /// The hold's reason, if the host is held (and so would be skipped).
    pub held: Option<String>,
    /// The current manifest's sequence, if any.
    pub current_sequence: Option<u64>,
    /// The current closure, if any.
    pub current_closure: Option<StorePath>,
    /// The closure it would get.
    pub new_closure: StorePath,
    /// Whether the new closure is the current one (the deploy only renews).
    pub unchanged: bool,
    /// Where the new closure's contents were read: `bucket` or `local store`.
    pub source: &'static str,
    /// Paths in the new closure.
    pub closure_paths: usize,
    /// Of those, paths not in the current closure: what the host downloads.
    pub paths_to_download: usize,
    /// Their NAR bytes (unpacked).
    pub nar_bytes: u64,
    /// Their file bytes (compressed, as downloaded), when every one is known.
    pub download_bytes: Option<u64>,
    /// Whether the current closure could not be read from the cache (then every
    /// path counts as new).
    pub current_unknown: bool,
    /// The activation the manifest would carry.
    pub activation: Activation,
}

/// A closure's paths with their sizes, and where they were read.
type Contents = (BTreeMap<StorePath, Sizes>, &'static str);

/// The contents of a closure walked in the bucket.
fn from_bucket(c: BucketClosure) -> Contents {
    let map = c
        .narinfos
        .into_iter()
        .map(|n| {
            let s = Sizes {
                nar: n.nar_size,
                file: n.file_size,
            };
            (n.store_path, s)
        })
        .collect();
    (map, "bucket")
}

/// Reads a closure's contents from the bucket, else from the local store.
async fn contents(
    bucket: &Bucket,
    nix: &Nix,
    root: &StorePath,
    trusted: &TrustedKeys,
) -> anyhow::Result<Contents> {
    let walk_error = match walk_closure(bucket, root, trusted).await {
        Ok(c) => return Ok(from_bucket(c)),
        Err(e) => e,
    };
    let invalid = nix
        .invalid_paths(std::slice::from_ref(root))
        .await
        .context("checking the closure against the local Nix store")?;
    if !invalid.is_empty() {
        bail!("{root} is neither complete in the bucket ({walk_error}) nor in the local Nix store");
    }
    let mut map = BTreeMap::new();
    for info in nix.closure_info(std::slice::from_ref(root)).await? {
        let s = Sizes {
            nar: info.nar_size,
            file: None,
        };
        map.insert(info.path, s);
    }
    Ok((map, "local store"))
}

/// Computes the diff of every target; see the module docs.
pub async fn dry_run(
    bucket: &Bucket,
    nix: &Nix,
    targets: &[DeployTarget],
    trusted_publishers: &TrustedKeys,
    trusted_cache: &TrustedKeys,
    activation: Activation,
) -> anyhow::Result<Vec<HostDiff>> {
    let hosts: Vec<HostName> = targets.iter().map(|t| t.host.clone()).collect();
    let holds = held(bucket, &hosts, trusted_publishers).await?;
    let mut seen: HashMap<StorePath, Option<Contents>> = HashMap::new();
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        let cur = read_current(bucket, &t.host, trusted_publishers, false)
            .await
            .with_context(|| format!("host {}", t.host))?
            .manifest;
        if !seen.contains_key(&t.closure) {
            let c = contents(bucket, nix, &t.closure, trusted_cache)
                .await
                .with_context(|| format!("host {}", t.host))?;
            seen.insert(t.closure.clone(), Some(c));
        }
        if let Some(m) = &cur
            && !seen.contains_key(&m.closure)
        {
            let keys = TrustedKeys::new(m.cache_keys.iter().cloned());
            let c = walk_closure(bucket, &m.closure, &keys)
                .await
                .ok()
                .map(from_bucket);
            seen.insert(m.closure.clone(), c);
        }
        let Some((new, source)) = &seen[&t.closure] else {
            unreachable!("the new closure's contents were read above")
        };
        let current = cur.as_ref().and_then(|m| seen[&m.closure].as_ref());
        let missing: Vec<&Sizes> = new
            .iter()
            .filter(|(p, _)| current.is_none_or(|(c, _)| !c.contains_key(*p)))
            .map(|(_, s)| s)
            .collect();
        out.push(HostDiff {
            host: t.host.clone(),
            held: holds.get(&t.host).map(|v| v.hold.reason.clone()),
            current_sequence: cur.as_ref().map(|m| m.sequence),
            current_closure: cur.as_ref().map(|m| m.closure.clone()),
            unchanged: cur.as_ref().is_some_and(|m| m.closure == t.closure),
            new_closure: t.closure.clone(),
            source,
            closure_paths: new.len(),
            paths_to_download: missing.len(),
            nar_bytes: missing.iter().map(|s| s.nar).sum(),
            download_bytes: missing.iter().map(|s| s.file).sum(),
            current_unknown: cur.is_some() && current.is_none(),
            activation,
        });
    }
    Ok(out)
}
