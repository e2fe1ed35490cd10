use std::collections::BTreeMap;

use super::*;
use crate::audit_replay::{FindingKind, explain, replay_chain};

fn host(s: &str) -> HostName {
    HostName::new(s).unwrap()
}

fn change(h: &str, sequence: u64, sha: &str) -> ManifestChange {
    ManifestChange {
        host: host(h),
        sequence,
        previous_sequence: sequence.checked_sub(1).filter(|s| *s > 0),
        closure: StorePath::new("/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-top").unwrap(),
        activation: Activation::Switch,
        expires_at: "2026-12-03T21:25:00Z".parse().unwrap(),
        previous_manifest_sha256: None,
        manifest_sha256: sha.into(),
    }
}

/// An honest chain of `n` deploys of web-1 (manifest hashes `m1`, `m2`, …).
fn chain(key: &SecretKey, n: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    for i in 1..=n {
        let prev = out.last().map(|(_, b)| sha256_hex(b));
        let action =
            AuditAction::manifest(ActionKind::Deploy, change("web-1", i, &format!("m{i}")));
        out.push((i, ChainEntry::new(i, prev, key.name(), action).sign(key)));
    }
    out
}

fn kinds(findings: &[crate::audit_replay::Finding]) -> Vec<(FindingKind, Option<u64>)> {
    findings.iter().map(|f| (f.kind, f.index)).collect()
}

#[test]
fn entries_sign_verify_and_keep_their_key() {
    let k = SecretKey::generate("publisher-1").unwrap();
    let trusted = TrustedKeys::new([k.public()]);
    let e = ChainEntry::new(
        3,
        Some("ab".into()),
        "publisher-1",
        AuditAction::manifest(ActionKind::Renew, change("web-1", 3, "m3")),
    );
    assert_eq!(e.key().as_str(), "audit/chain/00000000000000000003.json");
    let bytes = e.sign(&k);
    let v = ChainEntry::verify(&bytes, "k", &trusted).unwrap();
    assert_eq!(
        (v.entry.clone(), v.signed_by.as_str()),
        (e.clone(), "publisher-1")
    );
    assert_eq!(v.sha256, sha256_hex(&bytes));
    let rows = v.entry.manifest_rows();
    assert_eq!((rows[0].action.as_str(), rows[0].sequence), ("renew", 3));
    assert_eq!(
        v.entry.object_states(),
        [(
            "hosts/web-1/manifest.json".to_owned(),
            Some("m3".to_owned())
        )]
    );

    // Signed by one key while naming another: refused.
    let other = SecretKey::generate("publisher-2").unwrap();
    let both = TrustedKeys::new([k.public(), other.public()]);
    let e = ChainEntry::new(
        1,
        None,
        "publisher-1",
        AuditAction::manifest(ActionKind::Deploy, change("a", 1, "x")),
    );
    assert!(matches!(
        ChainEntry::verify(&e.sign(&other), "k", &both),
        Err(ChainEntryError::Malformed { .. })
    ));
    // An untrusted key: refused.
    assert!(matches!(
        ChainEntry::verify(&e.sign(&k), "k", &TrustedKeys::new([other.public()])),
        Err(ChainEntryError::Envelope { .. })
    ));
}

#[test]
fn action_names_round_trip_and_unknown_ones_are_kept() {
    for k in [
        ActionKind::Deploy,
        ActionKind::RolloutStep,
        ActionKind::Gc,
        ActionKind::Unhold,
    ] {
        assert_eq!(ActionKind::parse(k.as_str()), k);
    }
    let json = serde_json::to_string(&ActionKind::RolloutStep).unwrap();
    assert_eq!(json, "\"rollout-step\"");
    let later: ActionKind = serde_json::from_str("\"quarantine\"").unwrap();
    assert_eq!(later, ActionKind::Other("quarantine".into()));
    // Details from a newer publisher with fields this one does not know still parse.
    let d: AuditDetails = serde_json::from_str(r#"{"reason":"x","future":1}"#).unwrap();
    assert_eq!(d.reason.as_deref(), Some("x"));
}

#[test]
fn an_honest_chain_replays_clean() {
    let k = SecretKey::generate("publisher-1").unwrap();
    let trusted = TrustedKeys::new([k.public()]);
    let r = replay_chain(chain(&k, 5), &trusted, Some(HeadHint { index: 4 }));
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert_eq!((r.entries.len(), r.head), (5, Some(5)));
    let current = BTreeMap::from([("hosts/web-1/manifest.json".to_owned(), "m5".to_owned())]);
    assert!(explain(&r, &current, &[], |_| true).is_empty());
}

#[test]
fn deleted_altered_reordered_and_truncated_entries_are_found() {
    let k = SecretKey::generate("publisher-1").unwrap();
    let trusted = TrustedKeys::new([k.public()]);

    let mut deleted = chain(&k, 5);
    deleted.remove(2);
    let r = replay_chain(deleted, &trusted, None);
    assert_eq!(kinds(&r.findings), [(FindingKind::Gap, Some(4))]);

    let mut altered = chain(&k, 5);
    let text = String::from_utf8(altered[1].1.clone()).unwrap();
    altered[1].1 = text.replacen("\"sig\":\"", "\"sig\":\"AA", 1).into_bytes();
    let r = replay_chain(altered, &trusted, None);
    assert_eq!(
        kinds(&r.findings),
        [
            (FindingKind::Unverified, Some(2)),
            (FindingKind::BrokenLink, Some(3))
        ]
    );

    let mut reordered = chain(&k, 5);
    let (a, b) = (reordered[2].1.clone(), reordered[3].1.clone());
    reordered[2].1 = b;
    reordered[3].1 = a;
    let r = replay_chain(reordered, &trusted, None);
    let found = kinds(&r.findings);
    assert!(
        found.contains(&(FindingKind::Misplaced, Some(3))),
        "{found:?}"
    );
    assert!(
        found.contains(&(FindingKind::Misplaced, Some(4))),
        "{found:?}"
    );

    // A fork: a second history signed with the same key, spliced in at 3.
    let mut forked = chain(&k, 5);
    let fork = ChainEntry::new(
        3,
        Some("00".into()),
        "publisher-1",
        AuditAction::manifest(ActionKind::Deploy, change("web-1", 3, "m3")),
    );
    forked[2].1 = fork.sign(&k);
    let r = replay_chain(forked, &trusted, None);
    assert_eq!(
        kinds(&r.findings),
        [
            (FindingKind::BrokenLink, Some(3)),
            (FindingKind::BrokenLink, Some(4))
        ]
    );

    let mut cut = chain(&k, 5);
    cut.pop();
    let r = replay_chain(cut, &trusted, Some(HeadHint { index: 5 }));
    assert_eq!(kinds(&r.findings), [(FindingKind::Truncated, Some(5))]);
}

#[test]
fn current_objects_must_match_the_last_entry_naming_them() {
    let k = SecretKey::generate("publisher-1").unwrap();
    let trusted = TrustedKeys::new([k.public()]);
    let r = replay_chain(chain(&k, 3), &trusted, None);
    let m = |h: &str, sha: &str| (format!("hosts/{h}/manifest.json"), sha.to_owned());
    // web-1 still holds an older manifest than the chain recorded; db-1 has none.
    let current = BTreeMap::from([m("web-1", "m2"), m("db-1", "zz")]);
    let f = explain(&r, &current, &[], |_| true);
    assert_eq!(
        kinds(&f),
        [
            (FindingKind::Unexplained, None),
            (FindingKind::Unexplained, Some(3))
        ]
    );
    // A manifest the chain recorded is gone.
    let f = explain(&r, &BTreeMap::new(), &[], |_| true);
    assert_eq!(kinds(&f), [(FindingKind::Unexplained, Some(3))]);
    assert!(explain(&r, &BTreeMap::new(), &[], |_| false).is_empty());
    // A manifest only an older unsigned entry explains.
    let legacy = crate::audit::AuditEntry {
        version: 1,
        action: "deploy".into(),
        time: "2026-11-26T21:25:00Z".parse().unwrap(),
        key_name: "publisher-1".into(),
        host: host("db-1"),
        sequence: 1,
        previous_sequence: None,
        closure: StorePath::new("/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-top").unwrap(),
        activation: Activation::Switch,
        expires_at: "2026-12-03T21:25:00Z".parse().unwrap(),
        previous_manifest_sha256: None,
        new_manifest_sha256: "zz".into(),
        publisher_version: "0.1.0".into(),
    };
    let current = BTreeMap::from([m("web-1", "m3"), m("db-1", "zz")]);
    let f = explain(&r, &current, &[legacy], |_| true);
    assert_eq!(kinds(&f), [(FindingKind::LegacyOnly, None)]);
}
