//! Classifying one host from what its objects gave (step 4 of a refresh, with
//! `rows.rs`).
//!
//! A host is flagged when any of its objects is hostile or broken (the flags say
//! why), never-seen without a status, stale when its `status.json` is older than
//! `stale-after` by the store's clock (not the time the agent claims, so a host
//! cannot hide staleness by writing a time in the future), otherwise what its agent
//! reports, compared with the verified manifest (or, without one, with the agent's
//! own desired generation).

use fleet_core::manifest::ManifestError;
use fleet_core::status::{AgentState, Generation};
use fleet_core::{Activation, HostName};
use jiff::{SignedDuration, Timestamp};

use crate::outcome::{
    DesiredSource, HostRow, HostState, ManifestView, StatusOutcome, StatusSignatureView, cut,
};

fn same_closure(a: Option<&Generation>, b: Option<&Generation>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a.closure == b.closure)
}

/// Classifies one host from its status (outcome and last-modified time) and manifest.
///
/// Order: flagged, never-seen, stale, then the agent's failed / rolled-back / refused,
/// then up-to-date (running the desired closure) or pending.
pub fn classify(
    host: HostName,
    status: Option<(&StatusOutcome, Timestamp)>,
    manifest: ManifestView,
    now: Timestamp,
    stale_after: SignedDuration,
) -> HostRow {
    let mut flags = Vec::new();
    let mut notes = Vec::new();
    let last_seen = status.map(|(_, t)| t);
    let report = match status {
        Some((StatusOutcome::Report(r), _)) => Some(r.clone()),
        Some((StatusOutcome::Flagged(f), _)) => {
            flags.push(f.clone());
            None
        }
        None => None,
    };
    let manifest = match manifest {
        ManifestView::Verified(m) if now >= m.expires_at => ManifestView::Flagged(cut(format!(
            "hosts/{host}/manifest.json: {}",
            ManifestError::Expired {
                expires_at: m.expires_at,
                now,
            }
        ))),
        other => other,
    };
    let (desired, desired_source) = match &manifest {
        ManifestView::Verified(m) => (
            Some(Generation {
                sequence: Some(m.sequence),
                closure: m.closure.clone(),
            }),
            DesiredSource::Manifest,
        ),
        ManifestView::Flagged(f) => {
            flags.push(f.clone());
            (None, DesiredSource::None)
        }
        ManifestView::Missing | ManifestView::NotVerified => {
            if matches!(manifest, ManifestView::Missing) && report.is_some() {
                notes.push(format!(
                    "no manifest at hosts/{host}/manifest.json: the agent's own desired generation is shown"
                ));
            }
            match report.as_ref().and_then(|r| r.desired.clone()) {
                Some(d) => (Some(d), DesiredSource::AgentReport),
                None => (None, DesiredSource::None),
            }
        }
    };

    if let Some(r) = report.as_ref().filter(|r| r.state == AgentState::Paused) {
        let pending = r
            .desired
            .as_ref()
            .and_then(|d| d.sequence)
            .map(|s| format!(" (sequence {s} is waiting)"))
            .unwrap_or_default();
        let why = r
            .pause
            .as_ref()
            .map(|p| {
                let reason = p.reason.as_deref().map(|t| format!("; reason: {t}"));
                let until = p.until.map(|u| format!("; until {u}"));
                format!(
                    "{}{}",
                    reason.unwrap_or_default(),
                    until.unwrap_or_default()
                )
            })
            .unwrap_or_default();
        notes.push(format!(
            "deploys are paused on the host (`fleet-agent pause`){pending}: it applies nothing until `fleet-agent resume` or the pause's end{why}"
        ));
    }
    let retired = matches!(&manifest, ManifestView::Verified(m) if m.activation == Activation::Retire)
        || report
            .as_ref()
            .is_some_and(|r| r.state == AgentState::Retired);
    if retired {
        notes.push(format!(
            "retired (`fleet-publish retire`): not counted with the fleet; `fleet-publish retire {host} --purge` removes its objects"
        ));
    }
    let state = if !flags.is_empty() {
        HostState::Flagged
    } else if retired {
        HostState::Retired
    } else if let Some(r) = &report {
        let age = last_seen.map(|t| now.duration_since(t)).unwrap_or_default();
        if age > stale_after {
            HostState::Stale
        } else {
            match r.state {
                AgentState::Failed => HostState::Failed,
                AgentState::RolledBack => HostState::RolledBack,
                AgentState::Refused => HostState::Refused,
                _ if same_closure(r.current.as_ref(), desired.as_ref()) => HostState::UpToDate,
                _ => HostState::Pending,
            }
        }
    } else {
        HostState::NeverSeen
    };
    HostRow {
        host,
        state,
        last_seen,
        report,
        manifest,
        desired,
        desired_source,
        flags,
        notes,
        status_signature: StatusSignatureView::Unverified,
        hold: None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fleet_core::status::Facts;
    use fleet_core::{StatusReport, StorePath};

    use super::*;
    use crate::outcome::ManifestInfo;

    fn gen_(seq: u64, c: &str) -> Generation {
        Generation {
            sequence: Some(seq),
            closure: StorePath::new(&format!("/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-{c}"))
                .unwrap(),
        }
    }

    fn report(state: AgentState, current: &str) -> StatusOutcome {
        StatusOutcome::Report(Arc::new(StatusReport {
            version: 1,
            host: HostName::new("a").unwrap(),
            agent_version: "0.1.0".into(),
            state,
            desired: Some(gen_(2, "new")),
            current: Some(gen_(1, current)),
            last_error: None,
            facts: Facts::default(),
            time: "2026-11-26T12:00:00Z".parse().unwrap(),
            signature: None,
            pause: None,
        }))
    }

    fn manifest(c: &str, expires: &str) -> ManifestView {
        ManifestView::Verified(Arc::new(ManifestInfo {
            sequence: 2,
            closure: gen_(2, c).closure,
            issued_at: "2026-11-26T00:00:00Z".parse().unwrap(),
            expires_at: expires.parse().unwrap(),
            activation: fleet_core::Activation::Switch,
            signed_by: "p-1".into(),
            digest: fleet_core::narinfo::Sha256Hash([0; 32]),
        }))
    }

    const NOW: &str = "2026-11-26T12:01:00Z";

    fn state(status: Option<&StatusOutcome>, seen: &str, m: ManifestView) -> HostState {
        let now: Timestamp = NOW.parse().unwrap();
        let seen: Timestamp = seen.parse().unwrap();
        classify(
            HostName::new("a").unwrap(),
            status.map(|s| (s, seen)),
            m,
            now,
            SignedDuration::from_secs(180),
        )
        .state
    }

    #[test]
    fn classification() {
        let fresh = "2026-11-26T12:00:30Z";
        let old = "2026-11-26T11:50:00Z";
        let far = "2027-01-01T00:00:00Z";
        let ok = report(AgentState::Healthy, "new");
        assert_eq!(
            state(Some(&ok), fresh, manifest("new", far)),
            HostState::UpToDate
        );
        assert_eq!(
            state(Some(&ok), fresh, manifest("other", far)),
            HostState::Pending
        );
        assert_eq!(
            state(Some(&ok), old, manifest("new", far)),
            HostState::Stale
        );
        let fetching = report(AgentState::Fetching, "old");
        assert_eq!(
            state(Some(&fetching), fresh, manifest("new", far)),
            HostState::Pending
        );
        for (a, h) in [
            (AgentState::Failed, HostState::Failed),
            (AgentState::RolledBack, HostState::RolledBack),
            (AgentState::Refused, HostState::Refused),
        ] {
            assert_eq!(
                state(Some(&report(a, "old")), fresh, manifest("new", far)),
                h
            );
        }
        assert_eq!(
            state(None, fresh, manifest("new", far)),
            HostState::NeverSeen
        );
        let bad = StatusOutcome::Flagged("status object … is malformed".into());
        assert_eq!(
            state(Some(&bad), fresh, manifest("new", far)),
            HostState::Flagged
        );
        // An expired manifest is flagged, even for a healthy host.
        assert_eq!(
            state(Some(&ok), fresh, manifest("new", "2026-11-26T12:00:59Z")),
            HostState::Flagged
        );
        // Without a verified manifest, the agent's own desired generation counts.
        let behind = report(AgentState::Healthy, "old");
        assert_eq!(
            state(Some(&behind), fresh, ManifestView::NotVerified),
            HostState::Pending
        );
        let done = report(AgentState::Healthy, "new");
        assert_eq!(
            state(Some(&done), fresh, ManifestView::NotVerified),
            HostState::UpToDate
        );
        assert_eq!(
            state(Some(&done), fresh, ManifestView::Missing),
            HostState::UpToDate
        );
    }

    /// A paused host is pending (behind) or up to date, with a note saying so.
    #[test]
    fn a_paused_host_says_so() {
        let now: Timestamp = NOW.parse().unwrap();
        let StatusOutcome::Report(r) = report(AgentState::Paused, "old") else {
            unreachable!()
        };
        let mut r = (*r).clone();
        r.pause = Some(Box::new(fleet_core::status::PauseNote {
            since: now,
            until: Some("2026-11-26T14:00:00Z".parse().unwrap()),
            reason: Some("disk swap".into()),
        }));
        let paused = StatusOutcome::Report(Arc::new(r));
        let row = classify(
            HostName::new("a").unwrap(),
            Some((&paused, now)),
            manifest("new", "2027-01-01T00:00:00Z"),
            now,
            SignedDuration::from_secs(180),
        );
        assert_eq!(row.state, HostState::Pending);
        assert!(
            row.notes.iter().any(|n| n.contains("paused")
                && n.contains("sequence 2 is waiting")
                && n.contains("reason: disk swap")
                && n.contains("until 2026-11-26T14:00:00Z")),
            "{:?}",
            row.notes
        );
    }
}
