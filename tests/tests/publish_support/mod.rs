//! Helpers shared by the `publish_*` end-to-end tests: keys, buckets, running the
//! `fleet-publish` binary, and checking a cache with real Nix.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fleet_core::keys::{PublicKey, SecretKey};
use fleet_core::{Bucket, HostName, StorePath, TrustedKeys};
use fleet_publish::PushSettings;
use fleet_tests::nix::{Closure, Nix};

/// Real Nix, or a panic that says how to install it.
pub fn nix() -> Nix {
    Nix::new().unwrap_or_else(|e| panic!("{e:#}"))
}

/// A key pair written to `dir/<name>.secret` and `dir/<name>.public` by the
/// `fleet-publish keygen` code.
pub struct KeyFiles {
    pub secret: PathBuf,
    pub public: PathBuf,
    pub key: SecretKey,
}

impl KeyFiles {
    pub fn new(dir: &Path, name: &str) -> Self {
        let secret = dir.join(format!("{name}.secret"));
        let public = dir.join(format!("{name}.public"));
        fleet_publish::cmd::keygen::keygen(name, &secret, &public).unwrap();
        Self {
            key: SecretKey::load(&secret).unwrap(),
            secret,
            public,
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public()
    }

    /// `name:base64`, as Nix's `trusted-public-keys` takes it.
    pub fn nix_public(&self) -> String {
        self.key.public().to_nix_string()
    }
}

/// A `file://` bucket rooted at `dir`.
pub fn file_bucket(dir: &Path) -> (Bucket, String) {
    let url = format!("file://{}", dir.display());
    (Bucket::open_url(&url).unwrap(), url)
}

/// Push settings for tests: two jobs, no progress bar.
pub fn settings() -> PushSettings {
    PushSettings {
        jobs: 2,
        progress: false,
        ..PushSettings::default()
    }
}

/// The `fleet-publish` binary with Nix's test environment and no AWS or FLEET
/// variables from the caller.
/// `fleet_publish::push` of `top`'s closure from the default Nix store.
pub async fn push_top(
    bucket: &Bucket,
    cache_key: &SecretKey,
    top: &StorePath,
    settings: &PushSettings,
) -> anyhow::Result<fleet_publish::PushSummary> {
    fleet_publish::push(
        bucket,
        &fleet_core::nixcli::Nix::default_store(),
        cache_key,
        std::slice::from_ref(top),
        settings,
    )
    .await
}

pub fn publish_cmd() -> Command {
    let mut cmd = Command::new(fleet_tests::bin("fleet-publish"));
    cmd.env("NIX_CONFIG", fleet_tests::nix::NIX_CONFIG)
        .env("NIX_USER_CONF_FILES", "")
        .env("FLEET_LOG", "warn");
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if (k.starts_with("FLEET_") && k != "FLEET_LOG") || k.starts_with("AWS_") {
            cmd.env_remove(&k);
        }
    }
    cmd
}

/// Runs `cmd`, returning (success, stdout, stderr).
pub fn run(mut cmd: Command) -> (bool, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("fleet-publish runs");
    (
        status.success(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// The NAR of a directory tree (fleet-core's `nar::dump`, byte-identical to
/// `nix-store --dump`): two trees are equal iff their NARs are.
pub fn tree_nar(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    fleet_core::nar::dump(path, &mut out)
        .unwrap_or_else(|e| panic!("dumping {}: {e}", path.display()));
    out
}

/// Copies `closure` from the binary cache at `cache_url` into a fresh chroot store
/// with real `nix copy --from`, trusting only `trusted`; then checks that every path
/// equals its source tree and passes `nix store verify --sigs-needed 1`.
pub fn copy_and_verify(nix: &Nix, cache_url: &str, closure: &Closure, trusted: &str) {
    let chroot = tempfile::tempdir().unwrap();
    let to = chroot.path().join("store");
    nix.copy_from_cache(cache_url, &to, std::slice::from_ref(&closure.top), trusted)
        .unwrap_or_else(|e| panic!("nix copy --from {cache_url} refused our cache: {e}"));
    for p in &closure.paths {
        assert!(nix.is_valid_in(&to, p).unwrap(), "{p} not copied");
        let copied = to.join(p.to_string().trim_start_matches('/'));
        assert!(
            tree_nar(&copied) == tree_nar(Path::new(&p.to_string())),
            "{p}: the copied tree differs from the source"
        );
    }
    nix.verify_store(to.to_str().unwrap(), &closure.paths, trusted, 1)
        .unwrap_or_else(|e| panic!("nix store verify --sigs-needed 1 failed: {e}"));
}

/// Expects real `nix copy --from` to refuse the cache when trusting `trusted` only.
pub fn copy_is_refused(nix: &Nix, cache_url: &str, top: &StorePath, trusted: &str) {
    let chroot = tempfile::tempdir().unwrap();
    let to = chroot.path().join("store");
    let err = nix
        .copy_from_cache(cache_url, &to, std::slice::from_ref(top), trusted)
        .expect_err("nix accepted a cache signed by a key it does not trust");
    assert!(err.contains("lacks a valid signature"), "{err}");
    assert!(!nix.is_valid_in(&to, top).unwrap());
}

// Not every test binary that includes this module reads the chain.
#[allow(unused_imports)]
pub use fleet_tests::audit::{audit_entries, chain_entries};

/// Runs `n` deploys of one host at once as separate processes and checks that each
/// got its own sequence and that the audit entries form one unbroken chain.
pub async fn race_deploys(bucket: &Bucket, url: &str, env: &[(&str, &str)], n: usize) {
    let nix = nix();
    let closure = nix
        .fixture_system(
            "race",
            "1",
            &fleet_tests::nix::FixtureOptions::salted("publish-race"),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = KeyFiles::new(dir.path(), "cache-pub-1");
    let publisher = KeyFiles::new(dir.path(), "publisher-1");
    let children: Vec<_> = (0..n)
        .map(|_| {
            let mut cmd = publish_cmd();
            cmd.envs(env.iter().copied())
                .args(["deploy", "--bucket", url, "--host", "db-1", "--cache-key"])
                .arg(&cache.secret)
                .arg("--signing-key")
                .arg(&publisher.secret)
                .arg("--closure")
                .arg(closure.top.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    let mut sequences = BTreeSet::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let seq: u64 = stdout
            .split("sequence ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no sequence in {stdout}"));
        assert!(sequences.insert(seq), "sequence {seq} given out twice");
    }
    assert_eq!(sequences, (1..=n as u64).collect::<BTreeSet<_>>());
    let shown = fleet_publish::show(
        bucket,
        &HostName::new("db-1").unwrap(),
        &TrustedKeys::new([publisher.public_key()]),
    )
    .await
    .unwrap();
    assert_eq!(shown.manifest.sequence, n as u64);
    let mut audit = audit_entries(bucket).await;
    audit.retain(|a| a.host.as_str() == "db-1");
    audit.sort_by_key(|a| a.sequence);
    assert_eq!(audit.len(), n);
    for w in audit.windows(2) {
        assert_eq!(
            w[1].previous_manifest_sha256.as_ref(),
            Some(&w[0].new_manifest_sha256),
            "sequence {} did not replace sequence {}: an update was lost",
            w[1].sequence,
            w[0].sequence
        );
    }
    assert_eq!(audit[n - 1].new_manifest_sha256, shown.sha256);
}
