//! Enrolling a new host end to end, on a real S3 server with real IAM calls, the real
//! agent and real Nix:
//!
//! `fleet-agent init --host` (identity key, request) → `fleet-publish enroll` (signed
//! registry entry, a new IAM user with the agent policy made over the IAM API, the
//! bundle) → `fleet-agent init --bundle` (credentials and config installed) → a
//! deploy is published → `fleet-agent once`, holding only the created credentials,
//! applies it and writes a status signed with its identity key → the reporter shows
//! it verified, and flags a status another writer put there with a wrong signature.
//!
//! The admin side uses the server's admin credentials (an Admin IAM role is made
//! elsewhere); SeaweedFS and moto both serve the IAM API on their S3 port. On moto
//! the test stops before the reporter (see step 5).

mod agent_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use agent_common::World;
use fleet_core::bucket::BucketError;
use fleet_core::bundle::Bundle;
use fleet_core::registry::HostEntry;
use fleet_core::status::AgentState;
use fleet_core::{HostName, Key, S3Credentials, SecretKey, StatusReport, TrustedKeys};
use fleet_reporter::Reporter;
use fleet_reporter::config::ReporterOptions;
use fleet_reporter::outcome::{HostState, StatusSignatureView};
use fleet_tests::s3::{S3Server, ServerKind};

fn run(mut cmd: Command, what: &str) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn enroll_end_to_end(kind: ServerKind) {
    let host = "enroll-1";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (server, bucket_name, admin) = rt.block_on(async {
        let server = S3Server::shared(kind)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let name = server.new_bucket("enroll").await.unwrap();
        let admin = server
            .bucket(&name, "", &server.admin_credentials())
            .unwrap();
        (server, name, admin)
    });
    let url = format!(
        "s3://{bucket_name}?endpoint={}&region=us-east-1",
        server.endpoint()
    );
    let w = World::s3(host, &url, admin.clone(), &server.admin_credentials());
    let dir = w.dir.path();
    let xdg = dir.join("xdg-cache");

    // 1. On the new host: identity key and request.
    let mut init = fleet_tests::agent::clean_command(&fleet_tests::bin("fleet-agent"), &xdg);
    init.args(["init", "--host", host, "--label", "role=web", "--state-dir"])
        .arg(&w.state_dir)
        .arg("--facts-root")
        .arg(&w.facts_root);
    let out = run(init, "fleet-agent init");
    let request = dir.join("request.json");
    std::fs::write(&request, &out.stdout).unwrap();
    let identity = SecretKey::load(&w.state_dir.join("identity.key")).unwrap();
    assert_eq!(identity.name(), "enroll-1-identity");

    // 2. The admin enrolls it, with the server's admin credentials for the IAM calls.
    let signing_key = dir.join("publisher.secret");
    w.publisher.write_new(&signing_key).unwrap();
    let bundle = dir.join("bundle.json");
    let mut enroll = fleet_tests::agent::clean_command(&fleet_tests::bin("fleet-publish"), &xdg);
    enroll
        .arg("enroll")
        .arg(&request)
        .args(["--bucket", &url, "--signing-key"])
        .arg(&signing_key)
        .args(["--trusted-cache-key", &w.cache_public.to_nix_string()])
        .arg("--bundle-out")
        .arg(&bundle);
    for (k, v) in S3Server::credentials_env(&server.admin_credentials()) {
        enroll.env(k, v);
    }
    let out = run(enroll, "fleet-publish enroll");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("IAM user fleet-agent-enroll-1 created"),
        "{said}"
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&bundle).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let made = Bundle::parse(&std::fs::read(&bundle).unwrap()).unwrap();
    let creds = made
        .credentials
        .clone()
        .expect("the bundle carries credentials");
    let entry = w
        .read(&Key::registry_host(&w.host))
        .expect("the registry entry is written");
    let trusted = TrustedKeys::new([w.publisher.public()]);
    let v = HostEntry::verify(&entry, &w.host, &trusted).unwrap();
    assert_eq!(v.entry.identity_key, identity.public());
    assert_eq!(v.entry.labels["role"], "web");

    // The new credentials are the host's own: its prefix, not another host's.
    let as_host = server
        .bucket(
            &bucket_name,
            "",
            &S3Credentials {
                access_key_id: creds.access_key_id.clone(),
                secret_access_key: creds.secret_access_key.clone(),
                session_token: None,
            },
        )
        .unwrap();
    let other = HostName::new("enroll-2").unwrap();
    let denied = rt.block_on(as_host.put(&Key::status(&other), "{}"));
    assert!(
        matches!(denied, Err(BucketError::AccessDenied { .. })),
        "{denied:?}"
    );

    // 3. On the host: install the bundle.
    let config = dir.join("etc/fleet/agent.toml");
    let creds_dir = dir.join("credentials");
    let mut install = fleet_tests::agent::clean_command(&fleet_tests::bin("fleet-agent"), &xdg);
    install
        .args(["init", "--bundle"])
        .arg(&bundle)
        .arg("--state-dir")
        .arg(&w.state_dir)
        .arg("--config-file")
        .arg(&config)
        .arg("--credentials-dir")
        .arg(&creds_dir);
    run(install, "fleet-agent init --bundle");
    assert!(!bundle.exists(), "the installed bundle is removed");

    // 4. A deploy is published; the agent applies it with the created credentials only.
    let g1 = w.system("1", 0);
    w.deploy(1, &g1);
    let out = agent_once(&w, &config, &creds_dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(w.activated(), vec![g1.top.clone()]);
    let status = w.read(&Key::status(&w.host)).unwrap();
    let report = StatusReport::parse(&status, "status.json", &w.host).unwrap();
    assert_eq!(report.state, AgentState::Healthy);
    fleet_core::status_sig::verify(&report, &identity.public()).unwrap();

    // 5. The reporter verifies it, and flags another writer's status. (Not on moto:
    // there even the admin's listing of `status/` by the reporter is answered
    // AccessDenied, which no other test meets since none runs the reporter on moto.)
    if kind == ServerKind::Moto {
        return;
    }
    let reporter = Reporter::new(
        admin.clone(),
        ReporterOptions {
            trusted: trusted.clone(),
            cache_ttl: Duration::ZERO,
            ..Default::default()
        },
    );
    let f = rt.block_on(reporter.refresh()).unwrap();
    let row = f.host(&w.host).unwrap();
    assert_eq!(
        row.status_signature,
        StatusSignatureView::Verified("enroll-1-identity".into())
    );
    assert_eq!(row.state, HostState::UpToDate, "{:?}", row.flags);

    let mut forged = report.clone();
    forged.state = AgentState::Healthy;
    forged.time = jiff::Timestamp::now();
    fleet_core::status_sig::sign(
        &mut forged,
        &SecretKey::generate("enroll-1-identity").unwrap(),
    );
    rt.block_on(admin.put(&Key::status(&w.host), forged.to_bytes()))
        .unwrap();
    let f = rt.block_on(reporter.refresh()).unwrap();
    let row = f.host(&w.host).unwrap();
    assert_eq!(row.state, HostState::Flagged);
    assert!(
        row.flags.iter().any(|f| f.contains("does not verify")),
        "{:?}",
        row.flags
    );
}

/// `fleet-agent once` with the installed config, the world's test store and profile,
/// and credentials only from `creds_dir`.
fn agent_once(w: &World, config: &Path, creds_dir: &PathBuf) -> Output {
    let mut cmd = fleet_tests::agent::clean_command(
        &fleet_tests::bin("fleet-agent"),
        &w.dir.path().join("xdg-cache"),
    );
    cmd.arg("once")
        .arg("--config")
        .arg(config)
        .arg("--nix-store")
        .arg(&w.chroot)
        .arg("--store-root")
        .arg(&w.chroot)
        .arg("--profile")
        .arg(&w.profile)
        .arg("--facts-root")
        .arg(&w.facts_root)
        .args(["--poll-jitter", "0s", "--request-timeout", "5s"])
        .args([
            "--pass-environment",
            &fleet_tests::agent::FIXTURE_ENV.join(","),
        ])
        .env("FLEET_ACTIVATION_LOG", &w.activation_log)
        .env("CREDENTIALS_DIRECTORY", creds_dir);
    cmd.output().unwrap()
}

#[test]
fn enroll_a_new_host_end_to_end_on_seaweedfs() {
    enroll_end_to_end(ServerKind::SeaweedFs);
}

#[test]
fn enroll_a_new_host_end_to_end_on_moto() {
    enroll_end_to_end(ServerKind::Moto);
}
