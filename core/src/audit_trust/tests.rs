use super::*;
use crate::audit_chain::{ManifestChange, sha256_hex};
use crate::host::HostName;
use crate::keys::SecretKey;
use crate::manifest::Activation;
use crate::store_path::StorePath;
use crate::trust::{HostPattern, ROOT_FORMAT, Root, Scope, ScopedKey};

fn key(name: &str) -> SecretKey {
    SecretKey::generate(name).unwrap()
}

fn deploy(h: &str, sequence: u64) -> AuditAction {
    AuditAction::manifest(
        ActionKind::Deploy,
        ManifestChange {
            host: HostName::new(h).unwrap(),
            sequence,
            previous_sequence: None,
            closure: StorePath::new("/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-top").unwrap(),
            activation: Activation::Switch,
            expires_at: "2026-12-03T21:25:00Z".parse().unwrap(),
            previous_manifest_sha256: None,
            manifest_sha256: format!("m{sequence}"),
        },
    )
}

/// Root versions signed by `root_key`, each listing `publishers[v - 1]`.
fn roots(root_key: &SecretKey, publishers: &[Vec<ScopedKey>]) -> Vec<TrustedRoot> {
    let now = jiff::Timestamp::now();
    let mut out: Vec<TrustedRoot> = Vec::new();
    for (i, p) in publishers.iter().enumerate() {
        let root = Root {
            format: ROOT_FORMAT,
            version: i as u64 + 1,
            issued_at: now,
            expires_at: now + jiff::SignedDuration::from_hours(24),
            root_keys: vec![root_key.public()],
            threshold: 1,
            publisher_keys: p.clone(),
            cache_keys: vec![],
            admin_keys: vec![],
        };
        let bytes = root.sign(std::slice::from_ref(root_key));
        let t = match out.last() {
            None => TrustedRoot::reload(&bytes, "v1").unwrap(),
            Some(prev) => prev.next(&bytes, "next").unwrap(),
        };
        out.push(t);
    }
    out
}

fn unscoped(k: &SecretKey) -> ScopedKey {
    ScopedKey {
        key: k.public(),
        scope: None,
    }
}

/// A chain of `(signer, action)` entries, linked.
fn chain(actions: Vec<(&SecretKey, AuditAction)>) -> Vec<(u64, Vec<u8>)> {
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    for (i, (k, a)) in actions.into_iter().enumerate() {
        let index = i as u64 + 1;
        let prev = out.last().map(|(_, b)| sha256_hex(b));
        out.push((index, ChainEntry::new(index, prev, k.name(), a).sign(k)));
    }
    out
}

fn stored(roots: &[TrustedRoot]) -> BTreeMap<u64, Vec<u8>> {
    roots
        .iter()
        .map(|r| (r.version(), r.bytes().to_vec()))
        .collect()
}

fn kinds(r: &Replay) -> Vec<(FindingKind, Option<u64>)> {
    r.findings.iter().map(|f| (f.kind, f.index)).collect()
}

#[test]
fn a_publisher_key_rotated_through_the_root_verifies_and_the_revoked_key_is_flagged() {
    let root_key = key("root-1");
    let (p1, p2) = (key("publisher-1"), key("publisher-2"));
    let rs = roots(
        &root_key,
        &[
            vec![unscoped(&p1)],
            vec![unscoped(&p1), unscoped(&p2)],
            vec![unscoped(&p2)],
        ],
    );
    let honest = vec![
        (&p1, deploy("web-1", 1)),
        (&p1, trust_action(&rs[0], "init")),
        (&p1, deploy("web-1", 2)),
        (&p1, trust_action(&rs[1], "add-publisher")),
        (&p2, deploy("web-1", 3)),
        // publisher-1 records its own revocation: allowed, the version before lists it.
        (&p1, trust_action(&rs[2], "revoke")),
        (&p2, deploy("web-1", 4)),
    ];
    let given = TrustedKeys::new([p1.public()]);
    let pin = RootPin {
        keys: TrustedKeys::new([root_key.public()]),
        version: 1,
    };
    let walk = walk_roots(&stored(&rs), Some(rs[2].bytes()), Some(&pin));
    assert!(walk.findings.is_empty() && !walk.first_use, "{walk:?}");
    let r = replay_with_roots(chain(honest.clone()), None, &given, &walk);
    assert_eq!(kinds(&r), vec![], "{:?}", r.findings);
    assert_eq!(r.entries.len(), 7);

    // After the revocation publisher-1 may not sign; before the first trust entry
    // only the given keys count.
    let mut bad = honest.clone();
    bad.push((&p1, deploy("web-1", 5)));
    let r = replay_with_roots(chain(bad), None, &given, &walk);
    assert_eq!(kinds(&r), vec![(FindingKind::KeyNotInForce, Some(8))]);
    assert!(
        r.findings[0].message.contains("removed at version 3"),
        "{}",
        r.findings[0].message
    );
    let mut early = honest;
    early[0].0 = &p2;
    let r = replay_with_roots(chain(early), None, &given, &walk);
    assert_eq!(kinds(&r), vec![(FindingKind::KeyNotInForce, Some(1))]);
}

#[test]
fn root_versions_must_chain_match_their_entries_and_the_pointer() {
    let root_key = key("root-1");
    let other_root = key("root-x");
    let p1 = key("publisher-1");
    let rs = roots(&root_key, &[vec![unscoped(&p1)], vec![unscoped(&p1)]]);
    let entries = chain(vec![
        (&p1, trust_action(&rs[0], "init")),
        (&p1, trust_action(&rs[1], "renew")),
    ]);
    // Pointer rolled back to version 1.
    let walk = walk_roots(&stored(&rs), Some(rs[0].bytes()), None);
    assert!(walk.first_use);
    assert_eq!(walk.findings.len(), 1, "{walk:?}");
    assert_eq!(walk.findings[0].key, "trust/root.json");
    // A pin that is not the root's key: nothing walks; entries naming versions are
    // reported as not chaining.
    let pin = RootPin {
        keys: TrustedKeys::new([other_root.public()]),
        version: 1,
    };
    let walk = walk_roots(&stored(&rs), Some(rs[1].bytes()), Some(&pin));
    assert!(walk.roots.is_empty());
    let r = replay_with_roots(
        entries.clone(),
        None,
        &TrustedKeys::new([p1.public()]),
        &walk,
    );
    assert!(
        r.findings.iter().all(|f| f.kind == FindingKind::RootChain) && r.findings.len() == 3,
        "{:?}",
        r.findings
    );
    // A version missing in the middle stops the walk.
    let mut gap = stored(&rs);
    gap.remove(&1);
    let walk = walk_roots(&gap, Some(rs[1].bytes()), None);
    assert_eq!(walk.findings[0].key, "trust/1.root.json");
    // A trust entry recording other bytes than the stored version's.
    let mut wrong = trust_action(&rs[1], "renew");
    wrong
        .details
        .extra
        .insert(ROOT_SHA256_FIELD.into(), json!("00"));
    let walk = walk_roots(&stored(&rs), Some(rs[1].bytes()), None);
    let r = replay_with_roots(
        chain(vec![(&p1, trust_action(&rs[0], "init")), (&p1, wrong)]),
        None,
        &TrustedKeys::default(),
        &walk,
    );
    assert_eq!(kinds(&r), vec![(FindingKind::RootChain, Some(2))]);
}

#[test]
fn a_scoped_key_touching_hosts_outside_its_scope_is_flagged() {
    let root_key = key("root-1");
    let (admin, web) = (key("publisher-1"), key("web-team-1"));
    let scoped = ScopedKey {
        key: web.public(),
        scope: Some(Scope {
            hosts: vec![HostPattern::new("web-*").unwrap()],
            labels: vec![],
        }),
    };
    let rs = roots(&root_key, &[vec![unscoped(&admin), scoped]]);
    let walk = walk_roots(&stored(&rs), Some(rs[0].bytes()), None);
    let r = replay_with_roots(
        chain(vec![
            (&admin, trust_action(&rs[0], "init")),
            (&web, deploy("web-1", 1)),
            (&web, deploy("db-1", 1)),
        ]),
        None,
        &TrustedKeys::default(),
        &walk,
    );
    assert_eq!(kinds(&r), vec![(FindingKind::OutOfScope, Some(3))]);
    assert!(r.findings[0].message.contains("db-1"));
}
