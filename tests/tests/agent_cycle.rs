//! `fleet-agent once` end to end on a `file://` bucket with real Nix: a cache written by
//! `nix copy --to file://…`, manifests signed with `Manifest::sign`, imports into a
//! chroot store, the profile set with real `nix-env`, and the fixture closures' own
//! `switch-to-configuration`, which logs each call.
//!
//! - the happy path activates once, and a second cycle does nothing (a 304);
//! - each hostile manifest is refused with its own kind, the running generation
//!   kept, the highest sequence seen left alone;
//! - a closure refused by the fetch keeps the generation and lands in the status;
//! - activation failure and health failure each roll back to the previous
//!   generation (profile and switch) and are not retried while unchanged;
//! - events that could not be written are queued and sent once the bucket is back.

mod agent_common;

use agent_common::World;
use fleet_core::keys::SecretKey;
use fleet_core::manifest::MAX_MANIFEST_SIZE;
use fleet_core::status::AgentState;

#[test]
fn happy_path_activates_once_then_idles() {
    let w = World::new("web-1");
    let g1 = w.system("1", 0);
    w.deploy(1, &g1);

    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy);
    assert_eq!(r.report.last_error, None);
    let current = r.report.current.clone().unwrap();
    assert_eq!((current.sequence, &current.closure), (Some(1), &g1.top));
    assert_eq!(r.report.desired, r.report.current);
    assert_eq!(r.report.facts.nixos_version.as_deref(), Some("24.05"));
    // Imported into the chroot store, profile set, the closure's own script run once.
    for p in &g1.paths {
        assert!(w.nix.is_valid_in(&w.chroot, p).unwrap(), "{p} not imported");
    }
    assert_eq!(w.profile_target(), Some(g1.top.clone()));
    let calls = w.activations();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].toplevel, g1.top);
    assert_eq!(calls[0].args, ["switch"]);
    // status.json in the bucket is what the agent printed, and says healthy.
    let status = w.status();
    assert_eq!(status.state, AgentState::Healthy);
    assert_eq!(status.current, r.report.current);
    assert_eq!(
        w.event_states(),
        [
            AgentState::Fetching,
            AgentState::Activating,
            AgentState::CheckingHealth,
            AgentState::Healthy
        ]
    );

    // Second cycle: the conditional GET answers 304, nothing is activated, no event.
    let r2 = w.once_expect(0);
    assert!(r2.stderr.contains("manifest unchanged"), "{}", r2.stderr);
    assert_eq!(r2.report.state, AgentState::Healthy);
    assert_eq!(w.activations().len(), 1);
    assert_eq!(w.events().len(), 4);
    assert!(w.status().time >= status.time);
}

#[test]
fn an_upgrade_keeps_the_old_generation_as_previous() {
    let w = World::new("web-2");
    let g1 = w.system("1", 0);
    let g2 = w.system("2", 0);
    w.bring_up(1, &g1);
    w.deploy(2, &g2);
    let r = w.once_expect(0);
    assert_eq!(r.report.current.unwrap().closure, g2.top);
    assert_eq!(w.activated(), [g1.top.clone(), g2.top.clone()]);
    assert_eq!(w.profile_target(), Some(g2.top.clone()));
    let st = w.state();
    assert_eq!(st.previous.unwrap().closure, g1.top);
    assert_eq!(st.highest_seen.unwrap().sequence, 2);

    // The same closure republished with a higher sequence is a heartbeat, not a switch.
    w.put_manifest(&w.manifest(3, &g2.top));
    let r = w.once_expect(0);
    assert_eq!(r.report.current.unwrap().sequence, Some(3));
    assert_eq!(w.activations().len(), 2);
}

/// Brings up generation 1 at sequence 5, then serves `bytes` as the manifest and
/// checks the refusal: exit 2, state `refused` with `kind`, generation 1 kept, no
/// activation, highest sequence unchanged; and that an unchanged refused manifest is
/// not downloaded again (304) but still reported.
fn assert_refused(w: &World, bytes: Vec<u8>, kind: &str, message_has: &[&str]) {
    assert_refused_with(w, bytes, kind, message_has, true)
}

fn assert_refused_with(
    w: &World,
    bytes: Vec<u8>,
    kind: &str,
    message_has: &[&str],
    remembered_by_etag: bool,
) {
    let g1 = w.system("1", 0);
    w.bring_up(5, &g1);
    let seen = w.state().highest_seen;
    w.put_manifest_bytes(bytes);
    let r = w.once_expect(2);
    assert_eq!(r.report.state, AgentState::Refused);
    assert_eq!(r.kind(), kind, "{}", r.message());
    for want in message_has {
        assert!(r.message().contains(want), "{want:?} in {:?}", r.message());
        assert!(r.stderr.contains(want), "{want:?} not logged: {}", r.stderr);
    }
    assert_eq!(r.report.current.as_ref().unwrap().closure, g1.top);
    assert_eq!(w.status().last_error.unwrap().kind, kind);
    assert_eq!(w.activated(), vec![g1.top.clone()]);
    assert_eq!(w.profile_target(), Some(g1.top.clone()));
    assert_eq!(w.state().highest_seen, seen);

    let again = w.once_expect(2);
    assert_eq!(again.kind(), kind);
    assert_eq!(
        again.stderr.contains("manifest unchanged"),
        remembered_by_etag,
        "{}",
        again.stderr
    );
    assert_eq!(w.activations().len(), 1);
}

#[test]
fn refuses_a_bad_signature() {
    let w = World::new("web-3");
    let g2 = w.system("2", 0);
    w.publish_closure(&g2);
    // A key that reuses the trusted key's name.
    let impostor = SecretKey::generate("publisher-1").unwrap();
    let bytes = w.manifest(6, &g2.top).sign(&impostor);
    assert_refused(
        &w,
        bytes,
        "manifest-bad-signature",
        &["hosts/web-3/manifest.json", "publisher-1"],
    );
}

#[test]
fn refuses_an_unknown_key() {
    let w = World::new("web-4");
    let g2 = w.system("2", 0);
    w.publish_closure(&g2);
    let other = SecretKey::generate("mallory-1").unwrap();
    let bytes = w.manifest(6, &g2.top).sign(&other);
    assert_refused(&w, bytes, "manifest-unknown-key", &["mallory-1"]);
}

#[test]
fn refuses_a_manifest_for_another_host() {
    let w = World::new("web-5");
    let g2 = w.system("2", 0);
    w.publish_closure(&g2);
    let mut m = w.manifest(6, &g2.top);
    m.host = fleet_core::HostName::new("db-1").unwrap();
    let bytes = m.sign(&w.publisher);
    assert_refused(&w, bytes, "manifest-wrong-host", &["db-1", "web-5"]);
}

#[test]
fn refuses_a_replayed_lower_sequence() {
    let w = World::new("web-6");
    let g2 = w.system("2", 0);
    w.publish_closure(&g2);
    let bytes = w.manifest(4, &g2.top).sign(&w.publisher);
    assert_refused(&w, bytes, "manifest-rollback", &["sequence 4", "5"]);
}

#[test]
fn refuses_an_expired_manifest() {
    let w = World::new("web-7");
    let g2 = w.system("2", 0);
    w.publish_closure(&g2);
    let mut m = w.manifest(6, &g2.top);
    m.issued_at = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(48);
    m.expires_at = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24);
    let bytes = m.sign(&w.publisher);
    // An expiry refusal is not remembered by ETag: the host's clock may have been
    // wrong, so the same object is read and checked again at every poll.
    assert_refused_with(&w, bytes, "manifest-expired", &["expired at"], false);
}

#[test]
fn refuses_a_manifest_far_beyond_the_size_bound() {
    let w = World::new("web-8");
    let bytes = vec![b'{'; 64 * MAX_MANIFEST_SIZE as usize];
    // The bucket refuses it on the announced size, before its body is read; its
    // ETag is remembered, so the next poll is a conditional GET answered 304.
    assert_refused_with(
        &w,
        bytes,
        "manifest-too-large",
        &["hosts/web-8/manifest.json", "65536-byte bound"],
        true,
    );
}

#[test]
fn refuses_garbage_as_malformed() {
    let w = World::new("web-9");
    assert_refused(
        &w,
        b"\xff\xfe not a manifest".to_vec(),
        "manifest-malformed",
        &["hosts/web-9/manifest.json"],
    );
}

#[test]
fn a_fetch_refusal_keeps_the_generation_and_lands_in_the_status() {
    let w = World::new("web-10");
    let g1 = w.system("1", 0);
    w.bring_up(1, &g1);
    // Generation 2's narinfos are signed by a key the host does not trust, under the
    // trusted key's name (so only the signature check can catch it).
    let g2 = w.system("2", 0);
    let rogue_dir = w.dir.path().join("rogue");
    std::fs::create_dir_all(&rogue_dir).unwrap();
    let (rogue, _) = w
        .nix
        .generate_binary_cache_key("fleet-cache-1", &rogue_dir)
        .unwrap();
    // The shared paths are already in the cache, trusted; the new ones are rogue.
    w.publish_closure_signed(&g2, &rogue);
    w.put_manifest(&w.manifest(2, &g2.top));
    let r = w.once_expect(2);
    assert_eq!(r.report.state, AgentState::Refused);
    assert_eq!(r.kind(), "narinfo-untrusted", "{}", r.message());
    assert!(r.message().contains(&g2.top.to_string()) || r.message().contains("narinfo"));
    assert_eq!(r.report.current.as_ref().unwrap().closure, g1.top);
    assert_eq!(r.report.desired.as_ref().unwrap().closure, g2.top);
    assert_eq!(w.activated(), vec![g1.top.clone()]);
    assert!(!w.nix.is_valid_in(&w.chroot, &g2.top).unwrap());
    assert_eq!(w.status().last_error.unwrap().kind, "narinfo-untrusted");
    // Not fetched again while the manifest is unchanged.
    let again = w.once_expect(2);
    assert!(
        again.stderr.contains("manifest unchanged"),
        "{}",
        again.stderr
    );
}

#[test]
fn activation_failure_rolls_back() {
    let w = World::new("web-11");
    let g1 = w.system("1", 0);
    let bad = w.system("2", 1);
    w.bring_up(1, &g1);
    w.deploy(2, &bad);
    let r = w.once_expect(3);
    assert_eq!(r.report.state, AgentState::RolledBack);
    assert_eq!(r.kind(), "activation-failed");
    assert!(
        r.message().contains("switch-to-configuration") && r.message().contains("rolled back"),
        "{}",
        r.message()
    );
    assert_eq!(r.report.current.as_ref().unwrap().closure, g1.top);
    // Profile and switch of the previous generation.
    assert_eq!(w.profile_target(), Some(g1.top.clone()));
    assert_eq!(
        w.activated(),
        [g1.top.clone(), bad.top.clone(), g1.top.clone()]
    );
    assert_eq!(w.status().state, AgentState::RolledBack);
    // The failed generation is not tried again while the manifest is unchanged.
    let again = w.once_expect(3);
    assert_eq!(again.kind(), "activation-failed");
    assert_eq!(w.activations().len(), 3);
}

#[test]
fn health_failure_rolls_back() {
    let mut w = World::new("web-12");
    let flag = w.dir.path().join("unhealthy");
    w.extra_config = format!(
        "health-timeout = \"2s\"\nhealth-checks = [{{ command = [\"/bin/sh\", \"-c\", \"test ! -e {}\"] }}]\n",
        flag.display()
    );
    let g1 = w.system("1", 0);
    let g2 = w.system("2", 0);
    w.bring_up(1, &g1);
    std::fs::write(&flag, "").unwrap();
    w.deploy(2, &g2);
    let r = w.once_expect(3);
    assert_eq!(r.report.state, AgentState::RolledBack);
    assert_eq!(r.kind(), "health-check-failed");
    assert!(r.message().contains("test ! -e"), "{}", r.message());
    assert_eq!(r.report.current.as_ref().unwrap().closure, g1.top);
    assert_eq!(w.profile_target(), Some(g1.top.clone()));
    assert_eq!(
        w.activated(),
        [g1.top.clone(), g2.top.clone(), g1.top.clone()]
    );
    assert!(w.event_states().contains(&AgentState::CheckingHealth));
}

#[test]
fn events_are_queued_while_the_status_prefix_is_unwritable() {
    let w = World::new("web-13");
    let g1 = w.system("1", 0);
    w.deploy(1, &g1);
    // A file where the host's status folder should be: every status write fails.
    let status_dir = w.bucket_root.join("status/web-13");
    std::fs::create_dir_all(status_dir.parent().unwrap()).unwrap();
    std::fs::write(&status_dir, "in the way").unwrap();
    let r = w.once_expect(0);
    assert!(r.stderr.contains("could not write status"), "{}", r.stderr);
    let queued = w.state().pending_events.len();
    assert_eq!(queued, 4, "{:?}", w.state().pending_events);

    // Bucket writable again: the queued events arrive, oldest first, then the status.
    std::fs::remove_file(&status_dir).unwrap();
    w.once_expect(0);
    assert!(w.state().pending_events.is_empty());
    assert_eq!(
        w.event_states(),
        [
            AgentState::Fetching,
            AgentState::Activating,
            AgentState::CheckingHealth,
            AgentState::Healthy
        ]
    );
    assert_eq!(w.status().state, AgentState::Healthy);
}

#[test]
fn follows_what_fleet_publish_deploys() {
    let w = World::new("web-14");
    let g1 = w.system("1", 0);
    let g2 = w.system("2", 0);
    // The publisher's key on disk, in Nix's format, as fleet-publish reads it.
    let signing_key = w.dir.path().join("publisher-1.secret");
    w.publisher.write_new(&signing_key).unwrap();
    let deploy = |closure: &fleet_core::StorePath| {
        let out = std::process::Command::new(fleet_tests::bin("fleet-publish"))
            .env("NIX_CONFIG", fleet_tests::nix::NIX_CONFIG)
            .env("NIX_USER_CONF_FILES", "")
            .args(["deploy", "--bucket", &w.store_url, "--host", "web-14"])
            .arg("--cache-key")
            .arg(&w.cache_secret_file)
            .arg("--signing-key")
            .arg(&signing_key)
            .arg("--closure")
            .arg(closure.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    deploy(&g1.top);
    let r = w.once_expect(0);
    assert_eq!(r.report.current.unwrap().closure, g1.top, "{}", r.stderr);
    deploy(&g2.top);
    let r = w.once_expect(0);
    let current = r.report.current.unwrap();
    assert_eq!((current.sequence, &current.closure), (Some(2), &g2.top));
    assert_eq!(w.activated(), [g1.top.clone(), g2.top.clone()]);
}

#[test]
fn json_logs_and_a_missing_manifest() {
    let mut w = World::new("web-15");
    w.extra_config = "log-format = \"json\"\n".to_owned();
    let r = w.once_expect(4);
    assert_eq!(r.report.state, AgentState::Failed);
    assert_eq!(r.kind(), "manifest-missing");
    assert!(
        r.message().contains("hosts/web-15/manifest.json"),
        "{}",
        r.message()
    );
    let mut lines = 0;
    for line in r.stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        lines += 1;
    }
    assert!(lines > 0);
    assert!(
        r.stderr.contains("\"kind\":\"manifest-missing\""),
        "{}",
        r.stderr
    );
}
