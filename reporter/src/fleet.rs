//! Aggregation: the state of every host, computed from the bucket alone.
//!
//! One refresh is:
//!
//! 1. LIST `status/` and `hosts/` (each entry carries its ETag and the store's
//!    last-modified time); the hosts are the union of both. Of a host's folder only
//!    `status.json` / `manifest.json` is listed (never its events): on `file://` that
//!    is one `stat` per host, on S3 the other entries are dropped as the pages
//!    arrive. S3 listings run as
//!    concurrent key ranges cut at host names of the previous summary (or at first
//!    characters when there is none), see [`fleet_core::Bucket::list_pruned`];
//! 2. for each host, reuse the outcome cached in the previous [`SummaryFile`] when the
//!    object's ETag is unchanged, otherwise GET the object (bounded by core's
//!    `MAX_STATUS_SIZE` / `MAX_MANIFEST_SIZE`) and parse it with
//!    [`StatusReport::parse`] or verify it with [`Manifest::verify`]. A manifest whose
//!    bytes hash to the digest of the one verified before (rewritten unchanged) keeps
//!    its outcome without a second signature check. Objects are read in batches
//!    ([`fleet_core::Bucket::get_many`]: one blocking read per batch on `file://`,
//!    concurrent GETs on S3), about `concurrency` objects in flight, and each batch
//!    is parsed and verified in its own task, so the CPU work spreads over the
//!    runtime's worker threads (all cores);
//! 3. classify every host ([`classify`]) and return the rows plus the new summary.
//!
//! A warm refresh therefore costs two LISTs plus one GET per changed object.
//!
//! Everything a host wrote is hostile: an object that is too large, malformed or
//! claims another host is recorded as a *flag* on that host's row and never stops the
//! rest of the fleet from rendering. "Last seen" is the store's last-modified time of
//! `status.json`, not the time the agent claims, so a host cannot hide staleness by
//! writing a time in the future.

use std::collections::BTreeMap;
use std::sync::Arc;

use fleet_core::bucket::{BucketError, Object, ObjectInfo, Visit};
use fleet_core::layout::{HOSTS_DIR, STATUS_DIR};
use fleet_core::manifest::{MAX_MANIFEST_SIZE, ManifestError, SeenManifest, VerifyPolicy};
use fleet_core::status::{AgentState, Generation, MAX_STATUS_SIZE};
use fleet_core::{Bucket, HostName, Key, KeyPrefix, Manifest, StatusReport, TrustedKeys};
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::summary::{
    Cached, CachedHost, ManifestInfo, ManifestOutcome, StatusOutcome, SummaryFile,
};

/// Longest flag message kept (messages quote hostile input, so they are cut).
pub const MAX_FLAG_LEN: usize = 1024;
/// How many keys of ignored objects are kept for display.
pub const MAX_IGNORED_KEYS: usize = 50;

/// The dashboard's classification of a host. The order is the severity order used to
/// put failing hosts first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostState {
    /// A hostile or broken object: unparseable or wrong-host status, unverifiable
    /// manifest.
    Flagged,
    /// The agent reports `failed`.
    Failed,
    /// The agent rolled back to its previous generation.
    RolledBack,
    /// The agent refused the newest manifest or its closure.
    Refused,
    /// No status written for longer than `stale-after`.
    Stale,
    /// Running something other than what it should, and not failing.
    Pending,
    /// A manifest exists but the host never reported.
    NeverSeen,
    /// Running what it should.
    UpToDate,
}

impl HostState {
    /// Every state, in severity order.
    pub const ALL: [HostState; 8] = [
        HostState::Flagged,
        HostState::Failed,
        HostState::RolledBack,
        HostState::Refused,
        HostState::Stale,
        HostState::Pending,
        HostState::NeverSeen,
        HostState::UpToDate,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Flagged => "flagged",
            HostState::Failed => "failed",
            HostState::RolledBack => "rolled-back",
            HostState::Refused => "refused",
            HostState::Stale => "stale",
            HostState::Pending => "pending",
            HostState::NeverSeen => "never-seen",
            HostState::UpToDate => "up-to-date",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.as_str() == s)
    }
}

impl std::fmt::Display for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the reporter knows of a host's manifest.
#[derive(Clone, Debug)]
pub enum ManifestView {
    /// No `hosts/<host>/manifest.json`.
    Missing,
    /// There is one, but no trusted key is configured, so it cannot be opened.
    NotVerified,
    /// Verified against the trusted keys (expiry is checked at classification).
    Verified(Arc<ManifestInfo>),
    /// Refused (bad signature, unknown key, wrong host, too large, expired, …).
    Flagged(String),
}

/// Where the desired generation shown for a host comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DesiredSource {
    /// The verified manifest in the bucket.
    Manifest,
    /// The agent's own report (manifests could not be verified here).
    AgentReport,
    /// Unknown.
    None,
}

/// One host, classified.
#[derive(Clone, Debug)]
pub struct HostRow {
    /// The host.
    pub host: HostName,
    /// Its classification.
    pub state: HostState,
    /// The store's last-modified time of its `status.json`.
    pub last_seen: Option<Timestamp>,
    /// Its parsed status, if it parsed.
    pub report: Option<Arc<StatusReport>>,
    /// Its manifest.
    pub manifest: ManifestView,
    /// What it should run.
    pub desired: Option<Generation>,
    /// Where `desired` comes from.
    pub desired_source: DesiredSource,
    /// Why the row is flagged (empty unless `state` is [`HostState::Flagged`]).
    pub flags: Vec<String>,
    /// Remarks that are not problems of the objects (no manifest, …).
    pub notes: Vec<String>,
}

/// Counters of one refresh, for the API and metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RefreshStats {
    /// Objects in the two listings.
    pub listed: usize,
    /// Status objects fetched (changed or new).
    pub fetched_status: usize,
    /// Manifests fetched and verified (changed or new).
    pub fetched_manifests: usize,
    /// Outcomes reused from the previous summary.
    pub reused: usize,
    /// Changed manifests whose bytes were those verified before (not re-verified).
    pub same_manifest_bytes: usize,
    /// Fetches that failed for reasons other than the object's content.
    pub read_errors: usize,
    /// Where the previous summary came from: `memory`, `bucket`, `none`.
    pub previous: &'static str,
    /// What happened to `dashboard/summary.json`.
    pub summary_write: String,
    /// Wall time of the refresh, in milliseconds.
    pub duration_ms: u64,
    /// Time spent reading the stored summary, in milliseconds.
    pub summary_read_ms: u64,
    /// Time spent listing, in milliseconds.
    pub list_ms: u64,
    /// Time spent fetching, parsing and verifying changed objects, in milliseconds.
    pub fetch_ms: u64,
    /// Time spent writing the summary, in milliseconds.
    pub summary_write_ms: u64,
}

/// Objects under `status/` or `hosts/` that belong to no valid host.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Ignored {
    /// How many.
    pub count: usize,
    /// The first [`MAX_IGNORED_KEYS`] keys (hostile text: escape when displaying).
    pub keys: Vec<String>,
}

/// The whole fleet at one instant.
#[derive(Clone, Debug)]
pub struct Fleet {
    /// When it was computed.
    pub generated_at: Timestamp,
    /// Every host, sorted by name.
    pub hosts: Vec<HostRow>,
    /// Objects that were skipped.
    pub ignored: Ignored,
    /// Counters of the refresh.
    pub stats: RefreshStats,
    /// Names of the trusted publisher keys (empty: manifests are not verified).
    pub trusted_key_names: Vec<String>,
    /// The staleness bound in force.
    pub stale_after: SignedDuration,
}

impl Fleet {
    /// Hosts per state, every state present.
    pub fn counts(&self) -> BTreeMap<HostState, usize> {
        let mut m: BTreeMap<HostState, usize> = HostState::ALL.iter().map(|s| (*s, 0)).collect();
        for r in &self.hosts {
            *m.entry(r.state).or_default() += 1;
        }
        m
    }

    /// The row of `host`.
    pub fn host(&self, host: &HostName) -> Option<&HostRow> {
        self.hosts
            .binary_search_by(|r| r.host.cmp(host))
            .ok()
            .map(|i| &self.hosts[i])
    }
}

/// What a refresh needs to know.
#[derive(Clone, Debug)]
pub struct RefreshParams {
    /// Trusted publisher keys.
    pub trusted: Arc<TrustedKeys>,
    /// Fingerprint of `trusted`, recorded in the summary.
    pub trusted_fingerprint: String,
    /// Staleness bound.
    pub stale_after: SignedDuration,
    /// Most GETs in flight.
    pub concurrency: usize,
}

/// Result of one refresh.
pub struct Refreshed {
    /// The fleet.
    pub fleet: Fleet,
    /// The summary to store for the next refresh.
    pub summary: SummaryFile,
    /// Whether `summary` differs from the previous one (so it is worth writing).
    pub changed: bool,
}

/// Cuts a flag message to [`MAX_FLAG_LEN`] bytes on a character boundary.
pub fn cut(msg: String) -> String {
    if msg.len() <= MAX_FLAG_LEN {
        return msg;
    }
    let mut end = MAX_FLAG_LEN - 3;
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &msg[..end])
}

/// Where a listed key belongs.
enum Listed {
    Status(HostName),
    Manifest(HostName),
    /// A valid host's other object (events, future files): not part of the summary.
    Other,
    /// Under no valid host.
    Ignored,
}

fn sort_key(dir: &str, key: &str) -> Listed {
    let is_status = dir == STATUS_DIR;
    if is_status {
        if let Some(h) = Key::status_host(key) {
            return Listed::Status(h);
        }
    } else if let Some(h) = Key::manifest_host(key) {
        return Listed::Manifest(h);
    }
    let rest = key
        .strip_prefix(dir)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or("");
    match rest.split_once('/') {
        Some((h, _)) if HostName::new(h).is_ok() => Listed::Other,
        _ => Listed::Ignored,
    }
}

/// Most concurrent range listings of one prefix on an object store. More do not help
/// on SeaweedFS, whose filer walks the folders one at a time whatever the requests
/// (measured: 32 ranges list 2,000 hosts 2x slower than one); on AWS S3 each range
/// saves page round trips.
pub const MAX_LIST_RANGES: usize = 8;
/// Hosts per range listing when the previous summary tells where to cut.
const HOSTS_PER_RANGE: usize = 500;

/// The object name a host's folder under `dir` holds for the aggregation
/// (`status.json`, `manifest.json`), taken from core's layout.
fn host_object_name(dir: &str) -> &'static str {
    static NAMES: std::sync::LazyLock<(String, String)> = std::sync::LazyLock::new(|| {
        let h = HostName::new("h").expect("valid host name");
        let name = |k: Key| k.as_str().rsplit('/').next().unwrap_or_default().to_owned();
        (name(Key::status(&h)), name(Key::manifest(&h)))
    });
    if dir == STATUS_DIR {
        &NAMES.0
    } else {
        &NAMES.1
    }
}

/// What to list of each folder under `dir/` ([`Bucket::list_pruned`]): of a valid
/// host's folder only the one object the aggregation reads (its events and anything
/// else there are never listed); folders under names that are not hosts are walked
/// whole, so their objects are reported as ignored.
fn below_host(dir: &'static str) -> impl Fn(&str) -> Visit + Send + Sync + 'static {
    let only = host_object_name(dir);
    move |folder: &str| {
        let host = folder
            .strip_prefix(dir)
            .and_then(|r| r.strip_prefix('/'))
            .and_then(|r| r.strip_suffix('/'))
            .filter(|h| !h.contains('/'));
        match host {
            Some(h) if HostName::new(h).is_ok() => Visit::Only(only),
            _ => Visit::All,
        }
    }
}

/// Where to cut an object store listing of `dir/` into concurrent ranges: after
/// evenly spaced hosts of the previous summary, or, without one, after a few first
/// characters of host names. (`file://` listings ignore them.)
///
/// Each cut is `dir/<name>~`: `~` sorts after every character of a host name and of
/// the layout's object names, and no host's folder is named by a cut. That matters on
/// SeaweedFS, whose `start-after` skips the whole folder when it names one
/// (`start-after=status/web-1` lists nothing of `status/web-1/`).
fn split_points(dir: &str, prev: Option<&SummaryFile>, ranges: usize) -> Vec<String> {
    let hosts = prev.map(|p| p.hosts.len()).unwrap_or(0);
    if ranges < 2 {
        return vec![];
    }
    if hosts >= 2 * HOSTS_PER_RANGE {
        let n = (hosts / HOSTS_PER_RANGE).clamp(2, ranges);
        let step = hosts.div_ceil(n);
        return prev
            .into_iter()
            .flat_map(|p| p.hosts.keys())
            .enumerate()
            .filter(|(i, _)| (i + 1) % step == 0 && i + 1 < hosts)
            .map(|(_, h)| format!("{dir}/{h}/~"))
            .collect();
    }
    // Host names start with 0-9 or a-z (one DNS label).
    ["9", "e", "j", "o", "t"]
        .iter()
        .take(ranges - 1)
        .map(|c| format!("{dir}/{c}~"))
        .collect()
}

/// One host during a refresh: what was listed, what it gave, what to cache.
struct Slot {
    host: HostName,
    status: Option<ObjectInfo>,
    manifest: Option<ObjectInfo>,
    status_now: Option<StatusOutcome>,
    manifest_now: Option<ManifestOutcome>,
    entry: CachedHost,
}

impl Slot {
    fn new(host: HostName) -> Self {
        Self {
            host,
            status: None,
            manifest: None,
            status_now: None,
            manifest_now: None,
            entry: CachedHost::default(),
        }
    }
}

/// Merges status and manifest listings, each sorted by host, into one slot per host
/// in host order (a host listed twice keeps the last entry).
fn merge_by_host(
    statuses: Vec<(HostName, ObjectInfo)>,
    manifests: Vec<(HostName, ObjectInfo)>,
) -> Vec<Slot> {
    let mut out: Vec<Slot> = Vec::with_capacity(statuses.len().max(manifests.len()));
    let mut s = statuses.into_iter().peekable();
    let mut m = manifests.into_iter().peekable();
    loop {
        let take_status = match (s.peek(), m.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((a, _)), Some((b, _))) => a <= b,
        };
        let (host, info) = if take_status { s.next() } else { m.next() }.expect("peeked");
        if out.last().is_none_or(|l| l.host != host) {
            out.push(Slot::new(host));
        }
        let slot = out.last_mut().expect("just pushed");
        if take_status {
            slot.status = Some(info);
        } else {
            slot.manifest = Some(info);
        }
    }
    out
}

/// An object to read: the host's slot, the host, the listed ETag (and for a
/// manifest, what was verified before).
enum Job {
    Status(usize, HostName, Option<String>),
    Manifest(usize, HostName, Option<String>, Option<Arc<ManifestInfo>>),
}

/// A fetched outcome. `etag` is `None` when it must not be cached; `outcome` is
/// `None` when the object vanished between the listing and the read.
struct Done {
    slot: usize,
    etag: Option<String>,
    outcome: Option<Outcome>,
    /// The read failed for a reason other than the object's content.
    read_error: bool,
    /// A manifest whose bytes were verified before.
    same_bytes: bool,
}

enum Outcome {
    Status(StatusOutcome),
    Manifest(ManifestOutcome),
}

/// Lists the bucket, fetches what changed since `prev`, and classifies every host.
pub async fn refresh(
    bucket: &Bucket,
    params: &RefreshParams,
    prev: Option<&SummaryFile>,
    now: Timestamp,
) -> Result<Refreshed, BucketError> {
    let started = std::time::Instant::now();
    let (status_prefix, hosts_prefix) = (KeyPrefix::status(), KeyPrefix::hosts());
    let ranges = params.concurrency.clamp(1, MAX_LIST_RANGES);
    let status_splits = split_points(STATUS_DIR, prev, ranges);
    let hosts_splits = split_points(HOSTS_DIR, prev, ranges);
    let (status_list, hosts_list) = tokio::try_join!(
        bucket.list_pruned(&status_prefix, below_host(STATUS_DIR), &status_splits),
        bucket.list_pruned(&hosts_prefix, below_host(HOSTS_DIR), &hosts_splits),
    )?;
    let mut stats = RefreshStats {
        listed: status_list.len() + hosts_list.len(),
        list_ms: started.elapsed().as_millis() as u64,
        ..Default::default()
    };

    // One slot per host, in host order: the two listings sorted by host and merged.
    let mut ignored = Ignored::default();
    let mut by_host = |dir: &str, list: Vec<ObjectInfo>| {
        let mut v: Vec<(HostName, ObjectInfo)> = Vec::with_capacity(list.len());
        for info in list {
            match sort_key(dir, &info.key) {
                Listed::Status(h) | Listed::Manifest(h) => v.push((h, info)),
                Listed::Other => {}
                Listed::Ignored => {
                    ignored.count += 1;
                    if ignored.keys.len() < MAX_IGNORED_KEYS {
                        ignored.keys.push(info.key.chars().take(300).collect());
                    }
                }
            }
        }
        // Key order is nearly host order (`web-1-a/` sorts before `web-1/`).
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let statuses = by_host(STATUS_DIR, status_list);
    let manifests = by_host(HOSTS_DIR, hosts_list);
    let mut slots = merge_by_host(statuses, manifests);

    // The previous manifest outcomes are only reusable if they were verified with
    // the same keys.
    let prev_manifests_ok = prev.is_some_and(|p| p.trusted_keys == params.trusted_fingerprint);
    let verify = !params.trusted.is_empty();

    let mut jobs = Vec::new();
    let mut changed = prev.is_none() || !prev_manifests_ok;
    let prev_entries = prev.map(|p| p.hosts.len()).unwrap_or(0);
    let mut reused_entries = 0usize;
    // The previous summary is in host order too: walk it alongside.
    let mut prev_iter = prev
        .map(|p| p.hosts.iter())
        .into_iter()
        .flatten()
        .peekable();

    for (i, slot) in slots.iter_mut().enumerate() {
        let host = &slot.host;
        while prev_iter.next_if(|(h, _)| *h < host).is_some() {}
        let old = prev_iter.next_if(|(h, _)| *h == host).map(|(_, c)| c);
        let entry = &mut slot.entry;
        let mut fully_reused = true;
        if let Some(info) = &slot.status {
            let hit = old
                .and_then(|o| o.status.as_ref())
                .filter(|c| info.etag.as_deref() == Some(c.etag.as_str()));
            match hit {
                Some(c) => {
                    stats.reused += 1;
                    slot.status_now = Some(c.outcome.clone());
                    entry.status = Some(c.clone());
                }
                None if info.size > MAX_STATUS_SIZE => {
                    // Refused from the listing alone: no need to download it.
                    let o = StatusOutcome::Flagged(cut(format!(
                        "status object {} is {} bytes, larger than the {MAX_STATUS_SIZE}-byte bound",
                        info.key, info.size
                    )));
                    slot.status_now = Some(o.clone());
                    if let Some(etag) = &info.etag {
                        entry.status = Some(Cached {
                            etag: etag.clone(),
                            outcome: o,
                        });
                    }
                    fully_reused = false;
                }
                None => {
                    jobs.push(Job::Status(i, host.clone(), info.etag.clone()));
                    fully_reused = false;
                }
            }
        } else if old.is_some_and(|o| o.status.is_some()) {
            fully_reused = false;
        }
        if let (Some(info), true) = (&slot.manifest, verify) {
            let old_m = old
                .and_then(|o| o.manifest.as_ref())
                .filter(|_| prev_manifests_ok);
            let hit = old_m.filter(|c| info.etag.as_deref() == Some(c.etag.as_str()));
            match hit {
                Some(c) => {
                    stats.reused += 1;
                    slot.manifest_now = Some(c.outcome.clone());
                    entry.manifest = Some(c.clone());
                }
                None => {
                    // The manifest changed: it must not go below what was verified
                    // before (a rollback or equivocation in the bucket), and if its
                    // bytes are those verified before, that outcome stands.
                    let before = old_m.and_then(|c| match &c.outcome {
                        ManifestOutcome::Verified(m) => Some(m.clone()),
                        ManifestOutcome::Flagged(_) => None,
                    });
                    jobs.push(Job::Manifest(i, host.clone(), info.etag.clone(), before));
                    fully_reused = false;
                }
            }
        } else if old.is_some_and(|o| o.manifest.is_some()) {
            fully_reused = false;
        }
        if old.is_some() && fully_reused {
            reused_entries += 1;
        }
    }
    if reused_entries != prev_entries || !jobs.is_empty() {
        changed = true;
    }

    // Fetch what changed in batches of FETCH_BATCH objects (on file:// one blocking
    // read per batch), about `concurrency` objects in flight; each batch is parsed
    // and verified in its own task, so signature checks spread over the runtime's
    // worker threads (all cores).
    let mut batches: Vec<Vec<Job>> = Vec::new();
    let (status_jobs, manifest_jobs): (Vec<Job>, Vec<Job>) =
        jobs.into_iter().partition(|j| matches!(j, Job::Status(..)));
    stats.fetched_status = status_jobs.len();
    stats.fetched_manifests = manifest_jobs.len();
    let mut status_jobs = status_jobs.into_iter().peekable();
    let mut manifest_jobs = manifest_jobs.into_iter().peekable();
    // Alternate the kinds, so reading statuses overlaps verifying manifests.
    while status_jobs.peek().is_some() || manifest_jobs.peek().is_some() {
        for it in [&mut status_jobs, &mut manifest_jobs] {
            let batch: Vec<Job> = it.by_ref().take(FETCH_BATCH).collect();
            if !batch.is_empty() {
                batches.push(batch);
            }
        }
    }
    let in_flight = params.concurrency.div_ceil(FETCH_BATCH).max(2);
    let mut fetched = futures::stream::iter(batches)
        .map(|batch| {
            let (bucket, trusted) = (bucket.clone(), params.trusted.clone());
            tokio::spawn(async move { fetch_batch(&bucket, &trusted, batch).await })
        })
        .buffer_unordered(in_flight);
    while let Some(batch) = fetched.next().await {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                // A panicking parse would be a bug; keep the rest of the fleet.
                tracing::error!("a fetch task failed: {e}");
                stats.read_errors += 1;
                continue;
            }
        };
        for done in batch {
            stats.read_errors += usize::from(done.read_error);
            stats.same_manifest_bytes += usize::from(done.same_bytes);
            let Some(slot) = slots.get_mut(done.slot) else {
                continue;
            };
            match done.outcome {
                None => {}
                Some(Outcome::Status(outcome)) => {
                    if let Some(etag) = done.etag {
                        slot.entry.status = Some(Cached {
                            etag,
                            outcome: outcome.clone(),
                        });
                    }
                    slot.status_now = Some(outcome);
                }
                Some(Outcome::Manifest(outcome)) => {
                    if let Some(etag) = done.etag {
                        slot.entry.manifest = Some(Cached {
                            etag,
                            outcome: outcome.clone(),
                        });
                    }
                    slot.manifest_now = Some(outcome);
                }
            }
        }
    }

    stats.fetch_ms = (started.elapsed().as_millis() as u64).saturating_sub(stats.list_ms);
    let mut rows = Vec::with_capacity(slots.len());
    let mut cache = Vec::with_capacity(slots.len());
    for slot in slots {
        let status = slot
            .status
            .as_ref()
            .and_then(|info| slot.status_now.as_ref().map(|o| (o, info.last_modified)));
        let manifest = match (&slot.manifest, verify) {
            (None, _) => ManifestView::Missing,
            (Some(_), false) => ManifestView::NotVerified,
            (Some(_), true) => match &slot.manifest_now {
                Some(ManifestOutcome::Verified(m)) => ManifestView::Verified(m.clone()),
                Some(ManifestOutcome::Flagged(f)) => ManifestView::Flagged(f.clone()),
                // Deleted between the listing and the read.
                None => ManifestView::Missing,
            },
        };
        rows.push(classify(
            slot.host.clone(),
            status,
            manifest,
            now,
            params.stale_after,
        ));
        cache.push((slot.host, slot.entry));
    }
    // In host order and unique: the map is built without a search per host.
    let cache: BTreeMap<HostName, CachedHost> = cache.into_iter().collect();

    stats.duration_ms = started.elapsed().as_millis() as u64;
    let summary = SummaryFile::new(now, params.trusted_fingerprint.clone(), cache);
    Ok(Refreshed {
        fleet: Fleet {
            generated_at: now,
            hosts: rows,
            ignored,
            stats,
            trusted_key_names: params
                .trusted
                .keys()
                .iter()
                .map(|k| k.name().to_owned())
                .collect(),
            stale_after: params.stale_after,
        },
        summary,
        changed,
    })
}

/// Objects read per batch (one blocking read on `file://`).
const FETCH_BATCH: usize = 32;

/// Reads one batch of objects of one kind and turns each into its outcome.
async fn fetch_batch(bucket: &Bucket, trusted: &TrustedKeys, batch: Vec<Job>) -> Vec<Done> {
    // A batch holds one kind of object, so one size bound.
    let keys: Vec<Key> = batch
        .iter()
        .map(|j| match j {
            Job::Status(_, h, _) => Key::status(h),
            Job::Manifest(_, h, ..) => Key::manifest(h),
        })
        .collect();
    let limit = match batch.first() {
        Some(Job::Status(..)) => MAX_STATUS_SIZE,
        _ => MAX_MANIFEST_SIZE,
    };
    let got = bucket.get_many(&keys, limit).await;
    batch
        .into_iter()
        .zip(got)
        .map(|(job, read)| match job {
            Job::Status(slot, host, etag) => status_done(slot, host, etag, read),
            Job::Manifest(slot, host, etag, before) => {
                manifest_done(trusted, slot, host, etag, before, read)
            }
        })
        .collect()
}

fn status_done(
    slot: usize,
    host: HostName,
    list_etag: Option<String>,
    read: Result<Object, BucketError>,
) -> Done {
    let key = Key::status(&host);
    let done = |etag, outcome: Option<StatusOutcome>, read_error| Done {
        slot,
        etag,
        outcome: outcome.map(Outcome::Status),
        read_error,
        same_bytes: false,
    };
    match read {
        Ok(obj) => {
            let outcome = match StatusReport::parse(&obj.bytes, key.as_str(), &host) {
                Ok(r) => StatusOutcome::Report(Arc::new(r)),
                Err(e) => StatusOutcome::Flagged(cut(e.to_string())),
            };
            // The ETag of what was read is what the next listing shows while the
            // object stays the same.
            done(obj.etag.or(list_etag), Some(outcome), false)
        }
        // Cached under the ETag of what was read, as above: the listed one may be
        // of an earlier version.
        Err(e @ BucketError::TooLarge { .. }) => done(
            too_large_etag(&e),
            Some(StatusOutcome::Flagged(cut(e.to_string()))),
            false,
        ),
        Err(BucketError::NotFound { .. }) => done(None, None, false),
        Err(e) => {
            tracing::warn!("{e}");
            let f = StatusOutcome::Flagged(cut(format!("cannot read status: {e}")));
            done(None, Some(f), true)
        }
    }
}

fn manifest_done(
    trusted: &TrustedKeys,
    slot: usize,
    host: HostName,
    list_etag: Option<String>,
    before: Option<Arc<ManifestInfo>>,
    read: Result<Object, BucketError>,
) -> Done {
    let key = Key::manifest(&host);
    let flag = |e: &dyn std::fmt::Display| ManifestOutcome::Flagged(cut(format!("{key}: {e}")));
    let done = |etag, outcome: Option<ManifestOutcome>, read_error, same_bytes| Done {
        slot,
        etag,
        outcome: outcome.map(Outcome::Manifest),
        read_error,
        same_bytes,
    };
    match read {
        Ok(obj) => {
            let etag = obj.etag.clone().or(list_etag);
            // The same bytes as verified before (a rewrite that changed only the
            // ETag) verify the same way with the same keys: keep that outcome.
            if let Some(b) = &before
                && hex::encode(Sha256::digest(&obj.bytes)) == b.digest
            {
                return done(
                    etag,
                    Some(ManifestOutcome::Verified(b.clone())),
                    false,
                    true,
                );
            }
            let seen = before.map(|b| SeenManifest {
                sequence: b.sequence,
                digest: b.digest.clone(),
            });
            // Expiry is checked at classification time against the clock of that
            // refresh, so a cached outcome expires when the manifest does.
            let policy = VerifyPolicy {
                trusted,
                host: &host,
                highest_seen: seen.as_ref(),
                now: None,
            };
            let outcome = match Manifest::verify(&obj.bytes, &policy) {
                Ok(v) => ManifestOutcome::Verified(Arc::new(ManifestInfo {
                    sequence: v.manifest.sequence,
                    closure: v.manifest.closure,
                    issued_at: v.manifest.issued_at,
                    expires_at: v.manifest.expires_at,
                    activation: v.manifest.activation,
                    signed_by: v.signed_by,
                    digest: v.digest,
                })),
                Err(e) => flag(&e),
            };
            done(etag, Some(outcome), false, false)
        }
        // Cached under the ETag of what was read (see `status_done`).
        Err(e @ BucketError::TooLarge { .. }) => {
            done(too_large_etag(&e), Some(flag(&e)), false, false)
        }
        Err(BucketError::NotFound { .. }) => done(None, None, false, false),
        Err(e) => {
            tracing::warn!("{e}");
            done(None, Some(flag(&format!("cannot read: {e}"))), true, false)
        }
    }
}

/// The ETag an oversized object was refused under (not the listing's, which may be
/// of an earlier version of it).
fn too_large_etag(e: &BucketError) -> Option<String> {
    match e {
        BucketError::TooLarge { etag, .. } => etag.clone(),
        _ => None,
    }
}

fn same_closure(a: Option<&Generation>, b: Option<&Generation>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a.closure == b.closure)
}

/// Classifies one host from its status (outcome and last-modified time) and manifest.
///
/// Order: flagged, never-seen, stale, then the agent's failed / rolled-back / refused,
/// then up-to-date (running the desired closure) or pending.
pub fn classify(
    host: HostName,
    status: Option<(&StatusOutcome, Timestamp)>,
    manifest: ManifestView,
    now: Timestamp,
    stale_after: SignedDuration,
) -> HostRow {
    let mut flags = Vec::new();
    let mut notes = Vec::new();
    let last_seen = status.map(|(_, t)| t);
    let report = match status {
        Some((StatusOutcome::Report(r), _)) => Some(r.clone()),
        Some((StatusOutcome::Flagged(f), _)) => {
            flags.push(f.clone());
            None
        }
        None => None,
    };
    let manifest = match manifest {
        ManifestView::Verified(m) if now >= m.expires_at => ManifestView::Flagged(cut(format!(
            "hosts/{host}/manifest.json: {}",
            ManifestError::Expired {
                expires_at: m.expires_at,
                now,
            }
        ))),
        other => other,
    };
    let (desired, desired_source) = match &manifest {
        ManifestView::Verified(m) => (
            Some(Generation {
                sequence: Some(m.sequence),
                closure: m.closure.clone(),
            }),
            DesiredSource::Manifest,
        ),
        ManifestView::Flagged(f) => {
            flags.push(f.clone());
            (None, DesiredSource::None)
        }
        ManifestView::Missing | ManifestView::NotVerified => {
            if matches!(manifest, ManifestView::Missing) && report.is_some() {
                notes.push(format!(
                    "no manifest at hosts/{host}/manifest.json: the agent's own desired generation is shown"
                ));
            }
            match report.as_ref().and_then(|r| r.desired.clone()) {
                Some(d) => (Some(d), DesiredSource::AgentReport),
                None => (None, DesiredSource::None),
            }
        }
    };

    let state = if !flags.is_empty() {
        HostState::Flagged
    } else if let Some(r) = &report {
        let age = last_seen.map(|t| now.duration_since(t)).unwrap_or_default();
        if age > stale_after {
            HostState::Stale
        } else {
            match r.state {
                AgentState::Failed => HostState::Failed,
                AgentState::RolledBack => HostState::RolledBack,
                AgentState::Refused => HostState::Refused,
                _ if same_closure(r.current.as_ref(), desired.as_ref()) => HostState::UpToDate,
                _ => HostState::Pending,
            }
        }
    } else {
        HostState::NeverSeen
    };
    HostRow {
        host,
        state,
        last_seen,
        report,
        manifest,
        desired,
        desired_source,
        flags,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_core::StorePath;
    use fleet_core::status::Facts;

    fn gen_(seq: u64, c: &str) -> Generation {
        Generation {
            sequence: Some(seq),
            closure: StorePath::new(&format!("/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-{c}"))
                .unwrap(),
        }
    }

    fn report(state: AgentState, current: &str) -> StatusOutcome {
        StatusOutcome::Report(Arc::new(StatusReport {
            version: 1,
            host: HostName::new("a").unwrap(),
            agent_version: "0.1.0".into(),
            state,
            desired: Some(gen_(2, "new")),
            current: Some(gen_(1, current)),
            last_error: None,
            facts: Facts::default(),
            time: "2026-11-26T12:00:00Z".parse().unwrap(),
        }))
    }

    fn manifest(c: &str, expires: &str) -> ManifestView {
        ManifestView::Verified(Arc::new(ManifestInfo {
            sequence: 2,
            closure: gen_(2, c).closure,
            issued_at: "2026-11-26T00:00:00Z".parse().unwrap(),
            expires_at: expires.parse().unwrap(),
            activation: fleet_core::Activation::Switch,
            signed_by: "p-1".into(),
            digest: "00".into(),
        }))
    }

    const NOW: &str = "2026-11-26T12:01:00Z";

    fn state(status: Option<&StatusOutcome>, seen: &str, m: ManifestView) -> HostState {
        let now: Timestamp = NOW.parse().unwrap();
        let seen: Timestamp = seen.parse().unwrap();
        classify(
            HostName::new("a").unwrap(),
            status.map(|s| (s, seen)),
            m,
            now,
            SignedDuration::from_secs(180),
        )
        .state
    }

    #[test]
    fn classification() {
        let fresh = "2026-11-26T12:00:30Z";
        let old = "2026-11-26T11:50:00Z";
        let far = "2027-01-01T00:00:00Z";
        let ok = report(AgentState::Healthy, "new");
        assert_eq!(
            state(Some(&ok), fresh, manifest("new", far)),
            HostState::UpToDate
        );
        assert_eq!(
            state(Some(&ok), fresh, manifest("other", far)),
            HostState::Pending
        );
        assert_eq!(
            state(Some(&ok), old, manifest("new", far)),
            HostState::Stale
        );
        let fetching = report(AgentState::Fetching, "old");
        assert_eq!(
            state(Some(&fetching), fresh, manifest("new", far)),
            HostState::Pending
        );
        for (a, h) in [
            (AgentState::Failed, HostState::Failed),
            (AgentState::RolledBack, HostState::RolledBack),
            (AgentState::Refused, HostState::Refused),
        ] {
            assert_eq!(
                state(Some(&report(a, "old")), fresh, manifest("new", far)),
                h
            );
        }
        assert_eq!(
            state(None, fresh, manifest("new", far)),
            HostState::NeverSeen
        );
        let bad = StatusOutcome::Flagged("status object … is malformed".into());
        assert_eq!(
            state(Some(&bad), fresh, manifest("new", far)),
            HostState::Flagged
        );
        // An expired manifest is flagged, even for a healthy host.
        assert_eq!(
            state(Some(&ok), fresh, manifest("new", "2026-11-26T12:00:59Z")),
            HostState::Flagged
        );
        // Without a verified manifest, the agent's own desired generation counts.
        let behind = report(AgentState::Healthy, "old");
        assert_eq!(
            state(Some(&behind), fresh, ManifestView::NotVerified),
            HostState::Pending
        );
        let done = report(AgentState::Healthy, "new");
        assert_eq!(
            state(Some(&done), fresh, ManifestView::NotVerified),
            HostState::UpToDate
        );
        assert_eq!(
            state(Some(&done), fresh, ManifestView::Missing),
            HostState::UpToDate
        );
    }

    #[test]
    fn states_round_trip_and_order() {
        for s in HostState::ALL {
            assert_eq!(HostState::parse(s.as_str()), Some(s));
        }
        assert!(HostState::Flagged < HostState::UpToDate);
        assert_eq!(HostState::parse("bogus"), None);
    }

    #[test]
    fn listing_keys_are_sorted_out() {
        assert!(matches!(
            sort_key("status", "status/a/status.json"),
            Listed::Status(_)
        ));
        assert!(matches!(
            sort_key("hosts", "hosts/a/manifest.json"),
            Listed::Manifest(_)
        ));
        assert!(matches!(
            sort_key("status", "status/a/events/x.json"),
            Listed::Other
        ));
        assert!(matches!(
            sort_key("status", "status/A<b>/status.json"),
            Listed::Ignored
        ));
        assert!(matches!(
            sort_key("status", "status/stray.json"),
            Listed::Ignored
        ));
    }

    #[test]
    fn of_a_host_folder_only_its_object_is_listed() {
        let v = below_host(STATUS_DIR);
        assert_eq!(v("status/web-1/"), Visit::Only("status.json"));
        assert_eq!(v("status/Not_A_Host/"), Visit::All);
        assert_eq!(v("status/Not_A_Host/x/"), Visit::All);
        assert_eq!(v("status/"), Visit::All);
        assert_eq!(
            below_host(HOSTS_DIR)("hosts/web-1/"),
            Visit::Only("manifest.json")
        );
    }

    #[test]
    fn listing_cuts_are_ordered_and_name_no_host_folder() {
        let hosts = |n: usize| {
            let mut s = SummaryFile::new(Timestamp::UNIX_EPOCH, String::new(), BTreeMap::new());
            for i in 0..n {
                s.hosts.insert(
                    HostName::new(&format!("h-{i:05}")).unwrap(),
                    CachedHost::default(),
                );
            }
            s
        };
        for (prev, want) in [
            (None, 5),
            (Some(hosts(10)), 5),
            (Some(hosts(5000)), MAX_LIST_RANGES - 1),
            (Some(hosts(1000)), 1),
        ] {
            let cuts = split_points(STATUS_DIR, prev.as_ref(), MAX_LIST_RANGES);
            assert_eq!(cuts.len(), want, "{cuts:?}");
            assert!(cuts.windows(2).all(|w| w[0] < w[1]), "{cuts:?}");
            for c in &cuts {
                assert!(c.starts_with("status/") && c.ends_with('~'), "{c}");
            }
        }
        assert!(split_points(STATUS_DIR, None, 1).is_empty());
    }

    #[test]
    fn listings_merge_into_one_slot_per_host_in_order() {
        let info = |k: &str| ObjectInfo {
            key: k.into(),
            size: 1,
            etag: None,
            last_modified: Timestamp::UNIX_EPOCH,
        };
        let h = |s: &str| HostName::new(s).unwrap();
        let statuses = vec![(h("a"), info("s-a")), (h("web-1"), info("s-w1"))];
        let manifests = vec![
            (h("b"), info("m-b")),
            (h("web-1"), info("m-w1")),
            (h("web-1-a"), info("m-w1a")),
        ];
        let slots = merge_by_host(statuses, manifests);
        let got: Vec<(String, Option<String>, Option<String>)> = slots
            .iter()
            .map(|s| {
                (
                    s.host.to_string(),
                    s.status.as_ref().map(|i| i.key.clone()),
                    s.manifest.as_ref().map(|i| i.key.clone()),
                )
            })
            .collect();
        let o = |s: &str| Some(s.to_owned());
        assert_eq!(
            got,
            [
                ("a".into(), o("s-a"), None),
                ("b".into(), None, o("m-b")),
                ("web-1".into(), o("s-w1"), o("m-w1")),
                ("web-1-a".into(), None, o("m-w1a")),
            ]
        );
    }

    #[test]
    fn cut_keeps_char_boundaries() {
        let s = cut("é".repeat(MAX_FLAG_LEN));
        assert!(s.len() <= MAX_FLAG_LEN && s.ends_with("..."));
    }
}
