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

/// A `file://` bucket (in the returned folder) with [`HOSTS`] hosts, the key that
/// signed their manifests, and that key as the reporter trusts it.
async fn fleet() -> (tempfile::TempDir, Bucket, SecretKey, TrustedKeys) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("bucket").display());
    let bucket = Bucket::open_url(&url).unwrap();
    let publisher = SecretKey::generate("publisher-1").unwrap();
    let trusted = TrustedKeys::new([publisher.public()]);
    synth::populate(&bucket, &publisher, HOSTS, Timestamp::now(), 16)
        .await
        .unwrap();
    (dir, bucket, publisher, trusted)
}

#[tokio::test]
async fn warm_refreshes_follow_the_feed_and_full_listings_catch_the_rest() {
    let (_dir, bucket, _, trusted) = fleet().await;

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
    let (_dir, bucket, publisher, trusted) = fleet().await;
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

/// A host's row as text, for comparing refreshes.
fn rows(f: &fleet_reporter::fleet::Fleet) -> Vec<String> {
    f.hosts.iter().map(|r| format!("{r:?}")).collect()
}

/// The rows of a reporter with `options` that classifies every host from a full
/// listing and leaves the stored snapshot alone.
async fn from_scratch(bucket: &Bucket, options: &ReporterOptions) -> Vec<String> {
    let r = Reporter::new(
        bucket.clone(),
        ReporterOptions {
            full_listing_every: SignedDuration::ZERO,
            write_snapshot: false,
            ..options.clone()
        },
    );
    rows(&r.refresh().await.unwrap())
}

#[tokio::test]
async fn carried_rows_are_what_classifying_again_gives_and_turn_stale_in_time() {
    let (_dir, bucket, publisher, trusted) = fleet().await;
    let short = ReporterOptions {
        stale_after: SignedDuration::from_secs(4),
        ..opts(&trusted)
    };
    let r = Reporter::new(bucket.clone(), short.clone());
    let f = r.refresh().await.unwrap();
    assert_eq!(f.stats.classified, HOSTS);
    assert!(f.hosts.iter().all(|h| h.state != HostState::Stale));

    // One host reports, one is held: a feed refresh classifies the one that
    // reported; the held one is carried forward and gets its hold (once, on every
    // refresh, as the kept row has none).
    synth::touch(&bucket, [4], Timestamp::now(), 1)
        .await
        .unwrap();
    let held = synth::host_name(6);
    let hold = fleet_core::hold::Hold {
        version: 1,
        host: held.clone(),
        held: true,
        reason: "disk swap".into(),
        time: Timestamp::now(),
    };
    bucket
        .put(&Key::hold(&held), bytes::Bytes::from(hold.sign(&publisher)))
        .await
        .unwrap();
    synth::touch(&bucket, [6], Timestamp::now(), 1)
        .await
        .unwrap();
    for _ in 0..2 {
        let f = r.refresh().await.unwrap();
        assert_eq!(f.stats.listing, "feed");
        let row = f.host(&held).unwrap();
        assert_eq!(row.hold.as_ref().unwrap().reason, "disk swap");
        assert_eq!(
            row.notes.iter().filter(|n| n.contains("held")).count(),
            1,
            "{:?}",
            row.notes
        );
        assert_eq!(rows(&f), from_scratch(&bucket, &short).await);
    }
    let f = r.refresh().await.unwrap();
    assert_eq!(f.stats.classified, 0);

    // Nothing is written, but time passes: every carried row whose status has
    // turned stale is classified again and shows it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let f = r.refresh().await.unwrap();
    let stale = f
        .hosts
        .iter()
        .filter(|h| h.state == HostState::Stale)
        .count();
    assert!(stale > HOSTS / 2, "{stale} stale");
    assert!(f.stats.classified >= stale);
    assert_eq!(rows(&f), from_scratch(&bucket, &short).await);
}

#[tokio::test]
async fn without_trusted_keys_carried_and_stored_rows_still_see_the_manifests() {
    let (_dir, bucket, _, _) = fleet().await;
    let none = TrustedKeys::new([]);
    let r = Reporter::new(bucket.clone(), opts(&none));
    let f = r.refresh().await.unwrap();
    assert_eq!(f.stats.classified, HOSTS);
    synth::touch(&bucket, [4], Timestamp::now(), 1)
        .await
        .unwrap();
    let f = r.refresh().await.unwrap();
    assert_eq!(f.stats.listing, "feed");
    assert_eq!(f.stats.classified, 1);
    let scratch = from_scratch(&bucket, &opts(&none)).await;
    assert_eq!(rows(&f), scratch);
    // A new process starts from the stored snapshot, which records that each
    // manifest is there: it shows them as not verified, as a listing does.
    let fresh = Reporter::new(bucket.clone(), opts(&none));
    let f = fresh.refresh().await.unwrap();
    assert_eq!((f.stats.previous, f.stats.listing), ("bucket", "feed"));
    assert_eq!(rows(&f), scratch);
}

#[tokio::test]
async fn a_manifest_that_expires_is_shown_expired_and_checked_again_each_refresh() {
    let (_dir, bucket, publisher, trusted) = fleet().await;
    let host = synth::host_name(11);
    let mut m = synth::manifest(&host, 2, Timestamp::now());
    m.expires_at = Timestamp::now() + SignedDuration::from_secs(2);
    bucket
        .put(
            &Key::manifest(&host),
            bytes::Bytes::from(m.sign(&publisher)),
        )
        .await
        .unwrap();
    let r = Reporter::new(bucket.clone(), opts(&trusted));
    let f = r.refresh().await.unwrap();
    assert_eq!(f.host(&host).unwrap().state, HostState::UpToDate);
    // Nothing is written; its expiry passes: the carried row is due and shows it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let f = r.refresh().await.unwrap();
    let row = f.host(&host).unwrap();
    assert_eq!(row.state, HostState::Flagged);
    assert!(row.flags[0].contains("expired"), "{:?}", row.flags);
    // The flag says when it was checked, so the row is not carried forward: the
    // next refresh checks it again (and only it).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let g = r.refresh().await.unwrap();
    assert_eq!(g.stats.classified, 1);
    assert_ne!(g.host(&host).unwrap().flags, row.flags);
}

#[tokio::test]
async fn a_row_from_a_read_that_failed_is_not_carried_forward() {
    let (dir, bucket, _, trusted) = fleet().await;
    // Host 13's status is a symlink to a file outside the bucket: refused when read,
    // so nothing of it is in the snapshot. (This first refresh is cold, so only its
    // folder is listed; the HEAD after the failed read, which follows links, gives
    // the time the row shows.)
    let host = synth::host_name(13);
    let status = dir.path().join("bucket").join(Key::status(&host).as_str());
    let outside = dir.path().join("outside.json");
    std::fs::rename(&status, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, &status).unwrap();
    let always_full = ReporterOptions {
        full_listing_every: SignedDuration::ZERO,
        ..opts(&trusted)
    };
    let r = Reporter::new(bucket.clone(), always_full.clone());
    let f = r.refresh().await.unwrap();
    let row = f.host(&host).unwrap();
    assert!(
        row.flags.iter().any(|x| x.contains("symlink")),
        "{:?}",
        row.flags
    );
    let seen = row.last_seen.expect("a last-seen time from the HEAD");
    let modified =
        jiff::Timestamp::try_from(std::fs::metadata(&outside).unwrap().modified().unwrap())
            .unwrap();
    assert_eq!(seen.as_millisecond(), modified.as_millisecond());
    // The status goes away; the snapshot entry is what it was (no status), but the
    // row is classified again and shows what a new process shows.
    std::fs::remove_file(&status).unwrap();
    let f = r.refresh().await.unwrap();
    assert_eq!(rows(&f), from_scratch(&bucket, &always_full).await);
    assert!(f.host(&host).unwrap().flags.is_empty());
}
