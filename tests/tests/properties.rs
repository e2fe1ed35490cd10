//! Property tests of every parser that reads bucket bytes, as seeded loops (the
//! harness's SplitMix64, [`fleet_tests::rng::Rng`]; no property-testing crate):
//!
//! - round trips: a signed manifest, a signed narinfo, a status report, a NAR and a
//!   reporter snapshot each read back as what was written;
//! - every single-byte mutation of a signed manifest envelope and of a signed
//!   narinfo is refused (does not parse, or fails verification) unless it leaves the
//!   signed content unchanged (a trailing newline; for a narinfo also the fields
//!   Nix does not sign, such as `URL`): never a different content accepted as signed;
//! - NAR serialisation: for random directory trees (nested and empty directories,
//!   empty and executable files, files of up to a few hundred KiB, relative and
//!   absolute symlinks), `nar::dump_to_vec` writes exactly what `nar::dump` writes,
//!   and a limit below its size is refused;
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

/// Fills `dir` with a random tree, `depth` levels at most.
fn random_tree(rng: &mut Rng, dir: &std::path::Path, depth: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir(dir).unwrap();
    for i in 0..rng.below(6) {
        // Names that sort differently as bytes and as numbers, and non-ASCII ones.
        let name = match rng.below(4) {
            0 => format!("f{}", rng.below(20)),
            1 => format!("é{i}"),
            2 => format!(".hidden-{i}"),
            _ => format!("{}", rng.below(1000)),
        };
        let p = dir.join(&name);
        if p.symlink_metadata().is_ok() {
            continue;
        }
        match rng.below(4) {
            0 if depth > 0 => random_tree(rng, &p, depth - 1),
            1 => {
                let target = if rng.chance(50) {
                    format!("../{}", rng.below(9))
                } else {
                    "/nix/store/abs-target".to_owned()
                };
                std::os::unix::fs::symlink(target, &p).unwrap();
            }
            _ => {
                let len = match rng.below(4) {
                    0 => 0,
                    1 => rng.below(16),
                    2 => rng.below(5000),
                    _ => rng.below(400_000),
                } as usize;
                let bytes: Vec<u8> = (0..len).map(|j| (j as u64 ^ rng.below(4)) as u8).collect();
                std::fs::write(&p, bytes).unwrap();
                let mode = if rng.chance(30) { 0o555 } else { 0o444 };
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        }
    }
}

#[test]
fn nar_dump_to_vec_matches_dump_on_random_trees() {
    let mut rng = Rng::new(seed());
    let n = (cases() / 20).max(10);
    for case in 0..n {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        // Most roots are directories; some a lone file or symlink.
        match rng.below(10) {
            0 => std::fs::write(&root, vec![7u8; rng.below(3000) as usize]).unwrap(),
            1 => std::os::unix::fs::symlink("target", &root).unwrap(),
            _ => random_tree(&mut rng, &root, 3),
        }
        let mut want = Vec::new();
        fleet_core::nar::dump(&root, &mut want).unwrap();
        let mut got = Vec::with_capacity(rng.below(1 << 20) as usize);
        fleet_core::nar::dump_to_vec(&root, &mut got, want.len() as u64).unwrap();
        assert!(got == want, "case {case}: dump_to_vec differs from dump");
        let short = rng.below(want.len() as u64);
        let err = fleet_core::nar::dump_to_vec(&root, &mut Vec::new(), short).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "case {case}");
        // Read-only files and directories: let the temporary directory go.
        let _ = std::process::Command::new("chmod")
            .args(["-R", "u+w"])
            .arg(d.path())
            .status();
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

// ---- The formats of releases, rollouts, the root of trust, enrollment and holds ----
//
// Each signed object is checked the same way: it round-trips through its own
// verification; every single-byte mutation (three per byte) either is refused or
// verifies as exactly the object that was signed (whitespace of the envelope, or one
// signature of more than the threshold damaged); random and damaged inputs never panic.

use fleet_core::bundle::{Bundle, BundleAgent, BundleCredentials};
use fleet_core::enrollment::EnrollmentRequest;
use fleet_core::hold::Hold;
use fleet_core::registry::HostEntry;
use fleet_core::release::{Budget, Release, ReleaseHost, Selector, WaveSpec};
use fleet_core::rollout::{HostOutcome, HostState, Previous, RolloutState};
use fleet_core::trust::{Root, ScopedKey, TrustedRoot};

/// A fixed instant, so seeds do not change from run to run.
fn t0() -> jiff::Timestamp {
    "2026-12-02T21:25:00Z".parse().unwrap()
}

fn hosts(n: usize) -> Vec<HostName> {
    (1..=n)
        .map(|i| HostName::new(&format!("web-{i}")).unwrap())
        .collect()
}

/// Release `r-1` of five hosts in two waves (web-1 by name, then the rest by share).
fn release() -> Release {
    let all: std::collections::BTreeSet<HostName> = hosts(5).into_iter().collect();
    let specs = [
        WaveSpec {
            select: Selector::Hosts(vec!["web-1".into()]),
            soak_seconds: 600,
            budget: Budget::Hosts(0),
        },
        WaveSpec {
            select: Selector::Percent(100),
            soak_seconds: 0,
            budget: Budget::Percent(10),
        },
    ];
    let waves = fleet_core::release::resolve_waves(&all, &specs).unwrap();
    Release {
        version: 1,
        id: "r-1".into(),
        created_at: t0(),
        cache_keys: vec![SecretKey::generate("cache-1").unwrap().public()],
        hosts: all
            .iter()
            .map(|h| {
                let closure =
                    fleet_core::StorePath::new(&store_path(&format!("nixos-system-{h}"))).unwrap();
                let activation = fleet_core::Activation::Switch;
                (
                    h.clone(),
                    ReleaseHost {
                        closure,
                        activation,
                    },
                )
            })
            .collect(),
        plan: fleet_core::release::Plan {
            waves,
            budget: Budget::Percent(20),
            report_deadline_seconds: 1800,
        },
    }
}

/// The rollout of [`release`] with its first wave started and one host healthy.
fn rollout_state() -> RolloutState {
    let mut s = RolloutState::new("r-1", &"9f".repeat(32), 2, true, "publisher-1");
    s.waves[0].started_at = Some(t0());
    s.waves[0].hosts.insert(
        HostName::new("web-1").unwrap(),
        HostState {
            previous: Some(Previous {
                sequence: 7,
                closure: fleet_core::StorePath::new(&store_path("nixos-system-a")).unwrap(),
            }),
            sequence: Some(8),
            outcome: HostOutcome::Healthy,
            rolled_back_to: None,
        },
    );
    s.record("publisher-1", "wave 1 started: web-1");
    s
}

/// Root version 1: two of three root keys, one scoped publisher key.
fn trust_root(root_keys: &[SecretKey]) -> Root {
    let k = |n: &str| SecretKey::generate(n).unwrap().public();
    Root {
        format: fleet_core::trust::ROOT_FORMAT,
        version: 1,
        issued_at: t0(),
        expires_at: t0() + jiff::SignedDuration::from_hours(24 * 365),
        root_keys: root_keys.iter().map(|k| k.public()).collect(),
        threshold: 2,
        publisher_keys: vec![
            ScopedKey {
                key: k("publisher-1"),
                scope: None,
            },
            ScopedKey {
                key: k("web-team-1"),
                scope: Some(
                    serde_json::from_str(r#"{"hosts": ["web-*"], "labels": ["role=web"]}"#)
                        .unwrap(),
                ),
            },
        ],
        cache_keys: vec![k("cache-1")],
        admin_keys: vec![k("admin-1")],
    }
}

fn root_keys() -> Vec<SecretKey> {
    ["root-1", "root-2", "root-3"]
        .iter()
        .map(|n| SecretKey::generate(n).unwrap())
        .collect()
}

fn labels() -> fleet_core::registry::Labels {
    fleet_core::registry::Labels::from([("role".into(), "web".into())])
}

fn enrollment_request(identity: &SecretKey) -> EnrollmentRequest {
    EnrollmentRequest {
        version: 1,
        host: HostName::new("web-1").unwrap(),
        identity_key: identity.public(),
        labels: labels(),
        facts: fleet_core::status::Facts {
            nixos_version: Some("24.05".into()),
            ..Default::default()
        },
        time: t0(),
    }
}

fn host_entry(identity: &SecretKey) -> HostEntry {
    HostEntry {
        version: 1,
        host: HostName::new("web-1").unwrap(),
        identity_key: identity.public(),
        labels: labels(),
        enrolled_at: t0(),
    }
}

fn hold() -> Hold {
    Hold {
        version: 1,
        host: HostName::new("web-1").unwrap(),
        held: true,
        reason: "disk replacement until Friday".into(),
        time: t0(),
    }
}

fn bundle(identity: &SecretKey) -> Bundle {
    let k = |n: &str| SecretKey::generate(n).unwrap().public();
    Bundle {
        version: 1,
        host: HostName::new("web-1").unwrap(),
        identity_key: identity.public(),
        agent: BundleAgent {
            bucket: "s3://fleet-prod?region=eu-west-1".into(),
            trusted_publisher_keys: vec![k("publisher-1")],
            trusted_cache_keys: vec![k("cache-1")],
            trust_root_keys: Vec::new(),
            trust_root_version: None,
        },
        credentials: Some(BundleCredentials {
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key: "s3cr3t".into(),
        }),
    }
}

/// A status report signed by `identity` (`fleet_core::status_sig`).
fn signed_status(identity: &SecretKey) -> StatusReport {
    let host = HostName::new("web-1").unwrap();
    let mut r = fleet_reporter::synth::report(&host, AgentState::Healthy, 2, 2, t0());
    fleet_core::status_sig::sign(&mut r, identity);
    r
}

/// Round trip and every single-byte mutation of `bytes` through `open`: the
/// original opens as `expected`; a mutation is refused or opens as `expected`.
/// Returns (refused, harmless).
fn every_mutation_refused<T: PartialEq + std::fmt::Debug>(
    what: &str,
    bytes: &[u8],
    expected: &T,
    rng: &mut Rng,
    open: impl Fn(&[u8]) -> Result<T, String>,
) -> (usize, usize) {
    assert_eq!(
        &open(bytes).unwrap(),
        expected,
        "{what} does not round-trip"
    );
    let (mut refused, mut harmless) = (0, 0);
    for (i, mutated) in mutations(bytes, rng) {
        match open(&mutated) {
            Err(_) => refused += 1,
            Ok(v) => {
                assert_eq!(
                    &v,
                    expected,
                    "{what}: byte {i} changed the content and it still verified: {:?}",
                    String::from_utf8_lossy(&mutated)
                );
                harmless += 1;
            }
        }
    }
    eprintln!("{what}: {refused} mutations refused, {harmless} left the content unchanged");
    (refused, harmless)
}

#[test]
fn new_signed_formats_round_trip_and_every_byte_mutation_is_refused() {
    let mut rng = Rng::new(seed());
    let publisher = SecretKey::generate("publisher-1").unwrap();
    let trusted = TrustedKeys::new([publisher.public()]);
    let web = HostName::new("web-1").unwrap();
    let identity = SecretKey::generate("web-1-identity").unwrap();
    let mut total = 0;

    let r = release();
    r.check().unwrap();
    let (n, harmless) = every_mutation_refused("release", &r.sign(&publisher), &r, &mut rng, |b| {
        Release::verify(b, "r-1", &trusted)
            .map(|v| v.release)
            .map_err(|e| e.to_string())
    });
    assert!(harmless <= 6, "release: {harmless} accepted mutations");
    total += n;

    let s = rollout_state();
    let (n, harmless) =
        every_mutation_refused("rollout state", &s.sign(&publisher), &s, &mut rng, |b| {
            RolloutState::verify(b, "r-1", &trusted)
                .map(|v| v.state)
                .map_err(|e| e.to_string())
        });
    assert!(harmless <= 6, "rollout: {harmless} accepted mutations");
    total += n;

    // Signed by all three root keys with a threshold of two: one damaged signature
    // still leaves two, so those mutations verify, as the same root.
    let keys = root_keys();
    let root = trust_root(&keys);
    let pinned = TrustedKeys::new(keys.iter().map(|k| k.public()));
    let (n, _) = every_mutation_refused("trust root", &root.sign(&keys), &root, &mut rng, |b| {
        TrustedRoot::bootstrap(b, "trust/1.root.json", &pinned, 1)
            .map(|t| t.root().clone())
            .map_err(|e| e.to_string())
    });
    total += n;
    // Signed by exactly the threshold: every signature counts.
    let (n, harmless) = every_mutation_refused(
        "trust root (threshold signatures)",
        &root.sign(&keys[..2]),
        &root,
        &mut rng,
        |b| {
            TrustedRoot::bootstrap(b, "trust/1.root.json", &pinned, 1)
                .map(|t| t.root().clone())
                .map_err(|e| e.to_string())
        },
    );
    assert!(harmless <= 6, "trust root: {harmless} accepted mutations");
    total += n;

    let req = enrollment_request(&identity);
    let (n, harmless) = every_mutation_refused(
        "enrollment request",
        &req.sign(&identity),
        &req,
        &mut rng,
        |b| EnrollmentRequest::open(b).map_err(|e| e.to_string()),
    );
    assert!(harmless <= 6, "enrollment: {harmless} accepted mutations");
    total += n;

    let entry = host_entry(&identity);
    let (n, harmless) = every_mutation_refused(
        "registry entry",
        &entry.sign(&publisher),
        &entry,
        &mut rng,
        |b| {
            HostEntry::verify(b, &web, &trusted)
                .map(|v| v.entry)
                .map_err(|e| e.to_string())
        },
    );
    assert!(harmless <= 6, "registry: {harmless} accepted mutations");
    total += n;

    let h = hold();
    let (n, harmless) = every_mutation_refused("hold", &h.sign(&publisher), &h, &mut rng, |b| {
        Hold::verify(b, &web, &trusted)
            .map(|v| v.hold)
            .map_err(|e| e.to_string())
    });
    assert!(harmless <= 6, "hold: {harmless} accepted mutations");
    total += n;

    // A signed status is readable JSON, not an envelope: a mutation of its layout
    // (whitespace) re-encodes to the signed bytes and is rightly accepted.
    let st = signed_status(&identity);
    let (n, _) = every_mutation_refused("signed status", &st.to_bytes(), &st, &mut rng, |b| {
        let r =
            StatusReport::parse(b, "status/web-1/status.json", &web).map_err(|e| e.to_string())?;
        fleet_core::status_sig::verify(&r, &identity.public()).map_err(|e| e.to_string())?;
        Ok(r)
    });
    total += n;
    eprintln!("{total} mutations of signed objects refused");
}

/// A bundle is not signed (it travels as the admin chooses, see
/// `fleet_core::bundle`), so a mutation may parse as another bundle; what holds is
/// that it round-trips, that what parses re-encodes to a bundle that parses as
/// itself, and that parsing never panics.
#[test]
fn bundles_round_trip_and_what_parses_re_encodes_as_itself() {
    let mut rng = Rng::new(seed());
    let b = bundle(&SecretKey::generate("web-1-identity").unwrap());
    let bytes = b.to_bytes();
    assert_eq!(Bundle::parse(&bytes).unwrap(), b);
    let mut parsed = 0;
    for (_, m) in mutations(&bytes, &mut rng) {
        if let Ok(p) = Bundle::parse(&m) {
            assert_eq!(Bundle::parse(&p.to_bytes()).unwrap(), p);
            parsed += 1;
        }
    }
    eprintln!("bundle: {parsed} mutations parse (it is unsigned), each re-encodes as itself");
}

#[test]
fn new_format_parsers_never_panic_on_arbitrary_or_mutated_bytes() {
    let mut rng = Rng::new(seed());
    let n = cases();
    let publisher = SecretKey::generate("publisher-1").unwrap();
    let trusted = TrustedKeys::new([publisher.public()]);
    let web = HostName::new("web-1").unwrap();
    let identity = SecretKey::generate("web-1-identity").unwrap();
    let keys = root_keys();
    let pinned = TrustedKeys::new(keys.iter().map(|k| k.public()));

    for b in random_inputs(&release().sign(&publisher), &mut rng, n) {
        let _ = Release::verify(&b, "r-1", &trusted);
    }
    for b in random_inputs(&rollout_state().sign(&publisher), &mut rng, n) {
        let _ = RolloutState::verify(&b, "r-1", &trusted);
    }
    let v1 = trust_root(&keys).sign(&keys);
    let trusted_v1 = TrustedRoot::bootstrap(&v1, "v1", &pinned, 1).unwrap();
    for b in random_inputs(&v1, &mut rng, n) {
        let _ = TrustedRoot::bootstrap(&b, "v1", &pinned, 1);
        let _ = TrustedRoot::reload(&b, "v1");
        let _ = trusted_v1.next(&b, "v2");
        let _ = fleet_core::trust::chain::claimed_version(&b);
    }
    for b in random_inputs(&enrollment_request(&identity).sign(&identity), &mut rng, n) {
        let _ = EnrollmentRequest::open(&b);
    }
    for b in random_inputs(&host_entry(&identity).sign(&publisher), &mut rng, n) {
        let _ = HostEntry::verify(&b, &web, &trusted);
    }
    for b in random_inputs(&hold().sign(&publisher), &mut rng, n) {
        let _ = Hold::verify(&b, &web, &trusted);
    }
    for b in random_inputs(&bundle(&identity).to_bytes(), &mut rng, n) {
        let _ = Bundle::parse(&b);
    }
    for b in random_inputs(&signed_status(&identity).to_bytes(), &mut rng, n) {
        if let Ok(r) = StatusReport::parse(&b, "status.json", &web) {
            let _ = fleet_core::status_sig::verify(&r, &identity.public());
        }
    }
}

/// The seeds of the fuzz targets for the formats above (see [`fuzz_seeds`]).
fn fuzz_seeds_new_formats() -> Vec<(&'static str, Vec<u8>)> {
    let key = SecretKey::generate("publisher-1").unwrap();
    let identity = SecretKey::generate("web-1-identity").unwrap();
    let keys = root_keys();
    vec![
        ("release", release().sign(&key)),
        ("rollout", rollout_state().sign(&key)),
        ("trust_root", trust_root(&keys).sign(&keys)),
        ("enrollment", enrollment_request(&identity).sign(&identity)),
        ("bundle", bundle(&identity).to_bytes()),
        ("registry", host_entry(&identity).sign(&key)),
        ("hold", hold().sign(&key)),
        ("status_sig", signed_status(&identity).to_bytes()),
    ]
}

/// As [`fuzz_seeds_are_valid_objects`], for the new formats' targets. The payloads
/// are what the fuzz targets seal with their own key; each seed is checked through
/// the real parser with the key that signed it.
#[test]
fn fuzz_seeds_are_valid_objects_new_formats() {
    let out = std::env::var_os("FLEET_FUZZ_SEEDS_DIR").map(std::path::PathBuf::from);
    for (target, bytes) in fuzz_seeds_new_formats() {
        let text = String::from_utf8(bytes.clone()).unwrap();
        let valid = match target {
            "release" => text.contains(fleet_core::release::RELEASE_PAYLOAD_TYPE),
            "rollout" => text.contains(fleet_core::rollout::ROLLOUT_PAYLOAD_TYPE),
            "trust_root" => fleet_core::trust::chain::claimed_version(&bytes) == Some(1),
            "enrollment" => EnrollmentRequest::open(&bytes).is_ok(),
            "bundle" => Bundle::parse(&bytes).is_ok(),
            "registry" => text.contains(fleet_core::registry::HOST_ENTRY_PAYLOAD_TYPE),
            "hold" => text.contains(fleet_core::hold::HOLD_PAYLOAD_TYPE),
            "status_sig" => StatusReport::parse(&bytes, "seed", &HostName::new("web-1").unwrap())
                .is_ok_and(|r| r.signature.is_some()),
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
