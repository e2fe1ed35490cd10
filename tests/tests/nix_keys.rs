//! Key interop between `fleet_core::keys` and real Nix (2.8), both ways:
//!
//! - a key made by `nix-store --generate-binary-cache-key` loads in fleet, and fleet
//!   signing Nix's narinfo fingerprint gives exactly the `Sig:` Nix wrote;
//! - a key made by fleet works as Nix's `secret-key`, and Nix then accepts (and
//!   refuses, with another key) what it signed;
//! - malformed key files give errors that name the file.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use fleet_core::keys::{PublicKey, SecretKey};
use fleet_core::narinfo::{Compression, NarInfo};
use fleet_core::{StorePath, nixbase32};
use fleet_tests::nix::{Closure, FixtureOptions, Nix};
use sha2::{Digest, Sha256};

fn nix() -> Nix {
    Nix::new().unwrap_or_else(|e| panic!("{e:#}"))
}

/// Reads a narinfo Nix wrote, with fleet-core's parser (the one the agent uses).
fn read_narinfo(cache: &Path, path: &StorePath) -> NarInfo {
    let file = cache.join(format!("{}.narinfo", path.hash()));
    let text = std::fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    NarInfo::parse(&text, &file.display().to_string()).unwrap()
}

/// Checks the narinfo's hash and size against our own hash of `nix-store --dump`, so
/// the fingerprint rests on data we checked, not only on what Nix wrote.
fn check_nar_fields(nix: &Nix, path: &StorePath, ni: &NarInfo) {
    let nar = nix.dump(path).unwrap();
    assert_eq!(&ni.store_path, path);
    assert_eq!(ni.nar_size, nar.len() as u64, "{path}");
    let digest: [u8; 32] = Sha256::digest(&nar).into();
    assert_eq!(
        ni.nar_hash.to_string(),
        format!("sha256:{}", nixbase32::encode(&digest)),
        "{path}"
    );
}

fn fixture(nix: &Nix, salt: &str) -> Closure {
    nix.fixture_system("keys", "1", &FixtureOptions::salted(salt))
        .unwrap()
}

#[test]
fn a_nix_made_key_loads_and_signs_exactly_like_nix() {
    let nix = nix();
    let dir = tempfile::tempdir().unwrap();
    let (sk_file, pk_file) = nix
        .generate_binary_cache_key("nix-made-1", dir.path())
        .unwrap();

    let sk = SecretKey::load(&sk_file).unwrap();
    assert_eq!(sk.name(), "nix-made-1");
    let nix_pk = std::fs::read_to_string(&pk_file).unwrap();
    assert_eq!(sk.public().to_nix_string(), nix_pk.trim());
    assert_eq!(PublicKey::load(&pk_file).unwrap(), sk.public());

    let closure = fixture(&nix, "nix-keys-nixmade");
    let cache = dir.path().join("cache");
    nix.copy_to_file_cache(
        std::slice::from_ref(&closure.top),
        &cache,
        Some(&sk_file),
        Compression::Zstd,
    )
    .unwrap();

    // Every path of the closure: the top refers to itself and to 3 others, the
    // library to nothing, so empty, single and multiple references are all covered.
    let mut seen_refs = std::collections::BTreeSet::new();
    for path in &closure.paths {
        let ni = read_narinfo(&cache, path);
        check_nar_fields(&nix, path, &ni);
        seen_refs.insert(ni.references.len());
        assert_eq!(ni.sigs.len(), 1, "{path}: {:?}", ni.sigs);
        let nix_sig = ni.sigs[0].clone();

        let fp = ni.fingerprint();
        let ours = sk.sign(fp.as_bytes());
        // ed25519 is deterministic: the same key over the same message gives the same
        // bytes, so equality proves the fingerprint and the signing match Nix's.
        assert_eq!(ours.key_name, nix_sig.key_name, "{path}");
        assert_eq!(ours.bytes, nix_sig.bytes, "{path}: fingerprint {fp}");
        assert_eq!(ours.to_nix_string(), ni.sigs[0].to_nix_string());
        assert!(sk.public().verify(fp.as_bytes(), &nix_sig));
        // The signature covers the fingerprint: a changed size does not verify.
        let tampered = fp.replace(
            &format!(";{};", ni.nar_size),
            &format!(";{};", ni.nar_size + 1),
        );
        assert_ne!(tampered, fp);
        assert!(!sk.public().verify(tampered.as_bytes(), &nix_sig));
    }
    assert!(seen_refs.contains(&0) && seen_refs.contains(&1) && seen_refs.iter().any(|&n| n > 1));
}

#[test]
fn a_fleet_made_key_works_as_nix_secret_key() {
    let nix = nix();
    let dir = tempfile::tempdir().unwrap();
    let sk_file = dir.path().join("cache.secret");
    let sk = SecretKey::generate("fleet-made-1").unwrap();
    sk.write_new(&sk_file).unwrap();
    let mode = std::fs::metadata(&sk_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "secret key file mode {mode:o}");
    let trusted = sk.public().to_nix_string();
    let other = SecretKey::generate("other-1")
        .unwrap()
        .public()
        .to_nix_string();

    let closure = fixture(&nix, "nix-keys-fleetmade");
    let cache = dir.path().join("cache");
    let url = nix
        .copy_to_file_cache(
            std::slice::from_ref(&closure.top),
            &cache,
            Some(&sk_file),
            Compression::Zstd,
        )
        .unwrap();

    // What Nix signed with fleet's key verifies with fleet's public key.
    for path in &closure.paths {
        let ni = read_narinfo(&cache, path);
        let sig = ni.sigs[0].clone();
        assert!(
            sk.public().verify(ni.fingerprint().as_bytes(), &sig),
            "{path}"
        );
    }

    // Nix trusting fleet's public key accepts the closure into a fresh chroot store.
    let good = dir.path().join("good-store");
    nix.copy_from_cache(&url, &good, std::slice::from_ref(&closure.top), &trusted)
        .unwrap();
    for path in &closure.paths {
        assert!(
            nix.is_valid_in(&good, path).unwrap(),
            "{path} not in {}",
            good.display()
        );
    }
    let good_url = good.to_str().unwrap();
    nix.verify_store(good_url, &closure.paths, &trusted, 1)
        .unwrap();
    // ... and the same check with another key finds the paths untrusted.
    let err = nix
        .verify_store(good_url, &closure.paths, &other, 1)
        .unwrap_err();
    assert!(err.contains("is untrusted"), "{err}");

    // Nix trusting only another key refuses it.
    let refused = dir.path().join("refused-store");
    let err = nix
        .copy_from_cache(&url, &refused, std::slice::from_ref(&closure.top), &other)
        .unwrap_err();
    assert!(err.contains("lacks a valid signature"), "{err}");
    assert!(!nix.is_valid_in(&refused, &closure.top).unwrap());

    // An unsigned cache is refused even with fleet's key trusted, until `nix store
    // sign` signs it with fleet's key file.
    let unsigned = dir.path().join("unsigned-cache");
    let unsigned_url = nix
        .copy_to_file_cache(
            std::slice::from_ref(&closure.top),
            &unsigned,
            None,
            Compression::Xz,
        )
        .unwrap();
    let store2 = dir.path().join("store2");
    let err = nix
        .copy_from_cache(
            &unsigned_url,
            &store2,
            std::slice::from_ref(&closure.top),
            &trusted,
        )
        .unwrap_err();
    assert!(err.contains("lacks a valid signature"), "{err}");
    nix.store_sign(Some(&unsigned_url), &closure.paths, &sk_file)
        .unwrap();
    nix.copy_from_cache(
        &unsigned_url,
        &store2,
        std::slice::from_ref(&closure.top),
        &trusted,
    )
    .unwrap();
    nix.verify_store(store2.to_str().unwrap(), &closure.paths, &trusted, 1)
        .unwrap();
}

#[test]
fn malformed_key_files_name_the_file() {
    let nix = nix();
    let dir = tempfile::tempdir().unwrap();
    let (sk_file, pk_file) = nix
        .generate_binary_cache_key("malformed-1", dir.path())
        .unwrap();
    let good = std::fs::read_to_string(&sk_file).unwrap();
    let good = good.trim();

    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let expect_err = |what: &str, p: &Path, err: String, want: &str| {
        assert!(
            err.contains(&p.display().to_string()) && err.contains(want),
            "{what}: error should name {} and say {want:?}: {err}",
            p.display()
        );
    };

    // Cut mid-quantum: not valid base64 any more.
    let cut = write("cut.secret", &good[..good.len() - 3]);
    let err = SecretKey::load(&cut).unwrap_err().to_string();
    expect_err("truncated base64", &cut, err, "not base64");
    // Cut at a quantum boundary: valid base64 of too few bytes.
    let short = write("short.secret", &good[..good.len() - 8]);
    let err = SecretKey::load(&short).unwrap_err().to_string();
    expect_err("short key", &short, err, "not 64");

    let err = SecretKey::load(&pk_file).unwrap_err().to_string();
    expect_err("public key as secret", &pk_file, err, "public key");
    let err = PublicKey::load(&sk_file).unwrap_err().to_string();
    expect_err("secret key as public", &sk_file, err, "secret key");

    let missing = dir.path().join("missing.secret");
    let err = SecretKey::load(&missing).unwrap_err().to_string();
    expect_err("missing file", &missing, err, "No such file");

    let empty = write("empty.secret", "");
    let err = SecretKey::load(&empty).unwrap_err().to_string();
    expect_err("empty file", &empty, err, "no `:`");

    // Nix itself refuses the truncated key too, so fleet is not stricter than Nix here.
    let closure = fixture(&nix, "nix-keys-malformed");
    let err = nix
        .copy_to_file_cache(
            std::slice::from_ref(&closure.top),
            &dir.path().join("cache"),
            Some(&cut),
            Compression::Zstd,
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("secret key is not valid"),
        "{err:#}"
    );
}
