//! A fleet of 100 hosts on one SeaweedFS server: `bench-load`, the fleet load
//! benchmark (bench/README.md), run small and fast as a test. Real parts throughout:
//! `weed mini` with one IAM user per host (the agent policy of `fleet_core::iam`),
//! fixture closures built with real `nix`, `fleet-publish deploy --hosts`, 100
//! `fleet_agent::Agent`s in two worker processes fetching into one shared chroot
//! store with a profile per host, and `fleet-reporter summary --json` as the judge.
//!
//! Asserted: every host comes up on generation 1, polls without a single error, and
//! is shown up to date on generation 2 after one deploy; the agents' requests reach
//! the server through the counting proxy (one conditional GET of the host's own
//! manifest per poll, and status writes).

use std::process::Command;

#[test]
fn a_hundred_hosts_poll_without_errors_and_all_take_one_deploy() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench-load.json");
    let out = Command::new(fleet_tests::bin("bench-load"))
        .args([
            "--hosts",
            "100",
            "--processes",
            "2",
            "--users",
            "20",
            "--store",
            "shared",
        ])
        .args([
            "--poll-interval",
            "3",
            "--poll-jitter",
            "1",
            "--duration",
            "8",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let r = &report["rows"][0];
    let show = || format!("{r:#}\n{stdout}");

    assert_eq!(r["hosts"], 100, "{}", show());
    assert_eq!(r["errors"], 0, "{}", show());
    assert_eq!(r["all_up_to_date"], true, "{}", show());
    assert_eq!(r["up_to_date"], 100, "{}", show());
    assert_eq!(r["dashboard_states"]["up-to-date"], 100, "{}", show());
    // Each host applied generation 2 exactly once.
    assert_eq!(r["hosts_applied_g2"], 100, "{}", show());

    // Idle: about one poll per host per 3-4 s over 8 s, each one request.
    let polls = r["idle_polls"].as_u64().unwrap();
    assert!(polls >= 100, "{}", show());
    let gets = r["requests_by_kind"]["GET hosts/*/manifest.json"]
        .as_u64()
        .unwrap_or(0);
    // Polls that straddle the window's edges are counted on one side only.
    assert!(
        gets + 100 >= polls && gets <= polls + 100,
        "{gets} manifest GETs for {polls} polls\n{}",
        show()
    );
    let kinds = r["requests_by_kind"].as_object().unwrap();
    for k in kinds.keys() {
        assert!(
            k == "GET hosts/*/manifest.json" || k == "PUT status/*/status.json",
            "an idle agent made a {k} request\n{}",
            show()
        );
    }
    assert!(r["requests_per_s"].as_f64().unwrap() > 10.0, "{}", show());
    let p50 = r["poll_latency_p50_ms"].as_f64().unwrap();
    let p99 = r["poll_latency_p99_ms"].as_f64().unwrap();
    assert!(p50 > 0.0 && p99 >= p50, "{}", show());
    for hwm in r["worker_vm_hwm_bytes"].as_array().unwrap() {
        assert!(hwm.as_u64().unwrap() > 1 << 20, "{}", show());
    }
}
