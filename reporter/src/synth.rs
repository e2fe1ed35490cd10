//! Synthetic fleets, for tests and benchmarks: real signed manifests and real status
//! objects, written through [`Bucket`] in the layout every fleet binary uses.
//!
//! Host `i` is named `host-NNNNNN` and its state is fixed by `i` (see
//! [`planned_state`]), so a test or benchmark knows what the reporter must find.

use fleet_core::layout::ObjectName;
use fleet_core::status::{AgentState, Facts, Generation, ReportedError};
use fleet_core::{
    Activation, Bucket, BucketError, HostName, Key, Manifest, SecretKey, StatusReport, StorePath,
    nixbase32,
};
use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

use crate::outcome::HostState;

/// A store path `/nix/store/<hash>-nixos-system-<host>-<n>` with a hash derived
/// from its name (stable across runs).
pub fn closure(host: &HostName, n: u64) -> StorePath {
    let name = format!("nixos-system-{host}-{n}");
    let digest = Sha256::digest(name.as_bytes());
    let hash = nixbase32::encode(&digest[..20]);
    StorePath::new(&format!("/nix/store/{hash}-{name}")).expect("synthetic store path is valid")
}

/// The name of synthetic host `i`.
pub fn host_name(i: usize) -> HostName {
    HostName::new(&format!("host-{i:06}")).expect("valid host name")
}

/// A manifest for `host` at `sequence`, issued an hour before `now`, valid a week.
pub fn manifest(host: &HostName, sequence: u64, now: Timestamp) -> Manifest {
    Manifest {
        version: 1,
        host: host.clone(),
        sequence,
        closure: closure(host, sequence),
        issued_at: now - SignedDuration::from_hours(1),
        expires_at: now + SignedDuration::from_hours(24 * 7),
        cache_keys: vec![],
        activation: Activation::Switch,
        activate_after: None,
        maintenance_windows: None,
    }
}

/// A status report of `host` in agent state `state`, running `current` and asked
/// for `desired`.
pub fn report(
    host: &HostName,
    state: AgentState,
    current: u64,
    desired: u64,
    time: Timestamp,
) -> StatusReport {
    let gen_ = |n: u64| Generation {
        sequence: Some(n),
        closure: closure(host, n),
    };
    let failing = matches!(
        state,
        AgentState::Failed | AgentState::RolledBack | AgentState::Refused
    );
    StatusReport {
        version: 1,
        host: host.clone(),
        agent_version: fleet_core::VERSION.into(),
        state,
        desired: Some(gen_(desired)),
        current: Some(gen_(current)),
        last_error: failing.then(|| {
            Box::new(ReportedError {
                kind: fleet_core::ErrorKind::HealthCheckFailed,
                message: format!("unit nginx.service failed on generation {desired}"),
                at: time,
            })
        }),
        facts: Facts {
            nixos_version: Some("24.05".into()),
            kernel: Some("6.6.30".into()),
            uptime_seconds: Some(3600),
            boot_id: Some("0b5d6c1e-8f0a-4f4e-9d55-3c3b7f0e2a11".into()),
            reboot_needed: Some(false),
        },
        time,
        signature: None,
        pause: None,
    }
}

/// What synthetic host `i` is made to be: most hosts are up to date, a few in each
/// other state.
pub fn planned_state(i: usize) -> HostState {
    match i % 100 {
        0..=3 => HostState::Pending,
        4 | 5 => HostState::Failed,
        6 => HostState::RolledBack,
        7 => HostState::Refused,
        8 => HostState::NeverSeen,
        _ => HostState::UpToDate,
    }
}

/// Writes host `i`'s manifest (signed by `publisher`) and status, as planned by
/// [`planned_state`], reported at `time`.
pub async fn write_host(
    bucket: &Bucket,
    publisher: &SecretKey,
    i: usize,
    time: Timestamp,
) -> Result<(), BucketError> {
    let host = host_name(i);
    let seq = 2;
    bucket
        .put(
            &Key::manifest(&host),
            manifest(&host, seq, time).sign(publisher),
        )
        .await?;
    let (state, current) = match planned_state(i) {
        HostState::NeverSeen => return Ok(()),
        HostState::Pending => (AgentState::Fetching, 1),
        HostState::Failed => (AgentState::Failed, 1),
        HostState::RolledBack => (AgentState::RolledBack, 1),
        HostState::Refused => (AgentState::Refused, 1),
        _ => (AgentState::Healthy, seq),
    };
    bucket
        .put(
            &Key::status(&host),
            report(&host, state, current, seq, time).to_bytes(),
        )
        .await?;
    Ok(())
}

/// Writes hosts `0..n`, `concurrency` at a time.
pub async fn populate(
    bucket: &Bucket,
    publisher: &SecretKey,
    n: usize,
    time: Timestamp,
    concurrency: usize,
) -> Result<(), BucketError> {
    futures::stream::iter(0..n)
        .map(|i| write_host(bucket, publisher, i, time))
        .buffer_unordered(concurrency.max(1))
        .try_collect::<()>()
        .await
}

/// Rewrites the status of hosts `ids` with a new report time and then writes their
/// change-feed markers (as an agent does on every state change and heartbeat),
/// `concurrency` at a time.
pub async fn touch(
    bucket: &Bucket,
    ids: impl IntoIterator<Item = usize>,
    time: Timestamp,
    concurrency: usize,
) -> Result<(), BucketError> {
    futures::stream::iter(ids)
        .map(|i| async move {
            let host = host_name(i);
            bucket
                .put(
                    &Key::status(&host),
                    report(&host, AgentState::Healthy, 2, 2, time).to_bytes(),
                )
                .await?;
            bucket
                .put(&Key::change_marker(time, &host), Vec::new())
                .await
                .map(|_| ())
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<()>()
        .await
}

/// Writes `per_host` event objects (`status/<host>/events/<time>-<n>.json`, as an agent
/// writes one per state change) for each of hosts `ids`, `concurrency` hosts at a time.
/// A real fleet has far more event objects than status objects, and they share the
/// `status/` prefix, so a benchmark without them would flatter every listing.
pub async fn write_events(
    bucket: &Bucket,
    ids: impl IntoIterator<Item = usize>,
    per_host: usize,
    time: Timestamp,
    concurrency: usize,
) -> Result<(), BucketError> {
    let states = [
        AgentState::Checking,
        AgentState::Fetching,
        AgentState::Activating,
        AgentState::CheckingHealth,
        AgentState::Healthy,
    ];
    futures::stream::iter(ids)
        .map(|i| async move {
            let host = host_name(i);
            for n in 0..per_host {
                let at = time - SignedDuration::from_secs((per_host - n) as i64);
                let name = ObjectName::new(&format!("{}-{n:06}", at.strftime("%Y%m%dT%H%M%SZ")))
                    .expect("event names are valid object names");
                let r = report(&host, states[n % states.len()], 1, 2, at);
                bucket
                    .put(&Key::status_event(&host, &name), r.to_bytes())
                    .await?;
            }
            Ok(())
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<()>()
        .await
}
