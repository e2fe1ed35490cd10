//! Step 5 of a refresh: the holds. Each `hosts/<host>/hold.json` the listing found
//! is read and verified with the trusted publisher keys (`fleet_core::hold`); a hold
//! in force goes on its host's row, with its reason. A hold that does not verify
//! flags the row (someone without the publisher key wrote it); without trusted
//! keys a hold object cannot be opened, and the host is shown held with no reason. Holds are few and small, so they are read on
//! every refresh and not kept in the snapshot.

use std::sync::Arc;

use fleet_core::bucket::ObjectInfo;
use fleet_core::hold::{Hold, HoldError, MAX_HOLD_SIZE};
use fleet_core::{Bucket, HostName, Key, TrustedKeys};

use crate::outcome::{HoldInfo, HostRow, HostState, cut};

/// Reads the listed holds and puts them on `rows` (sorted by host).
pub(super) async fn attach(
    bucket: &Bucket,
    trusted: &TrustedKeys,
    holds: Vec<(HostName, ObjectInfo)>,
    rows: &mut [Arc<HostRow>],
) {
    let keys: Vec<Key> = holds.iter().map(|(h, _)| Key::hold(h)).collect();
    for ((host, listed), got) in holds
        .iter()
        .zip(bucket.get_many(&keys, MAX_HOLD_SIZE).await)
    {
        let Ok(i) = rows.binary_search_by(|r| r.host.cmp(host)) else {
            continue;
        };
        // Copied on write: the row kept for the next refresh stays without its hold.
        let row = Arc::make_mut(&mut rows[i]);
        let bytes = match got {
            Ok(o) => o.bytes,
            // Released and deleted between the listing and the read: no hold.
            Err(fleet_core::BucketError::NotFound { .. }) => continue,
            Err(e) => {
                row.notes
                    .push(cut(format!("the hold of {host} could not be read: {e}")));
                continue;
            }
        };
        match read(&bytes, host, trusted, listed) {
            Ok(Some(hold)) => {
                row.notes.push(cut(format!(
                    "held (`fleet-publish hold`): {}; deploy, rollout and rollback skip it until `fleet-publish unhold {host}`",
                    hold.reason
                )));
                row.hold = Some(hold);
            }
            Ok(None) => {}
            Err(e) => {
                row.flags.push(cut(format!("{}: {e}", Key::hold(host))));
                row.state = HostState::Flagged;
            }
        }
    }
}

/// The hold in force in `bytes`, if any, verified with `trusted`; without trusted
/// keys, a hold of unknown reason (it may also be a release: shown as held).
fn read(
    bytes: &[u8],
    host: &HostName,
    trusted: &TrustedKeys,
    listed: &ObjectInfo,
) -> Result<Option<HoldInfo>, HoldError> {
    if trusted.is_empty() {
        return Ok(Some(HoldInfo {
            reason: "(not verified: no trusted publisher key configured)".into(),
            since: listed.last_modified,
            signed_by: None,
        }));
    }
    let v = Hold::verify(bytes, host, trusted)?;
    Ok(v.hold.held.then_some(HoldInfo {
        reason: v.hold.reason,
        since: v.hold.time,
        signed_by: Some(v.signed_by),
    }))
}
