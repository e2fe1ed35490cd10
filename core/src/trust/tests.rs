use jiff::{SignedDuration, Timestamp};

use super::chain::claimed_version;
use super::*;
use crate::host::HostName;
use crate::manifest::{Activation, Manifest, ManifestError};
use crate::store_path::StorePath;

fn now() -> Timestamp {
    "2026-12-02T12:00:00Z".parse().unwrap()
}

fn key(name: &str) -> SecretKey {
    SecretKey::generate(name).unwrap()
}

fn root(version: u64, root_keys: &[&SecretKey], threshold: u32) -> Root {
    Root {
        format: ROOT_FORMAT,
        version,
        issued_at: now(),
        expires_at: now() + SignedDuration::from_hours(24 * 365),
        root_keys: root_keys.iter().map(|k| k.public()).collect(),
        threshold,
        publisher_keys: Vec::new(),
        cache_keys: Vec::new(),
        admin_keys: Vec::new(),
    }
}

fn pinned(keys: &[&SecretKey]) -> TrustedKeys {
    TrustedKeys::new(keys.iter().map(|k| k.public()))
}

#[test]
fn bootstrap_needs_the_threshold_of_pinned_keys() {
    let (a, b) = (key("root-a"), key("root-b"));
    let r1 = root(1, &[&a, &b], 2);
    let both = r1.sign(&[a.clone(), b.clone()]);
    let t = TrustedRoot::bootstrap(&both, "v1", &pinned(&[&a, &b]), 1).unwrap();
    assert_eq!(t.version(), 1);
    // One signature of two: below threshold.
    let one = r1.sign(std::slice::from_ref(&a));
    let err = TrustedRoot::bootstrap(&one, "v1", &pinned(&[&a, &b]), 1).unwrap_err();
    assert!(
        matches!(&err, TrustError::BelowThreshold { needed: 2, .. }),
        "{err}"
    );
    // Signed by keys nobody pinned.
    let (x, y) = (key("root-a"), key("root-b"));
    let forged = root(1, &[&x, &y], 2).sign(&[x, y]);
    assert!(matches!(
        TrustedRoot::bootstrap(&forged, "v1", &pinned(&[&a, &b]), 1),
        Err(TrustError::BelowThreshold { .. })
    ));
    // The pinned version, not another one.
    assert!(matches!(
        TrustedRoot::bootstrap(&both, "v1", &pinned(&[&a, &b]), 2),
        Err(TrustError::WrongVersion {
            expected: 2,
            found: 1,
            ..
        })
    ));
}

#[test]
fn next_version_needs_the_old_and_the_new_threshold() {
    let (a, b, c) = (key("root-a"), key("root-b"), key("root-c"));
    let v1 = TrustedRoot::bootstrap(
        &root(1, &[&a, &b], 1).sign(std::slice::from_ref(&a)),
        "v1",
        &pinned(&[&a, &b]),
        1,
    )
    .unwrap();
    // Rotate b out and c in, threshold 2 of {a, c}.
    let r2 = root(2, &[&a, &c], 2);
    // Signed by the old threshold (a) but not the new one (needs a and c).
    let err = v1
        .next(&r2.sign(std::slice::from_ref(&a)), "v2")
        .unwrap_err();
    assert!(
        matches!(&err, TrustError::BelowThreshold { by, .. } if by == "its own"),
        "{err}"
    );
    // Only the new keys: c alone is not one of version 1's keys.
    let err = v1
        .next(&r2.sign(std::slice::from_ref(&c)), "v2")
        .unwrap_err();
    assert!(
        matches!(&err, TrustError::BelowThreshold { by, .. } if by == "version 1's"),
        "{err}"
    );
    let v2 = v1.next(&r2.sign(&[a.clone(), c.clone()]), "v2").unwrap();
    assert_eq!(v2.version(), 2);
    // b, removed at version 2, cannot sign version 3 even with the old threshold.
    let r3 = root(3, &[&b], 1);
    assert!(matches!(
        v2.next(&r3.sign(std::slice::from_ref(&b)), "v3"),
        Err(TrustError::BelowThreshold { .. })
    ));
}

#[test]
fn versions_never_go_back_or_skip() {
    let a = key("root-a");
    let sign = |v| root(v, &[&a], 1).sign(std::slice::from_ref(&a));
    let v1 = TrustedRoot::bootstrap(&sign(1), "v1", &pinned(&[&a]), 1).unwrap();
    let v2 = v1.next(&sign(2), "v2").unwrap();
    assert!(matches!(
        v2.next(&sign(1), "v3"),
        Err(TrustError::Rollback {
            found: 1,
            trusted: 2,
            ..
        })
    ));
    assert!(matches!(
        v2.next(&sign(2), "v3"),
        Err(TrustError::Rollback { .. })
    ));
    assert!(matches!(
        v2.next(&sign(4), "v3"),
        Err(TrustError::WrongVersion {
            expected: 3,
            found: 4,
            ..
        })
    ));
    assert_eq!(claimed_version(&sign(7)), Some(7));
    assert_eq!(claimed_version(b"{}"), None);
}

#[test]
fn an_expired_root_is_refused_after_the_tolerance() {
    let a = key("root-a");
    let mut r = root(1, &[&a], 1);
    r.issued_at = now() - SignedDuration::from_hours(48);
    r.expires_at = now();
    let t =
        TrustedRoot::bootstrap(&r.sign(std::slice::from_ref(&a)), "v1", &pinned(&[&a]), 1).unwrap();
    t.check_fresh(now() + SignedDuration::from_secs(60))
        .unwrap();
    let err = t
        .check_fresh(now() + SignedDuration::from_secs(301))
        .unwrap_err();
    assert!(
        matches!(err, TrustError::Expired { version: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("300s clock tolerance"), "{err}");
}

#[test]
fn strict_parsing_and_content_rules() {
    let a = key("root-a");
    let pin = pinned(&[&a]);
    let mut r = root(1, &[&a], 2);
    let err = TrustedRoot::bootstrap(&r.sign(std::slice::from_ref(&a)), "v1", &pin, 1).unwrap_err();
    assert!(err.to_string().contains("threshold 2"), "{err}");
    r.threshold = 1;
    r.cache_keys = vec![key("c").public(), key("c").public()];
    let err = TrustedRoot::bootstrap(&r.sign(std::slice::from_ref(&a)), "v1", &pin, 1).unwrap_err();
    assert!(err.to_string().contains("cache_keys lists"), "{err}");
    // An unknown field, signed: refused all the same.
    let mut v = serde_json::to_value(root(1, &[&a], 1)).unwrap();
    v["extra"] = serde_json::json!(1);
    let bytes = crate::envelope::seal_many(
        ROOT_PAYLOAD_TYPE,
        &serde_json::to_vec(&v).unwrap(),
        std::slice::from_ref(&a),
    );
    let err = TrustedRoot::bootstrap(&bytes, "v1", &pin, 1).unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
    // A manifest envelope is not a root.
    let m = crate::envelope::seal("application/vnd.fleet.manifest.v1+json", b"{}", &a);
    assert!(matches!(
        TrustedRoot::bootstrap(&m, "v1", &pin, 1),
        Err(TrustError::Malformed { .. })
    ));
}

fn manifest(host: &str, signer: &SecretKey) -> Vec<u8> {
    Manifest {
        version: 1,
        host: HostName::new(host).unwrap(),
        sequence: 1,
        closure: StorePath::new("/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-top").unwrap(),
        issued_at: now(),
        expires_at: now() + SignedDuration::from_hours(24),
        cache_keys: Vec::new(),
        activation: Activation::Switch,
        activate_after: None,
        maintenance_windows: None,
    }
    .sign(signer)
}

#[test]
fn scoped_publisher_keys_sign_only_for_their_hosts() {
    let a = key("root-a");
    let (web, any) = (key("web-team-1"), key("publisher-1"));
    let mut r = root(1, &[&a], 1);
    r.publisher_keys = vec![
        ScopedKey {
            key: web.public(),
            scope: Some(Scope {
                hosts: vec![HostPattern::new("web-*").unwrap()],
                labels: vec!["role=web".into()],
            }),
        },
        ScopedKey {
            key: any.public(),
            scope: None,
        },
    ];
    let t =
        TrustedRoot::bootstrap(&r.sign(std::slice::from_ref(&a)), "v1", &pinned(&[&a]), 1).unwrap();
    let h = |n: &str| HostName::new(n).unwrap();
    let verify = |host: &str, signer: &SecretKey, labels: &[String]| {
        t.verify_manifest(&manifest(host, signer), &h(host), labels, None, Some(now()))
    };
    verify("web-1", &web, &[]).unwrap();
    verify("db-1", &any, &[]).unwrap();
    verify("db-1", &web, &["role=web".into()]).unwrap();
    let err = verify("db-1", &web, &[]).unwrap_err();
    assert!(
        matches!(&err, ManifestError::OutOfScope { key, .. } if key == "web-team-1"),
        "{err}"
    );
    assert!(err.to_string().contains("web-*"), "{err}");
    // A key the root does not list at all is still an unknown key.
    let err = verify("db-1", &key("stranger"), &[]).unwrap_err();
    assert!(matches!(err, ManifestError::UnknownKey { .. }), "{err}");
}

#[test]
fn host_patterns_glob() {
    let h = |n: &str| HostName::new(n).unwrap();
    let p = |s: &str| HostPattern::new(s).unwrap();
    assert!(p("web-*").matches(&h("web-1")));
    assert!(!p("web-*").matches(&h("db-1")));
    assert!(p("*-eu").matches(&h("db-3-eu")));
    assert!(p("*").matches(&h("x")));
    assert!(p("w*b*-1").matches(&h("web-1")));
    assert!(!p("db-1").matches(&h("db-10")));
    assert!(HostPattern::new("Web/*").is_err());
    assert!(scope::check_label("role=web").is_ok());
    assert!(scope::check_label("Role web").is_err());
}
