//! `fleet-agent run`, the daemon, with real Nix on a `file://` bucket:
//!
//! - it follows new manifests, heartbeats status.json while idle, tells systemd
//!   READY / WATCHDOG / STATUS / STOPPING over a real `$NOTIFY_SOCKET` datagram
//!   socket, and leaves cleanly on SIGTERM;
//! - with the bucket unreachable it keeps the running generation and backs off
//!   exponentially instead of polling at the poll interval.

mod agent_common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use agent_common::World;
use fleet_core::status::AgentState;

const WAIT: Duration = Duration::from_secs(60);

/// Sends SIGTERM to the child (by its own pid, with the system's `kill`).
fn sigterm(child: &agent_common::Background) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn daemon_follows_manifests_heartbeats_and_talks_to_systemd() {
    let mut w = World::new("daemon-1");
    w.extra_config = "poll-interval = \"300ms\"\nheartbeat-interval = \"1s\"\n".to_owned();
    let sock_path = w.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    // Read the socket all the time, as systemd does: a full datagram queue (10 by
    // default) would block the sender.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            if tx
                .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    w.env = vec![
        ("NOTIFY_SOCKET".into(), sock_path.display().to_string()),
        ("WATCHDOG_USEC".into(), "400000".into()),
    ];
    let g1 = w.system("1", 0);
    let g2 = w.system("2", 0);
    w.deploy(1, &g1);

    let mut child = w.spawn_daemon();

    let current_is = |w: &World, top: &fleet_core::StorePath| {
        w.try_status().is_some_and(|s| {
            s.state == AgentState::Healthy && s.current.is_some_and(|c| &c.closure == top)
        })
    };
    w.wait_for("generation 1 healthy", WAIT, || current_is(&w, &g1.top));
    w.deploy(2, &g2);
    w.wait_for("generation 2 healthy", WAIT, || current_is(&w, &g2.top));
    assert_eq!(w.activated(), [g1.top.clone(), g2.top.clone()]);

    // Idle: status.json is rewritten by the heartbeat, nothing else happens.
    let t0 = w.status().time;
    let events = w.events().len();
    w.wait_for("a heartbeat", Duration::from_secs(8), || {
        w.status().time > t0
    });
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(w.events().len(), events, "idle polls made events");
    assert_eq!(w.activations().len(), 2);

    sigterm(&child);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let messages: Vec<String> = rx.try_iter().collect();
    let all = messages.join("\n");
    assert!(all.contains("READY=1"), "{all}");
    assert!(
        messages.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3,
        "{all}"
    );
    assert!(all.contains("STATUS=healthy"), "{all}");
    assert!(all.contains("STOPPING=1"), "{all}");
}

#[test]
fn unreachable_bucket_keeps_the_generation_and_backs_off() {
    let mut w = World::new("daemon-2");
    let g1 = w.system("1", 0);
    w.bring_up(1, &g1);

    // Nothing listens on this port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    w.store_url = format!("s3://fleet-test?endpoint=http://127.0.0.1:{port}&region=us-east-1");
    w.extra_config = "poll-interval = \"200ms\"\nbackoff-max = \"3s\"\n".to_owned();
    w.env = vec![
        ("AWS_ACCESS_KEY_ID".into(), "test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test-secret".into()),
    ];
    let log_path = w.daemon_log();
    let mut child = w.spawn_daemon();
    std::thread::sleep(Duration::from_secs(4));
    sigterm(&child);
    child.0.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    let polls = log.matches("polling the manifest").count();
    // At a fixed 200 ms this would be ~20 polls; backoff doubles from 200 ms to the
    // 3 s cap (100-200 ms, 200-400, 400-800, 800-1600, 1.5-3 s …), so at most 6 fit.
    assert!((2..=6).contains(&polls), "{polls} polls in 4 s:\n{log}");
    assert!(log.contains("backing off"), "{log}");
    let st = w.state();
    assert_eq!(st.current.unwrap().closure, g1.top);
    assert_eq!(st.reported.state, AgentState::Healthy);
    assert_eq!(
        st.reported.last_error.as_ref().map(|e| e.kind.as_str()),
        Some("bucket-unreachable")
    );
    // The change was queued for when the bucket is back.
    assert!(
        st.pending_events.iter().any(|e| e
            .report
            .last_error
            .as_ref()
            .is_some_and(|x| x.kind == "bucket-unreachable")),
        "{:?}",
        st.pending_events
    );
    assert_eq!(w.activations().len(), 1);
    assert_eq!(w.profile_target(), Some(g1.top.clone()));
}

#[test]
fn restart_after_switch_exits_once_the_switch_is_reported() {
    let mut w = World::new("daemon-3");
    w.extra_config = "poll-interval = \"300ms\"\nrestart-after-switch = true\n".to_owned();
    let g1 = w.system("1", 0);
    w.deploy(1, &g1);
    let mut child = w.spawn_daemon();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < WAIT,
            "the daemon did not exit after switching"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    // It left only after the switch was committed and reported.
    let st = w.status();
    assert_eq!(st.state, AgentState::Healthy);
    assert_eq!(st.current.unwrap().closure, g1.top);
    assert_eq!(w.activated(), std::slice::from_ref(&g1.top));
    let log = std::fs::read_to_string(w.daemon_log()).unwrap();
    assert!(log.contains("restart-after-switch"), "{log}");

    // Restarted (as systemd would), with nothing new published, it stays up.
    let mut again = w.spawn_daemon();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        again.0.try_wait().unwrap().is_none(),
        "exited although nothing was switched"
    );
    sigterm(&again);
    again.0.wait().unwrap();
    assert_eq!(w.activations().len(), 1);
}
