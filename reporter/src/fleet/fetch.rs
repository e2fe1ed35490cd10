//! Step 3 of a refresh: read the objects the reuse step asked for, and parse or
//! verify each into its outcome.
//!
//! Objects are read in batches of one kind ([`fleet_core::Bucket::get_many`]: one
//! blocking read of [`FETCH_BATCH`] statuses or [`FETCH_BATCH_MANIFESTS`] manifests on
//! `file://`, [`FETCH_BATCH_REMOTE`] concurrent GETs on S3), about `concurrency`
//! objects in flight on S3 and at least two batches per core on `file://`, and each
//! batch is parsed and verified in its own task, so the CPU work spreads over the
//! runtime's worker threads (all cores). Reads
//! are bounded by core's `MAX_STATUS_SIZE` / `MAX_MANIFEST_SIZE`; statuses are parsed
//! with [`StatusReport::parse`] and manifests verified with [`Manifest::verify`]. A
//! manifest whose bytes hash to the digest of the one verified before (rewritten
//! unchanged) keeps its outcome without a second signature check.

use std::sync::Arc;

use fleet_core::bucket::{BucketError, Object, ObjectInfo};
use fleet_core::manifest::{MAX_MANIFEST_SIZE, SeenManifest, VerifyPolicy};
use fleet_core::narinfo::Sha256Hash;
use fleet_core::status::MAX_STATUS_SIZE;
use fleet_core::url::BucketUrl;
use fleet_core::{Bucket, HostName, Key, Manifest, StatusReport, TrustedKeys};
use futures::StreamExt;

use super::list::Slot;
use super::reuse::Job;
use crate::outcome::{ManifestInfo, ManifestOutcome, StatusOutcome, cut};
use crate::snapshot::Cached;

/// Status objects read per batch on `file://` (one blocking read).
const FETCH_BATCH: usize = 32;
/// Manifests read per batch on `file://`. Their signatures are checked in one
/// ed25519 batch per fetch batch, and from about 95 signatures (190 points) on that
/// check switches to Pippenger's method, which costs about a fifth less per
/// signature than the smaller batches' (16 against 20 µs measured here).
const FETCH_BATCH_MANIFESTS: usize = 128;
/// Objects read per batch on an object store (concurrent GETs). A batch is done when
/// its slowest GET is, so small batches, many in flight, keep about `concurrency`
/// GETs going instead of letting each batch's tail idle the rest.
const FETCH_BATCH_REMOTE: usize = 4;

/// Counters of the fetch step.
#[derive(Default)]
pub(super) struct Fetched {
    /// Status objects read.
    pub status: usize,
    /// Manifests read.
    pub manifests: usize,
    /// Manifests whose bytes were those verified before (not verified again).
    pub same_manifest_bytes: usize,
    /// Reads that failed for reasons other than the object's content.
    pub read_errors: usize,
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
    /// Of a status read for a slot whose status was not listed ([`Slot::unlisted`];
    /// `None` for any other read and for a manifest): the object as read (key, size,
    /// ETag, time), `Some(None)` when the read gave none.
    seen: Option<Option<ObjectInfo>>,
}

enum Outcome {
    Status(StatusOutcome),
    Manifest(ManifestOutcome),
}

/// Reads every job's object and records its outcome in its slot.
pub(super) async fn fetch(
    bucket: &Bucket,
    trusted: &Arc<TrustedKeys>,
    concurrency: usize,
    jobs: Vec<Job>,
    slots: &mut [Slot],
) -> Fetched {
    let mut counts = Fetched::default();
    let local = matches!(bucket.url(), BucketUrl::File { .. });
    let (per_batch, manifests_per_batch) = if local {
        (FETCH_BATCH, FETCH_BATCH_MANIFESTS)
    } else {
        (FETCH_BATCH_REMOTE, FETCH_BATCH_REMOTE)
    };
    let batches = batches(jobs, [per_batch, manifests_per_batch], &mut counts);
    let mut in_flight = concurrency.div_ceil(per_batch).max(2);
    if local {
        // A `file://` batch is a blocking read and then parsing and verifying on a
        // runtime thread: two per core keep every core busy while the other half
        // reads (at 100,000 hosts, 3.9 s instead of 4.6-5.4 s with two in flight).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        in_flight = in_flight.max(2 * cores);
    }
    let mut fetched = futures::stream::iter(batches)
        .map(|batch| {
            let (bucket, trusted) = (bucket.clone(), trusted.clone());
            tokio::spawn(async move { fetch_batch(&bucket, &trusted, batch).await })
        })
        .buffer_unordered(in_flight);
    while let Some(batch) = fetched.next().await {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                // A panicking parse would be a bug; keep the rest of the fleet.
                tracing::error!("a fetch task failed: {e}");
                counts.read_errors += 1;
                continue;
            }
        };
        for done in batch {
            counts.read_errors += usize::from(done.read_error);
            counts.same_manifest_bytes += usize::from(done.same_bytes);
            if let Some(slot) = slots.get_mut(done.slot) {
                if slot.unlisted
                    && let Some(seen) = done.seen
                {
                    // Not listed: what the read saw replaces the placeholder; no object
                    // (only events in the folder) leaves the host without a status; a
                    // failed read keeps it, with its flag.
                    match seen {
                        Some(info) => slot.status = Some(info),
                        None if done.outcome.is_none() => slot.status = None,
                        None => {}
                    }
                }
                record(slot, done.etag, done.outcome);
            }
        }
    }
    counts
}

/// Cuts the jobs into batches of one kind, alternating the kinds so reading
/// statuses overlaps verifying manifests: `per_batch` is the size of a status batch
/// and of a manifest batch, and each manifest batch follows as many status batches
/// as hold about as many objects.
fn batches(jobs: Vec<Job>, per_batch: [usize; 2], counts: &mut Fetched) -> Vec<Vec<Job>> {
    let mut batches: Vec<Vec<Job>> = Vec::new();
    let (status_jobs, manifest_jobs): (Vec<Job>, Vec<Job>) =
        jobs.into_iter().partition(|j| matches!(j, Job::Status(..)));
    counts.status = status_jobs.len();
    counts.manifests = manifest_jobs.len();
    let [per_status, per_manifest] = per_batch.map(|n| n.max(1));
    let status_rounds = per_manifest.div_ceil(per_status);
    let mut status_jobs = status_jobs.into_iter().peekable();
    let mut manifest_jobs = manifest_jobs.into_iter().peekable();
    let mut take = |it: &mut std::iter::Peekable<std::vec::IntoIter<Job>>, n: usize| {
        let batch: Vec<Job> = it.by_ref().take(n).collect();
        if !batch.is_empty() {
            batches.push(batch);
        }
    };
    while status_jobs.peek().is_some() || manifest_jobs.peek().is_some() {
        for _ in 0..status_rounds {
            take(&mut status_jobs, per_status);
        }
        take(&mut manifest_jobs, per_manifest);
    }
    batches
}

/// Records a fetched outcome in its slot, and in the snapshot entry when it has an
/// ETag to be cached under.
fn record(slot: &mut Slot, etag: Option<String>, outcome: Option<Outcome>) {
    match outcome {
        None => {}
        Some(Outcome::Status(o)) => keep(etag, o, &mut slot.entry.status, &mut slot.status_now),
        Some(Outcome::Manifest(o)) => {
            keep(etag, o, &mut slot.entry.manifest, &mut slot.manifest_now)
        }
    }
}

/// Holds `outcome` for this refresh, and caches it under `etag` when there is one.
fn keep<T: Clone>(
    etag: Option<String>,
    outcome: T,
    cached: &mut Option<Cached<T>>,
    now: &mut Option<T>,
) {
    if let Some(etag) = etag {
        *cached = Some(Cached {
            etag,
            modified: None,
            outcome: outcome.clone(),
        });
    }
    *now = Some(outcome);
}

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
    let mut out = Vec::with_capacity(batch.len());
    let mut manifests = Vec::new();
    for ((job, read), key) in batch.into_iter().zip(got).zip(keys) {
        out.push(match job {
            Job::Status(slot, host, etag) => {
                // Only a slot that was not listed (its placeholder has no ETag) takes
                // what the read saw; a listed one has it from the listing.
                let seen = match (&etag, &read) {
                    (Some(_), _) => None,
                    (None, Ok(obj)) => Some(Some(ObjectInfo {
                        key: key.as_str().to_owned(),
                        size: obj.bytes.len() as u64,
                        etag: obj.etag.clone(),
                        last_modified: obj.last_modified,
                    })),
                    (None, Err(BucketError::NotFound { .. })) => Some(None),
                    // Refused unread or not readable: its time (the host's "last
                    // seen") from a HEAD, which on `file://` needs no read permission.
                    // Where that fails too, the slot keeps its placeholder.
                    (None, Err(_)) => Some(bucket.head(&key).await.ok().flatten()),
                };
                let mut done = status_done(slot, host, etag, read);
                done.seen = seen;
                done
            }
            Job::Manifest(slot, host, etag, before) => {
                manifests.push((slot, host, etag, before, read));
                continue;
            }
        });
    }
    out.extend(manifests_done(trusted, manifests));
    out
}

/// A manifest read, waiting for its verification: the slot, host, listed ETag,
/// what was verified before, and the read.
type ManifestRead = (
    usize,
    HostName,
    Option<String>,
    Option<Arc<ManifestInfo>>,
    Result<Object, BucketError>,
);

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
        seen: None,
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

/// The outcomes of a batch of manifest reads. The manifests to verify are verified
/// together ([`Manifest::verify_many`]: one ed25519 batch for the lot).
fn manifests_done(trusted: &TrustedKeys, reads: Vec<ManifestRead>) -> Vec<Done> {
    let done = |slot, etag, outcome: Option<ManifestOutcome>, read_error, same_bytes| Done {
        slot,
        etag,
        outcome: outcome.map(Outcome::Manifest),
        read_error,
        same_bytes,
        seen: None,
    };
    let flag = |host: &HostName, e: &dyn std::fmt::Display| {
        ManifestOutcome::Flagged(cut(format!("{}: {e}", Key::manifest(host))))
    };
    let mut out = Vec::with_capacity(reads.len());
    // Read and not verified before: (slot, host, ETag, object, what was seen before).
    let mut to_verify = Vec::new();
    for (slot, host, list_etag, before, read) in reads {
        match read {
            Ok(obj) => {
                let etag = obj.etag.clone().or(list_etag);
                // The same bytes as verified before (a rewrite that changed only the
                // ETag) verify the same way with the same keys: keep that outcome.
                if let Some(b) = &before
                    && Sha256Hash::of(&obj.bytes) == b.digest
                {
                    let outcome = ManifestOutcome::Verified(b.clone());
                    out.push(done(slot, etag, Some(outcome), false, true));
                    continue;
                }
                let seen = before.map(|b| SeenManifest {
                    sequence: b.sequence,
                    digest: b.digest.to_hex(),
                });
                to_verify.push((slot, host, etag, obj, seen));
            }
            // Cached under the ETag of what was read (see `status_done`).
            Err(e @ BucketError::TooLarge { .. }) => {
                let outcome = flag(&host, &e);
                out.push(done(slot, too_large_etag(&e), Some(outcome), false, false));
            }
            Err(BucketError::NotFound { .. }) => out.push(done(slot, None, None, false, false)),
            Err(e) => {
                tracing::warn!("{e}");
                let outcome = flag(&host, &format!("cannot read: {e}"));
                out.push(done(slot, None, Some(outcome), true, false));
            }
        }
    }
    // Expiry is checked at classification time against the clock of that refresh,
    // so a cached outcome expires when the manifest does.
    let items: Vec<(&[u8], VerifyPolicy<'_>)> = to_verify
        .iter()
        .map(|(_, host, _, obj, seen)| {
            let policy = VerifyPolicy {
                trusted,
                host,
                highest_seen: seen.as_ref(),
                now: None,
            };
            (obj.bytes.as_ref(), policy)
        })
        .collect();
    let verified = Manifest::verify_many(&items);
    drop(items);
    // One name per key for the batch, not one per manifest.
    let mut names: Vec<Arc<str>> = Vec::new();
    let mut name_of = |signed_by: String| {
        if let Some(n) = names.iter().find(|n| ***n == *signed_by) {
            return n.clone();
        }
        let n: Arc<str> = signed_by.into();
        names.push(n.clone());
        n
    };
    for ((slot, host, etag, obj, _), v) in to_verify.into_iter().zip(verified) {
        let outcome = match v {
            Ok(v) => ManifestOutcome::Verified(Arc::new(ManifestInfo {
                sequence: v.manifest.sequence,
                closure: v.manifest.closure,
                issued_at: v.manifest.issued_at,
                expires_at: v.manifest.expires_at,
                activation: v.manifest.activation,
                signed_by: name_of(v.signed_by),
                // Core gives the digest in hex; it is always 64 digits.
                digest: Sha256Hash::from_hex(&v.digest)
                    .unwrap_or_else(|| Sha256Hash::of(&obj.bytes)),
            })),
            Err(e) => flag(&host, &e),
        };
        out.push(done(slot, etag, Some(outcome), false, false));
    }
    out
}

/// The ETag an oversized object was refused under (not the listing's, which may be
/// of an earlier version of it).
fn too_large_etag(e: &BucketError) -> Option<String> {
    match e {
        BucketError::TooLarge { etag, .. } => etag.clone(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(i: usize) -> HostName {
        HostName::new(&format!("web-{i}")).unwrap()
    }

    /// Slots of each batch, and whether it holds statuses.
    fn shape(batches: &[Vec<Job>]) -> Vec<(bool, Vec<usize>)> {
        batches
            .iter()
            .map(|b| {
                let status = matches!(b[0], Job::Status(..));
                let slots = b
                    .iter()
                    .map(|j| match j {
                        Job::Status(s, ..) if status => *s,
                        Job::Manifest(s, ..) if !status => *s,
                        _ => panic!("a batch mixes statuses and manifests"),
                    })
                    .collect();
                (status, slots)
            })
            .collect()
    }

    #[test]
    fn batches_hold_one_kind_and_a_manifest_batch_follows_as_many_statuses() {
        // 300 statuses (slots 0..300) and 300 manifests (slots 1000..1300), mixed.
        let mut jobs = Vec::new();
        for i in 0..300 {
            jobs.push(Job::Status(i, host(i), None));
            jobs.push(Job::Manifest(1000 + i, host(i), None, None));
        }
        let mut counts = Fetched::default();
        let got = shape(&batches(jobs, [32, 128], &mut counts));
        assert_eq!((counts.status, counts.manifests), (300, 300));
        let sizes: Vec<(bool, usize)> = got.iter().map(|(s, v)| (*s, v.len())).collect();
        let (s, m) = (true, false);
        assert_eq!(
            sizes,
            [
                (s, 32),
                (s, 32),
                (s, 32),
                (s, 32),
                (m, 128),
                (s, 32),
                (s, 32),
                (s, 32),
                (s, 32),
                (m, 128),
                (s, 32),
                (s, 12),
                (m, 44),
            ]
        );
        // Every job once, in order within its kind.
        let statuses: Vec<usize> = got
            .iter()
            .filter(|b| b.0)
            .flat_map(|b| b.1.clone())
            .collect();
        let manifests: Vec<usize> = got
            .iter()
            .filter(|b| !b.0)
            .flat_map(|b| b.1.clone())
            .collect();
        assert_eq!(statuses, (0..300).collect::<Vec<_>>());
        assert_eq!(manifests, (1000..1300).collect::<Vec<_>>());
        // Equal sizes alternate one for one; none of a kind leaves no empty batch.
        let only_status: Vec<Job> = (0..5).map(|i| Job::Status(i, host(i), None)).collect();
        let got = shape(&batches(only_status, [4, 4], &mut Fetched::default()));
        assert_eq!(got, [(true, vec![0, 1, 2, 3]), (true, vec![4])]);
    }
}
