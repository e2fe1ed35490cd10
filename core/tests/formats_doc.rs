//! Keeps `docs/formats.md` true: every fenced block tagged `fleet:<kind>` is parsed,
//! verified or regenerated with the real code and compared.

use std::collections::HashMap;

use fleet_core::manifest::{MANIFEST_PAYLOAD_TYPE, VerifyPolicy};
use fleet_core::narinfo::{NarInfo, nix_cache_info};
use fleet_core::{HostName, Manifest, PublicKey, SecretKey, StatusReport, TrustedKeys, iam};

fn blocks() -> HashMap<String, String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/formats.md"))
        .expect("docs/formats.md exists");
    let mut out = HashMap::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(tag) = line.strip_prefix("```").and_then(|info| {
            info.split_whitespace()
                .find_map(|w| w.strip_prefix("fleet:"))
        }) else {
            continue;
        };
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        let prev = out.insert(tag.to_owned(), body.join("\n") + "\n");
        assert!(prev.is_none(), "block fleet:{tag} appears twice");
    }
    out
}

fn get<'a>(b: &'a HashMap<String, String>, tag: &str) -> &'a str {
    b.get(tag)
        .unwrap_or_else(|| panic!("docs/formats.md lacks a fleet:{tag} block"))
}

#[test]
fn documented_keys_are_a_pair() {
    let b = blocks();
    let keys = get(&b, "keys");
    let secret = keys
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .unwrap();
    let public = keys
        .lines()
        .find_map(|l| l.strip_prefix("public: "))
        .unwrap();
    let sk = SecretKey::parse(secret, "docs").unwrap();
    assert_eq!(sk.public(), PublicKey::parse(public, "docs").unwrap());
}

#[test]
fn documented_manifest_verifies_and_matches_its_payload() {
    let b = blocks();
    let keys = get(&b, "keys");
    let public = keys
        .lines()
        .find_map(|l| l.strip_prefix("public: "))
        .unwrap();
    let trusted = TrustedKeys::new([PublicKey::parse(public, "docs").unwrap()]);
    let host = HostName::new("web-1").unwrap();
    let envelope = get(&b, "manifest-envelope");
    let v = Manifest::verify(
        envelope.trim_end().as_bytes(),
        &VerifyPolicy {
            trusted: &trusted,
            host: &host,
            highest_seen: None,
            now: Some("2026-11-27T00:00:00Z".parse().unwrap()),
        },
    )
    .unwrap();
    let payload: Manifest = serde_json::from_str(get(&b, "manifest-payload")).unwrap();
    assert_eq!(v.manifest, payload);
    // Re-signing the documented payload with the documented key gives the documented
    // envelope byte for byte (ed25519 is deterministic).
    let secret = keys
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .unwrap();
    let resigned = payload.sign(&SecretKey::parse(secret, "docs").unwrap());
    assert_eq!(String::from_utf8(resigned).unwrap(), envelope);
    assert!(envelope.contains(MANIFEST_PAYLOAD_TYPE));
}

#[test]
fn documented_status_parses() {
    let b = blocks();
    let host = HostName::new("web-1").unwrap();
    let s = StatusReport::parse(
        get(&b, "status").as_bytes(),
        "status/web-1/status.json",
        &host,
    )
    .unwrap();
    assert_eq!(s.state.as_str(), "rolled-back");
}

#[test]
fn documented_cache_files_match_the_code() {
    let b = blocks();
    assert_eq!(get(&b, "nix-cache-info"), nix_cache_info());
    let ni = NarInfo::parse(get(&b, "narinfo").as_bytes(), "docs").unwrap();
    assert_eq!(ni.to_text(), get(&b, "narinfo"));
    assert_eq!(format!("{}\n", ni.fingerprint()), get(&b, "fingerprint"));
}

#[test]
fn documented_agent_policy_is_the_generated_one() {
    let b = blocks();
    let p = iam::policy(
        &iam::Role::Agent(HostName::new("web-1").unwrap()),
        "fleet-prod",
        "",
    )
    .unwrap();
    assert_eq!(p, get(&b, "iam-agent"));
}
