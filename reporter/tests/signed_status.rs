//! Signed status over a real `file://` bucket: a status is checked against the signed
//! host registry; an enrolled host whose status is unsigned, signed by another key or
//! changed after signing is flagged; a host not in the registry is "unverified", not
//! an error; a registry entry signed by an untrusted key flags its host. Events are
//! checked the same way: a forged unsigned event of an enrolled host is `invalid`.
//! A reporter given only a root key verifies manifests with the newest root
//! version's publisher keys and flags those of a revoked key.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use fleet_core::audit_trust::RootPin;
use fleet_core::registry::HostEntry;
use fleet_core::status::AgentState;
use fleet_core::trust::{ROOT_FORMAT, Root, ScopedKey};
use fleet_core::{Bucket, HostName, Key, ObjectName, SecretKey, TrustedKeys, status_sig};
use fleet_reporter::config::ReporterOptions;
use fleet_reporter::outcome::{HostState, ManifestView, StatusSignatureView};
use fleet_reporter::{Reporter, synth};
use jiff::Timestamp;

fn h(s: &str) -> HostName {
    HostName::new(s).unwrap()
}

#[tokio::test]
async fn statuses_are_checked_against_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::open_url(&format!("file://{}", dir.path().display())).unwrap();
    let admin = SecretKey::generate("publisher-1").unwrap();
    let trusted = TrustedKeys::new([admin.public()]);
    let now = Timestamp::now();

    // Each host: its identity key, and how its status is written.
    let mut identities = BTreeMap::new();
    for host in ["ok", "unsigned", "other-key", "changed", "bad-entry"] {
        let key = SecretKey::generate(&format!("{host}-identity")).unwrap();
        let signer = if host == "bad-entry" {
            SecretKey::generate("publisher-1").unwrap()
        } else {
            admin.clone()
        };
        let entry = HostEntry {
            version: 1,
            host: h(host),
            identity_key: key.public(),
            labels: BTreeMap::new(),
            enrolled_at: now,
        };
        bucket
            .put(&Key::registry_host(&h(host)), entry.sign(&signer))
            .await
            .unwrap();
        identities.insert(host, key);
    }
    for host in ["ok", "unsigned", "other-key", "changed", "bad-entry", "old"] {
        let mut r = synth::report(&h(host), AgentState::Healthy, 2, 2, now);
        match host {
            "ok" | "bad-entry" => status_sig::sign(&mut r, &identities[host]),
            "other-key" => {
                status_sig::sign(&mut r, &SecretKey::generate("other-key-identity").unwrap())
            }
            "changed" => {
                status_sig::sign(&mut r, &identities[host]);
                r.state = AgentState::Failed;
            }
            _ => {}
        }
        bucket
            .put(&Key::status(&h(host)), r.to_bytes())
            .await
            .unwrap();
        let m = synth::manifest(&h(host), 2, now).sign(&admin);
        bucket.put(&Key::manifest(&h(host)), m).await.unwrap();
    }

    let r = Reporter::new(
        bucket.clone(),
        ReporterOptions {
            trusted: trusted.clone(),
            cache_ttl: Duration::ZERO,
            ..Default::default()
        },
    );
    let f = r.refresh().await.unwrap();
    let row = |host: &str| f.host(&h(host)).unwrap().clone();
    assert_eq!(
        row("ok").status_signature,
        StatusSignatureView::Verified("ok-identity".into())
    );
    assert_eq!(row("ok").state, HostState::UpToDate);
    assert_eq!(row("old").status_signature, StatusSignatureView::Unverified);
    assert_eq!(row("old").state, HostState::UpToDate);
    for (host, why) in [
        ("unsigned", "not signed"),
        ("other-key", "does not verify"),
        ("changed", "changed after the host signed it"),
        ("bad-entry", "registry/hosts/bad-entry.json"),
    ] {
        let r = row(host);
        assert_eq!(r.state, HostState::Flagged, "{host}");
        assert!(
            matches!(&r.status_signature, StatusSignatureView::Invalid(e) if e.contains(why)),
            "{host}: {:?}",
            r.status_signature
        );
    }

    // The JSON API says the same; a second refresh reuses the registry it read.
    let req = http::Request::get("/api/v1/hosts/unsigned")
        .body(Bytes::new())
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(r.handle(req).await.body()).unwrap();
    let sig = &body["host"]["status_signature"];
    assert_eq!(sig["status"], "invalid", "{body}");
    let f2 = r.refresh().await.unwrap();
    assert_eq!(
        f2.host(&h("ok")).unwrap().status_signature,
        StatusSignatureView::Verified("ok-identity".into())
    );

    // Events: the host's signed one verifies; a forged unsigned one (anyone who
    // can write status/ok/events/) is invalid; a host not enrolled is unverified.
    let event = |host: &str, counter: u64, sign: bool| {
        let mut e = synth::report(&h(host), AgentState::Healthy, 2, 2, now);
        if sign {
            status_sig::sign(&mut e, &identities[host]);
        }
        let name = ObjectName::status_event(now, counter);
        (Key::status_event(&h(host), &name), e.to_bytes())
    };
    for (key, bytes) in [
        event("ok", 1, true),
        event("ok", 2, false),
        event("old", 1, false),
    ] {
        bucket.put(&key, bytes).await.unwrap();
    }
    let events = |host: &str| {
        let r = &r;
        let host = host.to_owned();
        async move {
            let req = http::Request::get(format!("/api/v1/hosts/{host}"))
                .body(Bytes::new())
                .unwrap();
            let body: serde_json::Value =
                serde_json::from_slice(r.handle(req).await.body()).unwrap();
            let mut out: Vec<(String, String)> = body["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["key"]
                            .as_str()
                            .unwrap()
                            .rsplit('/')
                            .next()
                            .unwrap()
                            .to_owned(),
                        e["signature"]["status"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            out.sort();
            out
        }
    };
    let ok_events = events("ok").await;
    assert_eq!(
        ok_events
            .iter()
            .map(|(_, s)| s.as_str())
            .collect::<Vec<_>>(),
        ["verified", "invalid"],
        "{ok_events:?}"
    );
    assert_eq!(events("old").await[0].1, "unverified");

    // Without trusted keys nothing can be checked: unverified, no flags from it.
    let blind = Reporter::new(bucket, ReporterOptions::default());
    let f = blind.refresh().await.unwrap();
    assert_eq!(
        f.host(&h("unsigned")).unwrap().status_signature,
        StatusSignatureView::Unverified
    );
}

#[tokio::test]
async fn a_reporter_pinning_only_a_root_key_follows_the_root_in_the_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::open_url(&format!("file://{}", dir.path().display())).unwrap();
    let root_key = SecretKey::generate("root-1").unwrap();
    let (p1, p2) = (
        SecretKey::generate("publisher-1").unwrap(),
        SecretKey::generate("publisher-2").unwrap(),
    );
    let now = Timestamp::now();
    let version = |v: u64, publishers: &[&SecretKey]| {
        Root {
            format: ROOT_FORMAT,
            version: v,
            issued_at: now,
            expires_at: now + jiff::SignedDuration::from_hours(24),
            root_keys: vec![root_key.public()],
            threshold: 1,
            publisher_keys: publishers
                .iter()
                .map(|k| ScopedKey {
                    key: k.public(),
                    scope: None,
                })
                .collect(),
            cache_keys: vec![],
            admin_keys: vec![],
        }
        .sign(std::slice::from_ref(&root_key))
    };
    // Version 2 rotates publisher-1 out for publisher-2.
    let (v1, v2) = (version(1, &[&p1]), version(2, &[&p2]));
    bucket.put(&Key::trust_root_version(1), v1).await.unwrap();
    bucket
        .put(&Key::trust_root_version(2), v2.clone())
        .await
        .unwrap();
    bucket.put(&Key::trust_root(), v2).await.unwrap();
    for (host, key) in [("new-key", &p2), ("revoked-key", &p1)] {
        let m = synth::manifest(&h(host), 2, now).sign(key);
        bucket.put(&Key::manifest(&h(host)), m).await.unwrap();
        let r = synth::report(&h(host), AgentState::Healthy, 2, 2, now);
        bucket
            .put(&Key::status(&h(host)), r.to_bytes())
            .await
            .unwrap();
    }
    let r = Reporter::new(
        bucket.clone(),
        ReporterOptions {
            cache_ttl: Duration::ZERO,
            root: Some(RootPin {
                keys: TrustedKeys::new([root_key.public()]),
                version: 1,
            }),
            ..Default::default()
        },
    );
    let f = r.refresh().await.unwrap();
    assert_eq!(f.trusted_key_names, ["publisher-2"]);
    let row = |host: &str| f.host(&h(host)).unwrap().clone();
    assert!(
        matches!(row("new-key").manifest, ManifestView::Verified(_)),
        "{:?}",
        row("new-key").manifest
    );
    assert_eq!(row("new-key").state, HostState::UpToDate);
    assert!(
        matches!(&row("revoked-key").manifest, ManifestView::Flagged(e) if e.contains("publisher-1")),
        "{:?}",
        row("revoked-key").manifest
    );
    assert_eq!(row("revoked-key").state, HostState::Flagged);

    // A version 3 that does not chain (signed by another key) is not followed.
    let stranger = SecretKey::generate("root-1").unwrap();
    let mut v3 = Root {
        version: 3,
        ..serde_json::from_slice::<Root>(
            &fleet_core::envelope::open(
                &bucket.get(&Key::trust_root(), 1 << 20).await.unwrap().bytes,
                fleet_core::trust::ROOT_PAYLOAD_TYPE,
                &TrustedKeys::new([root_key.public()]),
                1 << 20,
            )
            .unwrap()
            .payload,
        )
        .unwrap()
    };
    v3.publisher_keys.push(ScopedKey {
        key: p1.public(),
        scope: None,
    });
    let v3 = v3.sign(std::slice::from_ref(&stranger));
    bucket
        .put(&Key::trust_root_version(3), v3.clone())
        .await
        .unwrap();
    bucket.put(&Key::trust_root(), v3).await.unwrap();
    let f = r.refresh().await.unwrap();
    assert_eq!(f.trusted_key_names, ["publisher-2"]);
    assert_eq!(f.host(&h("revoked-key")).unwrap().state, HostState::Flagged);
}
