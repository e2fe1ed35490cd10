//! The root of trust against real SeaweedFS enforcing IAM (a scoped user per host,
//! a publisher user), real `fleet-agent once` processes and real Nix:
//!
//! - The runbook of `docs/operations.md` ("Rotate and revoke keys with a root of
//!   trust"), step by step: hosts that pin only two root keys (threshold 2) accept
//!   the new publisher key's manifests once the root lists it, refuse the revoked
//!   old key's later manifests, and not one host file changes.
//! - Roots a host must refuse: one signed below threshold, an older version copied
//!   over `trust/root.json` (rollback), an expired one; the host applies nothing
//!   until the root key holders sign a good next version.
//! - A publisher key scoped to `web-*` is refused for `db-1`, even though its job
//!   holds the publisher's bucket credentials and wrote `db-1`'s manifest.
//!
//! Trust changes run with the server's admin credentials: the Admin role that may
//! write `trust/` is not in `iam.rs` yet.

mod e2e_support;

use e2e_support::FleetWorld;
use fleet_core::status::{AgentState, Generation};
use fleet_core::trust::TrustedRoot;
use fleet_core::{Key, SecretKey};
use fleet_tests::nix::Closure;
use jiff::{SignedDuration, Timestamp};

fn generation(sequence: u64, closure: &Closure) -> Option<Generation> {
    Some(Generation {
        sequence: Some(sequence),
        closure: closure.top.clone(),
    })
}

const BOTH_ROOT_KEYS: [&str; 4] = [
    "--root-key-file",
    "root-1.secret",
    "--root-key-file",
    "root-2.secret",
];

fn with_root_keys<'a>(args: &[&'a str]) -> Vec<&'a str> {
    args.iter().copied().chain(BOTH_ROOT_KEYS).collect()
}

#[test]
fn publisher_keys_rotate_and_revoke_through_the_root_as_docs_operations_says() {
    let mut w = FleetWorld::new("trust-rotate", &["web-1", "db-1"]);

    // Once: two offline root keys; version 1 lists the publisher and cache keys.
    let (_, root1) = w.new_key("e2e-root-1", "root-1");
    let (_, root2) = w.new_key("e2e-root-2", "root-2");
    let out = w.trust_ok(&with_root_keys(&[
        "init",
        "--threshold",
        "2",
        "--publisher-key-file",
        "publisher.public",
        "--cache-key-file",
        "cache.public",
    ]));
    assert!(out.starts_with("trust/1.root.json: version 1"), "{out}");
    // Each host pins the root keys and version 1, and no publisher or cache key.
    w.root_pin = Some((vec![root1, root2], 1));
    let web1 = w.system("web-1", "1", 0);
    let db1 = w.system("db-1", "1", 0);
    w.publish(&[("web-1", &web1), ("db-1", &db1)]);
    for (h, c) in [("web-1", &web1), ("db-1", &db1)] {
        let r = w.once_expect(h, 0);
        assert_eq!(r.report.current, generation(1, c), "{h}: {}", r.stderr);
    }
    let host_files = |w: &FleetWorld| ["web-1", "db-1"].map(|h| w.agent_config_text(h)).to_vec();
    let before = host_files(&w);
    assert!(!before[0].contains("e2e-publisher"), "{}", before[0]);

    // Steps 1 and 2: a new publisher key, added to the root with both root keys.
    let (publisher2, _) = w.new_key("e2e-publisher-2", "publisher-2");
    let out = w.trust_ok(&with_root_keys(&[
        "add-publisher",
        "--key-file",
        "publisher-2.public",
    ]));
    assert!(out.contains("version 2"), "{out}");

    // Step 3: deploy with the new key; the current manifest is the old key's.
    let publisher1 = std::mem::replace(&mut w.publisher_secret, publisher2);
    w.deploy_trusted_keys = vec![w.publisher_public_file.clone()];
    let web2 = w.system("web-1", "2", 0);
    assert_eq!(w.publish(&[("web-1", &web2)])["web-1"], 2);
    let r = w.once_expect("web-1", 0);
    assert_eq!(r.report.current, generation(2, &web2), "{}", r.stderr);

    // Step 4: revoke the old key. Its later manifests are refused.
    let out = w.trust_ok(&with_root_keys(&["revoke", "--key", "e2e-publisher-1"]));
    assert!(
        out.contains("version 3") && !out.contains("e2e-publisher-1"),
        "{out}"
    );
    w.publisher_secret = publisher1;
    w.deploy_trusted_keys.clear();
    let db2 = w.system("db-1", "2", 0);
    assert_eq!(w.publish(&[("db-1", &db2)])["db-1"], 2);
    let r = w.once_expect("db-1", 2);
    assert_eq!(r.kind(), "manifest-unknown-key", "{}", r.stderr);
    assert_eq!(r.report.current, generation(1, &db1));
    assert_eq!(w.activated("db-1"), vec![db1.top.clone()]);
    assert_eq!(host_files(&w), before, "no host file changed");
    let stored = std::fs::read_to_string(w.host("db-1").state_dir.join("trust-root.json")).unwrap();
    assert!(stored.starts_with("{\"version\":3,"), "{stored}");

    // Below threshold: one root key cannot write the next version, and a version
    // signed by one (written by hand) is refused by the hosts.
    let (ok, _, err) = w.trust(&["renew", "--root-key-file", "root-1.secret"]);
    assert!(!ok && err.contains("2 of"), "{err}");
    let v3 = TrustedRoot::reload(&w.read(&Key::trust_root()), "v3").unwrap();
    let keys = w.dir.path().join("keys");
    let k1 = SecretKey::load(&keys.join("root-1.secret")).unwrap();
    let k2 = SecretKey::load(&keys.join("root-2.secret")).unwrap();
    let mut v4 = v3.root().clone();
    v4.version = 4;
    let one = v4.sign(std::slice::from_ref(&k1));
    w.write(&Key::trust_root_version(4), one.clone());
    w.write(&Key::trust_root(), one);
    let r = w.once_expect("web-1", 2);
    assert_eq!(r.kind(), "trust-root-invalid", "{}", r.stderr);
    assert_eq!(r.report.state, AgentState::Refused);

    // Rollback: version 2 copied over the newest.
    w.write(&Key::trust_root(), w.read(&Key::trust_root_version(2)));
    let r = w.once_expect("web-1", 2);
    assert_eq!(r.kind(), "trust-root-rollback", "{}", r.stderr);

    // Expired: a correctly signed version 4 whose expiry passed.
    let now = Timestamp::now();
    v4.issued_at = now - SignedDuration::from_hours(48);
    v4.expires_at = now - SignedDuration::from_hours(1);
    let expired = v4.sign(&[k1, k2]);
    w.write(&Key::trust_root_version(4), expired.clone());
    w.write(&Key::trust_root(), expired);
    let r = w.once_expect("web-1", 2);
    assert_eq!(r.kind(), "trust-root-expired", "{}", r.stderr);
    assert_eq!(r.report.current, generation(2, &web2));

    // The root key holders renew: version 5, and the host is healthy again.
    let out = w.trust_ok(&with_root_keys(&["renew"]));
    assert!(out.contains("version 5"), "{out}");
    let r = w.once_expect("web-1", 0);
    assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    assert_eq!(
        w.activated("web-1"),
        vec![web1.top.clone(), web2.top.clone()]
    );
}

#[test]
fn a_scoped_publisher_key_is_refused_for_hosts_out_of_its_scope() {
    let mut w = FleetWorld::new("trust-scope", &["web-1", "db-1"]);
    let (_, root1) = w.new_key("e2e-root-1", "root-1");
    let (web_team, _) = w.new_key("e2e-web-team-1", "web-team");
    let root = ["--root-key-file", "root-1.secret"];
    w.trust_ok(&[&["init", "--cache-key-file", "cache.public"], &root[..]].concat());
    w.trust_ok(
        &[
            &[
                "add-publisher",
                "--key-file",
                "web-team.public",
                "--scope-host",
                "web-*",
            ],
            &root[..],
        ]
        .concat(),
    );
    // Hosts pin version 1 and walk to version 2 themselves.
    w.root_pin = Some((vec![root1], 1));
    // The web team's job signs with its scoped key and holds the publisher's bucket
    // credentials, so it can write db-1's manifest.
    w.publisher_secret = web_team;
    let web1 = w.system("web-1", "1", 0);
    let db1 = w.system("db-1", "1", 0);
    let seqs = w.publish(&[("web-1", &web1), ("db-1", &db1)]);
    assert_eq!(seqs.len(), 2);
    let r = w.once_expect("web-1", 0);
    assert_eq!(r.report.current, generation(1, &web1), "{}", r.stderr);
    let r = w.once_expect("db-1", 2);
    assert_eq!(r.kind(), "manifest-out-of-scope", "{}", r.stderr);
    let message = &r.report.last_error.as_ref().unwrap().message;
    assert!(
        message.contains("e2e-web-team-1") && message.contains("web-*"),
        "{message}"
    );
    assert!(w.activated("db-1").is_empty());
    assert!(!w.in_store("db-1", &db1.top));
}
