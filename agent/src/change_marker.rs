//! The change-feed marker: after each `status.json` write the agent also writes an
//! empty `changes/<day>/<time>/<host>` ([`fleet_core::Key::change_marker`]), so a
//! reporter can learn which hosts wrote since its last refresh from one short listing
//! instead of listing the whole fleet.
//!
//! The marker is only a hint (the reporter reads the status itself and trusts nothing
//! in the marker), so a marker that cannot be written is logged and otherwise
//! ignored: the status write it follows has succeeded, and the reporter's periodic
//! full listing sees the host anyway.

use fleet_core::{Bucket, HostName, Key};
use jiff::Timestamp;

/// Writes `host`'s marker for a status written at `now` (the agent's clock).
pub async fn write(bucket: &Bucket, host: &HostName, now: Timestamp) {
    let key = Key::change_marker(now, host);
    match bucket.put(&key, Vec::new()).await {
        Ok(_) => tracing::debug!(%key, "wrote change marker"),
        Err(e) => tracing::warn!(
            "could not write the change marker {key} (the reporter sees this status at its next full listing): {e}"
        ),
    }
}
