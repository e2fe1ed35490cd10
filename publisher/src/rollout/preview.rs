//! `release --dry-run` and `rollout plan`: what each wave of a release changes,
//! host by host (current -> new closure, paths and bytes to download, activation),
//! computed by the deploy dry run ([`crate::dry_run`]) with the release's cache keys.

use fleet_core::nixcli::Nix;
use fleet_core::release::{Release, Selector};
use fleet_core::{Activation, Bucket, TrustedKeys};
use serde::Serialize;

use crate::DeployTarget;
use crate::dry_run::{HostDiff, dry_run};

/// One wave's changes.
#[derive(Clone, Debug, Serialize)]
pub struct WavePreview {
    /// 1-based.
    pub wave: usize,
    /// What the operator asked for.
    pub select: Selector,
    /// Its soak time.
    pub soak_seconds: u64,
    /// Its budget, as text.
    pub budget: String,
    /// Per host.
    pub hosts: Vec<HostDiff>,
}

/// The changes of every wave of `release`.
pub async fn preview(
    bucket: &Bucket,
    nix: &Nix,
    release: &Release,
    publishers: &TrustedKeys,
) -> anyhow::Result<Vec<WavePreview>> {
    let caches = TrustedKeys::new(release.cache_keys.iter().cloned());
    let mut out = Vec::with_capacity(release.plan.waves.len());
    for (i, w) in release.plan.waves.iter().enumerate() {
        let mut hosts = Vec::with_capacity(w.hosts.len());
        // The dry run takes one activation per call: group by it.
        for a in [Activation::Switch, Activation::Boot, Activation::Test] {
            let targets: Vec<DeployTarget> = w
                .hosts
                .iter()
                .filter(|h| release.hosts[*h].activation == a)
                .map(|h| DeployTarget {
                    host: h.clone(),
                    closure: release.hosts[h].closure.clone(),
                })
                .collect();
            if !targets.is_empty() {
                hosts.extend(dry_run(bucket, nix, &targets, publishers, &caches, a).await?);
            }
        }
        hosts.sort_by(|a, b| a.host.cmp(&b.host));
        out.push(WavePreview {
            wave: i + 1,
            select: w.select.clone(),
            soak_seconds: w.soak_seconds,
            budget: w.budget.to_string(),
            hosts,
        });
    }
    Ok(out)
}

/// The text form: a header per wave, then one line per host
/// ([`crate::cmd::deploy::describe`]).
pub fn describe(waves: &[WavePreview]) -> String {
    let mut s = String::new();
    for w in waves {
        s.push_str(&format!(
            "wave {} ({}; soak {}s; budget {}):\n",
            w.wave, w.select, w.soak_seconds, w.budget
        ));
        for d in &w.hosts {
            s.push_str(&format!("  {}\n", crate::cmd::deploy::describe(d)));
        }
    }
    s
}
