//! `/api/v1/rollouts`: the rollouts of the newest releases, read from
//! `releases/<id>/rollout.json` and `releases/<id>.json` ([`fleet_core::rollout`],
//! [`fleet_core::release`]), each verified with the trusted publisher keys.
//!
//! ```json
//! {"rollouts": [{"release": "2026-12-02-a", "phase": "halted",
//!   "halt_reason": "wave 2: …", "current_wave": 2, "waves_total": 3,
//!   "updated_at": "…", "signed_by": "publisher-1",
//!   "waves": [{"wave": 1, "stage": "completed", "counts": {"hosts": 2, "healthy": 2, …}}]}]}
//! ```
//!
//! A state or release that does not verify (or without trusted keys configured) is
//! listed with an `error` instead, never trusted. At most [`MAX_ROLLOUTS`] are
//! shown, the most recently updated first. Read on every request: a handful of
//! small objects, and a dashboard that lags a rollout would mislead.

use fleet_core::bucket::BucketError;
use fleet_core::release::{MAX_RELEASE_SIZE, Release};
use fleet_core::rollout::{MAX_ROLLOUT_SIZE, RolloutState};
use fleet_core::{Key, KeyPrefix, ObjectName};
use serde_json::{Value, json};

use crate::Reporter;
use crate::outcome::cut;

/// Rollouts shown.
pub const MAX_ROLLOUTS: usize = 20;

impl Reporter {
    /// The `/api/v1/rollouts` answer; see the module docs.
    pub async fn rollouts(&self) -> Result<Value, BucketError> {
        let mut listed: Vec<_> = self
            .bucket()
            .list(&KeyPrefix::releases())
            .await?
            .into_iter()
            .filter_map(|e| Some((Key::rollout_release(&e.key)?, e.last_modified)))
            .collect();
        listed.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        listed.truncate(MAX_ROLLOUTS);
        let mut out = Vec::with_capacity(listed.len());
        for (id, _) in listed {
            out.push(match self.rollout(&id).await {
                Ok(v) => v,
                Err(e) => json!({"release": id.as_str(), "error": cut(e)}),
            });
        }
        Ok(json!({ "rollouts": out }))
    }

    /// One rollout, verified.
    async fn rollout(&self, id: &ObjectName) -> Result<Value, String> {
        let trusted = &self.trusted_now().await;
        if trusted.keys().is_empty() {
            return Err("not verified (no trusted key configured)".into());
        }
        let read = |key: Key, limit| async move {
            self.bucket()
                .get(&key, limit)
                .await
                .map_err(|e| e.to_string())
        };
        let state = read(Key::rollout(id), MAX_ROLLOUT_SIZE).await?;
        let v =
            RolloutState::verify(&state.bytes, id.as_str(), trusted).map_err(|e| e.to_string())?;
        let release = read(Key::release(id), MAX_RELEASE_SIZE).await?;
        let release =
            Release::verify(&release.bytes, id.as_str(), trusted).map_err(|e| e.to_string())?;
        let s = &v.state;
        let waves: Vec<Value> = s
            .waves
            .iter()
            .zip(&release.release.plan.waves)
            .enumerate()
            .map(|(i, (w, p))| {
                json!({
                    "wave": i + 1,
                    "stage": w.stage(),
                    "select": p.select.to_string(),
                    "counts": w.counts(p.hosts.len()),
                })
            })
            .collect();
        Ok(json!({
            "release": s.release,
            "phase": s.phase,
            "halt_reason": s.halt_reason,
            "current_wave": s.current_wave().map(|w| w + 1),
            "waves_total": s.waves.len(),
            "updated_at": s.updated_at,
            "signed_by": v.signed_by,
            "waves": waves,
        }))
    }
}
