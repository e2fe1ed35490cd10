//! The stored snapshot around a refresh: `dashboard/snapshot.json` and its delta
//! `dashboard/snapshot-delta.json` are read when the process holds no
//! [`Snapshot`] yet (a fresh Lambda container), and what changed is written back
//! with compare-and-swap (losing to another reporter is fine: its answer is as
//! right).
//!
//! Writing the whole snapshot is O(fleet); a refresh that changed a few hosts
//! writes only the delta: the entries of every host changed since the stored
//! snapshot was written, under that snapshot's id. When those hosts pass one in
//! [`DELTA_SHARE`] of the fleet, the whole snapshot is written again (with a new id,
//! so an older delta no longer applies) and the delta starts over. A reader applies
//! the delta only to the snapshot whose id it names; any other delta is ignored, and
//! the snapshot alone is still right, only older (the change feed is read from its
//! time).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use fleet_core::Key;
use fleet_core::bucket::BucketError;
use jiff::Timestamp;

use crate::fleet::{self, Fleet};
use crate::snapshot::{MAX_SNAPSHOT_SIZE, Snapshot, new_id};
use crate::{Reporter, SnapshotTag, State};

/// The whole snapshot is written again once the hosts changed since it was written
/// pass one in this many of the fleet (the delta is rewritten whole on each write,
/// so this bounds it to an eighth of the snapshot).
pub const DELTA_SHARE: usize = 8;

impl Reporter {
    /// Refreshes from the held snapshot (read from the bucket first if there is
    /// none), then writes what changed back.
    pub(crate) async fn refresh_locked(&self, st: &mut State) -> Result<Arc<Fleet>, BucketError> {
        let started = Instant::now();
        let source = self.load_snapshot(st).await;
        let snapshot_read_ms = started.elapsed().as_millis() as u64;
        let now = Timestamp::now();
        let params = self.params_now().await;
        let r = fleet::refresh(&self.bucket, &params, &mut st.memory, now).await?;
        let mut fleet = r.fleet;
        fleet.stats.previous = source;
        fleet.stats.snapshot_read_ms = snapshot_read_ms;
        st.changed.extend(r.changed_hosts);
        let write_started = Instant::now();
        fleet.stats.snapshot_write = if !self.opts.write_snapshot {
            "disabled".into()
        } else if !r.changed {
            "unchanged".into()
        } else {
            self.write_snapshot(st).await
        };
        fleet.stats.snapshot_write_ms = write_started.elapsed().as_millis() as u64;
        fleet.stats.duration_ms = started.elapsed().as_millis() as u64;
        let fleet = Arc::new(fleet);
        st.fleet = Some((fleet.clone(), Instant::now()));
        Ok(fleet)
    }

    /// Reads the stored snapshot and its delta unless a snapshot is held; says where
    /// the snapshot the refresh starts from came from (`memory`, `bucket`, `none`). A
    /// snapshot that cannot be read or decoded is ignored: the refresh is cold. A
    /// delta that cannot be read, decoded or applied is ignored.
    async fn load_snapshot(&self, st: &mut State) -> &'static str {
        if st.memory.snapshot.is_some() {
            return "memory";
        }
        let (key, delta_key) = (Key::dashboard_snapshot(), Key::dashboard_snapshot_delta());
        let (base, delta) = tokio::join!(
            self.bucket.get(&key, MAX_SNAPSHOT_SIZE),
            self.bucket.get(&delta_key, MAX_SNAPSHOT_SIZE),
        );
        st.delta_tag = match &delta {
            Ok(obj) => tag_of(obj.etag.clone()),
            Err(BucketError::NotFound { .. }) => SnapshotTag::Absent,
            Err(_) => SnapshotTag::Unknown,
        };
        let base = match base {
            Ok(obj) => obj,
            Err(BucketError::NotFound { .. }) => {
                st.tag = SnapshotTag::Absent;
                return "none";
            }
            Err(e) => {
                tracing::warn!("cannot read the stored snapshot, refreshing cold: {e}");
                return "none";
            }
        };
        st.tag = tag_of(base.etag.clone());
        let delta = match delta {
            Ok(obj) => Some(obj.bytes),
            Err(BucketError::NotFound { .. }) => None,
            Err(e) => {
                tracing::warn!("cannot read the stored snapshot's delta, ignoring it: {e}");
                None
            }
        };
        // Decoding is CPU work on every core: off the async threads.
        let parsed = tokio::task::spawn_blocking(move || {
            let mut s = Snapshot::parse(&base.bytes, Key::dashboard_snapshot().as_str())?;
            let id = s.id.clone();
            let changed =
                match delta.map(|d| s.apply_delta(&d, Key::dashboard_snapshot_delta().as_str())) {
                    Some(Ok(changed)) => changed,
                    Some(Err(e)) => {
                        tracing::warn!("ignoring the stored snapshot's delta: {e}");
                        Default::default()
                    }
                    None => Default::default(),
                };
            Ok::<_, String>((s, id, changed))
        })
        .await
        .unwrap_or_else(|e| Err(format!("decoding the snapshot failed: {e}")));
        match parsed {
            Ok((s, id, changed)) => {
                st.memory.snapshot = Some(Arc::new(s));
                st.stored_id = Some(id);
                st.changed = changed;
                "bucket"
            }
            Err(e) => {
                tracing::warn!("ignoring the stored snapshot: {e}");
                "none"
            }
        }
    }

    /// Writes the delta, or the whole snapshot when no delta applies; says what
    /// happened (`delta`, `written`, `conflict`, `denied`, `error`).
    async fn write_snapshot(&self, st: &mut State) -> String {
        let Some(held) = st.memory.snapshot.as_mut() else {
            return "error".into();
        };
        let mut delta = st.stored_id.as_deref() == Some(held.id.as_str())
            && matches!(st.tag, SnapshotTag::Etag(_))
            && st.changed.len().saturating_mul(DELTA_SHARE) <= held.hosts.len();
        if delta {
            // A delta is only worth writing while the stored snapshot is the one it
            // applies to: another reporter may have replaced it.
            let stored = self.bucket.head(&Key::dashboard_snapshot()).await;
            let etag = stored
                .as_ref()
                .ok()
                .and_then(|i| i.as_ref()?.etag.as_deref());
            if !matches!(&st.tag, SnapshotTag::Etag(e) if Some(e.as_str()) == etag) {
                delta = false;
                st.tag = match stored {
                    Ok(Some(info)) => tag_of(info.etag),
                    Ok(None) => SnapshotTag::Absent,
                    Err(_) => SnapshotTag::Unknown,
                };
            }
        }
        if delta {
            let (s, changed) = (held.clone(), st.changed.clone());
            let encoded = tokio::task::spawn_blocking(move || s.delta_bytes(&changed)).await;
            let key = Key::dashboard_snapshot_delta();
            let done = match encoded {
                Ok(b) => self.swap(&key, &mut st.delta_tag, Bytes::from(b)).await,
                Err(e) => {
                    tracing::error!("encoding the snapshot's delta failed: {e}");
                    "error"
                }
            };
            if done == "written" {
                return "delta".into();
            }
            // Another reporter is writing too: the stored snapshot may not be the one
            // this delta applies to any more. The next write is whole.
            st.stored_id = None;
            return done.into();
        }
        // A new id: deltas of the snapshot stored before do not apply to this one.
        let id = new_id();
        Arc::make_mut(held).id = id.clone();
        let s = held.clone();
        let key = Key::dashboard_snapshot();
        let done = match tokio::task::spawn_blocking(move || s.to_bytes()).await {
            Ok(b) => self.swap(&key, &mut st.tag, Bytes::from(b)).await,
            Err(e) => {
                tracing::error!("encoding the snapshot failed: {e}");
                "error"
            }
        };
        if done == "written" {
            st.stored_id = Some(id);
            st.changed.clear();
        } else {
            st.stored_id = None;
        }
        done.into()
    }

    /// Puts `bytes` at `key` with compare-and-swap on what `tag` knows of it (asking
    /// first when nothing is known); says what happened (`written`, `conflict`,
    /// `denied`, `error`) and keeps `tag` up to date.
    async fn swap(&self, key: &Key, tag: &mut SnapshotTag, bytes: Bytes) -> &'static str {
        if matches!(tag, SnapshotTag::Unknown) {
            *tag = match self.bucket.head(key).await {
                Ok(Some(info)) => tag_of(info.etag),
                Ok(None) => SnapshotTag::Absent,
                Err(e) => {
                    tracing::warn!("not writing {key}: {e}");
                    let denied = matches!(e, BucketError::AccessDenied { .. });
                    return if denied { "denied" } else { "error" };
                }
            };
        }
        let res = match &*tag {
            SnapshotTag::Etag(e) => self.bucket.put_if_match(key, bytes, e).await,
            SnapshotTag::Absent => self.bucket.put_if_absent(key, bytes).await,
            SnapshotTag::Unknown => {
                tracing::warn!("not writing {key}: the store gives it no ETag to swap on");
                return "error";
            }
        };
        match res {
            Ok(etag) => {
                *tag = tag_of(etag);
                "written"
            }
            Err(BucketError::Conflict { .. } | BucketError::AlreadyExists { .. }) => {
                // Another reporter wrote it first; this answer is still right.
                *tag = SnapshotTag::Unknown;
                "conflict"
            }
            Err(e @ BucketError::AccessDenied { .. }) => {
                tracing::warn!("{e}");
                "denied"
            }
            Err(e) => {
                tracing::warn!("writing {key} failed: {e}");
                *tag = SnapshotTag::Unknown;
                "error"
            }
        }
    }
}

fn tag_of(etag: Option<String>) -> SnapshotTag {
    etag.map(SnapshotTag::Etag).unwrap_or(SnapshotTag::Unknown)
}
