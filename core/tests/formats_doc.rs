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
fn documented_audit_entry_is_the_format() {
    use fleet_core::audit_chain::{ActionKind, ChainEntry};
    let b = blocks();
    let text = get(&b, "audit-payload");
    let e: ChainEntry = serde_json::from_str(text).unwrap();
    assert_eq!((e.index, e.action.clone()), (17, ActionKind::Deploy));
    // What the publisher writes is this text, byte for byte (pretty JSON).
    assert_eq!(serde_json::to_string_pretty(&e).unwrap() + "\n", text);
    let rows = e.manifest_rows();
    assert_eq!((rows[0].host.as_str(), rows[0].sequence), ("web-1", 8));
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

/// The rows of the first markdown table whose header starts `| key |` in `text`
/// (lines may carry a `//! ` prefix), as (key pattern, written by, read by).
fn layout_table(text: &str) -> Vec<(String, String, String)> {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.strip_prefix("//!").map_or(l, str::trim_start))
        .collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("| key | written by | read by |"))
        .expect("a `| key | written by | read by |` table");
    lines[start + 2..]
        .iter()
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<String> = l
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().replace("\\|", "|"))
                .collect();
            assert_eq!(cells.len(), 3, "row {l:?}");
            let key = cells[0].trim_matches('`').to_owned();
            (key, cells[1].clone(), cells[2].clone())
        })
        .collect()
}

/// Whether `key` fits `pattern`: `<name>` stands for one or more of
/// `A-Z a-z 0-9 . _ -`, a final `[a|b]` for nothing, `a` or `b`.
fn fits(pattern: &str, key: &str) -> bool {
    if let Some((head, alts)) = pattern.strip_suffix(']').and_then(|p| p.rsplit_once('[')) {
        return std::iter::once("")
            .chain(alts.split('|'))
            .any(|alt| fits(&format!("{head}{alt}"), key));
    }
    match pattern.split_once('<') {
        None => pattern == key,
        Some((lit, rest)) => {
            let Some(after) = key.strip_prefix(lit) else {
                return false;
            };
            let rest = rest.split_once('>').expect("placeholder closes").1;
            let ok = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
            (1..=after.len())
                .take_while(|&n| after[..n].chars().all(ok))
                .any(|n| fits(rest, &after[n..]))
        }
    }
}

/// The documented layout is `fleet_core::layout::LAYOUT`, in `docs/formats.md` and in
/// `layout.rs`'s own docs, and each row's key is what its constructor builds.
#[test]
fn documented_bucket_layout_is_the_code() {
    use fleet_core::layout::{Key, LAYOUT, ObjectName};
    let code: Vec<(String, String, String)> = LAYOUT
        .iter()
        .map(|r| (r.pattern.into(), r.written_by.into(), r.read_by.into()))
        .collect();
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/formats.md"))
        .unwrap();
    assert_eq!(layout_table(&doc), code, "docs/formats.md's key table");
    let module = include_str!("../src/layout.rs");
    assert_eq!(layout_table(module), code, "core/src/layout.rs's key table");

    let host = HostName::new("web-1").unwrap();
    let time: jiff::Timestamp = "2026-11-26T21:25:00Z".parse().unwrap();
    let path =
        fleet_core::StorePath::new("/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-top").unwrap();
    let built = [
        Key::cache_info(),
        Key::narinfo(path.hash()),
        Key::nar("nar/1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar.zst").unwrap(),
        Key::manifest(&host),
        Key::hold(&host),
        Key::status(&host),
        Key::status_event(&host, &ObjectName::status_event(time, 7)),
        Key::audit(&ObjectName::audit_entry(time, &host, 8)),
        Key::release(&ObjectName::new("2026-12-02-a").unwrap()),
        Key::rollout(&ObjectName::new("2026-12-02-a").unwrap()),
        Key::dashboard_snapshot(),
        Key::dashboard_snapshot_delta(),
        Key::registry_host(&host),
        Key::audit_chain(17),
        Key::audit_head(),
        Key::trust_root_version(3),
        Key::trust_root(),
        Key::gc_condemned(),
        Key::change_marker(time, &host),
    ];
    for key in &built {
        let rows: Vec<_> = LAYOUT
            .iter()
            .filter(|r| fits(r.pattern, key.as_str()))
            .collect();
        assert_eq!(rows.len(), 1, "{key} fits {rows:?}");
    }
    for row in LAYOUT {
        assert!(
            built.iter().any(|k| fits(row.pattern, k.as_str())),
            "no constructor builds {}",
            row.pattern
        );
    }
    assert!(!fits("cache/<hash>.narinfo", "cache/a/b.narinfo"));
    assert!(fits("cache/nar/<f>.nar[.zst|.xz]", "cache/nar/x.nar"));
}

#[test]
fn documented_root_of_trust_parses_and_follows_the_rules() {
    use fleet_core::trust::Root;
    let b = blocks();
    let root: Root = serde_json::from_str(get(&b, "root-payload")).unwrap();
    root.validate("docs").unwrap();
    // What `fleet-publish trust` writes is the same text, field for field.
    let again = serde_json::to_string_pretty(&root).unwrap() + "\n";
    assert_eq!(again, get(&b, "root-payload"));
    let web = fleet_core::HostName::new("web-1").unwrap();
    let db = fleet_core::HostName::new("db-1").unwrap();
    let scope = root.publisher_keys[1].scope.as_ref().unwrap();
    assert!(scope.admits(&web, &[]) && !scope.admits(&db, &[]));
}
