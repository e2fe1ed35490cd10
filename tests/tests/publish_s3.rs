//! `fleet-publish` against a real SeaweedFS server that enforces IAM, with users whose
//! policies are fleet-core's (`fleet-publish policy`):
//!
//! - with the publisher's scoped credentials `push` and `deploy` work; with a host's
//!   credentials, or credentials that may read but not write the cache, they are
//!   refused with an error that says access was denied and to what;
//! - real `nix copy --from http://…` reads the cache straight from the S3 port
//!   (anonymous `s3:GetObject` on `cache/*` granted by a bucket policy; Debian's Nix
//!   has no `s3://` store), `nix store verify --sigs-needed 1` passes, and another
//!   key is refused;
//! - concurrent deploys of one host through SeaweedFS's conditional writes each get
//!   their own sequence, with no lost update;
//! - NARs above the spill threshold go up as multipart uploads and read back intact;
//! - `renew`, `rollback`, `hold` and `unhold` work with the publisher's credentials
//!   (renew not with a host's), bad rollback input is refused, a hold stops a rollback.

mod publish_support;

use std::io::Read;

use fleet_core::iam::Role;
use fleet_core::narinfo::NarInfo;
use fleet_core::{HostName, Key, S3Credentials, TrustedKeys};
use fleet_publish::PushSettings;
use fleet_tests::nix::{BulkOptions, FixtureOptions};
use fleet_tests::s3::S3Server;
use publish_support::*;

/// This process's SeaweedFS, a fresh bucket on it and a publisher user for it.
async fn setup(label: &str) -> (&'static S3Server, String, S3Credentials) {
    let server = S3Server::seaweedfs().await.unwrap();
    let bucket = server.new_bucket(label).await.unwrap();
    let publisher = server
        .user_for(&Role::Publisher, &bucket, "")
        .await
        .unwrap();
    (server, bucket, publisher)
}

fn with_creds(cmd: &mut std::process::Command, creds: &S3Credentials) {
    cmd.envs(S3Server::credentials_env(creds));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_credentials_work_and_others_are_refused() {
    let nix = nix();
    let g1 = nix
        .fixture_system("s3", "1", &FixtureOptions::salted("publish-s3"))
        .unwrap();
    let g2 = nix
        .fixture_system("s3", "2", &FixtureOptions::salted("publish-s3"))
        .unwrap();
    let (server, bucket, publisher) = setup("publish-creds").await;
    let host_creds = server
        .user_for(&Role::Agent(HostName::new("web-1").unwrap()), &bucket, "")
        .await
        .unwrap();
    // May read and list the cache but not write it.
    let reader_policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [format!("arn:aws:s3:::{bucket}/*")]},
            {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [format!("arn:aws:s3:::{bucket}")]}
        ]
    })
    .to_string();
    let reader = server
        .user_with_policy(&format!("{bucket}-reader"), &reader_policy)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = KeyFiles::new(dir.path(), "cache-pub-1");
    let signer = KeyFiles::new(dir.path(), "publisher-1");
    let url = server.store_url(&bucket, "").unwrap().to_string();

    let deploy = |creds: &S3Credentials, closure: &str| {
        let mut cmd = publish_cmd();
        with_creds(&mut cmd, creds);
        cmd.args([
            "deploy",
            "--bucket",
            &url,
            "--host",
            "web-1",
            "--closure",
            closure,
        ])
        .arg("--cache-key")
        .arg(&cache.secret)
        .arg("--signing-key")
        .arg(&signer.secret);
        run(cmd)
    };

    let (ok, stdout, stderr) = deploy(&publisher, &g1.top.to_string());
    assert!(ok, "{stderr}");
    assert!(stdout.contains("web-1: sequence 1 (was none)"), "{stdout}");

    // The host's own credentials: no listing of cache/, no writing anywhere.
    let (ok, _, stderr) = deploy(&host_creds, &g2.top.to_string());
    assert!(!ok);
    assert!(
        stderr.contains("access denied for key cache/")
            && stderr.contains("no manifest was written"),
        "{stderr}"
    );
    let mut cmd = publish_cmd();
    with_creds(&mut cmd, &host_creds);
    cmd.args(["push", "--bucket", &url, "--cache-key"])
        .arg(&cache.secret)
        .arg(g2.top.to_string());
    let (ok, _, stderr) = run(cmd);
    assert!(!ok && stderr.contains("access denied"), "{stderr}");

    // Read-only credentials get as far as the first write, which is refused by name.
    let mut cmd = publish_cmd();
    with_creds(&mut cmd, &reader);
    cmd.args(["push", "--bucket", &url, "--cache-key"])
        .arg(&cache.secret)
        .arg(g2.top.to_string());
    let (ok, _, stderr) = run(cmd);
    assert!(
        !ok && stderr.contains("access denied for key cache/") && stderr.contains("may not write"),
        "{stderr}"
    );

    // Nothing of g2 reached the cache, and the manifest is still the first one.
    let b = server.bucket(&bucket, "", &publisher).unwrap();
    let only_g2: Vec<_> = g2.paths.iter().filter(|p| !g1.paths.contains(p)).collect();
    for p in &only_g2 {
        assert!(
            b.head(&Key::narinfo(p.hash())).await.unwrap().is_none(),
            "{p}"
        );
    }
    let trusted = TrustedKeys::new([signer.public_key()]);
    let web = HostName::new("web-1").unwrap();
    assert_eq!(
        fleet_publish::show(&b, &web, &trusted)
            .await
            .unwrap()
            .manifest
            .sequence,
        1
    );

    // The publisher again: sequence 2.
    let (ok, stdout, stderr) = deploy(&publisher, &g2.top.to_string());
    assert!(ok, "{stderr}");
    assert!(stdout.contains("web-1: sequence 2 (was 1)"), "{stdout}");
    let mut cmd = publish_cmd();
    with_creds(&mut cmd, &publisher);
    cmd.args([
        "show",
        "--bucket",
        &url,
        "--host",
        "web-1",
        "--trusted-key-file",
    ])
    .arg(&signer.public);
    let (ok, stdout, stderr) = run(cmd);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["manifest"]["sequence"], 2);
    assert_eq!(v["manifest"]["closure"], g2.top.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_nix_reads_the_cache_over_http_from_the_s3_server() {
    let nix = nix();
    let closure = nix
        .fixture_system("http", "1", &FixtureOptions::salted("publish-http"))
        .unwrap();
    let (server, bucket, publisher) = setup("publish-http").await;
    let dir = tempfile::tempdir().unwrap();
    let cache = KeyFiles::new(dir.path(), "cache-pub-1");
    let other = KeyFiles::new(dir.path(), "cache-other-1");
    let b = server.bucket(&bucket, "", &publisher).unwrap();
    push_top(&b, &cache.key, &closure.top, &settings())
        .await
        .unwrap();
    // Plain HTTP readers (nix) get the cache, and only the cache.
    let public_cache = fleet_core::iam::public_cache_policy(&bucket, "").unwrap();
    server
        .put_bucket_policy(&bucket, &public_cache)
        .await
        .unwrap();
    let http = format!("{}/{bucket}/cache", server.endpoint());
    copy_and_verify(&nix, &http, &closure, &cache.nix_public());
    copy_is_refused(&nix, &http, &closure.top, &other.nix_public());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deploys_through_conditional_writes_each_get_a_sequence() {
    let (server, bucket, publisher) = setup("publish-race").await;
    let b = server.bucket(&bucket, "", &publisher).unwrap();
    let env = S3Server::credentials_env(&publisher);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let url = server.store_url(&bucket, "").unwrap().to_string();
    race_deploys(&b, &url, &env, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_nars_go_up_as_multipart_uploads() {
    let nix = nix();
    let closure = nix
        .bulk_closure(
            BulkOptions {
                n_paths: 2,
                total_bytes: 12 * 1024 * 1024,
            },
            "publish-multipart",
        )
        .unwrap();
    let (server, bucket, publisher) = setup("publish-multipart").await;
    let dir = tempfile::tempdir().unwrap();
    let cache = KeyFiles::new(dir.path(), "cache-pub-1");
    let b = server.bucket(&bucket, "", &publisher).unwrap();
    let s = PushSettings {
        spill_threshold: 1024 * 1024,
        ..settings()
    };
    let sum = push_top(&b, &cache.key, &closure.top, &s).await.unwrap();
    assert_eq!(sum.uploaded, 2);
    let big = closure.paths.iter().find(|p| **p != closure.top).unwrap();
    let text = b
        .get(&Key::narinfo(big.hash()), 1 << 20)
        .await
        .unwrap()
        .bytes;
    let ni = NarInfo::parse(&text, "narinfo").unwrap();
    ni.verify(&TrustedKeys::new([cache.public_key()]), "narinfo")
        .unwrap();
    let key = Key::nar(&ni.url).unwrap();
    let head = b.head(&key).await.unwrap().unwrap();
    // S3 gives multipart objects an ETag of "<md5 of part md5s>-<parts>".
    let etag = head.etag.unwrap_or_default();
    assert!(
        etag.trim_matches('"').contains('-'),
        "{key} was not a multipart upload: {etag}"
    );
    assert_eq!(Some(head.size), ni.file_size);
    let file = b.get(&key, 1 << 30).await.unwrap().bytes;
    let mut nar = Vec::new();
    fleet_core::stream::decoder(ni.compression, &file[..])
        .unwrap()
        .read_to_end(&mut nar)
        .unwrap();
    assert!(
        nar == nix.dump(big).unwrap(),
        "the multipart NAR differs from nix-store --dump"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_and_rollback_work_with_publisher_credentials_only() {
    let nix = nix();
    let g1 = nix
        .fixture_system("s3ops", "1", &FixtureOptions::salted("publish-s3-ops"))
        .unwrap();
    let g2 = nix
        .fixture_system("s3ops", "2", &FixtureOptions::salted("publish-s3-ops"))
        .unwrap();
    let (server, bucket, publisher) = setup("publish-ops").await;
    let host_creds = server
        .user_for(&Role::Agent(HostName::new("web-1").unwrap()), &bucket, "")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = KeyFiles::new(dir.path(), "cache-pub-1");
    let signer = KeyFiles::new(dir.path(), "publisher-1");
    let url = server.store_url(&bucket, "").unwrap().to_string();
    let fleet = |creds: &S3Credentials, args: &[&str]| {
        let mut cmd = publish_cmd();
        with_creds(&mut cmd, creds);
        cmd.args(args)
            .args(["--bucket", &url])
            .arg("--signing-key")
            .arg(&signer.secret);
        run(cmd)
    };
    for g in [&g1, &g2] {
        let top = g.top.to_string();
        let cache_key = cache.secret.to_str().unwrap();
        let (ok, _, stderr) = fleet(
            &publisher,
            &[
                "deploy",
                "--host",
                "web-1",
                "--closure",
                &top,
                "--cache-key",
                cache_key,
            ],
        );
        assert!(ok, "{stderr}");
    }

    // Seven-day manifests are all due within eight days.
    let (ok, stdout, stderr) = fleet(&publisher, &["renew", "--within", "8d"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("web-1: renewed sequence 3 (was 2)")
            && stdout.contains(&g2.top.to_string()),
        "{stdout}"
    );
    // A host's own credentials may not renew.
    let (ok, _, stderr) = fleet(&host_creds, &["renew", "--within", "8d"]);
    assert!(!ok && stderr.contains("access denied"), "{stderr}");

    // Bad input changes nothing; then back to g1 (skipping the renewal of g2).
    let (ok, _, stderr) = fleet(
        &publisher,
        &["rollback", "--host", "web-1", "--to-sequence", "99"],
    );
    assert!(!ok && stderr.contains("no earlier sequence 99"), "{stderr}");
    let (ok, _, stderr) = fleet(&publisher, &["rollback", "--host", "ghost"]);
    assert!(!ok && stderr.contains("ghost has no manifest"), "{stderr}");
    let (ok, stdout, stderr) = fleet(&publisher, &["rollback", "--host", "web-1", "--dry-run"]);
    assert!(
        ok && stdout.contains("would roll back sequence 3"),
        "{stderr}{stdout}"
    );
    // A hold stops the rollback until it is released.
    let (ok, stdout, stderr) = fleet(&publisher, &["hold", "web-1", "--reason", "disk swap"]);
    assert!(ok && stdout.contains("web-1: held (disk swap)"), "{stderr}");
    let (ok, _, stderr) = fleet(&publisher, &["rollback", "--host", "web-1"]);
    assert!(
        !ok && stderr.contains("every host given is held"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = fleet(&publisher, &["unhold", "web-1"]);
    assert!(
        ok && stdout.contains("released (was held: disk swap)"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = fleet(&publisher, &["rollback", "--host", "web-1"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("web-1: sequence 4 (was 3)")
            && stdout.contains("the closure of sequence 1")
            && stdout.contains(&g1.top.to_string()),
        "{stdout}"
    );
    let b = server.bucket(&bucket, "", &publisher).unwrap();
    let shown = fleet_publish::show(
        &b,
        &HostName::new("web-1").unwrap(),
        &TrustedKeys::new([signer.public_key()]),
    )
    .await
    .unwrap();
    assert_eq!(
        (shown.manifest.sequence, shown.manifest.closure),
        (4, g1.top.clone())
    );
    let actions: Vec<String> = audit_entries(&b)
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["deploy", "deploy", "renew", "rollback"]);
}
