//! Property tests of every parser that reads bucket bytes, as seeded loops (the
//! harness's SplitMix64, [`fleet_tests::rng::Rng`]; no property-testing crate):
//!
//! - round trips: a signed manifest, a signed narinfo, a status report, a NAR and a
//!   reporter snapshot each read back as what was written;
//! - every single-byte mutation of a signed manifest envelope and of a signed
//!   narinfo is refused (does not parse, or fails verification) unless it leaves the
//!   signed content unchanged (a trailing newline; for a narinfo also the fields
//!   Nix does not sign, such as `URL`): never a different content accepted as signed;
//! - the NAR validator, the narinfo, envelope, status and snapshot parsers never
//!   panic on arbitrary bytes nor on mutations of valid objects.
//!
//! `FLEET_PROPERTY_SEED` replays a run (the seed is printed); `FLEET_PROPERTY_CASES`
//! sets the number of random inputs per parser (default 2,000).

use std::collections::BTreeMap;

use fleet_core::keys::{SecretKey, TrustedKeys};
use fleet_core::manifest::{Manifest, VerifyPolicy};
use fleet_core::narinfo::NarInfo;
use fleet_core::status::{AgentState, StatusReport};
use fleet_core::{HostName, nixbase32};
use fleet_reporter::snapshot::{CachedHost, Snapshot};
use fleet_tests::rng::Rng;
use sha2::{Digest, Sha256};

fn seed() -> u64 {
    let seed = std::env::var("FLEET_PROPERTY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9);
    eprintln!("replay with FLEET_PROPERTY_SEED={seed}");
    seed
}

fn cases() -> usize {
    std::env::var("FLEET_PROPERTY_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
}

/// The replacements tried at every byte: flips of the low and high bit, and a
/// value drawn from `rng`.
fn mutations(bytes: &[u8], rng: &mut Rng) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..bytes.len() {
        for m in [0x01, 0x80, 1 + rng.below(255) as u8] {
            let mut b = bytes.to_vec();
            b[i] ^= m;
            out.push((i, b));
        }
    }
    out
}

/// Random inputs: raw bytes, and `valid` cut, repeated or with a random stretch
/// overwritten, so parsers get past their first checks.
fn random_inputs(valid: &[u8], rng: &mut Rng, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let mut b = match rng.below(3) {
                0 => (0..rng.below(600)).map(|_| rng.next_u64() as u8).collect(),
                1 => valid[..rng.below(valid.len() as u64 + 1) as usize].to_vec(),
                _ => valid.to_vec(),
            };
            if !b.is_empty() && rng.chance(70) {
                let at = rng.below(b.len() as u64) as usize;
                let len = (rng.below(16) as usize).min(b.len() - at);
                for x in &mut b[at..at + len] {
                    *x = rng.next_u64() as u8;
                }
            }
            if rng.chance(10) {
                let again = b.clone();
                b.extend_from_slice(&again);
            }
            b
        })
        .collect()
}

fn store_path(name: &str) -> String {
    let hash = nixbase32::encode(&Sha256::digest(name.as_bytes())[..20]);
    format!("/nix/store/{hash}-{name}")
}

fn manifest(host: &HostName) -> Manifest {
    let now = jiff::Timestamp::now();
    let cache = SecretKey::generate("cache-1").unwrap();
    Manifest {
        version: 1,
        host: host.clone(),
        sequence: 7,
        closure: fleet_core::StorePath::new(&store_path("nixos-system-web-1")).unwrap(),
        issued_at: now - jiff::SignedDuration::from_mins(1),
        expires_at: now + jiff::SignedDuration::from_hours(24),
        cache_keys: vec![cache.public()],
        activation: fleet_core::Activation::Switch,
        activate_after: None,
        maintenance_windows: None,
    }
}

/// Audit chain entry 1: `host`'s deploy of [`manifest`], signed with `key`.
fn audit_entry(host: &HostName, key: &SecretKey) -> Vec<u8> {
    use fleet_core::audit_chain::{ActionKind, AuditAction, ChainEntry, ManifestChange};
    let m = manifest(host);
    let change = ManifestChange {
        host: host.clone(),
        sequence: m.sequence,
        previous_sequence: None,
        closure: m.closure.clone(),
        activation: m.activation,
        expires_at: m.expires_at,
        previous_manifest_sha256: None,
        manifest_sha256: fleet_core::audit_chain::sha256_hex(&m.sign(key)),
    };
    let action = AuditAction::manifest(ActionKind::Deploy, change);
    ChainEntry::new(1, None, key.name(), action).sign(key)
}

fn signed_narinfo(key: &SecretKey) -> NarInfo {
    let digest = |s: &str| nixbase32::encode(&Sha256::digest(s.as_bytes()));
    let dep = store_path("glibc-2.39");
    let text = format!(
        "StorePath: {}\nURL: nar/{f}.nar.zst\nCompression: zstd\nFileHash: sha256:{f}\n\
         FileSize: 4242\nNarHash: sha256:{n}\nNarSize: 9000\nReferences: {} {}\n\
         Deriver: {}.drv\n",
        store_path("hello-2.12"),
        store_path("hello-2.12").trim_start_matches("/nix/store/"),
        dep.trim_start_matches("/nix/store/"),
        store_path("hello-2.12-drv").trim_start_matches("/nix/store/"),
        f = digest("file"),
        n = digest("nar"),
    );
    let mut ni = NarInfo::parse(text.as_bytes(), "narinfo").unwrap();
    ni.sign(key);
    ni
}

#[test]
fn a_signed_manifest_round_trips_and_every_byte_mutation_is_refused() {
    let mut rng = Rng::new(seed());
    let host = HostName::new("web-1").unwrap();
    let key = SecretKey::generate("publisher-1").unwrap();
    let trusted = TrustedKeys::new([key.public()]);
    let m = manifest(&host);
    let bytes = m.sign(&key);
    let policy = VerifyPolicy {
        trusted: &trusted,
        host: &host,
        highest_seen: None,
        now: Some(jiff::Timestamp::now()),
    };
    let verified = Manifest::verify(&bytes, &policy).unwrap();
    assert_eq!(verified.manifest, m);

    let (mut refused, mut harmless) = (0, 0);
    for (i, mutated) in mutations(&bytes, &mut rng) {
        match Manifest::verify(&mutated, &policy) {
            Err(_) => refused += 1,
            Ok(v) => {
                assert_eq!(
                    v.manifest,
                    m,
                    "byte {i} changed the manifest and it still verified: {:?}",
                    String::from_utf8_lossy(&mutated)
                );
                harmless += 1;
            }
        }
    }
    eprintln!("manifest: {refused} mutations refused, {harmless} left the content unchanged");
    // Only the bytes outside the signed payload's meaning may be changed harmlessly.
    assert!(harmless <= 3 * 2, "{harmless} accepted mutations");
}

#[test]
fn a_signed_narinfo_round_trips_and_every_byte_mutation_is_refused() {
    let mut rng = Rng::new(seed());
    let key = SecretKey::generate("cache-1").unwrap();
    let trusted = TrustedKeys::new([key.public()]);
    let ni = signed_narinfo(&key);
    let text = ni.to_text();
    let back = NarInfo::parse(text.as_bytes(), "narinfo").unwrap();
    assert_eq!(back, ni);
    back.verify(&trusted, "narinfo").unwrap();

    let (mut refused, mut harmless) = (0, 0);
    for (i, mutated) in mutations(text.as_bytes(), &mut rng) {
        let accepted = NarInfo::parse(&mutated, "narinfo")
            .ok()
            .filter(|p| p.verify(&trusted, "narinfo").is_ok());
        match accepted {
            None => refused += 1,
            Some(p) => {
                // What the signature covers (path, NarHash, NarSize, references) must
                // be unchanged. The rest (URL, FileHash, FileSize, Compression) is not
                // signed, in Nix as here: a fetch of a changed URL is refused when the
                // NAR's hash is not the signed NarHash (agent/src/fetch/verify.rs).
                assert_eq!(
                    p.fingerprint(),
                    ni.fingerprint(),
                    "byte {i} changed the signed content and it still verified: {:?}",
                    String::from_utf8_lossy(&mutated)
                );
                assert_eq!((p.nar_hash, p.nar_size), (ni.nar_hash, ni.nar_size));
                harmless += 1;
            }
        }
    }
    eprintln!("narinfo: {refused} mutations refused, {harmless} changed only unsigned fields");
}

#[test]
fn status_reports_and_snapshots_round_trip() {
    let host = HostName::new("web-1").unwrap();
    let now = jiff::Timestamp::now();
    for state in [AgentState::Healthy, AgentState::Failed, AgentState::Refused] {
        let r = fleet_reporter::synth::report(&host, state, 1, 2, now);
        let back = StatusReport::parse(&r.to_bytes(), "status.json", &host).unwrap();
        assert_eq!(back, r);
    }
    let hosts: BTreeMap<HostName, CachedHost> = (0..5)
        .map(|i| (fleet_reporter::synth::host_name(i), CachedHost::default()))
        .collect();
    let snap = Snapshot::new(now, String::new(), hosts);
    assert_eq!(Snapshot::parse(&snap.to_bytes(), "snapshot").unwrap(), snap);
}

#[test]
fn parsers_never_panic_on_arbitrary_or_mutated_bytes() {
    let mut rng = Rng::new(seed());
    let n = cases();
    let host = HostName::new("web-1").unwrap();
    let key = SecretKey::generate("publisher-1").unwrap();
    let trusted = TrustedKeys::new([key.public()]);
    let now = jiff::Timestamp::now();

    let manifest = manifest(&host).sign(&key);
    let policy = VerifyPolicy {
        trusted: &trusted,
        host: &host,
        highest_seen: None,
        now: Some(now),
    };
    for b in random_inputs(&manifest, &mut rng, n) {
        let _ = Manifest::verify(&b, &policy);
    }

    let narinfo = signed_narinfo(&key).to_text().into_bytes();
    for b in random_inputs(&narinfo, &mut rng, n) {
        if let Ok(ni) = NarInfo::parse(&b, "narinfo") {
            let _ = ni.verify(&trusted, "narinfo");
            let _ = ni.to_text();
        }
    }

    let status = fleet_reporter::synth::report(&host, AgentState::Failed, 1, 2, now).to_bytes();
    for b in random_inputs(&status, &mut rng, n) {
        let _ = StatusReport::parse(&b, "status.json", &host);
    }

    let hosts: BTreeMap<HostName, CachedHost> = (0..3)
        .map(|i| (fleet_reporter::synth::host_name(i), CachedHost::default()))
        .collect();
    let snapshot = Snapshot::new(now, String::new(), hosts).to_bytes();
    for b in random_inputs(&snapshot, &mut rng, n) {
        let _ = Snapshot::parse(&b, "snapshot");
    }

    let nar = sample_nar();
    fleet_core::nar::validate(&nar[..]).unwrap();
    for b in random_inputs(&nar, &mut rng, n) {
        let _ = fleet_core::nar::validate(&b[..]);
    }
    for (_, b) in mutations(&nar, &mut rng) {
        let _ = fleet_core::nar::validate(&b[..]);
    }
}

/// The NAR of a small tree: a directory, a file, an executable and a symlink.
fn sample_nar() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(root.join("README"), "hello\n").unwrap();
    std::fs::write(root.join("bin/tool"), "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("bin/tool"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("bin/tool", root.join("link")).unwrap();
    let mut out = Vec::new();
    fleet_core::nar::dump(&root, &mut out).unwrap();
    out
}

/// One valid object per fuzz target (`fuzz/fuzz_targets/<name>.rs`), made by the
/// real code: the seed corpus `scripts/fuzz.sh` starts from.
fn fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let host = HostName::new("web-1").unwrap();
    let now = jiff::Timestamp::now();
    let key = SecretKey::generate("publisher-1").unwrap();
    let hosts: BTreeMap<HostName, CachedHost> = (0..3)
        .map(|i| (fleet_reporter::synth::host_name(i), CachedHost::default()))
        .collect();
    vec![
        ("nar", sample_nar()),
        ("narinfo", signed_narinfo(&key).to_text().into_bytes()),
        ("manifest", manifest(&host).sign(&key)),
        (
            "status",
            fleet_reporter::synth::report(&host, AgentState::Failed, 1, 2, now).to_bytes(),
        ),
        (
            "snapshot",
            Snapshot::new(now, String::new(), hosts).to_bytes(),
        ),
        ("audit_entry", audit_entry(&host, &key)),
    ]
}

/// Checks the fuzz seeds are valid; with `FLEET_FUZZ_SEEDS_DIR` set, writes each to
/// `<dir>/<target>/seed` (what `scripts/fuzz.sh` does before fuzzing).
#[test]
fn fuzz_seeds_are_valid_objects() {
    let host = HostName::new("web-1").unwrap();
    let out = std::env::var_os("FLEET_FUZZ_SEEDS_DIR").map(std::path::PathBuf::from);
    for (target, bytes) in fuzz_seeds() {
        let valid = match target {
            "nar" => fleet_core::nar::validate(&bytes[..]).is_ok(),
            "narinfo" => NarInfo::parse(&bytes, "seed").is_ok(),
            "manifest" => std::str::from_utf8(&bytes).is_ok_and(|t| t.contains("payloadType")),
            "status" => StatusReport::parse(&bytes, "seed", &host).is_ok(),
            "snapshot" => Snapshot::parse(&bytes, "seed").is_ok(),
            "audit_entry" => std::str::from_utf8(&bytes)
                .is_ok_and(|t| t.contains(fleet_core::audit_chain::AUDIT_PAYLOAD_TYPE)),
            other => panic!("no check for fuzz target {other}"),
        };
        assert!(valid, "the {target} seed does not parse");
        if let Some(dir) = &out {
            let dir = dir.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("seed"), &bytes).unwrap();
        }
    }
}
