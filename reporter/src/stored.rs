//! The stored snapshot around a refresh: `dashboard/snapshot.json` is read when the
//! process holds no [`Snapshot`] yet (a fresh Lambda container), and the new one is
//! written back with compare-and-swap when it changed (losing to another reporter is
//! fine: its answer is as right).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use fleet_core::Key;
use fleet_core::bucket::BucketError;
use jiff::Timestamp;

use crate::fleet::{self, Fleet};
use crate::snapshot::{MAX_SNAPSHOT_SIZE, Snapshot};
use crate::{Reporter, SnapshotTag, State};

impl Reporter {
    /// Refreshes from the held snapshot (read from the bucket first if there is
    /// none), then writes the new snapshot back when it changed.
    pub(crate) async fn refresh_locked(&self, st: &mut State) -> Result<Arc<Fleet>, BucketError> {
        let started = Instant::now();
        let source = self.load_snapshot(st).await;
        let snapshot_read_ms = started.elapsed().as_millis() as u64;
        let now = Timestamp::now();
        let params = self.params_now().await;
        let r = fleet::refresh(&self.bucket, &params, st.snapshot.as_deref(), now).await?;
        let mut fleet = r.fleet;
        fleet.stats.previous = source;
        fleet.stats.snapshot_read_ms = snapshot_read_ms;
        let snapshot = Arc::new(r.snapshot);
        let write_started = Instant::now();
        fleet.stats.snapshot_write = if !self.opts.write_snapshot {
            "disabled".into()
        } else if !r.changed {
            "unchanged".into()
        } else {
            self.write_snapshot(st, &snapshot).await
        };
        fleet.stats.snapshot_write_ms = write_started.elapsed().as_millis() as u64;
        fleet.stats.duration_ms = started.elapsed().as_millis() as u64;
        st.snapshot = Some(snapshot);
        let fleet = Arc::new(fleet);
        st.fleet = Some((fleet.clone(), Instant::now()));
        Ok(fleet)
    }

    /// Reads the stored snapshot unless one is held; says where the snapshot the
    /// refresh starts from came from (`memory`, `bucket`, `none`). A snapshot that
    /// cannot be read or decoded is ignored: the refresh is cold.
    async fn load_snapshot(&self, st: &mut State) -> &'static str {
        if st.snapshot.is_some() {
            return "memory";
        }
        let key = Key::dashboard_snapshot();
        match self.bucket.get(&key, MAX_SNAPSHOT_SIZE).await {
            Ok(obj) => {
                st.tag = obj
                    .etag
                    .clone()
                    .map(SnapshotTag::Etag)
                    .unwrap_or(SnapshotTag::Unknown);
                // Decoding is CPU work on every core: off the async threads.
                let parsed = tokio::task::spawn_blocking(move || {
                    Snapshot::parse(&obj.bytes, Key::dashboard_snapshot().as_str())
                })
                .await
                .unwrap_or_else(|e| Err(format!("decoding the snapshot failed: {e}")));
                match parsed {
                    Ok(s) => {
                        st.snapshot = Some(Arc::new(s));
                        return "bucket";
                    }
                    Err(e) => tracing::warn!("ignoring the stored snapshot: {e}"),
                }
            }
            Err(BucketError::NotFound { .. }) => st.tag = SnapshotTag::Absent,
            Err(e) => tracing::warn!("cannot read the stored snapshot, refreshing cold: {e}"),
        }
        "none"
    }

    /// Writes the snapshot with compare-and-swap; losing to another reporter is fine.
    async fn write_snapshot(&self, st: &mut State, snapshot: &Arc<Snapshot>) -> String {
        let key = Key::dashboard_snapshot();
        let s = snapshot.clone();
        let bytes = match tokio::task::spawn_blocking(move || Bytes::from(s.to_bytes())).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("encoding the snapshot failed: {e}");
                return "error".into();
            }
        };
        if matches!(st.tag, SnapshotTag::Unknown) {
            st.tag = match self.bucket.head(&key).await {
                Ok(Some(info)) => info
                    .etag
                    .map(SnapshotTag::Etag)
                    .unwrap_or(SnapshotTag::Unknown),
                Ok(None) => SnapshotTag::Absent,
                Err(e) => {
                    tracing::warn!("not writing the snapshot: {e}");
                    let denied = matches!(e, BucketError::AccessDenied { .. });
                    return if denied { "denied" } else { "error" }.into();
                }
            };
        }
        let res = match &st.tag {
            SnapshotTag::Etag(e) => self.bucket.put_if_match(&key, bytes, e).await,
            SnapshotTag::Absent => self.bucket.put_if_absent(&key, bytes).await,
            SnapshotTag::Unknown => {
                tracing::warn!("not writing the snapshot: the store gives it no ETag to swap on");
                return "error".into();
            }
        };
        match res {
            Ok(etag) => {
                st.tag = etag.map(SnapshotTag::Etag).unwrap_or(SnapshotTag::Unknown);
                "written".into()
            }
            Err(BucketError::Conflict { .. } | BucketError::AlreadyExists { .. }) => {
                // Another reporter wrote it first; this answer is still right.
                st.tag = SnapshotTag::Unknown;
                "conflict".into()
            }
            Err(e @ BucketError::AccessDenied { .. }) => {
                tracing::warn!("{e}");
                "denied".into()
            }
            Err(e) => {
                tracing::warn!("writing the snapshot failed: {e}");
                st.tag = SnapshotTag::Unknown;
                "error".into()
            }
        }
    }
}
