//! The signed audit chain on a real SeaweedFS server, with the publisher's scoped
//! credentials (`fleet_core::iam::Role::Publisher`) and real Nix closures:
//!
//! - an honest history of 200 actions (deploy, renew, rollback, hold, unhold mixed)
//!   passes `fleet-publish audit verify`, and `audit log` filters by host and time;
//! - `audit verify` catches a deleted, an altered, a reordered and a missing entry,
//!   and a manifest written with the publisher key but no entry (each tampering done
//!   with the server's admin credentials, then undone);
//! - two `fleet-publish hold` processes appending at once keep one linear chain;
//! - on a bucket with only older, unsigned entries (`file://`), rollback still finds
//!   its history and `audit verify` reports `legacy-only` until the next write;
//! - trust changes are audit entries: a history where the publisher key is rotated
//!   through the root of trust mid-chain verifies against the pinned root key; a root
//!   version written around the audit, `trust/root.json` rolled back, and an entry
//!   signed by the revoked key after its revocation are each found.

mod publish_support;

use fleet_core::audit_chain::ActionKind;
use fleet_core::iam::Role;
use fleet_core::trust::TrustedRoot;
use fleet_core::{Bucket, HostName, Key, Manifest, S3Credentials, TrustedKeys};
use fleet_publish::hold::set_hold;
use fleet_publish::renew::{RenewSettings, renew};
use fleet_publish::rollback::{RollbackSettings, apply, plan};
use fleet_publish::{DeploySettings, DeployTarget, deploy};
use fleet_tests::nix::{Closure, FixtureOptions};
use fleet_tests::s3::S3Server;
use jiff::SignedDuration;
use publish_support::*;

fn host(s: &str) -> HostName {
    HostName::new(s).unwrap()
}

/// A bucket on this process's SeaweedFS with a publisher user, the publisher's and
/// the admin's view of it, its URL, and keys.
struct Fleet {
    publisher: Bucket,
    admin: Bucket,
    creds: S3Credentials,
    admin_creds: S3Credentials,
    url: String,
    cache: KeyFiles,
    signer: KeyFiles,
    _dir: tempfile::TempDir,
}

async fn setup(label: &str) -> Fleet {
    let server = S3Server::seaweedfs().await.unwrap();
    let bucket = server.new_bucket(label).await.unwrap();
    let creds = server
        .user_for(&Role::Publisher, &bucket, "")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    Fleet {
        publisher: server.bucket(&bucket, "", &creds).unwrap(),
        admin: server
            .bucket(&bucket, "", &server.admin_credentials())
            .unwrap(),
        url: server.store_url(&bucket, "").unwrap().to_string(),
        creds,
        admin_creds: server.admin_credentials(),
        cache: KeyFiles::new(dir.path(), "cache-pub-1"),
        signer: KeyFiles::new(dir.path(), "publisher-1"),
        _dir: dir,
    }
}

impl Fleet {
    /// `fleet-publish ARGS --bucket URL` with the publisher's credentials.
    fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = publish_cmd();
        cmd.envs(S3Server::credentials_env(&self.creds))
            .args(args)
            .args(["--bucket", &self.url]);
        cmd
    }

    /// `audit verify --json`: (success, the report).
    fn verify(&self) -> (bool, serde_json::Value, String) {
        let mut cmd = self.cmd(&["audit", "verify", "--json"]);
        cmd.arg("--trusted-key-file").arg(&self.signer.public);
        let (ok, stdout, stderr) = run(cmd);
        let report = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("audit verify printed no JSON ({e}):\n{stdout}\n{stderr}"));
        (ok, report, stderr)
    }

    /// The (kind, index) of every finding of `audit verify`, which must fail.
    fn findings(&self) -> Vec<(String, Option<u64>, String)> {
        let (ok, report, stderr) = self.verify();
        assert!(!ok, "audit verify passed on a tampered history: {report:#}");
        assert!(stderr.contains("does not verify"), "{stderr}");
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["kind"].as_str().unwrap().to_owned(),
                    f["index"].as_u64(),
                    f["key"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    async fn deploy(&self, hosts: &[HostName], c: &Closure) {
        let targets: Vec<DeployTarget> = hosts
            .iter()
            .map(|h| DeployTarget {
                host: h.clone(),
                closure: c.top.clone(),
            })
            .collect();
        let settings = DeploySettings {
            push: settings(),
            ..DeploySettings::default()
        };
        let nix = fleet_core::nixcli::Nix::default_store();
        deploy(
            &self.publisher,
            &nix,
            &self.cache.key,
            &self.signer.key,
            &targets,
            &settings,
        )
        .await
        .unwrap();
    }
}

fn fixtures(label: &str) -> (Closure, Closure) {
    let nix = nix();
    let opts = FixtureOptions::salted(label);
    (
        nix.fixture_system("audit", "1", &opts).unwrap(),
        nix.fixture_system("audit", "2", &opts).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_passes_an_honest_history_and_catches_each_tampering() {
    let (g1, g2) = fixtures("audit-s3-history");
    let f = setup("audit-history").await;
    let hosts: Vec<HostName> = (1..=8).map(|i| host(&format!("web-{i}"))).collect();
    let trusted = TrustedKeys::new([f.signer.public_key()]);

    // 8 + 6 × 32 = 200 actions.
    f.deploy(&hosts, &g1).await;
    for _ in 0..6 {
        f.deploy(&hosts, &g2).await;
        let renewed = renew(
            &f.publisher,
            &f.signer.key,
            &hosts,
            &RenewSettings {
                within: SignedDuration::from_hours(24 * 30),
                ..RenewSettings::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(renewed.renewed.len(), 8, "{:?}", renewed.failed);
        let settings = RollbackSettings::default();
        let plans = plan(&f.publisher, &f.signer.key, &hosts, &settings)
            .await
            .unwrap();
        assert!(plans.iter().all(|p| p.to_closure == g1.top));
        apply(&f.publisher, &f.signer.key, &plans, &settings)
            .await
            .unwrap();
        set_hold(&f.publisher, &f.signer.key, &hosts[..4], true, "audit test")
            .await
            .unwrap();
        set_hold(&f.publisher, &f.signer.key, &hosts[..4], false, "")
            .await
            .unwrap();
    }
    let chain = chain_entries(&f.publisher).await;
    assert_eq!(chain.len(), 200);
    let count = |k: ActionKind| chain.iter().filter(|e| e.action == k).count();
    assert_eq!(
        [
            count(ActionKind::Deploy),
            count(ActionKind::Renew),
            count(ActionKind::Rollback),
            count(ActionKind::Hold),
            count(ActionKind::Unhold)
        ],
        [56, 48, 48, 24, 24]
    );

    let (ok, report, stderr) = f.verify();
    assert!(
        ok,
        "an honest history does not verify: {report:#}\n{stderr}"
    );
    assert_eq!(
        (report["entries"].as_u64(), report["head"].as_u64()),
        (Some(200), Some(200))
    );
    // 8 manifests and 4 holds.
    assert_eq!(report["objects_checked"].as_u64(), Some(12));

    // `audit log`: text lines, and JSON filtered by host and time.
    let mut cmd = f.cmd(&["audit", "log", "--host", "web-3"]);
    cmd.arg("--trusted-key-file").arg(&f.signer.public);
    let (ok, stdout, stderr) = run(cmd);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1 + 6 * 5, "{stdout}");
    assert!(
        lines[0].contains(" publisher-1 deploy web-3 sequence 1 ")
            && lines[0].ends_with(&g1.top.to_string()),
        "{}",
        lines[0]
    );
    assert!(
        stdout.contains("hold web-3 reason \"audit test\""),
        "{stdout}"
    );
    let mut cmd = f.cmd(&["audit", "log", "--json", "--since", "1h", "--host", "web-8"]);
    cmd.arg("--trusted-key-file").arg(&f.signer.public);
    let (ok, stdout, stderr) = run(cmd);
    assert!(ok, "{stderr}");
    let logged: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(logged.as_array().unwrap().len(), 1 + 6 * 3);
    assert_eq!(logged[0]["entry"]["hosts"], serde_json::json!(["web-8"]));
    assert_eq!(logged[0]["signed_by"], "publisher-1");
    let mut cmd = f.cmd(&["audit", "log", "--json", "--since", "2999-01-01T00:00:00Z"]);
    cmd.arg("--trusted-key-file").arg(&f.signer.public);
    assert_eq!(run(cmd).1.trim(), "[]");

    let admin = &f.admin;
    let entry = |i: u64| async move {
        admin
            .get(&Key::audit_chain(i), 1 << 20)
            .await
            .unwrap()
            .bytes
            .to_vec()
    };
    let put = |i: u64, bytes: Vec<u8>| async move {
        admin.put(&Key::audit_chain(i), bytes).await.unwrap();
    };
    let kinds = |found: &[(String, Option<u64>, String)]| -> Vec<(String, Option<u64>)> {
        found.iter().map(|(k, i, _)| (k.clone(), *i)).collect()
    };

    // A deleted entry: a gap.
    let e50 = entry(50).await;
    f.admin.delete(&Key::audit_chain(50)).await.unwrap();
    assert_eq!(kinds(&f.findings()), [("gap".to_owned(), Some(51))]);
    put(50, e50).await;

    // An altered entry: its signature fails, and the next one's link.
    let e60 = entry(60).await;
    let mut env: serde_json::Value = serde_json::from_slice(&e60).unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = String::from_utf8(b64.decode(env["payload"].as_str().unwrap()).unwrap()).unwrap();
    let forged = payload.replace(&g1.top.to_string(), &g2.top.to_string());
    assert_ne!(forged, payload, "entry 60 names a closure");
    env["payload"] = b64.encode(forged).into();
    put(60, serde_json::to_vec(&env).unwrap()).await;
    assert_eq!(
        kinds(&f.findings()),
        [
            ("unverified".to_owned(), Some(60)),
            ("broken-link".to_owned(), Some(61))
        ]
    );
    put(60, e60).await;

    // Two entries swapped: each sits at the other's index.
    let (e70, e71) = (entry(70).await, entry(71).await);
    put(70, e71.clone()).await;
    put(71, e70.clone()).await;
    let found = kinds(&f.findings());
    assert!(
        found.contains(&("misplaced".to_owned(), Some(70)))
            && found.contains(&("misplaced".to_owned(), Some(71))),
        "{found:?}"
    );
    put(70, e70).await;
    put(71, e71).await;

    // The last entry missing: the hold it recorded is no longer explained.
    let e200 = entry(200).await;
    f.admin.delete(&Key::audit_chain(200)).await.unwrap();
    let found = f.findings();
    assert_eq!(
        found,
        [(
            "unexplained".to_owned(),
            Some(196),
            "hosts/web-4/hold.json".to_owned()
        )],
        "entry 196 is web-4's hold of the last round, 200 its release"
    );
    put(200, e200).await;

    // A manifest signed with the publisher key but written around the audit.
    let current = f
        .publisher
        .get(&Key::manifest(&hosts[0]), 1 << 20)
        .await
        .unwrap();
    let mut m: Manifest = fleet_publish::show(&f.publisher, &hosts[0], &trusted)
        .await
        .unwrap()
        .manifest;
    m.sequence += 1;
    f.publisher
        .put_if_match(
            &Key::manifest(&hosts[0]),
            m.sign(&f.signer.key),
            current.etag.as_deref().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        kinds(&f.findings()),
        // Entry 185 is web-1's rollback of the last round.
        [("unexplained".to_owned(), Some(185))]
    );
    f.admin
        .put(&Key::manifest(&hosts[0]), current.bytes)
        .await
        .unwrap();

    let (ok, report, stderr) = f.verify();
    assert!(
        ok,
        "the restored history does not verify: {report:#}\n{stderr}"
    );

    // A release written with the bucket credentials, around `fleet-publish
    // release`, has no entry either.
    let stray_release = Key::release(&fleet_core::ObjectName::new("r-sneaky").unwrap());
    f.publisher
        .put(&stray_release, b"{}".to_vec())
        .await
        .unwrap();
    let found = f.findings();
    assert_eq!(
        found
            .iter()
            .map(|(k, _, key)| (k.as_str(), key.as_str()))
            .collect::<Vec<_>>(),
        [("unexplained", stray_release.as_str())]
    );
    f.admin.delete(&stray_release).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_from_two_processes_keep_one_linear_chain() {
    let (g1, _) = fixtures("audit-s3-race");
    let f = setup("audit-race").await;
    let hosts: Vec<HostName> = (1..=40).map(|i| host(&format!("db-{i}"))).collect();
    f.deploy(&hosts, &g1).await;

    let spawn = |part: &[HostName]| {
        let mut cmd = f.cmd(&["hold", "--reason", "race"]);
        cmd.arg("--signing-key").arg(&f.signer.secret);
        cmd.args(part.iter().map(HostName::as_str));
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let (a, b) = (spawn(&hosts[..20]), spawn(&hosts[20..]));
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let chain = chain_entries(&f.publisher).await;
    let indices: Vec<u64> = chain.iter().map(|e| e.index).collect();
    assert_eq!(indices, (1..=80).collect::<Vec<u64>>());
    let mut held: Vec<&str> = chain[40..].iter().map(|e| e.hosts[0].as_str()).collect();
    held.sort();
    held.dedup();
    assert_eq!(held.len(), 40, "every hold has one entry");
    let (ok, report, stderr) = f.verify();
    assert!(ok, "{report:#}\n{stderr}");
}

/// A bucket from before the signed chain: only older, unsigned entries. `rollback`
/// still finds its history there, `audit verify` names the manifest they alone
/// explain (`legacy-only`), and the rollback's own entry explains it again.
#[test]
fn older_entries_still_serve_rollback_and_verify_says_legacy_only() {
    let (g1, g2) = fixtures("audit-legacy");
    let dir = tempfile::tempdir().unwrap();
    let cache = KeyFiles::new(dir.path(), "cache-pub-1");
    let signer = KeyFiles::new(dir.path(), "publisher-1");
    let (bucket, url) = file_bucket(&dir.path().join("bucket"));
    let fleet = |args: &[&str]| {
        let mut cmd = publish_cmd();
        cmd.args(args).args(["--bucket", &url]);
        run(cmd)
    };
    let keys = |cmd: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        v.push("--signing-key".into());
        v.push(signer.secret.display().to_string());
        v
    };
    for g in [&g1, &g2] {
        let top = g.top.to_string();
        let mut args = keys(&["deploy", "--host", "web-1", "--closure", &top]);
        args.push("--cache-key".into());
        args.push(cache.secret.display().to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, stderr) = fleet(&args);
        assert!(ok, "{stderr}");
    }
    // Turn the chain into what an older publisher wrote.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for e in chain_entries(&bucket).await {
            for row in e.manifest_rows() {
                bucket.put(&row.key(), row.to_bytes()).await.unwrap();
            }
            bucket.delete(&e.key()).await.unwrap();
        }
    });
    let verify = || {
        let pubkey = signer.public.display().to_string();
        fleet(&["audit", "verify", "--trusted-key-file", &pubkey])
    };
    let (ok, stdout, _) = verify();
    assert!(
        !ok && stdout.starts_with("legacy-only hosts/web-1/manifest.json: ")
            && stdout.contains("1 finding"),
        "{stdout}"
    );

    let args = keys(&["rollback", "--host", "web-1"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, stdout, stderr) = fleet(&args);
    assert!(
        ok && stdout.contains(&g1.top.to_string()),
        "{stdout}{stderr}"
    );
    let (ok, stdout, stderr) = verify();
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("audit: 1 entry (head 1)"), "{stdout}");
}

/// `fleet-publish ARGS --bucket URL` with the admin's credentials (trust changes;
/// `audit verify` reading `trust/`).
fn admin_cmd(f: &Fleet, args: &[&str]) -> std::process::Command {
    let mut cmd = publish_cmd();
    cmd.envs(S3Server::credentials_env(&f.admin_creds))
        .args(args)
        .args(["--bucket", &f.url]);
    cmd
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_changes_are_audited_and_verify_follows_the_root_in_force() {
    let (g1, g2) = fixtures("audit-s3-trust");
    let f = setup("audit-trust").await;
    let dir = tempfile::tempdir().unwrap();
    let root = KeyFiles::new(dir.path(), "root-1");
    let p2 = KeyFiles::new(dir.path(), "publisher-2");
    let web1 = [host("web-1")];

    // A static set-up first: publisher-1 deploys before any root exists.
    f.deploy(&web1, &g1).await;
    let trust = |args: &[&str], signer: &KeyFiles| {
        let mut cmd = admin_cmd(&f, &[&["trust"], args].concat());
        cmd.args(["--root-key-file", path(&root.secret)])
            .args(["--signing-key", path(&signer.secret)]);
        let (ok, stdout, stderr) = run(cmd);
        assert!(ok, "trust {args:?}: {stdout}{stderr}");
        stdout
    };
    trust(
        &["init", "--publisher-key-file", path(&f.signer.public)],
        &f.signer,
    );
    trust(
        &["add-publisher", "--key-file", path(&p2.public)],
        &f.signer,
    );
    // publisher-2 deploys, then revokes publisher-1.
    let settings = DeploySettings {
        push: settings(),
        trusted: vec![f.signer.public_key()],
        ..DeploySettings::default()
    };
    let nix = fleet_core::nixcli::Nix::default_store();
    let target = DeployTarget {
        host: web1[0].clone(),
        closure: g2.top.clone(),
    };
    deploy(
        &f.publisher,
        &nix,
        &f.cache.key,
        &p2.key,
        &[target],
        &settings,
    )
    .await
    .unwrap();
    let out = trust(&["revoke", "--key", "publisher-1"], &p2);
    assert!(out.contains("version 3"), "{out}");

    let chain = chain_entries(&f.admin).await;
    let actions: Vec<&str> = chain.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["deploy", "trust", "trust", "deploy", "trust"]);
    assert_eq!(chain[4].details.extra["root_version"], 3);
    assert_eq!(chain[4].key_name, "publisher-2");

    let verify = |pinned: bool| {
        let mut cmd = admin_cmd(&f, &["audit", "verify", "--json"]);
        cmd.args(["--trusted-key-file", path(&f.signer.public)]);
        if pinned {
            cmd.args(["--trust-root-key-file", path(&root.public)])
                .args(["--trust-root-version", "1"]);
        }
        let (ok, stdout, stderr) = run(cmd);
        let report: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("no JSON ({e}):\n{stdout}\n{stderr}"));
        let found: Vec<(String, String)> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["kind"].as_str().unwrap().to_owned(),
                    f["key"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        (ok, found, report, stderr)
    };
    let (ok, found, report, stderr) = verify(true);
    assert!(ok && found.is_empty(), "{report:#}\n{stderr}");
    // The manifest and the three root versions plus trust/root.json.
    assert_eq!(report["objects_checked"].as_u64(), Some(5), "{report:#}");
    assert!(!stderr.contains("trusted on first use"), "{stderr}");
    let (ok, _, _, stderr) = verify(false);
    assert!(ok && stderr.contains("trusted on first use"), "{stderr}");
    // A wrong pin: no root version can be trusted.
    let mut cmd = admin_cmd(&f, &["audit", "verify"]);
    cmd.args(["--trusted-key-file", path(&f.signer.public)])
        .args(["--trust-root-key-file", path(&p2.public)]);
    let (ok, stdout, _) = run(cmd);
    assert!(
        !ok && stdout.contains("root-chain trust/1.root.json"),
        "{stdout}"
    );

    // A version signed with the root key but written around the audited commands.
    let v3 = TrustedRoot::reload(
        &f.admin
            .get(&Key::trust_root(), 1 << 20)
            .await
            .unwrap()
            .bytes,
        "v3",
    )
    .unwrap();
    let mut v4 = v3.root().clone();
    v4.version = 4;
    let v4 = v4.sign(std::slice::from_ref(&root.key));
    f.admin
        .put(&Key::trust_root_version(4), v4.clone())
        .await
        .unwrap();
    f.admin.put(&Key::trust_root(), v4).await.unwrap();
    let (ok, found, report, _) = verify(true);
    assert!(!ok, "{report:#}");
    assert_eq!(
        found,
        [
            ("unexplained".to_owned(), "trust/4.root.json".to_owned()),
            ("unexplained".to_owned(), "trust/root.json".to_owned())
        ]
    );
    f.admin.delete(&Key::trust_root_version(4)).await.unwrap();
    // trust/root.json rolled back to version 2.
    let v2 = f
        .admin
        .get(&Key::trust_root_version(2), 1 << 20)
        .await
        .unwrap()
        .bytes
        .to_vec();
    f.admin.put(&Key::trust_root(), v2).await.unwrap();
    let (ok, found, _, _) = verify(true);
    assert!(!ok);
    assert_eq!(
        found,
        [
            ("root-chain".to_owned(), "trust/root.json".to_owned()),
            ("unexplained".to_owned(), "trust/root.json".to_owned())
        ]
    );
    f.admin
        .put(&Key::trust_root(), v3.bytes().to_vec())
        .await
        .unwrap();
    let (ok, found, _, _) = verify(true);
    assert!(ok, "{found:?}");

    // The revoked key, which still holds the bucket credentials, signs a hold after
    // its revocation: the entry is flagged.
    set_hold(&f.publisher, &f.signer.key, &web1, true, "after revocation")
        .await
        .unwrap();
    let (ok, found, report, _) = verify(true);
    assert!(!ok);
    assert_eq!(
        found,
        [(
            "key-not-in-force".to_owned(),
            Key::audit_chain(6).to_string()
        )],
        "{report:#}"
    );
    let message = report["findings"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("publisher-1") && message.contains("removed at version 3"),
        "{message}"
    );
}
