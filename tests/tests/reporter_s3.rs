//! `fleet-reporter` against a real SeaweedFS server that enforces IAM: with
//! the reporter's scoped credentials (`fleet_core::iam::policy(Role::Reporter, …)`) it
//! reads `status/` and `hosts/`, writes its snapshot under `dashboard/` and nothing
//! else.
//!
//! - a reporter aggregates a small fleet (hosts in every state, event objects, one
//!   hostile status) with those credentials, writes `dashboard/snapshot.json` (and then
//!   only its delta), and a
//!   second reporter (a fresh Lambda container) starts from that snapshot;
//! - the same credentials are refused every write outside `dashboard/`;
//! - a reporter run with credentials that may read the fleet but not write
//!   `dashboard/` (the publisher's) still answers, and reports its snapshot write as
//!   `denied`: the refusal goes through the reporter's own write path;
//! - SeaweedFS's `start-after` on a key that names a folder skips that whole folder,
//!   so the reporter cuts its concurrent range listings at `…/<host>/~`: such cuts
//!   list exactly what one listing does, with the reporter's credentials.

use std::time::Duration;

use fleet_core::bucket::{BucketError, Visit};
use fleet_core::iam::Role;
use fleet_core::status::AgentState;
use fleet_core::{Bucket, HostName, Key, KeyPrefix, ObjectName, SecretKey, TrustedKeys};
use fleet_reporter::config::ReporterOptions;
use fleet_reporter::outcome::HostState;
use fleet_reporter::snapshot::{MAX_SNAPSHOT_SIZE, Snapshot};
use fleet_reporter::{Reporter, synth};
use fleet_tests::s3::S3Server;
use jiff::Timestamp;

const HOSTS: usize = 40;

struct Fleet {
    server: &'static S3Server,
    name: String,
    admin: Bucket,
    trusted: TrustedKeys,
}

/// A fresh bucket holding `HOSTS` synthetic hosts (two events each) and one host
/// whose status is not JSON, written with the admin credentials.
async fn fleet(label: &str) -> Fleet {
    let server = S3Server::seaweedfs().await.unwrap();
    let name = server.new_bucket(label).await.unwrap();
    let admin = server
        .bucket(&name, "", &server.admin_credentials())
        .unwrap();
    let publisher = SecretKey::generate("publisher-1").unwrap();
    let now = Timestamp::now();
    synth::populate(&admin, &publisher, HOSTS, now, 16)
        .await
        .unwrap();
    synth::write_events(&admin, 0..HOSTS, 2, now, 16)
        .await
        .unwrap();
    let evil = HostName::new("evil-junk").unwrap();
    admin
        .put(&Key::status(&evil), &b"<script>"[..])
        .await
        .unwrap();
    Fleet {
        server,
        name,
        admin,
        trusted: TrustedKeys::new([publisher.public()]),
    }
}

fn options(trusted: &TrustedKeys) -> ReporterOptions {
    ReporterOptions {
        trusted: trusted.clone(),
        cache_ttl: Duration::ZERO,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reporter_credentials_read_the_fleet_and_write_only_the_dashboard() {
    let f = fleet("reporter-creds").await;
    let creds = f
        .server
        .user_for(&Role::Reporter, &f.name, "")
        .await
        .unwrap();
    let bucket = f.server.bucket(&f.name, "", &creds).unwrap();

    // Aggregation with the reporter's credentials: every host, in its planned state.
    let r = Reporter::new(bucket.clone(), options(&f.trusted));
    let fl = r.refresh().await.unwrap();
    assert_eq!(fl.hosts.len(), HOSTS + 1);
    for i in 0..HOSTS {
        let row = fl.host(&synth::host_name(i)).unwrap();
        assert_eq!(row.state, synth::planned_state(i), "{}", row.host);
    }
    let evil = fl.host(&HostName::new("evil-junk").unwrap()).unwrap();
    assert_eq!(evil.state, HostState::Flagged);
    assert!(evil.flags[0].contains("malformed"), "{:?}", evil.flags);
    // Events are never listed: without a snapshot `status/` is listed one level
    // deep, one folder per host that wrote anything (never-seen hosts wrote only
    // events, and show as never seen: their missing status.json is read as missing),
    // plus one manifest per host.
    assert_eq!(fl.stats.listed, (HOSTS + 1) + HOSTS);
    for i in (0..HOSTS).filter(|i| synth::planned_state(*i) == HostState::NeverSeen) {
        let row = fl.host(&synth::host_name(i)).unwrap();
        assert_eq!(row.last_seen, None, "{}", row.host);
    }
    let seen = fl.host(&synth::host_name(0)).unwrap();
    assert!(seen.last_seen.is_some_and(|t| t > Timestamp::UNIX_EPOCH));
    // What the cold refresh took from its reads is what a full listing shows.
    let listing = Reporter::new(
        bucket.clone(),
        ReporterOptions {
            full_listing_every: jiff::SignedDuration::ZERO,
            write_snapshot: false,
            ..options(&f.trusted)
        },
    );
    let full = listing.refresh().await.unwrap();
    assert_eq!(
        (full.stats.listing, full.stats.previous),
        ("full", "bucket")
    );
    assert_eq!(full.hosts.len(), fl.hosts.len());
    for (cold, listed) in fl.hosts.iter().zip(&full.hosts) {
        assert_eq!(
            (&cold.host, cold.state, &cold.flags),
            (&listed.host, listed.state, &listed.flags)
        );
        // A GET gives whole seconds, a listing milliseconds.
        match (cold.last_seen, listed.last_seen) {
            (None, None) => {}
            (Some(a), Some(b)) => assert!(
                b.duration_since(a).abs() < jiff::SignedDuration::from_secs(1),
                "{}: {a} read, {b} listed",
                cold.host
            ),
            other => panic!("{}: {other:?}", cold.host),
        }
    }
    assert_eq!(fl.stats.read_errors, 0);
    assert_eq!(
        (fl.stats.previous, fl.stats.snapshot_write.as_str()),
        ("none", "written")
    );

    // The snapshot is there, readable with the same credentials, and a fresh reporter
    // starts from it without reading any object again.
    let stored = bucket
        .get(&Key::dashboard_snapshot(), MAX_SNAPSHOT_SIZE)
        .await
        .unwrap();
    let snapshot = Snapshot::parse(&stored.bytes, Key::dashboard_snapshot().as_str()).unwrap();
    assert_eq!(snapshot.hosts.len(), HOSTS + 1);
    let fresh = Reporter::new(bucket.clone(), options(&f.trusted));
    let fl = fresh.refresh().await.unwrap();
    assert_eq!(fl.stats.previous, "bucket");
    assert_eq!(fl.stats.fetched_status + fl.stats.fetched_manifests, 0);
    // One host reports again: one object read, and only the delta written
    // (compare-and-swap on SeaweedFS's ETag, under the reporter's own policy).
    synth::touch(&f.admin, [4], Timestamp::now(), 1)
        .await
        .unwrap();
    let fl = fresh.refresh().await.unwrap();
    assert_eq!(
        (fl.stats.fetched_status, fl.stats.fetched_manifests),
        (1, 0)
    );
    assert_eq!(fl.stats.snapshot_write, "delta");
    assert_eq!(
        fl.host(&synth::host_name(4)).unwrap().state,
        HostState::UpToDate
    );
    // The delta names the stored snapshot and holds exactly that host; a new process
    // applies it, so it reads nothing again (without it, host 4's new status would
    // be read).
    let delta = bucket
        .get(&Key::dashboard_snapshot_delta(), MAX_SNAPSHOT_SIZE)
        .await
        .unwrap();
    let mut applied = snapshot.clone();
    let changed = applied
        .apply_delta(&delta.bytes, Key::dashboard_snapshot_delta().as_str())
        .unwrap();
    assert_eq!(
        changed.into_iter().collect::<Vec<_>>(),
        [synth::host_name(4)]
    );
    let third = Reporter::new(bucket.clone(), options(&f.trusted));
    let fl = third.refresh().await.unwrap();
    assert_eq!(fl.stats.previous, "bucket");
    assert_eq!(fl.stats.fetched_status + fl.stats.fetched_manifests, 0);
    assert_eq!(
        fl.host(&synth::host_name(4)).unwrap().state,
        HostState::UpToDate
    );

    // Every write outside dashboard/ is refused, whatever the prefix.
    let host = synth::host_name(1);
    let status = synth::report(&host, AgentState::Healthy, 2, 2, Timestamp::now()).to_bytes();
    let refused = [
        Key::status(&host),
        Key::status_event(&host, &ObjectName::new("x").unwrap()),
        Key::manifest(&host),
        Key::release(&ObjectName::new("r-1").unwrap()),
        Key::audit(&ObjectName::new("a-1").unwrap()),
        Key::cache_info(),
    ];
    for key in &refused {
        let e = bucket.put(key, status.clone()).await.unwrap_err();
        assert!(
            matches!(&e, BucketError::AccessDenied { key: k, .. } if k == key.as_str()),
            "{key}: {e}"
        );
        assert!(e.to_string().contains("access denied"), "{e}");
    }
    let e = bucket.delete(&Key::status(&host)).await.unwrap_err();
    assert!(matches!(e, BucketError::AccessDenied { .. }), "{e}");
    // Nothing was changed by those attempts.
    let still = f.admin.get(&Key::status(&host), 1 << 16).await.unwrap();
    assert_ne!(still.bytes, status);
    assert!(f.admin.head(&refused[1]).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reporter_without_dashboard_rights_still_answers_and_says_denied() {
    let f = fleet("reporter-denied").await;
    // The publisher may read and list status/ and hosts/, but not write dashboard/.
    let creds = f
        .server
        .user_for(&Role::Publisher, &f.name, "")
        .await
        .unwrap();
    let bucket = f.server.bucket(&f.name, "", &creds).unwrap();
    let r = Reporter::new(bucket, options(&f.trusted));
    let fl = r.refresh().await.unwrap();
    assert_eq!(fl.hosts.len(), HOSTS + 1);
    assert_eq!(fl.stats.snapshot_write, "denied");
    assert!(
        f.admin
            .head(&Key::dashboard_snapshot())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_listings_cut_after_hosts_list_exactly_once_on_seaweedfs() {
    let f = fleet("reporter-ranges").await;
    let creds = f
        .server
        .user_for(&Role::Reporter, &f.name, "")
        .await
        .unwrap();
    let bucket = f.server.bucket(&f.name, "", &creds).unwrap();
    // Hosts whose names extend another's with `-` (db, db-2): SeaweedFS lists folder
    // by folder (db/ before db-2/), S3 by bytes (db-2/ before db/).
    for h in ["db", "db-2", "db0"] {
        let host = HostName::new(h).unwrap();
        let report = synth::report(&host, AgentState::Healthy, 1, 1, Timestamp::now());
        f.admin
            .put(&Key::status(&host), report.to_bytes())
            .await
            .unwrap();
    }
    let all: Vec<String> = {
        let mut v: Vec<String> = bucket
            .list(&KeyPrefix::status())
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.key)
            .collect();
        v.sort();
        v
    };
    // Status objects, two events per host and the hostile one.
    let reporting = (0..HOSTS)
        .filter(|i| synth::planned_state(*i) != HostState::NeverSeen)
        .count();
    assert_eq!(all.len(), reporting + 2 * HOSTS + 1 + 3);
    let synth_cuts: Vec<String> = [3, 17, 18, 30]
        .iter()
        .map(|i| format!("status/{}/~", synth::host_name(*i)))
        .chain(["status/9~".to_owned(), "status/e~".to_owned()])
        .collect();
    for extra in [
        None,
        Some("status/db/~"),
        Some("status/db-2/~"),
        Some("status/db0/~"),
    ] {
        let mut cuts = synth_cuts.clone();
        cuts.extend(extra.map(str::to_owned));
        let mut listed: Vec<String> = bucket
            .list_pruned(&KeyPrefix::status(), |_| Visit::All, &cuts)
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.key)
            .collect();
        // Each key once, none missing, not even sorted by the store.
        let n = listed.len();
        listed.sort();
        assert_eq!(listed, all, "cut {extra:?}");
        assert_eq!(n, all.len(), "cut {extra:?}: duplicates");
    }
}
