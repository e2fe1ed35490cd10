//! `fleet-publish retire` seen by a real `fleet-agent once` on SeaweedFS with scoped
//! IAM users and real Nix:
//!
//! - a tombstone (written with the publisher's credentials) makes the agent report
//!   `retired` and apply nothing, on this poll and the next;
//! - an unknown host or a bad name is refused with a clear error and changes nothing;
//! - a pause does not hide the retirement, and `rollback` leaves the host alone
//!   unless forced;
//! - `--purge` with the publisher's credentials is refused (it may not delete) and
//!   deletes nothing; with the admin role's it removes everything under
//!   `hosts/<host>/` and `status/<host>/` and keeps the audit entries.

mod agent_common;

use agent_common::World;
use fleet_core::iam::Role;
use fleet_core::status::AgentState;
use fleet_core::{Activation, Bucket, HostName, KeyPrefix, S3Credentials};
use fleet_tests::s3::S3Server;

/// Every key under `hosts/`, `status/` and `audit/`, with its size.
fn everything(w: &World) -> Vec<(String, u64)> {
    let mut all = Vec::new();
    for p in [KeyPrefix::hosts(), KeyPrefix::status(), KeyPrefix::audit()] {
        for e in w.block_on(w.bucket.list(&p)).unwrap() {
            all.push((e.key, e.size));
        }
    }
    all.sort();
    all
}

/// `fleet-publish retire ARGS…` with `creds`; (success, stdout, stderr).
fn retire(w: &World, url: &str, creds: &S3Credentials, args: &[&str]) -> (bool, String, String) {
    publish(w, url, creds, "retire", args)
}

/// `fleet-publish SUB ARGS…` with `creds` and the publisher's signing key.
fn publish(
    w: &World,
    url: &str,
    creds: &S3Credentials,
    sub: &str,
    args: &[&str],
) -> (bool, String, String) {
    let key = w.dir.path().join("publisher.secret");
    if !key.exists() {
        w.publisher.write_new(&key).unwrap();
    }
    let mut cmd = std::process::Command::new(fleet_tests::bin("fleet-publish"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("FLEET_") || k.starts_with("AWS_") {
            cmd.env_remove(&k);
        }
    }
    cmd.arg(sub)
        .args(args)
        .arg("--bucket")
        .arg(url)
        .arg("--signing-key")
        .arg(&key)
        .envs(S3Server::credentials_env(creds));
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_retired_host_applies_nothing_and_only_the_admin_purges_it() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let host = HostName::new("web-1").unwrap();
    let (server, name, admin, agent, publisher, admin_role): (
        &S3Server,
        String,
        Bucket,
        S3Credentials,
        S3Credentials,
        S3Credentials,
    ) = rt.block_on(async {
        let server = S3Server::seaweedfs()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let name = server.new_bucket("retire").await.unwrap();
        let admin = server
            .bucket(&name, "", &server.admin_credentials())
            .unwrap();
        let agent = server
            .user_for(&Role::Agent(host.clone()), &name, "")
            .await
            .unwrap();
        let publisher = server.user_for(&Role::Publisher, &name, "").await.unwrap();
        let admin_role = server.user_for(&Role::Admin, &name, "").await.unwrap();
        (server, name, admin, agent, publisher, admin_role)
    });
    let url = format!(
        "s3://{name}?endpoint={}&region=us-east-1",
        server.endpoint()
    );
    let w = World::s3("web-1", &url, admin, &agent);
    let g1 = w.system("retire-1", 0);
    let g2 = w.system("retire-2", 0);
    w.deploy(1, &g1);
    assert_eq!(w.once_expect(0).report.state, AgentState::Healthy);

    // Bad input: nothing changes.
    let before = everything(&w);
    let (ok, _, err) = retire(&w, &url, &publisher, &["web-1", "web-9"]);
    assert!(!ok);
    assert!(
        err.contains("host web-9 has no manifest") && err.contains("nothing was written"),
        "{err}"
    );
    let (ok, _, err) = retire(&w, &url, &publisher, &["Web_1"]);
    assert!(!ok && err.contains("Web_1"), "{err}");
    let (ok, _, err) = retire(&w, &url, &publisher, &["web-1", "--purge"]);
    assert!(!ok);
    assert!(err.contains("admin role"), "{err}");
    // That run wrote the tombstone before its purge was refused.
    let tomb = w
        .block_on(fleet_publish::show(
            &w.bucket,
            &host,
            &fleet_core::TrustedKeys::new([w.publisher.public()]),
        ))
        .unwrap()
        .manifest;
    assert_eq!(tomb.activation, Activation::Retire);
    assert_eq!((tomb.sequence, &tomb.closure), (2, &g1.top));
    let after: Vec<_> = everything(&w)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("audit/") && k != "hosts/web-1/manifest.json")
        .collect();
    let was: Vec<_> = before
        .into_iter()
        .filter(|(k, _)| !k.starts_with("audit/") && k != "hosts/web-1/manifest.json")
        .collect();
    assert_eq!(after, was, "the refused purge deleted nothing");

    let (ok, out, err) = retire(&w, &url, &publisher, &["web-1"]);
    assert!(ok, "{err}");
    assert!(out.contains("web-1: already retired"), "{out}");

    // The agent accepts the tombstone and applies nothing, now and later, even
    // with a new closure in the cache.
    w.publish_closure(&g2);
    for _ in 0..2 {
        let r = w.once_expect(0);
        assert_eq!(r.report.state, AgentState::Retired);
        assert!(r.report.last_error.is_none());
    }
    assert_eq!(w.activated(), std::slice::from_ref(&g1.top));
    assert_eq!(w.status().state, AgentState::Retired);
    assert_eq!(w.state().highest_seen.unwrap().sequence, 2);

    // A pause does not hide the retirement: the tombstone is final.
    w.agent_local(&["pause", "--reason", "disk swap"]);
    assert_eq!(w.once_expect(0).report.state, AgentState::Retired);
    w.agent_local(&["resume"]);

    // Rollback (like deploy and rollouts) leaves a retired host alone unless forced.
    let before = everything(&w);
    let (ok, _, err) = publish(&w, &url, &publisher, "rollback", &["--host", "web-1"]);
    assert!(!ok, "rolling back a retired host needs --force");
    assert!(
        err.contains("web-1: retired") && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(everything(&w), before, "the refused rollback wrote nothing");

    let (ok, out, err) = retire(&w, &url, &admin_role, &["web-1", "--purge"]);
    assert!(ok, "{err}");
    assert!(out.contains("web-1: purged"), "{out}");
    let left = everything(&w);
    assert!(
        left.iter().all(|(k, _)| k.starts_with("audit/")),
        "only the audit entries stay: {left:?}"
    );
    let chain = w.block_on(fleet_tests::audit::chain_entries(&w.bucket));
    let actions: Vec<(&str, Option<&serde_json::Value>)> = chain
        .iter()
        .map(|e| (e.action.as_str(), e.details.extra.get("step")))
        .collect();
    let purge = serde_json::json!("purge");
    assert_eq!(
        actions,
        [("retire", None), ("retire", Some(&purge))],
        "the tombstone and the purge are on record, and stay (the test's first \
         manifest was written without the publisher, so it has no entry)"
    );
}
