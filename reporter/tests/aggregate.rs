//! Aggregation over a real `file://` bucket: every state, every kind of hostile object,
//! and the incremental snapshot with compare-and-swap.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{EXPECTED, fixture, h};
use fleet_core::status::AgentState;
use fleet_core::{Bucket, Key, SecretKey, TrustedKeys};
use fleet_reporter::config::ReporterOptions;
use fleet_reporter::fleet::Fleet;
use fleet_reporter::outcome::HostState;
use fleet_reporter::{Reporter, synth};
use jiff::Timestamp;

fn opts(trusted: &TrustedKeys) -> ReporterOptions {
    ReporterOptions {
        trusted: trusted.clone(),
        cache_ttl: Duration::ZERO,
        // These tests change objects behind the reporter's back without markers:
        // every refresh lists in full (the feed is tested in feed.rs).
        full_listing_every: jiff::SignedDuration::ZERO,
        ..Default::default()
    }
}

fn state_of(f: &Fleet, host: &str) -> HostState {
    f.host(&h(host))
        .unwrap_or_else(|| panic!("{host} missing"))
        .state
}

async fn get(r: &Reporter, uri: &str) -> (u16, serde_json::Value) {
    let req = http::Request::get(uri).body(Bytes::new()).unwrap();
    let res = r.handle(req).await;
    let status = res.status().as_u16();
    (status, serde_json::from_slice(res.body()).unwrap())
}

#[tokio::test]
async fn every_state_and_every_hostile_object_is_shown() {
    let fx = fixture().await;
    let r = Reporter::new(fx.bucket.clone(), opts(&fx.trusted));
    let f = r.refresh().await.unwrap();
    assert_eq!(f.hosts.len(), EXPECTED.len());
    for (host, want) in EXPECTED {
        assert_eq!(state_of(&f, host).as_str(), *want, "{host}");
    }
    // Each flag names its cause.
    let flag = |host: &str| f.host(&h(host)).unwrap().flags.join(" | ");
    assert!(
        flag("evil-big").contains("larger than the 65536-byte bound"),
        "{}",
        flag("evil-big")
    );
    assert!(
        flag("evil-junk").contains("malformed"),
        "{}",
        flag("evil-junk")
    );
    assert!(
        flag("evil-wrong").contains("claims to be from host"),
        "{}",
        flag("evil-wrong")
    );
    assert!(
        flag("evil-badsig").contains("unknown key"),
        "{}",
        flag("evil-badsig")
    );
    assert!(
        flag("evil-mixed").contains("manifest is for host")
            && flag("evil-mixed").contains("web-ok"),
        "{}",
        flag("evil-mixed")
    );
    assert!(
        flag("evil-expired").contains("expired"),
        "{}",
        flag("evil-expired")
    );
    assert_eq!(f.ignored.count, 1);
    assert_eq!(f.ignored.keys, ["status/Not_A_Host/status.json"]);

    // The JSON API carries the same, host strings verbatim (the page escapes them).
    let (code, s) = get(&r, "/api/v1/summary").await;
    assert_eq!(code, 200);
    assert_eq!(s["states"]["flagged"], 6);
    assert_eq!(s["states"]["failed"], 2);
    assert_eq!(s["manifests"]["verified"], true);
    let (_, hosts) = get(&r, "/api/v1/hosts?state=failed").await;
    let names: Vec<_> = hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["host"].clone())
        .collect();
    assert_eq!(names, ["web-failed", "web-xss"]);
    assert_eq!(hosts["hosts"][1]["last_error"]["message"], common::XSS);
    // Default order: failing first.
    let (_, all) = get(&r, "/api/v1/hosts").await;
    let states: Vec<String> = all["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["state"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = states.clone();
    sorted.sort_by_key(|s| HostState::parse(s).unwrap());
    assert_eq!(states, sorted);
    assert_eq!(states[0], "flagged");

    // One host with its events, the hostile event flagged.
    let (code, d) = get(&r, "/api/v1/hosts/web-failed").await;
    assert_eq!(code, 200);
    let events = d["events"].as_array().unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(events.iter().filter(|e| e.get("flag").is_some()).count(), 1);
    assert_eq!(
        events
            .iter()
            .filter(|e| e["report"]["state"] == "failed")
            .count(),
        1
    );
}

/// A cold refresh lists `status/` by folder: host folders holding only events, and
/// a folder no host is named by holding links that loop or lead out of the bucket,
/// come out as a full listing shows them, and never fail the refresh.
#[tokio::test]
async fn a_cold_refresh_by_folder_shows_what_a_full_listing_shows() {
    let fx = fixture().await;
    let root = fx.dir.path().join("bucket");
    let stray = root.join("status/Not_A_Host");
    std::fs::create_dir_all(stray.join("sub")).unwrap();
    std::fs::write(stray.join("sub/x.json"), "{}").unwrap();
    std::os::unix::fs::symlink(".", stray.join("loop")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("y.json"), "{}").unwrap();
    std::os::unix::fs::symlink(outside.path(), stray.join("away")).unwrap();
    // web-never (a manifest, no status) and ghost (nothing but events) wrote events.
    let event = fleet_core::ObjectName::new("2026-11-26T120000Z-000000").unwrap();
    for host in ["web-never", "ghost"] {
        let r = synth::report(&h(host), AgentState::Fetching, 1, 2, Timestamp::now());
        fx.bucket
            .put(&Key::status_event(&h(host), &event), r.to_bytes())
            .await
            .unwrap();
    }
    let r = Reporter::new(fx.bucket.clone(), opts(&fx.trusted));
    let cold = r.refresh().await.unwrap();
    assert_eq!(cold.stats.previous, "none");
    // One more refresh, from the snapshot, lists both prefixes whole.
    let full = r.refresh().await.unwrap();
    assert_eq!(full.stats.previous, "memory");
    for f in [&cold, &full] {
        assert_eq!(f.hosts.len(), EXPECTED.len());
        for (host, want) in EXPECTED {
            assert_eq!(state_of(f, host).as_str(), *want, "{host}");
        }
        assert!(f.host(&h("ghost")).is_none());
        assert_eq!(
            f.ignored.keys,
            [
                "status/Not_A_Host/status.json",
                "status/Not_A_Host/sub/x.json"
            ]
        );
    }
}

#[tokio::test]
async fn without_trusted_keys_manifests_are_not_verified_and_not_read() {
    let fx = fixture().await;
    let r = Reporter::new(fx.bucket.clone(), opts(&TrustedKeys::default()));
    let f = r.refresh().await.unwrap();
    assert_eq!(f.stats.fetched_manifests, 0);
    // The manifest problems cannot be seen without a key; status problems still are.
    assert_eq!(state_of(&f, "evil-badsig"), HostState::UpToDate);
    assert_eq!(state_of(&f, "evil-junk"), HostState::Flagged);
    assert_eq!(state_of(&f, "web-pending"), HostState::Pending);
    let (_, s) = get(&r, "/api/v1/summary").await;
    assert_eq!(
        s["manifests"]["note"],
        "not verified (no trusted key configured)"
    );
    let (_, d) = get(&r, "/api/v1/hosts/web-ok").await;
    assert_eq!(d["host"]["manifest"]["status"], "not-verified");
    assert_eq!(d["host"]["desired_source"], "agent-report");
}

#[tokio::test]
async fn warm_refreshes_fetch_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let bucket = Bucket::open_url(&url).unwrap();
    let publisher = SecretKey::generate("publisher-1").unwrap();
    let trusted = TrustedKeys::new([publisher.public()]);
    let now = Timestamp::now();
    synth::populate(&bucket, &publisher, 300, now, 16)
        .await
        .unwrap();

    // Cold: everything is read, and the snapshot is created.
    let a = Reporter::new(bucket.clone(), opts(&trusted));
    let f = a.refresh().await.unwrap();
    assert_eq!(f.hosts.len(), 300);
    for (i, row) in f.hosts.iter().enumerate() {
        assert_eq!(row.state, synth::planned_state(i), "{}", row.host);
    }
    assert_eq!(
        (f.stats.fetched_status, f.stats.fetched_manifests),
        (297, 300)
    );
    assert_eq!(
        (f.stats.previous, f.stats.snapshot_write.as_str()),
        ("none", "written")
    );

    // A fresh process (a new Lambda container) starts from the stored snapshot.
    let b = Reporter::new(bucket.clone(), opts(&trusted));
    let f = b.refresh().await.unwrap();
    assert_eq!(f.stats.fetched_status + f.stats.fetched_manifests, 0);
    assert_eq!(
        (f.stats.previous, f.stats.snapshot_write.as_str()),
        ("bucket", "unchanged")
    );

    // Three hosts report again: exactly three objects are read, and b writes only
    // what changed, the delta.
    synth::touch(&bucket, [4, 5, 6], Timestamp::now(), 4)
        .await
        .unwrap();
    let f = b.refresh().await.unwrap();
    assert_eq!((f.stats.fetched_status, f.stats.fetched_manifests), (3, 0));
    assert_eq!(f.stats.snapshot_write, "delta");
    assert_eq!(state_of(&f, "host-000004"), HostState::UpToDate);

    // a saw no delta when it started: its compare-and-swap loses to b's, its answer
    // is right anyway, and its next write is the whole snapshot.
    synth::touch(&bucket, [7], Timestamp::now(), 1)
        .await
        .unwrap();
    let f = a.refresh().await.unwrap();
    assert_eq!(f.stats.previous, "memory");
    assert_eq!(f.stats.fetched_status, 4);
    assert_eq!(f.stats.snapshot_write, "conflict");
    assert_eq!(state_of(&f, "host-000007"), HostState::UpToDate);
    synth::touch(&bucket, [3], Timestamp::now(), 1)
        .await
        .unwrap();
    let f = b.refresh().await.unwrap();
    assert_eq!(f.stats.snapshot_write, "delta");
    synth::touch(&bucket, [2], Timestamp::now(), 1)
        .await
        .unwrap();
    let f = a.refresh().await.unwrap();
    assert_eq!(f.stats.snapshot_write, "written");
    // A new process reads a's snapshot; b's delta names the one a replaced, so it is
    // not applied, and nothing is missing.
    let fresh = Reporter::new(bucket.clone(), opts(&trusted));
    let f = fresh.refresh().await.unwrap();
    assert_eq!(f.stats.previous, "bucket");
    assert_eq!(f.stats.fetched_status + f.stats.fetched_manifests, 0);
    for h in [2, 3, 4, 7] {
        assert_eq!(state_of(&f, &format!("host-{h:06}")), HostState::UpToDate);
    }
    // b finds the stored snapshot replaced and writes its own whole; then a does.
    synth::touch(&bucket, [1], Timestamp::now(), 1)
        .await
        .unwrap();
    let f = b.refresh().await.unwrap();
    assert_eq!(f.stats.snapshot_write, "written");
    let f = a.refresh().await.unwrap();
    assert_eq!(f.stats.snapshot_write, "written");

    // A manifest rewritten with the same bytes (a new ETag) keeps its outcome without
    // a second signature check.
    let key = Key::manifest(&synth::host_name(12));
    let bytes = bucket.get(&key, 1 << 16).await.unwrap().bytes;
    bucket.delete(&key).await.unwrap();
    bucket.put(&key, bytes).await.unwrap();
    let f = a.refresh().await.unwrap();
    assert_eq!(
        (f.stats.fetched_manifests, f.stats.same_manifest_bytes),
        (1, 1)
    );
    assert_eq!(
        state_of(&f, "host-000012"),
        synth::planned_state(12),
        "{:?}",
        f.host(&synth::host_name(12)).unwrap().flags
    );
    // Events are not listed: one status object per reporting host, one manifest each.
    synth::write_events(&bucket, 0..300, 3, Timestamp::now(), 16)
        .await
        .unwrap();
    let f = a.refresh().await.unwrap();
    assert_eq!(f.stats.listed, 297 + 300);
    assert_eq!(f.stats.fetched_status + f.stats.fetched_manifests, 0);

    // A deleted host disappears; the snapshot changes.
    bucket
        .delete(&Key::status(&synth::host_name(10)))
        .await
        .unwrap();
    bucket
        .delete(&Key::manifest(&synth::host_name(10)))
        .await
        .unwrap();
    let f = a.refresh().await.unwrap();
    assert_eq!(f.hosts.len(), 299);
    assert_eq!(f.stats.snapshot_write, "delta");

    // Another publisher key set invalidates the cached manifest outcomes.
    let other = TrustedKeys::new([
        publisher.public(),
        SecretKey::generate("p-2").unwrap().public(),
    ]);
    let c = Reporter::new(bucket.clone(), opts(&other));
    let f = c.refresh().await.unwrap();
    assert_eq!(
        (f.stats.fetched_status, f.stats.fetched_manifests),
        (0, 299)
    );
}

/// Snapshot text (`zstd -dc` of the object) encoded again as the reporter lays it out:
/// a header frame, then one shard frame of host lines.
fn encode_snapshot(text: &str) -> Vec<u8> {
    let (header, hosts) = text.split_once('\n').unwrap();
    let mut out = zstd::bulk::compress(format!("{header}\n").as_bytes(), 1).unwrap();
    out.extend(zstd::bulk::compress(hosts.as_bytes(), 1).unwrap());
    out
}

#[tokio::test]
async fn a_corrupt_or_forged_snapshot_is_ignored() {
    let fx = fixture().await;
    let key = Key::dashboard_snapshot();
    let r = Reporter::new(fx.bucket.clone(), opts(&fx.trusted));
    r.refresh().await.unwrap();
    let stored = fx.bucket.get(&key, 1 << 30).await.unwrap().bytes;
    let text = String::from_utf8(zstd::decode_all(&stored[..]).unwrap()).unwrap();

    // Re-encoded as it was, it is used.
    fx.bucket.put(&key, encode_snapshot(&text)).await.unwrap();
    let f = Reporter::new(fx.bucket.clone(), opts(&fx.trusted))
        .refresh()
        .await
        .unwrap();
    assert_eq!(f.stats.previous, "bucket");
    assert_eq!(f.stats.fetched_status, 0);

    for bad in [
        b"not zstd".to_vec(),
        // A snapshot that files a healthy report under a failing host.
        encode_snapshot(&text.replace("\"host\":\"web-ok\"", "\"host\":\"web-failed\"")),
    ] {
        fx.bucket.put(&key, bad).await.unwrap();
        let r = Reporter::new(fx.bucket.clone(), opts(&fx.trusted));
        let f = r.refresh().await.unwrap();
        assert_eq!(f.stats.previous, "none");
        assert_eq!(state_of(&f, "web-failed"), HostState::Failed);
        assert_eq!(state_of(&f, "web-ok"), HostState::UpToDate);
        assert!(f.stats.fetched_status > 0);
    }
}

#[tokio::test]
async fn a_manifest_going_back_in_sequence_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::open_url(&format!("file://{}", dir.path().display())).unwrap();
    let publisher = SecretKey::generate("publisher-1").unwrap();
    let trusted = TrustedKeys::new([publisher.public()]);
    let now = Timestamp::now();
    let host = h("web-1");
    let put = |seq| {
        let bytes = synth::manifest(&host, seq, now).sign(&publisher);
        let bucket = bucket.clone();
        let host = host.clone();
        async move { bucket.put(&Key::manifest(&host), bytes).await.unwrap() }
    };
    bucket
        .put(
            &Key::status(&host),
            synth::report(&host, AgentState::Healthy, 5, 5, now).to_bytes(),
        )
        .await
        .unwrap();
    put(5).await;
    let r = Reporter::new(bucket.clone(), opts(&trusted));
    assert_eq!(
        state_of(&r.refresh().await.unwrap(), "web-1"),
        HostState::UpToDate
    );
    // Someone with write access replays an older, validly signed manifest.
    put(3).await;
    let f = r.refresh().await.unwrap();
    assert_eq!(state_of(&f, "web-1"), HostState::Flagged);
    assert!(
        f.host(&host).unwrap().flags[0].contains("rollback"),
        "{:?}",
        f.host(&host).unwrap().flags
    );
}
