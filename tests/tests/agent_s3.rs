//! `fleet-agent` against real SeaweedFS with the host's own scoped IAM keys (policy
//! from `fleet_core::iam`, made by the harness with real IAM calls), and real Nix.
//!
//! The harness's counting proxy ([`fleet_tests::proxy`]) sits between the agent and
//! the server: it records the method and path of each HTTP request the agent sends
//! and forwards the bytes unchanged. That is how the requests per cycle are counted,
//! not by the agent's own word (`bench-agent-idle` counts idle polls the same way).
//!
//! - the happy path over S3, then a second `once` that makes exactly one GET (a 304)
//!   and one PUT (status.json), and a daemon whose idle polls are exactly one request
//!   each;
//! - an agent holding another host's credentials cannot read that host's manifest nor
//!   write its status: 403 is reported as `access-denied` and the daemon backs off.

mod agent_common;

use std::time::Duration;

use agent_common::World;
use fleet_core::status::AgentState;
use fleet_core::{HostName, Key};
use fleet_tests::proxy::{Requests, counting_proxy};

struct S3World {
    w: World,
    requests: Requests,
    bucket_name: String,
}

/// A world on a fresh SeaweedFS bucket, the agent using `agent_host`'s scoped keys
/// through the counting proxy, configured as host `host`.
fn s3_world(host: &str, agent_host: &str) -> S3World {
    let (server, bucket_name, admin, agent) = agent_common::seaweedfs_bucket("agent", agent_host);
    let requests = Requests::default();
    let upstream = server.endpoint().trim_start_matches("http://");
    let port = counting_proxy(upstream, requests.clone()).unwrap();
    let url = format!("s3://{bucket_name}?endpoint=http://127.0.0.1:{port}&region=us-east-1");
    let w = World::s3(host, &url, admin, &agent);
    S3World {
        w,
        requests,
        bucket_name,
    }
}

#[test]
fn over_s3_a_second_cycle_is_one_get_and_idle_polls_are_one_request() {
    let S3World {
        mut w,
        requests,
        bucket_name,
    } = s3_world("s3-web-1", "s3-web-1");
    let g1 = w.system("1", 0);
    w.deploy(1, &g1);

    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    assert_eq!(w.activated(), vec![g1.top.clone()]);
    assert_eq!(w.status().state, AgentState::Healthy);
    let first = requests.take();
    let manifest = format!("GET /{bucket_name}/hosts/s3-web-1/manifest.json");
    assert_eq!(first[0], manifest, "{first:#?}");
    assert!(
        first
            .iter()
            .any(|r| r.starts_with("GET ") && r.ends_with(".narinfo")),
        "{first:#?}"
    );

    // Second cycle: one conditional GET (answered 304) and the status.json that
    // `once` always writes; no activation.
    // With every status write goes its change-feed marker (decision 28).
    let r = w.once_expect(0);
    assert!(r.stderr.contains("manifest unchanged"), "{}", r.stderr);
    let second = requests.take();
    assert_eq!(
        second[..2],
        [
            manifest.clone(),
            format!("PUT /{bucket_name}/status/s3-web-1/status.json")
        ]
    );
    assert_eq!(second.len(), 3, "{second:#?}");
    assert!(
        second[2].starts_with(&format!("PUT /{bucket_name}/changes/"))
            && second[2].ends_with("/s3-web-1"),
        "{second:#?}"
    );
    assert_eq!(w.activations().len(), 1);

    // The daemon, idle: every poll is exactly one request, the conditional GET.
    w.extra_config = "poll-interval = \"200ms\"\nheartbeat-interval = \"1h\"\n".to_owned();
    let log_path = w.daemon_log();
    let mut child = w.spawn_daemon();
    std::thread::sleep(Duration::from_secs(3));
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    let polls = log.matches("polling the manifest").count();
    let unchanged = log.matches("manifest unchanged").count();
    let seen = requests.take();
    assert!(polls >= 5, "{polls} polls in 3 s:\n{log}");
    // A daemon that starts announces itself: its first poll is followed by status.json.
    assert_eq!(
        seen[..2],
        [
            manifest.clone(),
            format!("PUT /{bucket_name}/status/s3-web-1/status.json")
        ]
    );
    assert!(
        seen[2].starts_with(&format!("PUT /{bucket_name}/changes/")),
        "the status write's change marker: {seen:#?}"
    );
    let idle = &seen[3..];
    // Every later poll is one request; the kill may land between a request and its
    // log line.
    let idle_polls = polls - 1;
    assert!(
        idle.len() == idle_polls || idle.len() + 1 == idle_polls,
        "{} requests for {idle_polls} idle polls: {seen:#?}",
        idle.len()
    );
    assert!(idle.iter().all(|r| r == &manifest), "{seen:#?}");
    assert!(
        unchanged + 1 >= polls,
        "{unchanged} of {polls} were 304s:\n{log}"
    );
    eprintln!(
        "idle daemon: {idle_polls} idle polls, {} requests",
        idle.len()
    );
}

#[test]
fn another_hosts_credentials_get_403_reported_and_backed_off() {
    // The agent says it is s3-web-2 but holds s3-web-1's keys.
    let S3World {
        mut w, requests, ..
    } = s3_world("s3-web-2", "s3-web-1");
    let g1 = w.system("1", 0);
    w.deploy(1, &g1);

    let r = w.once_expect(6);
    assert_eq!(r.kind(), "access-denied", "{}", r.message());
    assert!(
        r.message().contains("hosts/s3-web-2/manifest.json"),
        "{}",
        r.message()
    );
    assert!(r.stderr.contains("access denied"), "{}", r.stderr);
    // Its status write was refused too: nothing landed under either host's prefix.
    assert!(r.stderr.contains("could not write status"), "{}", r.stderr);
    assert!(w.try_status().is_none());
    let other = HostName::new("s3-web-1").unwrap();
    assert!(w.read(&Key::status(&other)).is_none());
    assert_eq!(w.activations().len(), 0);
    let st = w.state();
    assert_eq!(
        st.reported.last_error.map(|e| e.kind),
        Some(fleet_core::ErrorKind::AccessDenied)
    );
    requests.take();

    // The daemon does not hammer: exponential backoff from 200 ms, capped at 2 s.
    w.extra_config =
        "poll-interval = \"200ms\"\nbackoff-max = \"2s\"\nheartbeat-interval = \"1h\"\n".to_owned();
    let log_path = w.daemon_log();
    let mut child = w.spawn_daemon();
    std::thread::sleep(Duration::from_secs(4));
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let seen = requests.take();
    let gets = seen.iter().filter(|r| r.contains("/hosts/")).count();
    // A fixed 200 ms poll would be about 20 GETs; the backoff allows at most 7.
    assert!(
        (2..=7).contains(&gets),
        "{gets} manifest GETs in 4 s: {seen:#?}"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("backing off"), "{log}");
}
