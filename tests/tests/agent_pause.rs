//! The local pause, with the real `fleet-agent` binary and real Nix: `fleet-agent
//! pause` stops deploys (the agent keeps polling and reports `paused` with the
//! pending sequence as `desired`), across restarts; `resume` lets the pending
//! generation through at the next poll; `--until` ends by itself; the daemon picks a
//! pause and a resume up between polls.

mod agent_common;

use std::time::Duration;

use agent_common::World;
use fleet_core::status::AgentState;

#[test]
fn a_paused_host_reports_the_pending_sequence_and_applies_it_only_after_resume() {
    let w = World::new("pause-1");
    let g1 = w.system("p1", 0);
    w.bring_up(1, &g1);

    let out = w.agent_local(&["pause", "--reason", "disk swap"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("disk swap"),
        "{out:?}"
    );
    let g2 = w.system("p2", 0);
    w.deploy(2, &g2);
    // Twice, each a fresh process: the pause survives restarts.
    for _ in 0..2 {
        let r = w.once_expect(7);
        assert_eq!(r.report.state, AgentState::Paused, "{}", r.stderr);
        assert_eq!(r.report.desired.as_ref().unwrap().sequence, Some(2));
        assert_eq!(r.report.desired.as_ref().unwrap().closure, g2.top);
        assert_eq!(r.report.current.as_ref().unwrap().closure, g1.top);
        assert!(r.stderr.contains("disk swap"), "{}", r.stderr);
    }
    assert_eq!(w.status().state, AgentState::Paused);
    // status.json says why and until when.
    let note = w.status().pause.expect("the pause in status.json");
    assert_eq!(note.reason.as_deref(), Some("disk swap"));
    assert_eq!(note.until, None);
    assert_eq!(w.activated(), vec![g1.top.clone()]);
    assert_eq!(w.profile_target(), Some(g1.top.clone()));
    assert!(
        !w.chroot
            .join(g2.top.to_string().trim_start_matches('/'))
            .exists()
    );

    w.agent_local(&["resume"]);
    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    assert_eq!(r.report.pause, None, "resumed: no pause reported");
    assert_eq!(w.activated(), vec![g1.top.clone(), g2.top.clone()]);
    assert_eq!(r.report.current.unwrap().sequence, Some(2));

    // --until ends the pause by itself.
    w.agent_local(&["pause", "--until", "2s"]);
    let g3 = w.system("p3", 0);
    w.deploy(3, &g3);
    let r = w.once_expect(7);
    assert_eq!(r.report.state, AgentState::Paused);
    assert!(r.report.pause.unwrap().until.is_some());
    std::thread::sleep(Duration::from_millis(2200));
    let r = w.once_expect(0);
    assert_eq!(r.report.current.unwrap().closure, g3.top, "{}", r.stderr);
    assert!(r.stderr.contains("the pause has expired"), "{}", r.stderr);
    assert!(!w.state_dir.join("pause.json").exists());
}

#[test]
fn the_daemon_keeps_polling_while_paused_and_applies_on_resume() {
    let mut w = World::new("pause-2");
    let g1 = w.system("d1", 0);
    w.bring_up(1, &g1);
    w.agent_local(&["pause"]);
    w.extra_config = "poll-interval = \"200ms\"\n".to_owned();
    let _daemon = w.spawn_daemon();
    let g2 = w.system("d2", 0);
    w.deploy(2, &g2);
    w.wait_for(
        "paused with sequence 2 pending",
        Duration::from_secs(30),
        || {
            w.try_status().is_some_and(|s| {
                s.state == AgentState::Paused && s.desired.is_some_and(|d| d.sequence == Some(2))
            })
        },
    );
    // Polls go on, and nothing is applied.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(w.activated(), vec![g1.top.clone()]);

    w.agent_local(&["resume"]);
    w.wait_for("sequence 2 healthy", Duration::from_secs(30), || {
        w.try_status().is_some_and(|s| {
            s.state == AgentState::Healthy && s.current.is_some_and(|c| c.sequence == Some(2))
        })
    });
    assert_eq!(w.activated(), vec![g1.top.clone(), g2.top.clone()]);
    let states = w.event_states();
    assert!(states.contains(&AgentState::Paused), "{states:?}");
}
