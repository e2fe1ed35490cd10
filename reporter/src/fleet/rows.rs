//! Step 4 of a refresh: the rows of every host, and the snapshot entries behind
//! them, carried forward from the previous refresh where nothing changed.
//!
//! A process that refreshed before keeps that refresh's rows (before holds are put
//! on them) with, for each, the instant until which it stays right
//! ([`KeptRows`]). A host's row is reused when its snapshot entry is the one the row
//! was classified from (same ETags and listed times, the very outcomes), its
//! registry entry is the same, and that instant has not passed; otherwise it is
//! classified again (`classify.rs`). Classification depends on the time only through
//! staleness (`last_seen + stale-after`) and manifest expiry, so the instant is the
//! earlier of those that still lie ahead. A row whose inputs are not all in its
//! snapshot entry (a read that failed, an object without an ETag) or whose text holds
//! the time of the check (an expired manifest) is classified again on the next
//! refresh, so a carried row is what a process starting from the snapshot would
//! show; a clock set back makes every kept row suspect.
//!
//! A feed refresh names the hosts it asked about; every other host keeps its entry
//! and row as they were, so the work is O(changes) and a walk of the fleet in host
//! order with no allocation per host. A full listing names every host; hosts it does
//! not list are gone.
//!
//! What changed is reported as the hosts whose entry differs from the previous
//! snapshot's: the stored snapshot is updated by a delta of those hosts
//! (`crate::stored`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use fleet_core::HostName;
use jiff::{SignedDuration, Timestamp};

use super::classify::classify;
use super::list::Slot;
use super::registry::{self, Enrollment};
use crate::outcome::{HostRow, ManifestOutcome, ManifestView, StatusOutcome};
use crate::snapshot::{Cached, CachedHost};

/// The rows of the last refresh, before holds, in host order (the hosts of the
/// snapshot it made), and what they were classified with.
pub(crate) struct KeptRows {
    rows: Vec<Arc<HostRow>>,
    /// Per row: it is right strictly before this instant.
    until: Vec<Timestamp>,
    /// When the refresh that made them ran (a clock set back since makes them all
    /// suspect).
    at: Timestamp,
    enrolled: BTreeMap<HostName, Enrollment>,
    verify: bool,
    stale_after: SignedDuration,
}

/// Which hosts a refresh looked at.
pub(super) enum Scope<'a> {
    /// A full listing: every host; the others are gone.
    Full,
    /// A feed refresh: these hosts were asked about; every other host is as before.
    Feed(&'a BTreeSet<HostName>),
}

/// The rows and entries of one refresh.
pub(super) struct Carried {
    /// Every host's row, before holds, in host order.
    pub rows: Vec<Arc<HostRow>>,
    /// The rows, kept for the next refresh.
    pub kept: KeptRows,
    /// Full listing: every entry, in host order. Feed: the new entry of each asked
    /// host whose entry changed (`None`: it is gone).
    pub entries: Vec<(HostName, Option<CachedHost>)>,
    /// Hosts whose entry differs from the previous snapshot's (added, changed, gone).
    pub changed: Vec<HostName>,
    /// Rows classified in this refresh (the others were carried forward).
    pub classified: usize,
}

/// What classifying needs besides the slots.
pub(super) struct Context<'a> {
    pub enrolled: BTreeMap<HostName, Enrollment>,
    pub verify: bool,
    pub now: Timestamp,
    pub stale_after: SignedDuration,
    /// The previous snapshot's entries.
    pub prev: Option<&'a BTreeMap<HostName, CachedHost>>,
    /// The previous refresh's rows, when this process made one.
    pub kept: Option<KeptRows>,
}

/// Classifies (or carries forward) every host: the slots of this refresh (host
/// order, one per host) and, in a feed refresh, every host of `prev` not asked about.
pub(super) fn carry(slots: Vec<Slot>, scope: Scope<'_>, cx: Context<'_>) -> Carried {
    let empty = BTreeMap::new();
    let prev = cx.prev.unwrap_or(&empty);
    // Rows kept by this process are reusable only if made under the same settings
    // and for exactly the previous snapshot's hosts.
    let kept = cx.kept.as_ref().filter(|k| {
        k.verify == cx.verify
            && k.stale_after == cx.stale_after
            && k.rows.len() == prev.len()
            && k.at <= cx.now
    });
    let same_registry = kept.is_some_and(|k| k.enrolled == cx.enrolled);
    let reuse = |i: usize, host: &HostName| -> Option<(Arc<HostRow>, Timestamp)> {
        let k = kept?;
        let row = &k.rows[i];
        let fresh = cx.now < k.until[i] && row.host == *host;
        let enrolled = same_registry || cx.enrolled.get(host) == k.enrolled.get(host);
        (fresh && enrolled).then(|| (row.clone(), k.until[i]))
    };
    let classified = std::cell::Cell::new(0usize);
    // A row is kept until its time-dependent state is due; one whose inputs are not
    // all in its snapshot entry (`captured` false: a read that failed, an object
    // without an ETag) or whose text holds the time (an expired manifest) is
    // classified again on the next refresh, as a process starting from the
    // snapshot would.
    let classify_new = |(row, volatile): (HostRow, bool), captured: bool| {
        classified.set(classified.get() + 1);
        let mut row = row;
        let enrollment = cx.enrolled.get(&row.host);
        registry::check(&mut row, enrollment);
        let until = if volatile || !captured {
            cx.now
        } else {
            valid_until(&row, cx.now, cx.stale_after)
        };
        (Arc::new(row), until)
    };

    let n = prev.len().max(slots.len());
    let mut rows = Vec::with_capacity(n);
    let mut until = Vec::with_capacity(n);
    let mut entries = Vec::new();
    let mut changed = Vec::new();
    let mut prev_iter = prev.iter().enumerate().peekable();
    let mut slot_iter = slots.into_iter().peekable();
    let mut asked = match scope {
        Scope::Feed(a) => Some(a.iter().peekable()),
        Scope::Full => None,
    };
    loop {
        let take_prev = match (prev_iter.peek(), slot_iter.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((_, (h, _))), Some(s)) => **h < s.host,
        };
        if take_prev {
            let (i, (host, entry)) = prev_iter.next().expect("peeked");
            // Not among the slots: kept as it was when a feed refresh did not ask
            // about it; otherwise gone.
            let unasked = asked.as_mut().is_some_and(|a| {
                while a.next_if(|h| *h < host).is_some() {}
                a.next_if(|h| *h == host).is_none()
            });
            if unasked {
                let (row, t) = reuse(i, host).unwrap_or_else(|| {
                    let row = classify_entry(host, entry, cx.verify, cx.now, cx.stale_after);
                    classify_new(row, true)
                });
                rows.push(row);
                until.push(t);
            } else {
                changed.push(host.clone());
                if asked.is_some() {
                    entries.push((host.clone(), None));
                }
            }
            continue;
        }
        let slot = slot_iter.next().expect("peeked");
        let before = prev_iter
            .next_if(|(_, (h, _))| **h == slot.host)
            .map(|(i, (_, e))| (i, e));
        let same = before.is_some_and(|(_, e)| same_entry(e, &slot.entry));
        // Reused only if this slot's row would be what its entry gives (the entry is
        // the previous one, whose row was kept only if it held all it was made from).
        let captured = captured(&slot, cx.verify);
        let (row, t) = before
            .filter(|_| same && captured)
            .and_then(|(i, _)| reuse(i, &slot.host))
            .unwrap_or_else(|| {
                let row = classify_slot(&slot, cx.verify, cx.now, cx.stale_after);
                classify_new(row, captured)
            });
        rows.push(row);
        until.push(t);
        if !same {
            changed.push(slot.host.clone());
        }
        if asked.is_none() || !same {
            entries.push((slot.host, Some(slot.entry)));
        }
    }
    Carried {
        kept: KeptRows {
            rows: rows.clone(),
            until,
            at: cx.now,
            enrolled: cx.enrolled,
            verify: cx.verify,
            stale_after: cx.stale_after,
        },
        rows,
        entries,
        changed,
        classified: classified.get(),
    }
}

/// Whether two entries record the same objects with the same outcomes (compared by
/// identity first: an outcome carried forward is the same allocation).
fn same_entry(a: &CachedHost, b: &CachedHost) -> bool {
    fn same<T: PartialEq>(
        a: &Option<Cached<T>>,
        b: &Option<Cached<T>>,
        eq: fn(&T, &T) -> bool,
    ) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                a.etag == b.etag && a.modified == b.modified && eq(&a.outcome, &b.outcome)
            }
            _ => false,
        }
    }
    fn status(a: &StatusOutcome, b: &StatusOutcome) -> bool {
        match (a, b) {
            (StatusOutcome::Report(x), StatusOutcome::Report(y)) => Arc::ptr_eq(x, y) || x == y,
            _ => a == b,
        }
    }
    fn manifest(a: &ManifestOutcome, b: &ManifestOutcome) -> bool {
        match (a, b) {
            (ManifestOutcome::Verified(x), ManifestOutcome::Verified(y)) => {
                Arc::ptr_eq(x, y) || x == y
            }
            _ => a == b,
        }
    }
    a.hold_modified == b.hold_modified
        && a.marker == b.marker
        && same(&a.status, &b.status, status)
        && same(&a.manifest, &b.manifest, manifest)
}

/// The instant from which `row`, classified at `now`, may no longer be right: when
/// its status turns stale or its manifest expires, whichever comes first (neither
/// can turn back as time passes, so one already past does not count).
fn valid_until(row: &HostRow, now: Timestamp, stale_after: SignedDuration) -> Timestamp {
    let mut until = Timestamp::MAX;
    if let ManifestView::Verified(m) = &row.manifest {
        until = until.min(m.expires_at);
    }
    if let Some(stale_at) = row
        .last_seen
        .and_then(|t| t.checked_add(stale_after).ok())
        .filter(|t| *t >= now)
    {
        until = until.min(stale_at);
    }
    until
}

/// Whether everything `slot`'s row is classified from is in its snapshot entry, so
/// that a row classified from the entry alone would be the same.
fn captured(slot: &Slot, verify: bool) -> bool {
    let e = &slot.entry;
    let status = slot.status.is_some() && slot.status_now.is_some();
    let manifest = slot.manifest.is_some() && (!verify || slot.manifest_now.is_some());
    status == e.status.is_some() && manifest == e.manifest.is_some()
}

/// Classifies a host of this refresh from its slot; and whether the row holds the
/// time of the check.
fn classify_slot(
    slot: &Slot,
    verify: bool,
    now: Timestamp,
    stale_after: SignedDuration,
) -> (HostRow, bool) {
    let status = slot
        .status
        .as_ref()
        .and_then(|info| slot.status_now.as_ref().map(|o| (o, info.last_modified)));
    let manifest = slot.manifest.as_ref().map(|_| slot.manifest_now.as_ref());
    classify_seen(&slot.host, status, manifest, verify, now, stale_after)
}

/// Classifies a host a feed refresh did not ask about from its snapshot entry, as a
/// slot made from that entry would be; and whether the row holds the time of the
/// check.
fn classify_entry(
    host: &HostName,
    entry: &CachedHost,
    verify: bool,
    now: Timestamp,
    stale_after: SignedDuration,
) -> (HostRow, bool) {
    let status = entry
        .status
        .as_ref()
        .map(|c| (&c.outcome, c.modified.unwrap_or(Timestamp::UNIX_EPOCH)));
    let manifest = entry.manifest.as_ref().map(|c| Some(&c.outcome));
    classify_seen(host, status, manifest, verify, now, stale_after)
}

/// Classifies a host from its status (outcome, last seen) and its manifest
/// (`None`: not there; `Some(None)`: listed but gone when read); and whether the row
/// holds the time of the check (an expired manifest's flag).
fn classify_seen(
    host: &HostName,
    status: Option<(&StatusOutcome, Timestamp)>,
    manifest: Option<Option<&ManifestOutcome>>,
    verify: bool,
    now: Timestamp,
    stale_after: SignedDuration,
) -> (HostRow, bool) {
    let manifest = match (manifest, verify) {
        (None, _) => ManifestView::Missing,
        (Some(_), false) => ManifestView::NotVerified,
        (Some(outcome), true) => view(outcome),
    };
    let volatile = matches!(&manifest, ManifestView::Verified(m) if now >= m.expires_at);
    (
        classify(host.clone(), status, manifest, now, stale_after),
        volatile,
    )
}

fn view(outcome: Option<&ManifestOutcome>) -> ManifestView {
    match outcome {
        Some(ManifestOutcome::Verified(m)) => ManifestView::Verified(m.clone()),
        Some(ManifestOutcome::Flagged(f)) => ManifestView::Flagged(f.clone()),
        Some(ManifestOutcome::NotVerified) => ManifestView::NotVerified,
        // Deleted between the listing and the read.
        None => ManifestView::Missing,
    }
}

#[cfg(test)]
mod tests {
    use fleet_core::status::AgentState;

    use super::*;
    use crate::synth;

    #[test]
    fn kept_rows_are_reused_later_but_not_after_the_clock_went_back() {
        let now = Timestamp::now();
        let stale_after = SignedDuration::from_mins(30);
        let prev: BTreeMap<HostName, CachedHost> = (0..20)
            .map(|i| {
                let host = synth::host_name(i);
                let report = synth::report(&host, AgentState::Healthy, 1, 1, now);
                let entry = CachedHost {
                    status: Some(Cached {
                        etag: format!("e{i}"),
                        modified: Some(now),
                        outcome: StatusOutcome::Report(Arc::new(report)),
                    }),
                    ..Default::default()
                };
                (host, entry)
            })
            .collect();
        let asked = BTreeSet::new();
        let cx = |kept, now| Context {
            enrolled: BTreeMap::new(),
            verify: false,
            now,
            stale_after,
            prev: Some(&prev),
            kept,
        };
        let first = carry(Vec::new(), Scope::Feed(&asked), cx(None, now));
        assert_eq!(first.classified, 20);
        let later = now + SignedDuration::from_mins(1);
        let second = carry(Vec::new(), Scope::Feed(&asked), cx(Some(first.kept), later));
        assert_eq!(second.classified, 0);
        let earlier = now - SignedDuration::from_mins(1);
        let third = carry(
            Vec::new(),
            Scope::Feed(&asked),
            cx(Some(second.kept), earlier),
        );
        assert_eq!(third.classified, 20);
    }
}
