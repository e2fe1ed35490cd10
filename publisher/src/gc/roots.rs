//! What garbage collection keeps: the root closures, each from one source.
//!
//! [`SOURCES`] is the one list of them. A source reads the bucket and names
//! closures; everything reachable from any of them over narinfo references is kept.
//! A source that cannot tell what it references (a manifest or hold that does not
//! verify, an unreadable audit entry) is an error, and the gc stops before
//! deleting anything. Adding a source is one function here and one line in
//! [`SOURCES`].

use std::collections::BTreeMap;

use anyhow::Context;
use fleet_core::audit::AuditEntry;
use fleet_core::{Bucket, HostName, StorePath, TrustedKeys};
use futures::future::BoxFuture;
use serde::Serialize;

use crate::manifest_write::read_current;

/// What the sources read from.
pub struct RootContext<'a> {
    /// The bucket.
    pub bucket: &'a Bucket,
    /// Publisher keys manifests and holds must verify with.
    pub trusted: &'a TrustedKeys,
    /// Every host with a manifest.
    pub hosts: Vec<HostName>,
    /// Their audit entries, by host, by sequence.
    pub history: BTreeMap<HostName, BTreeMap<u64, AuditEntry>>,
    /// Distinct closures per host kept from its history (rollback targets).
    pub keep_generations: usize,
}

/// One root closure and why it is kept.
#[derive(Clone, Debug, Serialize)]
pub struct Root {
    /// The closure.
    pub closure: StorePath,
    /// The source's name ([`SOURCES`]).
    pub source: &'static str,
    /// The host it is kept for.
    pub host: HostName,
}

/// A source of roots.
pub type Source = for<'a> fn(&'a RootContext<'a>) -> BoxFuture<'a, anyhow::Result<Vec<Root>>>;

/// Every source of roots, by name.
pub const SOURCES: &[(&str, Source)] = &[
    ("manifests", manifests),
    ("generations", generations),
    ("holds", holds),
    ("releases", releases),
];

/// Every root of every source.
pub async fn collect(ctx: &RootContext<'_>) -> anyhow::Result<Vec<Root>> {
    let mut out = Vec::new();
    for (name, source) in SOURCES {
        out.extend(
            source(ctx)
                .await
                .with_context(|| format!("collecting the {name} roots; nothing was deleted"))?,
        );
    }
    Ok(out)
}

/// The closure of every host's current manifest (a retired host's tombstone too).
fn manifests<'a>(ctx: &'a RootContext<'a>) -> BoxFuture<'a, anyhow::Result<Vec<Root>>> {
    Box::pin(async move {
        let mut out = Vec::new();
        for host in &ctx.hosts {
            let current = read_current(ctx.bucket, host, ctx.trusted, false)
                .await
                .with_context(|| format!("host {host}"))?;
            if let Some(m) = current.manifest {
                out.push(Root {
                    closure: m.closure,
                    source: "manifests",
                    host: host.clone(),
                });
            }
        }
        Ok(out)
    })
}

/// The last `keep_generations` distinct closures of each host's audit history:
/// what `rollback` may go back to.
fn generations<'a>(ctx: &'a RootContext<'a>) -> BoxFuture<'a, anyhow::Result<Vec<Root>>> {
    Box::pin(async move {
        let mut out = Vec::new();
        for (host, entries) in &ctx.history {
            let mut kept: Vec<&StorePath> = Vec::new();
            for e in entries.values().rev() {
                if kept.len() >= ctx.keep_generations {
                    break;
                }
                if !kept.contains(&&e.closure) {
                    kept.push(&e.closure);
                }
            }
            out.extend(kept.into_iter().map(|c| Root {
                closure: c.clone(),
                source: "generations",
                host: host.clone(),
            }));
        }
        Ok(out)
    })
}

/// Every closure in the history of a held host: someone is looking at it, and may
/// roll it back to any of them.
fn holds<'a>(ctx: &'a RootContext<'a>) -> BoxFuture<'a, anyhow::Result<Vec<Root>>> {
    Box::pin(async move {
        let held = crate::hold::held(ctx.bucket, &ctx.hosts, ctx.trusted).await?;
        let mut out = Vec::new();
        for host in held.keys() {
            for e in ctx.history.get(host).into_iter().flat_map(|h| h.values()) {
                out.push(Root {
                    closure: e.closure.clone(),
                    source: "holds",
                    host: host.clone(),
                });
            }
        }
        Ok(out)
    })
}

/// Every host closure of every release in the bucket (`releases/<id>.json`): a
/// release can be rolled out, or rolled back to (`rollback --to-release`), for as
/// long as it is there; deleting the release (admin) releases its closures.
fn releases<'a>(ctx: &'a RootContext<'a>) -> BoxFuture<'a, anyhow::Result<Vec<Root>>> {
    Box::pin(async move {
        let prefix = fleet_core::KeyPrefix::releases();
        let listed = ctx
            .bucket
            .list(&prefix)
            .await
            .with_context(|| format!("listing {prefix}"))?;
        let mut out = Vec::new();
        for entry in listed {
            // `releases/<id>.json`; rollout states sit one folder deeper.
            let Some(id) = entry
                .key
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.strip_suffix(".json"))
                .filter(|id| !id.contains('/'))
            else {
                continue;
            };
            let id = fleet_core::ObjectName::new(id)
                .with_context(|| format!("{} is not a release name", entry.key))?;
            let v = crate::rollout::store::read_release(ctx.bucket, &id, ctx.trusted)
                .await
                .with_context(|| format!("release {id}"))?;
            for (host, h) in v.release.hosts {
                out.push(Root {
                    closure: h.closure,
                    source: "releases",
                    host,
                });
            }
        }
        Ok(out)
    })
}
