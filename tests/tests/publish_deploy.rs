//! `fleet-publish deploy` and `show` against real Nix, on `file://` buckets:
//!
//! - manifests carry sequence = current + 1, verify with fleet-core's agent-side
//!   check, and each gets an audit entry chaining previous and new manifest hashes;
//! - the command line takes its settings from flags, `FLEET_*` variables and a TOML
//!   file, and `--hosts FILE` deploys many hosts at once;
//! - concurrent deploys of one host (separate processes) each get their own
//!   sequence number and no update is lost;
//! - a current manifest that does not verify stops the deploy unless
//!   `--trusted-key` or `--force-sequence` says otherwise; a closure that is not in
//!   the store never gets a manifest.
//!
//! The same race against SeaweedFS's conditional writes is in `publish_s3.rs`.

mod publish_support;

use std::path::Path;
use std::process::Command;

use fleet_core::manifest::{MAX_MANIFEST_SIZE, VerifyPolicy};
use fleet_core::nixcli::Nix as CoreNix;
use fleet_core::{Activation, HostName, Key, KeyPrefix, Manifest, StorePath, TrustedKeys};
use fleet_publish::{DeploySettings, DeployTarget, deploy};
use fleet_tests::nix::{Closure, FixtureOptions};
use jiff::SignedDuration;
use publish_support::*;
use sha2::{Digest, Sha256};

fn host(s: &str) -> HostName {
    HostName::new(s).unwrap()
}

fn generation(nix: &fleet_tests::nix::Nix, salt: &str, generation: &str) -> Closure {
    nix.fixture_system("dep", generation, &FixtureOptions::salted(salt))
        .unwrap()
}

fn deploy_settings() -> DeploySettings {
    DeploySettings {
        push: settings(),
        ..DeploySettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_sign_increasing_sequences_and_leave_an_audit_chain() {
    let nix = nix();
    let g1 = generation(&nix, "publish-deploy", "1");
    let g2 = generation(&nix, "publish-deploy", "2");
    let dir = tempfile::tempdir().unwrap();
    let cache = KeyFiles::new(dir.path(), "cache-pub-1");
    let publisher = KeyFiles::new(dir.path(), "publisher-1");
    let (bucket, _) = file_bucket(&dir.path().join("bucket"));
    let core_nix = CoreNix::default_store();
    let web = host("web-1");

    let (sum, out) = deploy(
        &bucket,
        &core_nix,
        &cache.key,
        &publisher.key,
        &[DeployTarget {
            host: web.clone(),
            closure: g1.top.clone(),
        }],
        &deploy_settings(),
    )
    .await
    .unwrap();
    assert_eq!(sum.uploaded, g1.paths.len());
    assert_eq!((out[0].sequence, out[0].previous_sequence), (1, None));

    let settings = DeploySettings {
        expires_in: SignedDuration::from_hours(12),
        activation: Activation::Boot,
        ..deploy_settings()
    };
    let target2 = DeployTarget {
        host: web.clone(),
        closure: g2.top.clone(),
    };
    let (sum, out) = deploy(
        &bucket,
        &core_nix,
        &cache.key,
        &publisher.key,
        &[target2],
        &settings,
    )
    .await
    .unwrap();
    assert_eq!(sum.skipped, 3, "the shared paths were not pushed again");
    assert_eq!((out[0].sequence, out[0].previous_sequence), (2, Some(1)));

    // What an agent would check, with the publisher's public key only.
    let trusted = TrustedKeys::new([publisher.public_key()]);
    let bytes = bucket
        .get(&Key::manifest(&web), MAX_MANIFEST_SIZE)
        .await
        .unwrap()
        .bytes;
    let v = Manifest::verify(
        &bytes,
        &VerifyPolicy {
            trusted: &trusted,
            host: &web,
            highest_seen: None,
            now: Some(jiff::Timestamp::now()),
        },
    )
    .unwrap();
    assert_eq!(v.manifest.sequence, 2);
    assert_eq!(v.manifest.closure, g2.top);
    assert_eq!(v.manifest.activation, Activation::Boot);
    assert_eq!(v.manifest.cache_keys, vec![cache.public_key()]);
    assert_eq!(
        v.manifest.expires_at.duration_since(v.manifest.issued_at),
        SignedDuration::from_hours(12)
    );
    assert_eq!(v.digest, out[0].manifest_sha256);

    let shown = fleet_publish::show(&bucket, &web, &trusted).await.unwrap();
    assert_eq!((shown.manifest.sequence, shown.expired), (2, false));
    assert_eq!(shown.signed_by, "publisher-1");
    let other = KeyFiles::new(dir.path(), "publisher-2");
    let err = fleet_publish::show(&bucket, &web, &TrustedKeys::new([other.public_key()]))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("publisher-1"), "{err:#}");

    // The audit chain: who, what, and each entry's previous hash is the one before's new.
    let audit = audit_entries(&bucket).await;
    assert_eq!(audit.len(), 2);
    assert_eq!(
        (
            audit[0].sequence,
            audit[0].previous_manifest_sha256.as_deref()
        ),
        (1, None)
    );
    assert_eq!(audit[0].closure, g1.top);
    assert_eq!(audit[1].sequence, 2);
    assert_eq!(
        audit[1].previous_manifest_sha256.as_ref(),
        Some(&audit[0].new_manifest_sha256)
    );
    assert_eq!(audit[1].new_manifest_sha256, hex(&bytes));
    assert!(
        audit
            .iter()
            .all(|a| a.key_name == "publisher-1" && a.host == web)
    );
}

fn hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[test]
fn cli_takes_settings_from_file_and_environment_and_deploys_many_hosts() {
    let nix = nix();
    let a = generation(&nix, "publish-cli", "1");
    let b = generation(&nix, "publish-cli", "2");
    let dir = tempfile::tempdir().unwrap();
    let cache = KeyFiles::new(dir.path(), "cache-pub-1");
    let publisher = KeyFiles::new(dir.path(), "publisher-1");
    let root = dir.path().join("bucket");
    let config = dir.path().join("fleet-publish.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"file://{}\"\ncache-key = \"{}\"\nsigning-key = \"{}\"\nexpires-in = \"3d\"\n\
             trusted-key = [\"{}\"]\njobs = 2\n",
            root.display(),
            cache.secret.display(),
            publisher.secret.display(),
            publisher.public.display()
        ),
    )
    .unwrap();
    let hosts = dir.path().join("hosts.json");
    std::fs::write(
        &hosts,
        serde_json::json!({"web-1": a.top.to_string(), "web-2": b.top.to_string()}).to_string(),
    )
    .unwrap();

    // File for keys and store, environment for expiry (beats the file's 3d), flag for hosts.
    let mut cmd = publish_cmd();
    cmd.env("FLEET_CONFIG", &config)
        .env("FLEET_EXPIRES_IN", "12h")
        .args(["deploy", "--activation", "test", "--hosts"])
        .arg(&hosts);
    let (ok, stdout, stderr) = run(cmd);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("web-1: sequence 1 (was none)"), "{stdout}");
    assert!(stdout.contains("web-2: sequence 1 (was none)"), "{stdout}");

    for (h, closure) in [("web-1", &a), ("web-2", &b)] {
        let mut cmd = publish_cmd();
        cmd.args(["--config"])
            .arg(&config)
            .args(["show", "--host", h]);
        let (ok, stdout, stderr) = run(cmd);
        assert!(ok, "{stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(v["manifest"]["closure"], closure.top.to_string());
        assert_eq!(v["manifest"]["activation"], "test");
        assert_eq!(v["signed_by"], "publisher-1");
        let issued: jiff::Timestamp = v["manifest"]["issued_at"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let expires: jiff::Timestamp = v["manifest"]["expires_at"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            expires.duration_since(issued),
            SignedDuration::from_hours(12)
        );
    }

    // Bad settings are named, wherever they come from.
    let mut cmd = publish_cmd();
    cmd.env("FLEET_CONFIG", &config)
        .args([
            "deploy",
            "--expires-in",
            "soon",
            "--host",
            "web-1",
            "--closure",
        ])
        .arg(a.top.to_string());
    let (ok, _, stderr) = run(cmd);
    assert!(!ok && stderr.contains("expires-in = \"soon\""), "{stderr}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "sotre = \"file:///x\"\n").unwrap();
    let mut cmd = publish_cmd();
    cmd.args(["show", "--config"])
        .arg(&bad)
        .args(["--host", "web-1"]);
    let (ok, _, stderr) = run(cmd);
    assert!(
        !ok && stderr.contains("sotre") && stderr.contains("bad.toml"),
        "{stderr}"
    );
    let mut cmd = publish_cmd();
    cmd.env("FLEET_CONFIG", &config)
        .args(["deploy", "--host", "web-1"]);
    let (ok, _, stderr) = run(cmd);
    assert!(!ok && stderr.contains("--closure"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deploys_of_one_host_each_get_a_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let (bucket, url) = file_bucket(&dir.path().join("bucket"));
    race_deploys(&bucket, &url, &[], 6).await;
}

/// `fleet-publish deploy --force-sequence SEQ` of `top` to web-1.
fn force_deploy(url: &str, cache: &Path, publisher: &Path, top: &StorePath, seq: u64) -> Command {
    let mut cmd = publish_cmd();
    cmd.args([
        "deploy",
        "--bucket",
        url,
        "--host",
        "web-1",
        "--force-sequence",
    ])
    .arg(seq.to_string())
    .arg("--cache-key")
    .arg(cache)
    .arg("--signing-key")
    .arg(publisher)
    .arg("--closure")
    .arg(top.to_string());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverifiable_current_manifest_stops_the_deploy() {
    let nix = nix();
    let g1 = generation(&nix, "publish-deploy", "1");
    let dir = tempfile::tempdir().unwrap();
    let cache = KeyFiles::new(dir.path(), "cache-pub-1");
    let publisher = KeyFiles::new(dir.path(), "publisher-1");
    let stranger = KeyFiles::new(dir.path(), "stranger-1");
    let root = dir.path().join("bucket");
    let (bucket, url) = file_bucket(&root);
    let core_nix = CoreNix::default_store();
    let web = host("web-1");
    let target = [DeployTarget {
        host: web.clone(),
        closure: g1.top.clone(),
    }];

    // Someone else's manifest at sequence 4.
    let (_, out) = deploy(
        &bucket,
        &core_nix,
        &cache.key,
        &stranger.key,
        &target,
        &deploy_settings(),
    )
    .await
    .unwrap();
    assert_eq!(out[0].sequence, 1);
    for _ in 0..3 {
        deploy(
            &bucket,
            &core_nix,
            &cache.key,
            &stranger.key,
            &target,
            &deploy_settings(),
        )
        .await
        .unwrap();
    }
    let before = bucket
        .get(&Key::manifest(&web), MAX_MANIFEST_SIZE)
        .await
        .unwrap()
        .bytes;

    let err = deploy(
        &bucket,
        &core_nix,
        &cache.key,
        &publisher.key,
        &target,
        &deploy_settings(),
    )
    .await
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("does not verify")
            && msg.contains("hosts/web-1/manifest.json")
            && msg.contains("stranger-1")
            && msg.contains("--trusted-key")
            && msg.contains("--force-sequence"),
        "{msg}"
    );
    let now = bucket
        .get(&Key::manifest(&web), MAX_MANIFEST_SIZE)
        .await
        .unwrap()
        .bytes;
    assert_eq!(
        now, before,
        "the manifest changed although the deploy failed"
    );

    // Trusting the other publisher continues its sequence.
    let settings = DeploySettings {
        trusted: vec![stranger.public_key()],
        ..deploy_settings()
    };
    let (_, out) = deploy(
        &bucket,
        &core_nix,
        &cache.key,
        &publisher.key,
        &target,
        &settings,
    )
    .await
    .unwrap();
    assert_eq!((out[0].sequence, out[0].previous_sequence), (5, Some(4)));

    // --force-sequence: below the verified current one is refused, above it works, and
    // over an unverifiable manifest it is the way out.
    let cmd = force_deploy(&url, &cache.secret, &publisher.secret, &g1.top, 3);
    let (ok, _, stderr) = run(cmd);
    assert!(
        !ok && stderr.contains("not above the current manifest's sequence 5"),
        "{stderr}"
    );
    deploy(
        &bucket,
        &core_nix,
        &cache.key,
        &stranger.key,
        &target,
        &settings,
    )
    .await
    .unwrap_err();
    deploy(
        &bucket,
        &core_nix,
        &cache.key,
        &stranger.key,
        &target,
        &DeploySettings {
            trusted: vec![publisher.public_key()],
            ..deploy_settings()
        },
    )
    .await
    .unwrap();
    let cmd = force_deploy(&url, &cache.secret, &publisher.secret, &g1.top, 100);
    let (ok, stdout, stderr) = run(cmd);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("sequence 100 (was none)"), "{stdout}");
    let shown = fleet_publish::show(&bucket, &web, &TrustedKeys::new([publisher.public_key()]))
        .await
        .unwrap();
    assert_eq!(shown.manifest.sequence, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closure_missing_from_the_store_never_gets_a_manifest() {
    let nix = nix();
    let g1 = generation(&nix, "publish-deploy", "1");
    let dir = tempfile::tempdir().unwrap();
    let cache = KeyFiles::new(dir.path(), "cache-pub-1");
    let publisher = KeyFiles::new(dir.path(), "publisher-1");
    let (bucket, _) = file_bucket(&dir.path().join("bucket"));
    let missing =
        fleet_core::StorePath::new(&format!("/nix/store/{}-never-built", g1.top.hash())).unwrap();
    let err = deploy(
        &bucket,
        &CoreNix::default_store(),
        &cache.key,
        &publisher.key,
        &[
            DeployTarget {
                host: host("web-1"),
                closure: g1.top.clone(),
            },
            DeployTarget {
                host: host("web-2"),
                closure: missing.clone(),
            },
        ],
        &deploy_settings(),
    )
    .await
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&missing.to_string()) && msg.contains("no manifest was written"),
        "{msg}"
    );
    assert!(bucket.list(&KeyPrefix::hosts()).await.unwrap().is_empty());
    assert!(bucket.list(&KeyPrefix::audit()).await.unwrap().is_empty());
}
