//! `kill -9` of `fleet-agent` at each slow step, then a restart: the agent converges and
//! never activates the same generation twice.
//!
//! The slowness is real, from fixtures: a 200 MB random blob to fetch, a
//! `switch-to-configuration` that waits for a file (`FLEET_TEST_HOLD_UNTIL`, read by
//! the fixture script only), a health check command that waits for a file.

mod agent_common;

use std::time::Duration;

use agent_common::{HOLD_ENV, World};
use fleet_agent::state::Step;
use fleet_core::status::AgentState;

const WAIT: Duration = Duration::from_secs(120);

fn kill9(child: &mut agent_common::Background) {
    // std's kill is SIGKILL.
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    assert!(!status.success());
}

#[test]
fn kill_during_fetch_then_restart_converges() {
    let mut w = World::new("crash-1");
    // The staged import: its partly downloaded files show the fetch under way, and
    // its restart reuses what was staged.
    w.extra_config = "import-via = \"staging\"\n".to_owned();
    let g1 = w.held_system("1", "crash-fetch", 0);
    w.bring_up(1, &g1);
    let g2 = w.held_system("2", "crash-fetch", 200_000_000);
    w.deploy(2, &g2);

    let mut child = w.spawn_once(&[]);
    let nar_dir = w.state_dir.join("staging/nar");
    // A partly downloaded NAR file in the staging directory: the fetch is under way.
    w.wait_for("a NAR download in progress", WAIT, || {
        std::fs::read_dir(&nar_dir).is_ok_and(|rd| {
            rd.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().ends_with(".part"))
        })
    });
    kill9(&mut child);
    assert_eq!(
        w.activated(),
        vec![g1.top.clone()],
        "the kill came after the fetch; this run proves nothing"
    );
    assert_eq!(w.state().in_flight, None);
    assert_eq!(w.status().state, AgentState::Fetching);

    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    assert_eq!(r.report.current.unwrap().closure, g2.top);
    assert_eq!(w.activated(), [g1.top.clone(), g2.top.clone()]);
    assert!(w.nix.is_valid_in(&w.chroot, &g2.top).unwrap());
    w.once_expect(0);
    assert_eq!(w.activations().len(), 2);
}

#[test]
fn kill_during_activation_then_restart_rolls_back_without_a_second_activation() {
    let w = World::new("crash-2");
    let g1 = w.held_system("1", "crash-act", 0);
    w.bring_up(1, &g1);
    let g2 = w.held_system("2", "crash-act", 0);
    w.deploy(2, &g2);

    let release = w.dir.path().join("release");
    let mut child = w.spawn_once(&[(HOLD_ENV, &release)]);
    w.wait_for(
        "generation 2's switch-to-configuration to start",
        WAIT,
        || w.activations().len() == 2,
    );
    kill9(&mut child);
    // The in-flight record was on disk before the switch started.
    let flight = w.state().in_flight.expect("in-flight record");
    assert_eq!(flight.step, Step::Activating);
    assert_eq!(flight.target.closure, g2.top);
    // Let the orphaned script finish, as it would under systemd's cgroup kill or not.
    std::fs::write(&release, "").unwrap();

    let r = w.once_expect(3);
    assert_eq!(r.report.state, AgentState::RolledBack, "{}", r.stderr);
    assert_eq!(r.kind(), "activation-interrupted");
    assert!(r.message().contains("not run again"), "{}", r.message());
    assert_eq!(r.report.current.as_ref().unwrap().closure, g1.top);
    assert_eq!(w.profile_target(), Some(g1.top.clone()));
    // Generation 2 was activated exactly once; generation 1 restored.
    assert_eq!(
        w.activated(),
        [g1.top.clone(), g2.top.clone(), g1.top.clone()]
    );
    assert_eq!(w.state().in_flight, None);

    // Converged: more cycles change nothing.
    let again = w.once_expect(3);
    assert_eq!(again.kind(), "activation-interrupted");
    assert_eq!(w.activations().len(), 3);
}

#[test]
fn kill_during_health_checks_then_restart_verifies_without_reactivating() {
    let mut w = World::new("crash-3");
    let release = w.dir.path().join("healthy");
    w.extra_config = format!(
        "health-checks = [{{ command = [\"/bin/sh\", \"-c\", \"while [ ! -e {} ]; do sleep 0.05; done\"], timeout = \"120s\" }}]\n",
        release.display()
    );
    let g1 = w.held_system("1", "crash-health", 0);
    std::fs::write(&release, "").unwrap();
    w.bring_up(1, &g1);
    std::fs::remove_file(&release).unwrap();
    let g2 = w.held_system("2", "crash-health", 0);
    w.deploy(2, &g2);

    let mut child = w.spawn_once(&[]);
    w.wait_for("the health checks of generation 2", WAIT, || {
        w.state()
            .in_flight
            .is_some_and(|f| f.step == Step::CheckingHealth)
    });
    kill9(&mut child);
    assert_eq!(w.activated(), [g1.top.clone(), g2.top.clone()]);

    std::fs::write(&release, "").unwrap();
    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    assert_eq!(r.report.current.unwrap().closure, g2.top);
    assert_eq!(w.activated(), [g1.top.clone(), g2.top.clone()]);
    assert_eq!(w.state().previous.unwrap().closure, g1.top);
}
