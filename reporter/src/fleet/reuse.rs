//! Step 2 of a refresh: decide, host by host, what the previous [`Snapshot`] still
//! answers and what must be read again.
//!
//! An outcome is reused when the listed object's ETag is the one it was cached
//! under (manifest outcomes only while the snapshot was verified with the same
//! trusted keys). A status object listed larger than core's `MAX_STATUS_SIZE` is
//! flagged from the listing alone; everything else becomes a [`Job`] for
//! [`super::fetch`].

use std::sync::Arc;

use fleet_core::HostName;
use fleet_core::status::MAX_STATUS_SIZE;

use super::list::Slot;
use crate::outcome::{ManifestInfo, ManifestOutcome, StatusOutcome, cut};
use crate::snapshot::{Cached, Snapshot};

/// An object to read: the host's slot, the host, the listed ETag (and for a
/// manifest, what was verified before).
pub(super) enum Job {
    /// Its `status.json`.
    Status(usize, HostName, Option<String>),
    /// Its `manifest.json`.
    Manifest(usize, HostName, Option<String>, Option<Arc<ManifestInfo>>),
}

/// What the reuse step hands on.
pub(super) struct Plan {
    /// The objects to read.
    pub jobs: Vec<Job>,
    /// Outcomes taken from the previous snapshot.
    pub reused: usize,
}

/// Fills each slot with what `prev` still answers and lists the rest as jobs.
/// `verify` says whether manifests are verified at all (trusted keys configured);
/// `trusted_fingerprint` is the fingerprint of those keys.
pub(super) fn plan(
    slots: &mut [Slot],
    prev: Option<&Snapshot>,
    trusted_fingerprint: &str,
    verify: bool,
) -> Plan {
    // The previous manifest outcomes are only reusable if they were verified with
    // the same keys.
    let prev_manifests_ok = prev.is_some_and(|p| p.trusted_keys == trusted_fingerprint);
    let mut plan = Plan {
        jobs: Vec::new(),
        reused: 0,
    };
    // The previous snapshot is in host order too: walk it alongside.
    let mut prev_iter = prev
        .map(|p| p.hosts.iter())
        .into_iter()
        .flatten()
        .peekable();

    for (i, slot) in slots.iter_mut().enumerate() {
        while prev_iter.next_if(|(h, _)| *h < &slot.host).is_some() {}
        let old = prev_iter.next_if(|(h, _)| *h == &slot.host).map(|(_, c)| c);
        plan_status(i, slot, old.and_then(|o| o.status.as_ref()), &mut plan);
        let old_manifest = old.and_then(|o| o.manifest.as_ref());
        plan_manifest(i, slot, old_manifest, prev_manifests_ok, verify, &mut plan);
    }
    plan
}

/// Reuses, flags or queues slot `i`'s status object.
fn plan_status(i: usize, slot: &mut Slot, old: Option<&Cached<StatusOutcome>>, plan: &mut Plan) {
    let Some(info) = &slot.status else {
        return;
    };
    if let Some(c) = old.filter(|c| info.etag.as_deref() == Some(c.etag.as_str())) {
        plan.reused += 1;
        slot.status_now = Some(c.outcome.clone());
        slot.entry.status = Some(c.clone());
        return;
    }
    if info.size > MAX_STATUS_SIZE {
        // Refused from the listing alone: no need to download it.
        let o = StatusOutcome::Flagged(cut(format!(
            "status object {} is {} bytes, larger than the {MAX_STATUS_SIZE}-byte bound",
            info.key, info.size
        )));
        slot.status_now = Some(o.clone());
        if let Some(etag) = &info.etag {
            slot.entry.status = Some(Cached {
                etag: etag.clone(),
                modified: None,
                outcome: o,
            });
        }
    } else {
        plan.jobs
            .push(Job::Status(i, slot.host.clone(), info.etag.clone()));
    }
}

/// Reuses or queues slot `i`'s manifest (`old` only counts when `reusable`,
/// verified with today's keys); without trusted keys (`verify` false) records it as
/// not verified.
fn plan_manifest(
    i: usize,
    slot: &mut Slot,
    old: Option<&Cached<ManifestOutcome>>,
    reusable: bool,
    verify: bool,
    plan: &mut Plan,
) {
    let Some(info) = &slot.manifest else {
        return;
    };
    if !verify {
        // Nothing to open it with: only its presence is recorded, so that a refresh
        // from the snapshot shows it as there, not verified (not as missing).
        slot.manifest_now = Some(ManifestOutcome::NotVerified);
        if let Some(etag) = &info.etag {
            slot.entry.manifest = Some(Cached {
                etag: etag.clone(),
                modified: None,
                outcome: ManifestOutcome::NotVerified,
            });
        }
        return;
    }
    let old = old.filter(|_| reusable);
    if let Some(c) = old.filter(|c| info.etag.as_deref() == Some(c.etag.as_str())) {
        plan.reused += 1;
        slot.manifest_now = Some(c.outcome.clone());
        slot.entry.manifest = Some(c.clone());
        return;
    }
    // The manifest changed: it must not go below what was verified before (a
    // rollback or equivocation in the bucket), and if its bytes are those verified
    // before, that outcome stands.
    let before = old.and_then(|c| match &c.outcome {
        ManifestOutcome::Verified(m) => Some(m.clone()),
        ManifestOutcome::Flagged(_) | ManifestOutcome::NotVerified => None,
    });
    plan.jobs.push(Job::Manifest(
        i,
        slot.host.clone(),
        info.etag.clone(),
        before,
    ));
}
