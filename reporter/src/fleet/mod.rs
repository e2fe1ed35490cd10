//! Aggregation: the state of every host, computed from the bucket alone.
//!
//! One refresh is four steps, each in its own file:
//!
//! 1. `list.rs`: LIST `status/` and `hosts/` (each entry carries its ETag and the
//!    store's last-modified time); the hosts are the union of both, one slot each;
//!    or, within `full_listing_every` of the last full listing, `feed.rs`: list the
//!    change feed since the previous refresh, ask the store about the hosts it names
//!    and take every other host's objects as the previous [`Snapshot`] recorded them;
//! 2. `reuse.rs`: for each host, reuse the outcome cached in the previous
//!    [`Snapshot`] when the object's ETag is unchanged, otherwise plan a read;
//! 3. `fetch.rs`: GET the planned objects in batches and parse or verify each;
//! 4. `rows.rs`: carry forward the row of every host whose entry, registry entry
//!    and time-dependent state are as in the previous refresh of this process, and
//!    classify the others (`classify.rs`; with `registry.rs`, check each status
//!    against the signed host registry, its signature by the host's identity key);
//!    the new snapshot is the previous one with the changed entries replaced;
//! 5. `holds.rs`: read the listed holds and put them on their rows.
//!
//! A warm refresh after a full listing therefore costs three LISTs (the registry's
//! too, when manifests are verified) plus one GET per changed object and per held
//! host; a feed refresh one short LIST of `changes/` (plus the registry's) and three
//! HEADs per host that wrote instead of the two big LISTs.
//!
//! Everything a host wrote is hostile: an object that is too large, malformed or
//! claims another host is recorded as a *flag* on that host's row and never stops the
//! rest of the fleet from rendering. "Last seen" is the store's last-modified time of
//! `status.json`, not the time the agent claims, so a host cannot hide staleness by
//! writing a time in the future.

mod classify;
mod feed;
mod fetch;
mod holds;
mod list;
mod registry;
mod reuse;
mod rows;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use fleet_core::bucket::BucketError;
use fleet_core::{Bucket, HostName, TrustedKeys};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

pub use self::classify::classify;
pub use self::feed::{DEFAULT_FULL_LISTING_EVERY, FEED_MARGIN, MAX_FEED_SHARE};
pub use self::list::{Ignored, MAX_IGNORED_KEYS, MAX_LIST_RANGES};
pub use self::registry::{Enrollment, RegistryCache, check_event};
use self::rows::{Context, KeptRows, Scope};
use crate::outcome::{HostRow, HostState};
use crate::snapshot::{CachedHost, Snapshot};

/// Counters of one refresh, for the API and metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RefreshStats {
    /// Entries in the two listings (objects, and on a cold refresh the host folders
    /// of `status/`).
    pub listed: usize,
    /// Status objects fetched (changed or new).
    pub fetched_status: usize,
    /// Manifests fetched and verified (changed or new).
    pub fetched_manifests: usize,
    /// Outcomes reused from the previous snapshot.
    pub reused: usize,
    /// Hosts classified in this refresh; every other row was carried forward from the
    /// previous refresh of this process, unchanged.
    pub classified: usize,
    /// Changed manifests whose bytes were those verified before (not re-verified).
    pub same_manifest_bytes: usize,
    /// Fetches that failed for reasons other than the object's content.
    pub read_errors: usize,
    /// Where the previous snapshot came from: `memory`, `bucket`, `none`.
    pub previous: &'static str,
    /// What happened to `dashboard/snapshot.json`.
    pub snapshot_write: String,
    /// Wall time of the refresh, in milliseconds.
    pub duration_ms: u64,
    /// Time spent reading the stored snapshot, in milliseconds.
    pub snapshot_read_ms: u64,
    /// Time spent listing, in milliseconds.
    pub list_ms: u64,
    /// Time spent fetching, parsing and verifying changed objects, in milliseconds.
    pub fetch_ms: u64,
    /// Time spent writing the snapshot, in milliseconds.
    pub snapshot_write_ms: u64,
    /// How the hosts were found: `full` (listing `status/` and `hosts/`) or `feed`
    /// (the change feed since the previous refresh).
    pub listing: &'static str,
    /// Change-feed markers listed (feed refreshes).
    pub markers: usize,
}

/// The whole fleet at one instant.
#[derive(Clone, Debug)]
pub struct Fleet {
    /// When it was computed.
    pub generated_at: Timestamp,
    /// Every host, sorted by name (shared with the rows kept for the next refresh).
    pub hosts: Vec<Arc<HostRow>>,
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

    /// The hosts that count: every host but the retired ones.
    pub fn active(&self) -> impl Iterator<Item = &HostRow> {
        self.hosts
            .iter()
            .map(|r| &**r)
            .filter(|r| r.state != HostState::Retired)
    }

    /// The retired hosts.
    pub fn retired(&self) -> impl Iterator<Item = &HostRow> {
        self.hosts
            .iter()
            .map(|r| &**r)
            .filter(|r| r.state == HostState::Retired)
    }

    /// The held hosts.
    pub fn held(&self) -> impl Iterator<Item = &HostRow> {
        self.hosts.iter().map(|r| &**r).filter(|r| r.hold.is_some())
    }

    /// The hosts that fail a CI gate ([`HostState::fails_gate`]).
    pub fn failing_gate(&self) -> impl Iterator<Item = &HostRow> {
        self.hosts
            .iter()
            .map(|r| &**r)
            .filter(|r| r.state.fails_gate())
    }

    /// The row of `host`.
    pub fn host(&self, host: &HostName) -> Option<&HostRow> {
        self.hosts
            .binary_search_by(|r| r.host.cmp(host))
            .ok()
            .map(|i| &*self.hosts[i])
    }
}

/// What a refresh needs to know.
#[derive(Clone, Debug)]
pub struct RefreshParams {
    /// Trusted publisher keys.
    pub trusted: Arc<TrustedKeys>,
    /// Fingerprint of `trusted`, recorded in the snapshot.
    pub trusted_fingerprint: String,
    /// Staleness bound.
    pub stale_after: SignedDuration,
    /// Most GETs in flight.
    pub concurrency: usize,
    /// Registry entries read by earlier refreshes of this process.
    pub registry: Arc<RegistryCache>,
    /// Longest time between full listings (zero: always list in full).
    pub full_listing_every: SignedDuration,
}

/// What a process keeps between refreshes: the snapshot the next refresh starts
/// from, and the rows of the last refresh (`rows.rs`). A refresh that fails leaves
/// it as it was.
#[derive(Default)]
pub struct Memory {
    /// The snapshot (read from the bucket, or made by the last refresh).
    pub snapshot: Option<Arc<Snapshot>>,
    /// The last refresh's rows, when this process made one.
    rows: Option<KeptRows>,
}

/// Result of one refresh (its snapshot is in the [`Memory`] it was given).
pub struct Refreshed {
    /// The fleet.
    pub fleet: Fleet,
    /// Whether the snapshot differs from the one the refresh started from (so it is
    /// worth writing).
    pub changed: bool,
    /// The hosts whose snapshot entries changed (added, changed or gone).
    pub changed_hosts: Vec<HostName>,
}

/// Lists the bucket, fetches what changed since the snapshot in `memory`, and
/// classifies every host; `memory` then holds the new snapshot and rows.
pub async fn refresh(
    bucket: &Bucket,
    params: &RefreshParams,
    memory: &mut Memory,
    now: Timestamp,
) -> Result<Refreshed, BucketError> {
    let started = Instant::now();
    let prev = memory.snapshot.as_deref();
    let fed = match prev {
        Some(p) if feed::usable(params, p, now) => feed::list(bucket, params, p, now).await?,
        _ => None,
    };
    let full = fed.is_none();
    let (listing, markers, asked) = match fed {
        Some(f) => (f.listing, f.markers, Some(f.asked)),
        None => (
            list::list(bucket, params.concurrency, prev).await?,
            BTreeMap::new(),
            None,
        ),
    };
    let list_ms = started.elapsed().as_millis() as u64;
    let mut slots = listing.slots;

    let verify = !params.trusted.is_empty();
    let plan = reuse::plan(&mut slots, prev, &params.trusted_fingerprint, verify);
    let reused = plan.reused;

    let fetched = fetch::fetch(
        bucket,
        &params.trusted,
        params.concurrency,
        plan.jobs,
        &mut slots,
    )
    .await;
    let fetch_ms = (started.elapsed().as_millis() as u64).saturating_sub(list_ms);
    // A host folder listed without a status object in it (`list.rs`, cold) and
    // without a manifest is no host.
    slots.retain(|s| s.status.is_some() || s.manifest.is_some());
    remember_listing(&mut slots, &listing.holds, &markers, prev);

    // The registry is signed with the same keys as manifests: without them there is
    // nothing to check statuses against.
    let enrolled = if verify {
        registry::load(bucket, &params.trusted, &params.registry).await?
    } else {
        BTreeMap::new()
    };

    // Nothing fails from here on: `memory` changes only below.
    let changed_setup = prev.is_none_or(|p| p.trusted_keys != params.trusted_fingerprint);
    let scope = match &asked {
        Some(a) => Scope::Feed(a),
        None => Scope::Full,
    };
    let context = Context {
        enrolled,
        verify,
        now,
        stale_after: params.stale_after,
        prev: prev.map(|p| &p.hosts),
        kept: memory.rows.take(),
    };
    let carried = rows::carry(slots, scope, context);
    let mut hosts = carried.rows;
    holds::attach(bucket, &params.trusted, listing.holds, &mut hosts).await;
    keep_snapshot(memory, carried.entries, asked.is_some(), now, params);
    memory.rows = Some(carried.kept);

    let stats = RefreshStats {
        listed: listing.listed,
        fetched_status: fetched.status,
        fetched_manifests: fetched.manifests,
        reused,
        classified: carried.classified,
        same_manifest_bytes: fetched.same_manifest_bytes,
        read_errors: fetched.read_errors,
        list_ms,
        fetch_ms,
        duration_ms: started.elapsed().as_millis() as u64,
        listing: if full { "full" } else { "feed" },
        markers: markers.len(),
        ..Default::default()
    };
    Ok(Refreshed {
        fleet: Fleet {
            generated_at: now,
            hosts,
            ignored: listing.ignored,
            stats,
            trusted_key_names: params
                .trusted
                .keys()
                .iter()
                .map(|k| k.name().to_owned())
                .collect(),
            stale_after: params.stale_after,
        },
        // A full listing is recorded even when nothing changed, so that other
        // reporters starting from the stored snapshot may read the feed.
        changed: changed_setup
            || !carried.changed.is_empty()
            || (full && params.full_listing_every.is_positive()),
        changed_hosts: carried.changed,
    })
}

/// Makes the snapshot in `memory` the one this refresh computed: after a feed
/// refresh, the previous one with `entries` (the changed hosts) replaced, in place;
/// after a full listing, `entries` themselves (every host).
fn keep_snapshot(
    memory: &mut Memory,
    entries: Vec<(HostName, Option<CachedHost>)>,
    feed: bool,
    now: Timestamp,
    params: &RefreshParams,
) {
    if feed && let Some(snapshot) = memory.snapshot.as_mut() {
        // Unshared unless a write of it is still under way.
        let snapshot = Arc::make_mut(snapshot);
        for (host, entry) in entries {
            match entry {
                Some(e) => snapshot.hosts.insert(host, e),
                None => snapshot.hosts.remove(&host),
            };
        }
        snapshot.written_at = now;
        return;
    }
    let hosts = entries
        .into_iter()
        .filter_map(|(h, e)| Some((h, e?)))
        .collect();
    let mut snapshot = Snapshot::new(now, params.trusted_fingerprint.clone(), hosts);
    if let Some(p) = &memory.snapshot
        && p.trusted_keys == params.trusted_fingerprint
    {
        // What differs from the previous snapshot is `changed_hosts`: a delta from
        // the stored one still describes this one. (Under other keys it would not
        // apply: the fresh id makes the next write whole.)
        snapshot.id = p.id.clone();
    }
    memory.snapshot = Some(Arc::new(snapshot));
}

/// Records in each slot's snapshot entry what the next feed refresh needs: the
/// listed last-modified times of its objects and of its hold, and its newest marker.
fn remember_listing(
    slots: &mut [list::Slot],
    holds: &[(HostName, fleet_core::bucket::ObjectInfo)],
    markers: &BTreeMap<HostName, Timestamp>,
    prev: Option<&Snapshot>,
) {
    let holds: BTreeMap<&HostName, Timestamp> =
        holds.iter().map(|(h, i)| (h, i.last_modified)).collect();
    for slot in slots {
        if let (Some(c), Some(info)) = (&mut slot.entry.status, &slot.status) {
            c.modified = Some(info.last_modified);
        }
        if let (Some(c), Some(info)) = (&mut slot.entry.manifest, &slot.manifest) {
            c.modified = Some(info.last_modified);
        }
        slot.entry.hold_modified = holds.get(&slot.host).copied();
        slot.entry.marker = markers.get(&slot.host).copied().or_else(|| {
            prev.and_then(|p| p.hosts.get(&slot.host))
                .and_then(|c| c.marker)
        });
    }
}
