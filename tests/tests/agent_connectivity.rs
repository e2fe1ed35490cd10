//! The connectivity check after a switch, with the real `fleet-agent` binary, real
//! Nix and real SeaweedFS (the host's own scoped IAM keys) behind the harness's fault
//! proxy ([`fleet_tests::fault_proxy`]), used here only as a switch for the link.
//!
//! The systems are built by this file: their `switch-to-configuration` logs its call
//! like the harness's fixture and then either creates a file ("this generation
//! breaks the network") or removes it ("this one has a working network"). The proxy
//! resets every request while that file exists, so the generation's own activation
//! cuts the agent off from the bucket, and activating the previous generation
//! restores the link, as on a real host whose new configuration broke its route,
//! firewall or DNS.

mod agent_common;

use agent_common::World;
use fleet_core::StorePath;
use fleet_core::status::AgentState;
use fleet_tests::fault_proxy::{FaultPlan, FaultProxy};
use fleet_tests::nix::Closure;

/// A system whose activation makes the link up or down (see the module docs).
const NET_NIX: &str = r#"
{ name, generation, netFile, network }:
derivation {
  name = "nixos-system-${name}-${generation}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  PATH = "/bin:/usr/bin";
  inherit netFile network;
  args = [ "-eu" "-c" ''
    mkdir -p $out/bin
    {
      printf '#!/bin/sh\nself=%s\nnet=%s\nnetfile=%s\n' "$out" "$network" "$netFile"
      cat <<'EOF'
if [ -n "$FLEET_ACTIVATION_LOG" ]; then
  line="$self"
  for a in "$@"; do line="$line	$a"; done
  printf '%s\n' "$line" >> "$FLEET_ACTIVATION_LOG"
fi
if [ "$net" = down ]; then : > "$netfile"; else rm -f "$netfile"; fi
exit 0
EOF
    } > $out/bin/switch-to-configuration
    chmod 0755 $out/bin/switch-to-configuration
  '' ];
}
"#;

/// A world on a fresh SeaweedFS bucket whose agent reaches it through a proxy that
/// is cut while the returned file exists.
fn cuttable_world(host: &str) -> (World, std::path::PathBuf) {
    let (server, name, admin, agent) = agent_common::seaweedfs_bucket("connectivity", host);
    let proxy = FaultProxy::start(
        server.endpoint().trim_start_matches("http://"),
        FaultPlan::none(0),
    )
    .unwrap();
    proxy.calm(true);
    let url = format!("s3://{name}?endpoint={}&region=us-east-1", proxy.endpoint());
    let w = World::s3(host, &url, admin, &agent);
    let cut = w.dir.path().join("network-down");
    proxy.cut_while_exists(cut.clone());
    (w, cut)
}

/// Builds this file's system for `w`'s host; `network_up` says what its activation
/// does to the link.
fn net_system(w: &World, generation: &str, cut: &std::path::Path, network_up: bool) -> Closure {
    let file = w.dir.path().join("net.nix");
    std::fs::write(&file, NET_NIX).unwrap();
    let mut cmd = w.nix.command("nix-build");
    cmd.arg("--no-out-link").arg(&file);
    for (k, v) in [
        ("name", w.host.as_str()),
        ("generation", generation),
        ("netFile", &cut.to_string_lossy()),
        ("network", if network_up { "up" } else { "down" }),
    ] {
        cmd.arg("--argstr").arg(k).arg(v);
    }
    let out = w.nix.output(cmd).unwrap_or_else(|e| panic!("{e}"));
    let top = StorePath::new(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    let paths = w.nix.closure(&top).unwrap();
    Closure { top, paths }
}

#[test]
fn a_generation_that_cuts_the_host_off_is_rolled_back_and_reported_as_connectivity_lost() {
    let (mut w, cut) = cuttable_world("conn-1");
    w.extra_config = "connectivity-timeout = \"3s\"\n".to_owned();
    let g1 = net_system(&w, "1", &cut, true);
    w.deploy(1, &g1);
    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    // A first deploy has nothing to return to, so it is not checked.
    assert!(
        r.stderr.contains("connectivity not checked"),
        "{}",
        r.stderr
    );

    // Sequence 2 activates fine and has no health checks to fail, but its
    // activation takes the link down.
    let g2 = net_system(&w, "2", &cut, false);
    w.deploy(2, &g2);
    let started = std::time::Instant::now();
    let r = w.once_expect(3);
    assert_eq!(r.report.state, AgentState::RolledBack, "{}", r.stderr);
    assert_eq!(r.kind(), "connectivity-lost", "{}", r.stderr);
    assert!(
        r.message().contains("connectivity-timeout") && r.message().contains("sequence 2"),
        "{}",
        r.message()
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(3),
        "the whole window was tried"
    );
    assert!(
        r.stderr
            .contains("cannot reach the bucket after the switch"),
        "{}",
        r.stderr
    );
    // The host runs generation 1 again, whose activation restored the link.
    assert_eq!(
        w.activated(),
        vec![g1.top.clone(), g2.top.clone(), g1.top.clone()]
    );
    assert_eq!(w.profile_target(), Some(g1.top.clone()));
    assert!(!cut.exists());
    let current = r.report.current.clone().unwrap();
    assert_eq!((current.sequence, &current.closure), (Some(1), &g1.top));
    // …and once the link was back, the agent reported why, in status.json and an
    // event.
    let status = w.status();
    assert_eq!(status.state, AgentState::RolledBack);
    assert_eq!(
        status.last_error.as_ref().map(|e| e.kind.as_str()),
        Some("connectivity-lost")
    );
    assert!(
        w.events().iter().any(|e| e.state == AgentState::RolledBack
            && e.last_error.as_ref().unwrap().kind == "connectivity-lost"),
        "{:?}",
        w.event_states()
    );

    // The same manifest is not tried again; a fixed generation goes through.
    let r = w.once_expect(3);
    assert_eq!(r.kind(), "connectivity-lost");
    assert_eq!(w.activated().len(), 3);
    let g3 = net_system(&w, "3", &cut, true);
    w.deploy(3, &g3);
    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("the bucket is reachable from the new generation"),
        "{}",
        r.stderr
    );
    assert_eq!(r.report.current.unwrap().closure, g3.top);
}

#[test]
fn with_the_check_off_a_generation_that_cuts_the_host_off_stays() {
    let (mut w, cut) = cuttable_world("conn-2");
    w.extra_config = "connectivity-timeout = \"0s\"\n".to_owned();
    let g1 = net_system(&w, "1", &cut, true);
    w.bring_up(1, &g1);
    let g2 = net_system(&w, "2", &cut, false);
    w.deploy(2, &g2);
    // Committed without a check; only the status write afterwards fails.
    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    assert_eq!(w.profile_target(), Some(g2.top.clone()));
    assert!(cut.exists());
    std::fs::remove_file(&cut).unwrap();
}
