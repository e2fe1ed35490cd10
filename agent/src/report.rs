//! Status reporting: what the agent writes to the bucket.
//!
//! - `status/<host>/status.json`: the latest [`StatusReport`], rewritten after every
//!   state change and as a heartbeat (`heartbeat-interval` in the daemon, every run
//!   of `once`);
//! - `status/<host>/events/<time>-<counter>.json`: one report per state change,
//!   named `YYYYMMDDTHHMMSSZ-NNNNNN` (UTC, then the agent's own counter, which never
//!   goes down, so names are unique and sort by time even across restarts).
//!
//! Events are first queued in the state file ([`crate::state::State::pending_events`],
//! bounded: the oldest are dropped and counted when full), then written oldest first;
//! a write that fails leaves the rest queued for the next flush, so events made while
//! the bucket was unreachable arrive once it is back. Both objects are plain PUTs of
//! [`StatusReport::to_bytes`]; keys come from [`fleet_core::Key`], so they can only
//! name this host's prefix. When the host has an identity key ([`crate::identity`]),
//! each object is signed with it as it is written ([`fleet_core::status_sig`]).

use fleet_core::ErrorKind;
use fleet_core::status::{AgentState, Generation, ReportedError, StatusReport, truncate_message};
use fleet_core::{Bucket, BucketError, HostName, Key, ObjectName, SecretKey};
use jiff::Timestamp;

use crate::state::{PendingEvent, State};

/// Builds a report of `state` as it stands, with fresh facts.
pub fn build(host: &HostName, state: &State, mut facts: fleet_core::status::Facts) -> StatusReport {
    // A generation set as the boot default and not yet booted needs a reboot too.
    if state
        .in_flight
        .as_ref()
        .is_some_and(|f| matches!(f.step, crate::state::Step::AwaitingReboot { .. }))
    {
        facts.reboot_needed = Some(true);
    }
    StatusReport {
        version: 1,
        host: host.clone(),
        agent_version: fleet_core::VERSION.to_owned(),
        state: state.reported.state,
        desired: state.desired.clone(),
        current: state.current.clone(),
        last_error: state.reported.last_error.clone().map(Box::new),
        facts,
        time: Timestamp::now(),
        signature: None,
        pause: state.reported.pause.clone().map(Box::new),
    }
}

/// An error for the status object: `kind` plus a message cut to the format's bound.
pub fn error(kind: ErrorKind, message: impl AsRef<str>) -> ReportedError {
    ReportedError {
        kind,
        message: truncate_message(message.as_ref()),
        at: Timestamp::now(),
    }
}

/// What identifies a state change: the state, the error kind, desired and current.
/// Messages and times are left out so that, say, repeated network errors with
/// different wording are one change, not many.
pub fn change_key(
    state: AgentState,
    error: Option<&ReportedError>,
    desired: Option<&Generation>,
    current: Option<&Generation>,
) -> String {
    format!(
        "{state}|{}|{:?}|{:?}",
        error.map(|e| e.kind.as_str()).unwrap_or(""),
        desired.map(|g| (g.sequence, g.closure.to_string())),
        current.map(|g| (g.sequence, g.closure.to_string())),
    )
}

/// Queues `report` as an event, dropping the oldest beyond `max`.
pub fn queue_event(state: &mut State, report: StatusReport, max: usize) {
    state.event_counter += 1;
    let name = ObjectName::status_event(report.time, state.event_counter)
        .as_str()
        .to_owned();
    state
        .pending_events
        .push_back(PendingEvent { name, report });
    while state.pending_events.len() > max {
        state.pending_events.pop_front();
        state.dropped_events += 1;
        tracing::warn!(
            max,
            dropped_total = state.dropped_events,
            "status event queue is full; dropped the oldest event"
        );
    }
}

/// The stored bytes of `report`, signed with `identity` if the host has one.
fn signed_bytes(report: &StatusReport, identity: Option<&SecretKey>) -> Vec<u8> {
    match identity {
        Some(key) => {
            let mut r = report.clone();
            fleet_core::status_sig::sign(&mut r, key);
            r.to_bytes()
        }
        None => report.to_bytes(),
    }
}

/// Writes the oldest pending event (signed with `identity`, if any). `Ok(false)` when
/// none is left.
pub async fn send_one_event(
    bucket: &Bucket,
    host: &HostName,
    state: &mut State,
    identity: Option<&SecretKey>,
) -> Result<bool, BucketError> {
    let Some(ev) = state.pending_events.front() else {
        return Ok(false);
    };
    match ObjectName::new(&ev.name) {
        Ok(name) => {
            let key = Key::status_event(host, &name);
            bucket.put(&key, signed_bytes(&ev.report, identity)).await?;
            tracing::debug!(%key, "wrote status event");
        }
        // Names are made by ObjectName::status_event, so this means a hand-edited state file.
        Err(e) => tracing::warn!("dropping queued event with a bad name: {e}"),
    }
    state.pending_events.pop_front();
    Ok(true)
}

/// Writes `report` as `status/<host>/status.json`, signed with `identity` if any.
pub async fn write_status(
    bucket: &Bucket,
    host: &HostName,
    report: &StatusReport,
    identity: Option<&SecretKey>,
) -> Result<(), BucketError> {
    let key = Key::status(host);
    bucket.put(&key, signed_bytes(report, identity)).await?;
    tracing::debug!(%key, state = %report.state, "wrote status");
    crate::change_marker::write(bucket, host, Timestamp::now()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_core::status::Facts;

    #[test]
    fn the_queue_is_bounded_and_keeps_the_newest() {
        let host = HostName::new("web-1").unwrap();
        let mut s = State::default();
        for _ in 0..5 {
            let r = build(&host, &s, Facts::default());
            queue_event(&mut s, r, 3);
        }
        assert_eq!(s.pending_events.len(), 3);
        assert_eq!(s.dropped_events, 2);
        assert!(s.pending_events[0].name.ends_with("-000003"));
        assert!(s.pending_events[2].name.ends_with("-000005"));
    }

    #[test]
    fn reports_stay_within_the_format_bounds() {
        let host = HostName::new("web-1").unwrap();
        let mut s = State::default();
        s.reported.last_error = Some(error(ErrorKind::HealthCheckFailed, "m".repeat(100_000)));
        let r = build(&host, &s, Facts::default());
        StatusReport::parse(&r.to_bytes(), "status/web-1/status.json", &host).unwrap();
    }

    #[tokio::test]
    async fn sends_oldest_first_and_keeps_the_rest_on_failure() {
        let d = tempfile::tempdir().unwrap();
        let url = format!("file://{}", d.path().join("b").display());
        let bucket = Bucket::open_url(&url).unwrap();
        let host = HostName::new("web-1").unwrap();
        let mut s = State::default();
        for _ in 0..2 {
            let r = build(&host, &s, Facts::default());
            queue_event(&mut s, r, 10);
        }
        let first = s.pending_events[0].name.clone();
        assert!(send_one_event(&bucket, &host, &mut s, None).await.unwrap());
        assert_eq!(s.pending_events.len(), 1);
        let key = Key::status_event(&host, &ObjectName::new(&first).unwrap());
        let got = bucket.get(&key, 1 << 16).await.unwrap();
        StatusReport::parse(&got.bytes, key.as_str(), &host).unwrap();

        // An unwritable bucket keeps the event queued.
        // (Explicit credentials: the default chain would ask the cloud metadata service.)
        let dead = Bucket::open(
            &"s3://dead-bucket?endpoint=http://127.0.0.1:9&region=us-east-1"
                .parse()
                .unwrap(),
            &fleet_core::BucketOptions {
                credentials: Some(fleet_core::S3Credentials {
                    access_key_id: "a".into(),
                    secret_access_key: "b".into(),
                    session_token: None,
                }),
                request_timeout: std::time::Duration::from_secs(2),
                connect_timeout: std::time::Duration::from_secs(1),
                max_retries: 0,
            },
        )
        .unwrap();
        assert!(send_one_event(&dead, &host, &mut s, None).await.is_err());
        assert_eq!(s.pending_events.len(), 1);
    }
}
