//! The change feed on a real `file://` bucket: a warm refresh reads only the hosts
//! whose agents wrote a marker, a status rewritten without a marker shows at the next
//! full listing, and a new process follows the feed from the stored snapshot.

use std::time::Duration;

use fleet_core::status::AgentState;
use fleet_core::{Bucket, Key, SecretKey, TrustedKeys};
use fleet_reporter::Reporter;
use fleet_reporter::config::ReporterOptions;
use fleet_reporter::outcome::HostState;
use fleet_reporter::synth;
use jiff::{SignedDuration, Timestamp};

const HOSTS: usize = 200;

fn opts(trusted: &TrustedKeys) -> ReporterOptions {
    ReporterOptions {
        trusted: trusted.clone(),
        cache_ttl: Duration::ZERO,
        stale_after: SignedDuration::from_hours(1),
        ..Default::default()
    }
}

#[tokio::test]
async fn warm_refreshes_follow_the_feed_and_full_listings_catch_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("bucket").display());
    let bucket = Bucket::open_url(&url).unwrap();
    let publisher = SecretKey::generate("publisher-1").unwrap();
    let trusted = TrustedKeys::new([publisher.public()]);
    synth::populate(&bucket, &publisher, HOSTS, Timestamp::now(), 16)
        .await
        .unwrap();

    let r = Reporter::new(bucket.clone(), opts(&trusted));
    let f = r.refresh().await.unwrap();
    assert_eq!(f.stats.listing, "full");
    assert_eq!(f.hosts.len(), HOSTS);
    let failed = synth::host_name(4);
    assert_eq!(f.host(&failed).unwrap().state, HostState::Failed);

    // Host 4 recovers and writes its marker (as the agent does): a feed refresh
    // reads it and nothing else.
    synth::touch(&bucket, [4], Timestamp::now(), 1)
        .await
        .unwrap();
    let f = r.refresh().await.unwrap();
    assert_eq!(f.stats.listing, "feed");
    assert_eq!(f.stats.markers, 1);
    assert_eq!(f.stats.fetched_status, 1);
    assert_eq!(f.stats.fetched_manifests, 0);
    assert_eq!(f.host(&failed).unwrap().state, HostState::UpToDate);
    assert_eq!(f.hosts.len(), HOSTS);

    // Host 5 (an old agent) rewrites its status without a marker: the feed does not
    // see it...
    let old = synth::host_name(5);
    let report = synth::report(&old, AgentState::Healthy, 2, 2, Timestamp::now());
    bucket
        .put(&Key::status(&old), report.to_bytes())
        .await
        .unwrap();
    let f = r.refresh().await.unwrap();
    assert_eq!(f.stats.listing, "feed");
    assert_eq!(f.host(&old).unwrap().state, HostState::Failed);

    // ...a new process starts from the stored snapshot and follows the feed too...
    let fresh = Reporter::new(bucket.clone(), opts(&trusted));
    let f = fresh.refresh().await.unwrap();
    assert_eq!((f.stats.previous, f.stats.listing), ("bucket", "feed"));
    assert_eq!(f.host(&failed).unwrap().state, HostState::UpToDate);

    // ...and the next full listing shows it.
    let full = Reporter::new(
        bucket.clone(),
        ReporterOptions {
            full_listing_every: SignedDuration::ZERO,
            ..opts(&trusted)
        },
    );
    let f = full.refresh().await.unwrap();
    assert_eq!(f.stats.listing, "full");
    assert_eq!(f.host(&old).unwrap().state, HostState::UpToDate);
    assert_eq!(f.host(&failed).unwrap().state, HostState::UpToDate);
}

#[tokio::test]
async fn a_new_host_with_a_marker_appears_and_many_markers_mean_a_full_listing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("bucket").display());
    let bucket = Bucket::open_url(&url).unwrap();
    let publisher = SecretKey::generate("publisher-1").unwrap();
    let trusted = TrustedKeys::new([publisher.public()]);
    synth::populate(&bucket, &publisher, HOSTS, Timestamp::now(), 16)
        .await
        .unwrap();
    let r = Reporter::new(bucket.clone(), opts(&trusted));
    r.refresh().await.unwrap();

    // A host enrolled after the full listing shows as soon as it writes a marker.
    synth::write_host(&bucket, &publisher, HOSTS + 9, Timestamp::now())
        .await
        .unwrap();
    synth::touch(&bucket, [HOSTS + 9], Timestamp::now(), 1)
        .await
        .unwrap();
    let f = r.refresh().await.unwrap();
    assert_eq!(f.stats.listing, "feed");
    assert_eq!(
        f.host(&synth::host_name(HOSTS + 9)).unwrap().state,
        HostState::UpToDate
    );

    // More than one host in ten writing: a full listing is as cheap.
    synth::touch(&bucket, 0..HOSTS / 5, Timestamp::now(), 16)
        .await
        .unwrap();
    let f = r.refresh().await.unwrap();
    assert_eq!(f.stats.listing, "full");
    assert_eq!(
        f.host(&synth::host_name(4)).unwrap().state,
        HostState::UpToDate
    );
}
