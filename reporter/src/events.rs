//! A host's newest events (`status/<host>/events/<name>.json`), read for
//! `/api/v1/hosts/<host>`: listed, newest first by the store's clock, and each read
//! and parsed like a status object (a bad one becomes a flagged event, never an
//! error of the page). Each event's signature is checked against the host's
//! registry entry like its status (`signature`: `verified`, `unverified` for a host
//! not enrolled, `invalid` for an unsigned or mis-signed event of an enrolled host).

use std::sync::Arc;

use fleet_core::bucket::BucketError;
use fleet_core::layout::ObjectName;
use fleet_core::status::MAX_STATUS_SIZE;
use fleet_core::{HostName, Key, KeyPrefix, StatusReport};
use futures::StreamExt;

use crate::fleet::check_event;
use crate::outcome::{StatusOutcome, StatusSignatureView, cut};
use crate::{Reporter, api};

impl Reporter {
    /// The newest events of `host`, newest first (at most `events`).
    pub async fn events(&self, host: &HostName) -> Result<Vec<api::Event>, BucketError> {
        if self.opts.events == 0 {
            return Ok(vec![]);
        }
        let prefix = KeyPrefix::status_events(host);
        let mut listed = self.bucket.list(&prefix).await?;
        // Newest by the store's clock; the key breaks ties.
        listed.sort_by(|a, b| {
            b.last_modified
                .cmp(&a.last_modified)
                .then_with(|| b.key.cmp(&a.key))
        });
        listed.truncate(self.opts.events);
        let prefix = &prefix;
        let enrollment = &self.params.registry.enrollment(host);
        let reads = listed.into_iter().map(|info| async move {
            let mut signature = StatusSignatureView::Unverified;
            let name = info
                .key
                .strip_prefix(prefix.as_str())
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| ObjectName::new(n).ok());
            let outcome = match name {
                None => StatusOutcome::Flagged(
                    "not an event object name (status/<host>/events/<name>.json)".into(),
                ),
                Some(_) if info.size > MAX_STATUS_SIZE => StatusOutcome::Flagged(format!(
                    "event is {} bytes, larger than the {MAX_STATUS_SIZE}-byte bound",
                    info.size
                )),
                Some(n) => {
                    let key = Key::status_event(host, &n);
                    match self.bucket.get(&key, MAX_STATUS_SIZE).await {
                        Ok(o) => match StatusReport::parse(&o.bytes, key.as_str(), host) {
                            Ok(r) => {
                                signature = check_event(key.as_str(), &r, enrollment.as_ref());
                                StatusOutcome::Report(Arc::new(r))
                            }
                            Err(e) => StatusOutcome::Flagged(cut(e.to_string())),
                        },
                        Err(e) => StatusOutcome::Flagged(cut(e.to_string())),
                    }
                }
            };
            api::Event {
                key: info.key,
                last_modified: info.last_modified,
                outcome,
                signature,
            }
        });
        Ok(futures::stream::iter(reads)
            .buffered(self.opts.concurrency.clamp(1, 32))
            .collect()
            .await)
    }
}
