//! Releases: a signed set of per-host closures and the plan to roll them out.
//!
//! Stored at `releases/<id>.json` ([`crate::layout::Key::release`]) as a DSSE
//! envelope ([`crate::envelope`]) of payload type [`RELEASE_PAYLOAD_TYPE`], signed
//! with a publisher key, written once (create-only). The payload:
//!
//! ```json
//! {
//!   "version": 1,
//!   "id": "2026-12-02-a",
//!   "created_at": "2026-12-02T21:25:00Z",
//!   "cache_keys": ["cache-1:…"],
//!   "hosts": {
//!     "web-1": {"closure": "/nix/store/…-nixos-system-web-1", "activation": "switch"}
//!   },
//!   "plan": {
//!     "waves": [
//!       {"select": {"hosts": ["web-1"]}, "hosts": ["web-1"], "soak_seconds": 600,
//!        "budget": {"hosts": 0}},
//!       {"select": {"percent": 100}, "hosts": ["web-2", "web-3"], "soak_seconds": 0,
//!        "budget": {"percent": 10}}
//!     ],
//!     "budget": {"percent": 10},
//!     "report_deadline_seconds": 1800
//!   }
//! }
//! ```
//!
//! A wave's `select` is what the operator asked for: host names and globs
//! (`{"hosts": ["web-1", "db-*"]}`, `*` and `?` match within a name) or a share of
//! the fleet (`{"percent": 25}`, cumulative: the first 25 % of the release's hosts
//! in the stable order, less those of earlier waves). The stable order sorts hosts
//! by the SHA-256 of their name (hex), so it does not follow naming schemes (all
//! `db-*` first) and does not change when hosts are added. `hosts` is what `select`
//! resolved to when the release was made ([`resolve_waves`]); verification resolves
//! again and refuses a release whose lists disagree. Every host is in exactly one
//! wave.
//!
//! A budget counts hosts that failed, rolled back or stayed silent past
//! `report_deadline_seconds` after their wave started; `{"hosts": N}` allows N of
//! them, `{"percent": P}` allows ⌊P × hosts / 100⌋ (P at most 100). One budget per
//! wave, and one for the whole release.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::envelope::{self, EnvelopeError};
use crate::host::HostName;
use crate::keys::{PublicKey, SecretKey, TrustedKeys};
use crate::layout::ObjectName;
use crate::manifest::Activation;
use crate::store_path::StorePath;

/// DSSE payload type of a release.
pub const RELEASE_PAYLOAD_TYPE: &str = "application/vnd.fleet.release.v1+json";
/// Largest release object accepted: 10,000 hosts fit well.
pub const MAX_RELEASE_SIZE: u64 = 8 * 1024 * 1024;
/// Most waves in a plan.
pub const MAX_WAVES: usize = 100;

/// What one host gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseHost {
    /// Its system closure.
    pub closure: StorePath,
    /// How it is activated.
    pub activation: Activation,
}

/// Which hosts a wave takes, as the operator said it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Selector {
    /// Host names and globs (`*`, `?`).
    Hosts(Vec<String>),
    /// The first `percent` % of the hosts in the stable order (cumulative).
    Percent(u32),
}

/// How many bad hosts are allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Budget {
    /// At most this many.
    Hosts(u32),
    /// At most this share (0 to 100) of the hosts counted, rounded down.
    Percent(u32),
}

/// One wave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wave {
    /// What the operator asked for.
    pub select: Selector,
    /// What it resolved to, sorted.
    pub hosts: Vec<HostName>,
    /// How long the wave must stay healthy before the next starts.
    pub soak_seconds: u64,
    /// Bad hosts allowed in this wave.
    pub budget: Budget,
}

/// The rollout plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The waves, in order.
    pub waves: Vec<Wave>,
    /// Bad hosts allowed over the whole release.
    pub budget: Budget,
    /// A host that has not reported its new closure this long after its wave
    /// started counts as silent (bad).
    pub report_deadline_seconds: u64,
}

/// A release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// Format version; 1.
    pub version: u32,
    /// Its id: the key segment of `releases/<id>.json`.
    pub id: String,
    /// When it was signed.
    pub created_at: Timestamp,
    /// Cache keys the manifests of this release list.
    pub cache_keys: Vec<PublicKey>,
    /// Every host's closure.
    pub hosts: BTreeMap<HostName, ReleaseHost>,
    /// How to roll it out.
    pub plan: Plan,
}

/// What is wrong with a release or its plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    /// The envelope does not verify.
    #[error("release {id} does not verify: {error}")]
    Envelope {
        /// The id read.
        id: String,
        /// The envelope's error.
        error: EnvelopeError,
    },
    /// The payload is not a release.
    #[error("release {id} is malformed: {why}")]
    Malformed {
        /// The id read.
        id: String,
        /// What is wrong.
        why: String,
    },
    /// The id cannot be a key segment.
    #[error(
        "release id {0:?} is not allowed: use 1 to 200 characters of A-Z a-z 0-9 . _ - not starting with `.`"
    )]
    BadId(String),
    /// No host.
    #[error("the release names no host")]
    NoHosts,
    /// No wave, or too many.
    #[error("the plan has {0} waves; give 1 to {MAX_WAVES}")]
    WaveCount(usize),
    /// A budget over 100 %.
    #[error("{what} budget of {percent}% is over 100%; give at most 100%")]
    BudgetOver100 {
        /// Which budget (`wave 2`, `overall`).
        what: String,
        /// The share given.
        percent: u32,
    },
    /// A wave percentage out of range or not growing.
    #[error(
        "wave {wave} takes {percent}%: give 1 to 100, and more than any earlier wave's percentage"
    )]
    BadPercent {
        /// The wave (1-based).
        wave: usize,
        /// The share given.
        percent: u32,
    },
    /// A name or glob that matches no host of the release.
    #[error("wave {wave} names {pattern:?}, which matches no host of the release (hosts: {known})")]
    UnknownHost {
        /// The wave (1-based).
        wave: usize,
        /// The name or glob.
        pattern: String,
        /// Some hosts of the release.
        known: String,
    },
    /// A host in two waves.
    #[error("host {host} is in wave {first} and again in wave {again}; a host belongs to one wave")]
    TwoWaves {
        /// The host.
        host: HostName,
        /// The first wave (1-based).
        first: usize,
        /// The later wave (1-based).
        again: usize,
    },
    /// Hosts in no wave.
    #[error("hosts {0} are in no wave; end the plan with a wave of 100%")]
    Unplaced(String),
    /// A wave that takes nothing.
    #[error("wave {0} takes no host (earlier waves took them all)")]
    EmptyWave(usize),
    /// The stored lists disagree with the selectors.
    #[error("wave {0}'s host list is not what its selector resolves to")]
    Mismatch(usize),
}

/// A wave before resolution: what the operator gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaveSpec {
    /// Which hosts.
    pub select: Selector,
    /// Soak time.
    pub soak_seconds: u64,
    /// Budget.
    pub budget: Budget,
}

/// A release whose signature and plan checked out.
#[derive(Clone, Debug)]
pub struct VerifiedRelease {
    /// The payload.
    pub release: Release,
    /// The publisher key that signed it.
    pub signed_by: String,
    /// SHA-256 (hex) of the stored object.
    pub digest: String,
}

impl Budget {
    /// Parses `"2"` (hosts) or `"20%"` (share); `what` names it in the error.
    pub fn parse(text: &str, what: &str) -> Result<Self, String> {
        let t = text.trim();
        let (num, pct) = match t.strip_suffix('%') {
            Some(n) => (n.trim(), true),
            None => (t, false),
        };
        let n: u32 = num.parse().map_err(|_| {
            format!("{what} budget {text:?} is not a number of hosts (\"2\") or a share (\"10%\")")
        })?;
        let b = if pct {
            Budget::Percent(n)
        } else {
            Budget::Hosts(n)
        };
        b.check(what).map_err(|e| e.to_string())?;
        Ok(b)
    }

    /// Refuses a share over 100 %.
    pub fn check(self, what: &str) -> Result<(), ReleaseError> {
        match self {
            Budget::Percent(p) if p > 100 => Err(ReleaseError::BudgetOver100 {
                what: what.to_owned(),
                percent: p,
            }),
            _ => Ok(()),
        }
    }

    /// Bad hosts allowed among `n`.
    pub fn allowed(self, n: usize) -> usize {
        match self {
            Budget::Hosts(h) => h as usize,
            Budget::Percent(p) => n * p as usize / 100,
        }
    }
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Budget::Hosts(h) => write!(f, "{h} host(s)"),
            Budget::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Selector {
    /// Parses a wave given on the command line: `"25%"`, or names and globs
    /// separated by commas (`"web-1,db-*"`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if let Some(p) = t.strip_suffix('%') {
            let n = p
                .trim()
                .parse()
                .map_err(|_| format!("wave {text:?}: {p:?} is not a whole percentage"))?;
            return Ok(Selector::Percent(n));
        }
        let items: Vec<String> = t
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if items.is_empty() {
            return Err(format!(
                "wave {text:?} names no host: give \"25%\" or \"web-1,db-*\""
            ));
        }
        Ok(Selector::Hosts(items))
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Hosts(h) => f.write_str(&h.join(",")),
            Selector::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Whether `name` matches `pattern` (`*` any run, `?` one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The stable host order: by SHA-256 of the name (hex), then by name.
pub fn stable_order(hosts: impl IntoIterator<Item = HostName>) -> Vec<HostName> {
    let mut v: Vec<(String, HostName)> = hosts
        .into_iter()
        .map(|h| (hex::encode(Sha256::digest(h.as_str().as_bytes())), h))
        .collect();
    v.sort();
    v.into_iter().map(|(_, h)| h).collect()
}

/// Resolves wave specs against the release's hosts; see the module docs.
pub fn resolve_waves(
    hosts: &BTreeSet<HostName>,
    specs: &[WaveSpec],
) -> Result<Vec<Wave>, ReleaseError> {
    if hosts.is_empty() {
        return Err(ReleaseError::NoHosts);
    }
    if specs.is_empty() || specs.len() > MAX_WAVES {
        return Err(ReleaseError::WaveCount(specs.len()));
    }
    let order = stable_order(hosts.iter().cloned());
    let mut placed: BTreeMap<HostName, usize> = BTreeMap::new();
    let mut last_percent = 0;
    let mut waves = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let wave = i + 1;
        spec.budget.check(&format!("wave {wave}"))?;
        let mut taken: Vec<HostName> = Vec::new();
        match &spec.select {
            Selector::Percent(p) => {
                if *p == 0 || *p > 100 || *p <= last_percent {
                    return Err(ReleaseError::BadPercent { wave, percent: *p });
                }
                last_percent = *p;
                let upto = (order.len() * *p as usize).div_ceil(100);
                taken.extend(
                    order[..upto]
                        .iter()
                        .filter(|h| !placed.contains_key(*h))
                        .cloned(),
                );
            }
            Selector::Hosts(patterns) => {
                for pat in patterns {
                    let matched: Vec<&HostName> = hosts
                        .iter()
                        .filter(|h| glob_match(pat, h.as_str()))
                        .collect();
                    if matched.is_empty() {
                        let known: Vec<&str> = hosts.iter().take(10).map(|h| h.as_str()).collect();
                        return Err(ReleaseError::UnknownHost {
                            wave,
                            pattern: pat.clone(),
                            known: format!(
                                "{}{}",
                                known.join(", "),
                                if hosts.len() > 10 { ", …" } else { "" }
                            ),
                        });
                    }
                    for h in matched {
                        if let Some(first) = placed.get(h) {
                            return Err(ReleaseError::TwoWaves {
                                host: h.clone(),
                                first: *first,
                                again: wave,
                            });
                        }
                        if !taken.contains(h) {
                            taken.push(h.clone());
                        }
                    }
                }
            }
        }
        if taken.is_empty() {
            return Err(ReleaseError::EmptyWave(wave));
        }
        for h in &taken {
            placed.insert(h.clone(), wave);
        }
        taken.sort();
        waves.push(Wave {
            select: spec.select.clone(),
            hosts: taken,
            soak_seconds: spec.soak_seconds,
            budget: spec.budget,
        });
    }
    let unplaced: Vec<&str> = hosts
        .iter()
        .filter(|h| !placed.contains_key(*h))
        .map(|h| h.as_str())
        .collect();
    if !unplaced.is_empty() {
        return Err(ReleaseError::Unplaced(unplaced.join(", ")));
    }
    Ok(waves)
}

impl Release {
    /// Checks id, hosts and plan (each wave's list is what its selector resolves to).
    pub fn check(&self) -> Result<(), ReleaseError> {
        if ObjectName::new(&self.id).is_err() {
            return Err(ReleaseError::BadId(self.id.clone()));
        }
        let malformed = |why: String| ReleaseError::Malformed {
            id: self.id.clone(),
            why,
        };
        if self.version != 1 {
            return Err(malformed(format!("unsupported version {}", self.version)));
        }
        if self.cache_keys.is_empty() {
            return Err(malformed("it lists no cache key".into()));
        }
        self.plan.budget.check("overall")?;
        let hosts: BTreeSet<HostName> = self.hosts.keys().cloned().collect();
        let specs: Vec<WaveSpec> = self
            .plan
            .waves
            .iter()
            .map(|w| WaveSpec {
                select: w.select.clone(),
                soak_seconds: w.soak_seconds,
                budget: w.budget,
            })
            .collect();
        let resolved = resolve_waves(&hosts, &specs)?;
        for (i, (a, b)) in resolved.iter().zip(&self.plan.waves).enumerate() {
            if a.hosts != b.hosts {
                return Err(ReleaseError::Mismatch(i + 1));
            }
        }
        Ok(())
    }

    /// Serialises and signs the release; returns the bytes to store.
    pub fn sign(&self, key: &SecretKey) -> Vec<u8> {
        let payload = serde_json::to_vec_pretty(self).expect("release serialises");
        envelope::seal(RELEASE_PAYLOAD_TYPE, &payload, key)
    }

    /// Verifies stored release bytes read as release `id`, signed by a key of
    /// `trusted`, and checks the plan.
    pub fn verify(
        bytes: &[u8],
        id: &str,
        trusted: &TrustedKeys,
    ) -> Result<VerifiedRelease, ReleaseError> {
        let opened = envelope::open(bytes, RELEASE_PAYLOAD_TYPE, trusted, MAX_RELEASE_SIZE)
            .map_err(|error| ReleaseError::Envelope {
                id: id.to_owned(),
                error,
            })?;
        let release: Release =
            serde_json::from_slice(&opened.payload).map_err(|e| ReleaseError::Malformed {
                id: id.to_owned(),
                why: format!("payload: {e}"),
            })?;
        if release.id != id {
            return Err(ReleaseError::Malformed {
                id: id.to_owned(),
                why: format!("it names release {:?}", release.id),
            });
        }
        release.check()?;
        Ok(VerifiedRelease {
            release,
            signed_by: opened.signed_by,
            digest: hex::encode(Sha256::digest(bytes)),
        })
    }

    /// The wave (0-based) `host` belongs to.
    pub fn wave_of(&self, host: &HostName) -> Option<usize> {
        self.plan.waves.iter().position(|w| w.hosts.contains(host))
    }
}

#[cfg(test)]
mod tests;
