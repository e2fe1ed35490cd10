//! The signed host registry as the reporter sees it, and the status signature check
//! it makes possible.
//!
//! Each refresh lists `registry/hosts/` and reads the entries whose ETag changed since
//! the last refresh of this process (an in-memory cache: a cold process reads them
//! all once); each is verified with the trusted publisher (admin) keys
//! ([`fleet_core::registry::HostEntry::verify`]). Then every host's status report is
//! checked against its entry ([`fleet_core::status_sig::verify`], one ed25519
//! verification per enrolled host per refresh):
//!
//! | registry | status | shown as |
//! |---|---|---|
//! | no entry (set-up without enrollment) | any | `unverified`, not an error |
//! | entry verifies | signed by its identity key | `verified` |
//! | entry verifies | unsigned, or signed otherwise | `invalid`, host flagged |
//! | entry does not verify | any | `invalid`, host flagged |
//!
//! Events (`status/<host>/events/`) are checked the same way when a host's page is
//! read ([`check_event`]), against the entry the last refresh read.
//!
//! Without trusted keys nothing can be verified, so every host is `unverified`. A
//! registry the reporter may not list (an IAM policy from before enrollment) is
//! logged and treated as empty.

use std::collections::BTreeMap;
use std::sync::Mutex;

use fleet_core::bucket::BucketError;
use fleet_core::registry::{HostEntry, MAX_HOST_ENTRY_SIZE};
use fleet_core::{Bucket, HostName, Key, KeyPrefix, PublicKey, StatusReport, TrustedKeys};

use crate::outcome::{HostRow, HostState, StatusSignatureView, cut};

/// What the registry says of one host.
#[derive(Clone, Debug, PartialEq)]
pub enum Enrollment {
    /// Enrolled with this identity key.
    Key(PublicKey),
    /// Its entry does not verify; why.
    Invalid(String),
}

/// Entries read before, by host, with the ETag they were read under.
#[derive(Debug, Default)]
pub struct RegistryCache(Mutex<BTreeMap<HostName, (String, Enrollment)>>);

impl RegistryCache {
    /// What the last refresh read of `host`'s registry entry (`None`: not enrolled,
    /// or no refresh verified the registry yet).
    pub fn enrollment(&self, host: &HostName) -> Option<Enrollment> {
        let known = self.0.lock().expect("registry cache lock");
        known.get(host).map(|(_, e)| e.clone())
    }
}

/// Checks an event of `host` (`key`) against its enrollment, as [`check`] does the
/// status: unsigned or mis-signed events of an enrolled host are `invalid`.
pub fn check_event(
    key: &str,
    report: &StatusReport,
    enrollment: Option<&Enrollment>,
) -> StatusSignatureView {
    match enrollment {
        None => StatusSignatureView::Unverified,
        Some(Enrollment::Invalid(why)) => StatusSignatureView::Invalid(why.clone()),
        Some(Enrollment::Key(k)) => match fleet_core::status_sig::verify(report, k) {
            Ok(()) => StatusSignatureView::Verified(k.name().to_owned()),
            Err(e) => StatusSignatureView::Invalid(cut(format!("{key}: {e}"))),
        },
    }
}

/// The registry: every listed host's enrollment.
pub(super) async fn load(
    bucket: &Bucket,
    trusted: &TrustedKeys,
    cache: &RegistryCache,
) -> Result<BTreeMap<HostName, Enrollment>, BucketError> {
    let listed = match bucket.list(&KeyPrefix::registry_hosts()).await {
        Ok(l) => l,
        Err(e @ BucketError::AccessDenied { .. }) => {
            tracing::warn!(
                "cannot list the host registry, so status signatures are not checked (give the reporter read access to registry/): {e}"
            );
            return Ok(BTreeMap::new());
        }
        Err(e) => return Err(e),
    };
    let mut out = BTreeMap::new();
    let mut to_read = Vec::new();
    {
        let known = cache.0.lock().expect("registry cache lock");
        for info in listed {
            let Some(host) = Key::registry_host_of(&info.key) else {
                continue;
            };
            match (&info.etag, known.get(&host)) {
                (Some(etag), Some((was, e))) if etag == was => {
                    out.insert(host, e.clone());
                }
                _ => to_read.push(host),
            }
        }
    }
    let keys: Vec<Key> = to_read.iter().map(Key::registry_host).collect();
    let read = bucket.get_many(&keys, MAX_HOST_ENTRY_SIZE).await;
    let mut known = cache.0.lock().expect("registry cache lock");
    for (host, got) in to_read.into_iter().zip(read) {
        let (etag, enrollment) = match got {
            Ok(obj) => (
                obj.etag,
                match HostEntry::verify(&obj.bytes, &host, trusted) {
                    Ok(v) => Enrollment::Key(v.entry.identity_key),
                    Err(e) => {
                        Enrollment::Invalid(cut(format!("{}: {e}", Key::registry_host(&host))))
                    }
                },
            ),
            Err(BucketError::NotFound { .. }) => continue,
            Err(e) => (
                None,
                Enrollment::Invalid(cut(format!("cannot read the registry entry: {e}"))),
            ),
        };
        if let Some(etag) = etag {
            known.insert(host.clone(), (etag, enrollment.clone()));
        }
        out.insert(host, enrollment);
    }
    known.retain(|h, _| out.contains_key(h));
    Ok(out)
}

/// Checks `row`'s status against its enrollment and flags the row when the status is
/// not its host's word.
pub(super) fn check(row: &mut HostRow, enrollment: Option<&Enrollment>) {
    let report: Option<&StatusReport> = row.report.as_deref();
    row.status_signature = match (enrollment, report) {
        (None, _) => StatusSignatureView::Unverified,
        (Some(Enrollment::Invalid(why)), _) => StatusSignatureView::Invalid(why.clone()),
        (Some(Enrollment::Key(_)), None) => StatusSignatureView::Unverified,
        (Some(Enrollment::Key(k)), Some(r)) => match fleet_core::status_sig::verify(r, k) {
            Ok(()) => StatusSignatureView::Verified(k.name().to_owned()),
            Err(e) => {
                StatusSignatureView::Invalid(cut(format!("status/{}/status.json: {e}", row.host)))
            }
        },
    };
    if let StatusSignatureView::Invalid(why) = &row.status_signature {
        row.flags.push(why.clone());
        row.state = HostState::Flagged;
    }
}
