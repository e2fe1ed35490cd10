//! A small fleet with one host in every state and one hostile object of every kind,
//! in a `file://` bucket (so a status can be made stale by setting its mtime).

#![allow(dead_code)]

use std::time::{Duration, SystemTime};

use fleet_core::status::AgentState;
use fleet_core::{Bucket, HostName, Key, SecretKey, TrustedKeys};
use fleet_reporter::synth;
use jiff::{SignedDuration, Timestamp};

pub const XSS: &str =
    "<script>document.title='pwned'</script><img src=x onerror=\"document.body.dataset.pwned=1\">";

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub bucket: Bucket,
    pub url: String,
    pub publisher: SecretKey,
    pub trusted: TrustedKeys,
}

pub fn h(s: &str) -> HostName {
    HostName::new(s).unwrap()
}

/// What each host of [`fixture`] must be shown as.
pub const EXPECTED: &[(&str, &str)] = &[
    ("web-ok", "up-to-date"),
    ("web-pending", "pending"),
    ("web-failed", "failed"),
    ("web-rolled", "rolled-back"),
    ("web-refused", "refused"),
    ("web-stale", "stale"),
    ("web-never", "never-seen"),
    ("web-xss", "failed"),
    ("evil-big", "flagged"),
    ("evil-junk", "flagged"),
    ("evil-wrong", "flagged"),
    ("evil-badsig", "flagged"),
    ("evil-mixed", "flagged"),
    ("evil-expired", "flagged"),
];

pub async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bucket");
    let url = format!("file://{}", root.display());
    let bucket = Bucket::open_url(&url).unwrap();
    let publisher = SecretKey::generate("publisher-1").unwrap();
    let trusted = TrustedKeys::new([publisher.public()]);
    let now = Timestamp::now();

    let put_manifest = |host: &str, seq: u64| {
        let host = h(host);
        let bytes = synth::manifest(&host, seq, now).sign(&publisher);
        let bucket = bucket.clone();
        async move { bucket.put(&Key::manifest(&host), bytes).await.unwrap() }
    };
    let put_status = |host: &str, state: AgentState, current: u64| {
        let host = h(host);
        let bytes = synth::report(&host, state, current, 2, now).to_bytes();
        let bucket = bucket.clone();
        async move { bucket.put(&Key::status(&host), bytes).await.unwrap() }
    };

    for (host, state, current) in [
        ("web-ok", AgentState::Healthy, 2),
        ("web-pending", AgentState::Activating, 1),
        ("web-failed", AgentState::Failed, 1),
        ("web-rolled", AgentState::RolledBack, 1),
        ("web-refused", AgentState::Refused, 1),
        ("web-stale", AgentState::Healthy, 2),
        ("evil-badsig", AgentState::Healthy, 2),
        ("evil-mixed", AgentState::Healthy, 2),
        ("evil-expired", AgentState::Healthy, 2),
    ] {
        put_status(host, state, current).await;
        if !host.starts_with("evil-") {
            put_manifest(host, 2).await;
        }
    }
    put_manifest("web-never", 2).await;

    // A host that writes HTML and script into every string it controls.
    let xss = h("web-xss");
    let mut r = synth::report(&xss, AgentState::Failed, 1, 2, now);
    r.last_error.as_mut().unwrap().message = XSS.into();
    r.last_error.as_mut().unwrap().kind = fleet_core::ErrorKind::Other("<b>kind</b>".into());
    r.facts.kernel = Some("<i>6.6</i>".into());
    r.agent_version = "</td></tr><tr><td>".into();
    bucket.put(&Key::status(&xss), r.to_bytes()).await.unwrap();
    put_manifest("web-xss", 2).await;

    // Oversized, malformed and wrong-host status objects.
    let mut big = synth::report(&h("evil-big"), AgentState::Healthy, 2, 2, now).to_bytes();
    big.extend(std::iter::repeat_n(b' ', 70 * 1024));
    bucket.put(&Key::status(&h("evil-big")), big).await.unwrap();
    put_manifest("evil-big", 2).await;
    bucket
        .put(
            &Key::status(&h("evil-junk")),
            &b"{\"version\": 1, <script>"[..],
        )
        .await
        .unwrap();
    put_manifest("evil-junk", 2).await;
    let wrong = synth::report(&h("web-ok"), AgentState::Healthy, 2, 2, now).to_bytes();
    bucket
        .put(&Key::status(&h("evil-wrong")), wrong)
        .await
        .unwrap();
    put_manifest("evil-wrong", 2).await;

    // Unverifiable manifests: unknown signer, another host's manifest, expired.
    let mallory = SecretKey::generate("mallory-1").unwrap();
    bucket
        .put(
            &Key::manifest(&h("evil-badsig")),
            synth::manifest(&h("evil-badsig"), 2, now).sign(&mallory),
        )
        .await
        .unwrap();
    bucket
        .put(
            &Key::manifest(&h("evil-mixed")),
            synth::manifest(&h("web-ok"), 2, now).sign(&publisher),
        )
        .await
        .unwrap();
    let mut expired = synth::manifest(&h("evil-expired"), 2, now);
    expired.issued_at = now - SignedDuration::from_hours(48);
    expired.expires_at = now - SignedDuration::from_hours(1);
    bucket
        .put(&Key::manifest(&h("evil-expired")), expired.sign(&publisher))
        .await
        .unwrap();

    // An object under no valid host name.
    std::fs::create_dir_all(root.join("status/Not_A_Host")).unwrap();
    std::fs::write(
        root.join("status/Not_A_Host/status.json"),
        "<script>x</script>",
    )
    .unwrap();

    // A few events for web-failed, one of them hostile.
    for (i, state) in [
        AgentState::Fetching,
        AgentState::Activating,
        AgentState::Failed,
    ]
    .into_iter()
    .enumerate()
    {
        let name = fleet_core::ObjectName::new(&format!("2026-11-26T12000{i}Z-00000{i}")).unwrap();
        let r = synth::report(&h("web-failed"), state, 1, 2, now);
        bucket
            .put(&Key::status_event(&h("web-failed"), &name), r.to_bytes())
            .await
            .unwrap();
    }
    let name = fleet_core::ObjectName::new("2026-11-26T120009Z-000009").unwrap();
    bucket
        .put(&Key::status_event(&h("web-failed"), &name), &b"<html>"[..])
        .await
        .unwrap();

    // web-stale last wrote its status an hour ago (by the store's clock).
    let f = std::fs::File::options()
        .write(true)
        .open(root.join("status/web-stale/status.json"))
        .unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();

    Fixture {
        dir,
        bucket,
        url,
        publisher,
        trusted,
    }
}
