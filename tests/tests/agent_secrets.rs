//! No secrets in child processes: the real `fleet-agent` against real SeaweedFS, with
//! the host's scoped S3 keys, deploys a real Nix fixture system whose
//! `switch-to-configuration` writes its environment to a file, and runs a `command`
//! health check that does the same. Neither may see an `AWS_*` variable, a credential
//! value or `$CREDENTIALS_DIRECTORY`, while the agent itself had them (it read the
//! manifest and wrote its status with them).
//!
//! Both ways the agent gets its keys are covered: the AWS environment (an
//! `EnvironmentFile=`) and the files of systemd's `LoadCredential=` in
//! `$CREDENTIALS_DIRECTORY` (with no `AWS_*` key in the environment at all).

mod agent_common;

use std::path::Path;

use agent_common::World;
use fleet_core::status::AgentState;
use fleet_core::{HostName, S3Credentials};
use fleet_tests::nix::{Closure, FixtureOptions, environment_log};
use fleet_tests::s3::S3Server;

/// A world on a fresh SeaweedFS bucket whose agent holds `host`'s scoped keys (in
/// its environment); the keys are returned too.
fn s3_world(host: &str) -> (World, S3Credentials) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (url, admin, agent) = rt.block_on(async {
        let server = S3Server::seaweedfs()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let name = server.new_bucket("secrets").await.unwrap();
        let admin = server
            .bucket(&name, "", &server.admin_credentials())
            .unwrap();
        let agent = server
            .user_for(
                &fleet_core::iam::Role::Agent(HostName::new(host).unwrap()),
                &name,
                "",
            )
            .await
            .unwrap();
        let url = format!(
            "s3://{name}?endpoint={}&region=us-east-1",
            server.endpoint()
        );
        (url, admin, agent)
    });
    (World::s3(host, &url, admin, &agent), agent)
}

/// A fixture system that records its activation's environment.
fn recording_system(w: &World, generation: &str) -> Closure {
    w.nix
        .fixture_system(
            w.host.as_str(),
            generation,
            &FixtureOptions {
                record_environment: true,
                ..FixtureOptions::salted("secrets")
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Configures a health check that writes its environment to `file`.
fn env_dumping_check(w: &mut World, file: &Path) {
    w.extra_config = format!(
        "health-checks = [ {{ command = [\"/bin/sh\", \"-c\", \"env > {}\"], timeout = \"10s\" }} ]\n",
        file.display()
    );
}

/// Panics if `dump` (an `env` listing) shows any credential.
fn assert_no_secret(dump: &str, what: &str, creds: &S3Credentials) {
    assert!(!dump.is_empty(), "{what}: empty environment dump");
    for line in dump.lines() {
        let name = line.split('=').next().unwrap_or_default();
        assert!(
            !name.starts_with("AWS_") && name != "CREDENTIALS_DIRECTORY",
            "{what} saw {name}:\n{dump}"
        );
    }
    assert!(
        !dump.contains(&creds.secret_access_key) && !dump.contains(&creds.access_key_id),
        "{what} saw a credential value:\n{dump}"
    );
    // The allow-list still gives what a switch needs.
    assert!(
        dump.lines().any(|l| l.starts_with("PATH=")),
        "{what}: no PATH:\n{dump}"
    );
}

#[test]
fn switch_and_health_checks_never_see_the_agents_credentials() {
    let (mut w, creds) = s3_world("secrets-1");
    let check_env = w.dir.path().join("check.env");
    env_dumping_check(&mut w, &check_env);
    // The agent really has its keys in its environment.
    assert!(
        w.env
            .iter()
            .any(|(k, v)| k == "AWS_SECRET_ACCESS_KEY" && *v == creds.secret_access_key)
    );

    let g1 = recording_system(&w, "1");
    w.deploy(1, &g1);
    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    assert_eq!(w.activated(), vec![g1.top.clone()]);
    assert_eq!(w.status().state, AgentState::Healthy);
    let switch_dump = std::fs::read_to_string(environment_log(&w.activation_log)).unwrap();
    assert_no_secret(&switch_dump, "switch-to-configuration", &creds);
    assert_no_secret(
        &std::fs::read_to_string(&check_env).unwrap(),
        "the health check",
        &creds,
    );
    // pass-environment reaches the switch: that is how its log was found.
    assert!(
        switch_dump.contains(&format!(
            "FLEET_ACTIVATION_LOG={}",
            w.activation_log.display()
        )),
        "{switch_dump}"
    );

    // The same keys from systemd's credentials directory, none in the environment.
    let creds_dir = w.dir.path().join("credentials");
    std::fs::create_dir(&creds_dir).unwrap();
    std::fs::write(
        creds_dir.join("aws-access-key-id"),
        format!("{}\n", creds.access_key_id),
    )
    .unwrap();
    std::fs::write(
        creds_dir.join("aws-secret-access-key"),
        format!("{}\n", creds.secret_access_key),
    )
    .unwrap();
    w.env.retain(|(k, _)| k == "AWS_REGION");
    w.env.push((
        "CREDENTIALS_DIRECTORY".into(),
        creds_dir.display().to_string(),
    ));
    std::fs::remove_file(environment_log(&w.activation_log)).unwrap();
    std::fs::remove_file(&check_env).unwrap();
    let g2 = recording_system(&w, "2");
    w.deploy(2, &g2);
    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("S3 credentials from $CREDENTIALS_DIRECTORY"),
        "{}",
        r.stderr
    );
    assert_eq!(w.activated(), vec![g1.top.clone(), g2.top.clone()]);
    assert_eq!(w.status().current.unwrap().sequence, Some(2));
    assert_no_secret(
        &std::fs::read_to_string(environment_log(&w.activation_log)).unwrap(),
        "switch-to-configuration (credentials directory)",
        &creds,
    );
    assert_no_secret(
        &std::fs::read_to_string(&check_env).unwrap(),
        "the health check (credentials directory)",
        &creds,
    );

    // Half a key pair is refused at start, naming the missing file.
    std::fs::remove_file(creds_dir.join("aws-secret-access-key")).unwrap();
    let out = w.agent_cmd("once").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("aws-secret-access-key"), "{stderr}");
}
