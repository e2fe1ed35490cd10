//! Step 1 of a warm refresh, instead of `list.rs`: read the change feed.
//!
//! Agents write an empty `changes/<day>/<time>/<host>` after each status write
//! ([`fleet_core::Key::change_marker`]). A refresh that starts from a snapshot made
//! less than `full_listing_every` after a full listing lists only the markers from a
//! little before that snapshot's refresh ([`FEED_MARGIN`], for agent clocks that are
//! behind) and asks the store (HEAD) about the `status.json`, `manifest.json` and
//! `hold.json` of the hosts they name; every other host keeps what the snapshot
//! recorded of its objects, last-modified times included, and (in a process that
//! refreshed before) its row (`rows.rs`). The reuse and fetch steps then run on the
//! hosts asked about as after a full listing: an object is read again only when its
//! ETag changed, so a refresh costs one short listing plus a few requests per host
//! that wrote, and its CPU work is O(changes).
//!
//! A marker is only a hint: what is shown comes from the host's own objects, read as
//! after a full listing. A missing, late or forged marker can only delay what the
//! dashboard shows until the next full listing, which the snapshot forces at least
//! every `full_listing_every`. Hosts whose agents write no markers (older agents) are
//! recognised by having no marker newer than their status: when such a host would
//! look stale its objects are asked about too, and when more than one host in
//! [`MAX_FEED_SHARE`] needs asking the refresh lists the whole fleet instead.

use std::collections::{BTreeMap, BTreeSet};

use fleet_core::bucket::{BucketError, ObjectInfo, Visit};
use fleet_core::layout::CHANGES_DIR;
use fleet_core::url::BucketUrl;
use fleet_core::{Bucket, HostName, Key, KeyPrefix};
use jiff::{SignedDuration, Timestamp};

use super::RefreshParams;
use super::list::{Ignored, Listing, Slot};
use crate::snapshot::Snapshot;

/// Default longest time between full listings.
pub const DEFAULT_FULL_LISTING_EVERY: SignedDuration = SignedDuration::from_mins(10);
/// How far before the previous refresh the feed is listed from: markers are named by
/// the agents' clocks, so one that is behind by up to this much is still seen.
pub const FEED_MARGIN: SignedDuration = SignedDuration::from_secs(60);
/// A feed refresh asks about at most one host in this many; above that a full
/// listing is as cheap.
pub const MAX_FEED_SHARE: usize = 10;

/// What the feed gave: the slots of the hosts asked about (every other host is as
/// the snapshot recorded it), the newest marker of each host it named, and the hosts
/// asked about.
pub(super) struct FeedListing {
    pub listing: Listing,
    pub markers: BTreeMap<HostName, Timestamp>,
    pub asked: BTreeSet<HostName>,
}

/// Whether `prev` may be followed by a feed refresh at `now`.
pub(super) fn usable(params: &RefreshParams, prev: &Snapshot, now: Timestamp) -> bool {
    let every = params.full_listing_every;
    every.is_positive()
        && prev.trusted_keys == params.trusted_fingerprint
        && prev.full_listing_at <= prev.written_at
        && prev.written_at <= now
        && now.duration_since(prev.full_listing_at) < every
}

/// Lists the feed since `prev` and builds the slots of the hosts it names; `None`
/// when too many hosts would need asking and a full listing should be made instead.
pub(super) async fn list(
    bucket: &Bucket,
    params: &RefreshParams,
    prev: &Snapshot,
    now: Timestamp,
) -> Result<Option<FeedListing>, BucketError> {
    let from = prev.written_at - FEED_MARGIN;
    let listed = list_markers(bucket, from).await?;
    let mut markers: BTreeMap<HostName, Timestamp> = BTreeMap::new();
    for info in &listed {
        if let Some((host, _)) = Key::change_marker_host(&info.key) {
            let t = markers.entry(host).or_insert(info.last_modified);
            *t = (*t).max(info.last_modified);
        }
    }
    let mut ask: BTreeSet<HostName> = markers.keys().cloned().collect();
    // Agents that write no markers: a status that would look stale is asked about,
    // unless its host wrote a marker after it (a current agent that went silent).
    let stale_before = now - params.stale_after;
    for (host, c) in &prev.hosts {
        let Some(modified) = c.status.as_ref().and_then(|s| s.modified) else {
            continue;
        };
        let marks = c.marker.is_some_and(|m| m >= modified);
        if modified < stale_before && !marks {
            ask.insert(host.clone());
        }
    }
    if ask.len() > prev.hosts.len().max(MAX_FEED_SHARE) / MAX_FEED_SHARE {
        return Ok(None);
    }
    let asked = head_all(bucket, &ask, params.concurrency).await?;

    // Only the hosts asked about get slots; the others keep their snapshot entries
    // (`rows.rs`), but their holds are read on every refresh, as after a listing.
    let mut holds = Vec::new();
    for (host, c) in &prev.hosts {
        if let Some(t) = c.hold_modified
            && !ask.contains(host)
        {
            holds.push((host.clone(), remembered(Key::hold(host), "", Some(t))));
        }
    }
    let mut slots = Vec::with_capacity(asked.len());
    for (host, [status, manifest, hold]) in asked {
        if let Some(h) = hold {
            holds.push((host.clone(), h));
        }
        let mut slot = Slot::new(host);
        slot.status = status;
        slot.manifest = manifest;
        if slot.status.is_some() || slot.manifest.is_some() {
            slots.push(slot);
        }
    }
    holds.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Some(FeedListing {
        listing: Listing {
            slots,
            ignored: Ignored::default(),
            listed: listed.len(),
            holds,
        },
        markers,
        asked: ask,
    }))
}

/// An object as the snapshot recorded it (its size is not kept: 0).
fn remembered(key: Key, etag: &str, modified: Option<Timestamp>) -> ObjectInfo {
    ObjectInfo {
        key: key.as_str().to_owned(),
        size: 0,
        etag: Some(etag.to_owned()),
        last_modified: modified.unwrap_or(Timestamp::UNIX_EPOCH),
    }
}

/// The markers named at or after `from`'s second. On an object store one listing
/// from the cursor on (`start-after`); on `file://`, whose listings read whole
/// folders, a walk that skips the day and second folders before the cursor.
async fn list_markers(bucket: &Bucket, from: Timestamp) -> Result<Vec<ObjectInfo>, BucketError> {
    let cursor = Key::change_cursor(from);
    let prefix = KeyPrefix::changes();
    let mut listed = if matches!(bucket.url(), BucketUrl::File { .. }) {
        let c = cursor.as_str().to_owned();
        let visit = move |folder: &str| {
            // `changes/<day>/` and `changes/<day>/<time>/`: skipped when every key
            // under them sorts before the cursor.
            let f = folder.trim_end_matches('/');
            if c.starts_with(f) || f > c.as_str() {
                Visit::All
            } else {
                Visit::Skip
            }
        };
        bucket.list_pruned(&prefix, visit, &[]).await?
    } else {
        bucket.list_after(&prefix, &cursor).await?
    };
    listed.retain(|o| o.key.as_str() > cursor.as_str() && o.key.starts_with(CHANGES_DIR));
    Ok(listed)
}

/// HEADs the status, manifest and hold of each host (`concurrency` requests at a
/// time on an object store, one batch of `stat`s on `file://`); in host order.
#[allow(clippy::type_complexity)]
async fn head_all(
    bucket: &Bucket,
    hosts: &BTreeSet<HostName>,
    concurrency: usize,
) -> Result<Vec<(HostName, [Option<ObjectInfo>; 3])>, BucketError> {
    let keys: Vec<Key> = hosts
        .iter()
        .flat_map(|h| [Key::status(h), Key::manifest(h), Key::hold(h)])
        .collect();
    let got = bucket.head_many(&keys, concurrency).await;
    let mut got = got.into_iter();
    let mut out = Vec::with_capacity(hosts.len());
    for h in hosts {
        let mut next = || got.next().expect("three answers per host");
        out.push((h.clone(), [next()?, next()?, next()?]));
    }
    Ok(out)
}
