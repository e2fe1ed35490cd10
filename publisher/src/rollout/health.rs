//! What the hosts of the started waves are doing, from their status objects
//! (`status/<host>/status.json`, [`fleet_core::status`]), and whether the failure
//! budgets still hold.
//!
//! A host whose manifest the rollout wrote (sequence S, closure C) is:
//! - `healthy` once its status has accepted S or later (`desired.sequence ≥ S`), is
//!   `healthy` and runs C;
//! - `rolled-back`, `failed` once such a status says so (`refused` counts as failed,
//!   also when it refused S itself, reported after the wave started);
//! - `silent` when none of that happened within the plan's report deadline after
//!   its wave started;
//! - `pending` otherwise.
//!
//! Status objects are written by hosts and so untrusted: they are parsed with
//! bounds ([`StatusReport::parse`]); one that does not parse counts as no report.
//! A status that could not be read because the bucket failed (a transient error,
//! not a missing, refused or oversized object) leaves the host's outcome as it was.

use fleet_core::release::Release;
use fleet_core::rollout::{HostOutcome, RolloutState};
use fleet_core::status::{AgentState, MAX_STATUS_SIZE, StatusReport};
use fleet_core::{Bucket, HostName, Key, StorePath};
use jiff::{SignedDuration, Timestamp};

/// The outcome of one host from its status; see the module docs.
pub fn classify(
    status: Option<&StatusReport>,
    sequence: u64,
    closure: &StorePath,
    started_at: Timestamp,
    deadline: SignedDuration,
    now: Timestamp,
) -> HostOutcome {
    let outcome = match status {
        Some(s) if s.desired.as_ref().and_then(|d| d.sequence) >= Some(sequence) => match s.state {
            AgentState::Healthy if s.current.as_ref().map(|c| &c.closure) == Some(closure) => {
                HostOutcome::Healthy
            }
            AgentState::RolledBack => HostOutcome::RolledBack,
            AgentState::Failed | AgentState::Refused => HostOutcome::Failed,
            _ => HostOutcome::Pending,
        },
        Some(s) if s.state == AgentState::Refused && s.time >= started_at => HostOutcome::Failed,
        _ => HostOutcome::Pending,
    };
    match outcome {
        HostOutcome::Pending if now >= started_at + deadline => HostOutcome::Silent,
        o => o,
    }
}

/// Re-reads the status of every written host of the started waves and sets its
/// outcome; returns whether any outcome changed.
pub async fn observe(
    bucket: &Bucket,
    release: &Release,
    state: &mut RolloutState,
    now: Timestamp,
) -> bool {
    let deadline =
        SignedDuration::from_secs(release.plan.report_deadline_seconds.min(i64::MAX as u64) as i64);
    let mut hosts: Vec<HostName> = Vec::new();
    for w in &state.waves {
        for (h, s) in &w.hosts {
            if s.sequence.is_some() && s.rolled_back_to.is_none() {
                hosts.push(h.clone());
            }
        }
    }
    let keys: Vec<Key> = hosts.iter().map(Key::status).collect();
    let read = bucket.get_many(&keys, MAX_STATUS_SIZE).await;
    let mut changed = false;
    for ((h, key), r) in hosts.iter().zip(&keys).zip(read) {
        let status = match r {
            Ok(o) => StatusReport::parse(&o.bytes, key.as_str(), h).ok(),
            // Not an answer from the host: keep what it was last seen doing, rather
            // than calling a healthy host pending (or silent, after the deadline)
            // because the bucket failed this once.
            Err(e) if e.is_transient() => {
                tracing::warn!(%key, "reading the status failed; keeping the host's outcome: {e}");
                continue;
            }
            // Missing, refused, oversized: that repeats, so it is no report.
            Err(_) => None,
        };
        let Some(closure) = release.hosts.get(h).map(|r| &r.closure) else {
            continue;
        };
        for w in &mut state.waves {
            let (Some(started), Some(s)) = (w.started_at, w.hosts.get_mut(h)) else {
                continue;
            };
            let Some(seq) = s.sequence else { continue };
            let o = classify(status.as_ref(), seq, closure, started, deadline, now);
            if o != s.outcome {
                s.outcome = o;
                changed = true;
            }
        }
    }
    changed
}

/// Why the rollout must halt, if a budget is spent: a wave with more bad hosts than
/// its budget allows (of its hosts not held), or more bad hosts over the started
/// waves than the release's budget allows (of all its hosts).
pub fn over_budget(release: &Release, state: &RolloutState) -> Option<String> {
    let list = |bad: &[(&HostName, HostOutcome)]| {
        bad.iter()
            .map(|(h, o)| format!("{h} {}", o.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (i, (w, plan)) in state.waves.iter().zip(&release.plan.waves).enumerate() {
        if w.started_at.is_none() {
            continue;
        }
        let counted = w.hosts.values().filter(|s| !s.outcome.is_skipped()).count();
        let bad: Vec<(&HostName, HostOutcome)> = w
            .hosts
            .iter()
            .filter(|(_, s)| s.outcome.is_bad())
            .map(|(h, s)| (h, s.outcome))
            .collect();
        let allowed = plan.budget.allowed(counted);
        if bad.len() > allowed {
            return Some(format!(
                "wave {}: {} bad host(s) ({}), over its budget of {} ({allowed} allowed)",
                i + 1,
                bad.len(),
                list(&bad),
                plan.budget
            ));
        }
    }
    let bad = state.bad_hosts();
    let allowed = release.plan.budget.allowed(release.hosts.len());
    (bad.len() > allowed).then(|| {
        format!(
            "{} bad host(s) over the release ({}), over its budget of {} ({allowed} allowed)",
            bad.len(),
            list(&bad),
            release.plan.budget
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_core::status::{Facts, Generation};

    fn path(name: &str) -> StorePath {
        StorePath::new(&format!(
            "/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-{name}"
        ))
        .unwrap()
    }

    fn status(state: AgentState, desired: u64, current: &str, time: Timestamp) -> StatusReport {
        StatusReport {
            version: 1,
            host: HostName::new("web-1").unwrap(),
            agent_version: "0".into(),
            state,
            desired: Some(Generation {
                sequence: Some(desired),
                closure: path("new"),
            }),
            current: Some(Generation {
                sequence: Some(desired),
                closure: path(current),
            }),
            last_error: None,
            facts: Facts::default(),
            time,
            signature: None,
            pause: None,
        }
    }

    /// A release of web-1 and web-2 in one wave, report deadline 10 minutes.
    fn two_host_release(closure: &StorePath) -> Release {
        use fleet_core::release::{Budget, Plan, ReleaseHost, Selector, WaveSpec, resolve_waves};
        let names: std::collections::BTreeSet<HostName> = ["web-1", "web-2"]
            .iter()
            .map(|h| HostName::new(h).unwrap())
            .collect();
        let waves = resolve_waves(
            &names,
            &[WaveSpec {
                select: Selector::Percent(100),
                soak_seconds: 0,
                budget: Budget::Hosts(0),
            }],
        )
        .unwrap();
        Release {
            version: 1,
            id: "r".into(),
            created_at: "2026-12-02T21:00:00Z".parse().unwrap(),
            cache_keys: Vec::new(),
            hosts: names
                .iter()
                .map(|n| {
                    let rh = ReleaseHost {
                        closure: closure.clone(),
                        activation: fleet_core::Activation::Switch,
                    };
                    (n.clone(), rh)
                })
                .collect(),
            plan: Plan {
                waves,
                budget: Budget::Hosts(0),
                report_deadline_seconds: 600,
            },
        }
    }

    #[tokio::test]
    async fn a_status_the_bucket_fails_to_read_keeps_the_outcome() {
        use fleet_core::rollout::{HostState, Previous};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let url = fleet_core::BucketUrl::parse(&url).unwrap();
        let bucket = Bucket::open(&url, &fleet_core::BucketOptions::default()).unwrap();
        let new = path("new");
        let release = two_host_release(&new);
        let t0: Timestamp = "2026-12-02T21:00:00Z".parse().unwrap();
        let mut state = fleet_core::rollout::RolloutState::new("r", "00", 1, false, "p-1");
        state.waves[0].started_at = Some(t0);
        for h in ["web-1", "web-2"] {
            let st = HostState {
                previous: Some(Previous {
                    sequence: 4,
                    closure: path("old"),
                }),
                sequence: Some(5),
                outcome: HostOutcome::Healthy,
                rolled_back_to: None,
            };
            state.waves[0].hosts.insert(HostName::new(h).unwrap(), st);
        }
        // web-1's status cannot be read (a symbolic link to itself: an I/O error
        // other than a missing file, as a dropped connection is on S3); web-2 has
        // none.
        let web1 = dir.path().join("status/web-1");
        std::fs::create_dir_all(&web1).unwrap();
        std::os::unix::fs::symlink("status.json", web1.join("status.json")).unwrap();
        let late = t0 + SignedDuration::from_mins(11);
        observe(&bucket, &release, &mut state, late).await;
        let outcome = |h: &str| state.waves[0].hosts[&HostName::new(h).unwrap()].outcome;
        assert_eq!(
            outcome("web-1"),
            HostOutcome::Healthy,
            "a failed read changed it"
        );
        assert_eq!(
            outcome("web-2"),
            HostOutcome::Silent,
            "no report past the deadline"
        );
    }

    #[test]
    fn outcomes_follow_the_status_of_the_written_sequence() {
        let t0: Timestamp = "2026-12-02T21:00:00Z".parse().unwrap();
        let later = t0 + SignedDuration::from_mins(5);
        let dl = SignedDuration::from_mins(10);
        let new = path("new");
        let c = |s: Option<&StatusReport>, now| classify(s, 5, &new, t0, dl, now);
        assert_eq!(c(None, later), HostOutcome::Pending);
        assert_eq!(c(None, t0 + dl), HostOutcome::Silent);
        let ok = status(AgentState::Healthy, 5, "new", later);
        assert_eq!(c(Some(&ok), later), HostOutcome::Healthy);
        // An old report (sequence 4) is no answer yet.
        let old = status(AgentState::Healthy, 4, "old", t0);
        assert_eq!(c(Some(&old), later), HostOutcome::Pending);
        assert_eq!(
            c(
                Some(&status(AgentState::RolledBack, 5, "old", later)),
                later
            ),
            HostOutcome::RolledBack
        );
        assert_eq!(
            c(Some(&status(AgentState::Fetching, 5, "old", later)), later),
            HostOutcome::Pending
        );
        let refused = status(AgentState::Refused, 4, "old", later);
        assert_eq!(c(Some(&refused), later), HostOutcome::Failed);
    }
}
