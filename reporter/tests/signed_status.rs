//! Signed status over a real `file://` bucket: a status is checked against the signed
//! host registry; an enrolled host whose status is unsigned, signed by another key or
//! changed after signing is flagged; a host not in the registry is "unverified", not
//! an error; a registry entry signed by an untrusted key flags its host.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use fleet_core::registry::HostEntry;
use fleet_core::status::AgentState;
use fleet_core::{Bucket, HostName, Key, SecretKey, TrustedKeys, status_sig};
use fleet_reporter::config::ReporterOptions;
use fleet_reporter::outcome::{HostState, StatusSignatureView};
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

    // Without trusted keys nothing can be checked: unverified, no flags from it.
    let blind = Reporter::new(bucket, ReporterOptions::default());
    let f = blind.refresh().await.unwrap();
    assert_eq!(
        f.host(&h("unsigned")).unwrap().status_signature,
        StatusSignatureView::Unverified
    );
}
