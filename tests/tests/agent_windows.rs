//! Maintenance windows, prefetch and `activate_after`, with the real `fleet-agent`
//! binary and real Nix: outside a window the closure is fetched and verified at once
//! and reported `staged`; the daemon activates it within seconds of the window's
//! start; a manifest's `activate_after` and its own `maintenance_windows` hold a
//! deploy the same way.

mod agent_common;

use std::time::Duration;

use agent_common::World;
use fleet_core::StorePath;
use fleet_core::status::AgentState;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Zoned};

const STAGED: i32 = 9;

fn hms(z: &Zoned) -> String {
    z.strftime("%H:%M:%S").to_string()
}

/// `daily HH:MM:SS-HH:MM:SS` (UTC) from `from` to `to` after now.
fn window_in(from: SignedDuration, to: SignedDuration) -> (Timestamp, String) {
    let now = Timestamp::now().to_zoned(TimeZone::UTC);
    let start = &now + from;
    // The window's text has whole seconds: it opens at the start's second.
    (
        Timestamp::from_second(start.timestamp().as_second()).unwrap(),
        format!("daily {}-{}", hms(&start), hms(&(&now + to))),
    )
}

fn fetched(w: &World, p: &StorePath) -> bool {
    w.chroot
        .join(p.to_string().trim_start_matches('/'))
        .exists()
}

#[test]
fn outside_its_window_a_deploy_is_prefetched_and_staged_then_activated_when_it_opens() {
    let mut w = World::new("win-1");
    let g1 = w.system("w1", 0);
    w.bring_up(1, &g1);
    let (start, window) = window_in(SignedDuration::from_secs(6), SignedDuration::from_hours(1));
    w.extra_config = format!(
        "poll-interval = \"1h\"\nheartbeat-interval = \"1h\"\ntime-zone = \"UTC\"\n\
         maintenance-windows = [\"{window}\"]\n"
    );
    let g2 = w.system("w2", 0);
    w.deploy(2, &g2);
    let _daemon = w.spawn_daemon();
    w.wait_for("staged", Duration::from_secs(5), || {
        w.try_status()
            .is_some_and(|s| s.state == AgentState::Staged)
    });
    assert!(Timestamp::now() < start, "staged before the window opened");
    let status = w.status();
    assert_eq!(status.desired.unwrap().sequence, Some(2));
    assert_eq!(status.current.unwrap().closure, g1.top);
    // Prefetched: in the store already, not activated.
    assert!(fetched(&w, &g2.top));
    assert_eq!(w.activated(), vec![g1.top.clone()]);

    // The poll interval is an hour: only the window's start wakes the daemon.
    w.wait_for("sequence 2 healthy", Duration::from_secs(30), || {
        w.try_status().is_some_and(|s| {
            s.state == AgentState::Healthy && s.current.is_some_and(|c| c.sequence == Some(2))
        })
    });
    let late = Timestamp::now().duration_since(start);
    assert!(
        late < SignedDuration::from_secs(5),
        "activated {late:?} after the window opened"
    );
    assert!(Timestamp::now() >= start);
    assert_eq!(w.activated(), vec![g1.top.clone(), g2.top.clone()]);
    let log = std::fs::read_to_string(w.daemon_log()).unwrap();
    assert!(log.contains("outside the maintenance windows"), "{log}");
}

#[test]
fn a_manifests_activate_after_and_windows_hold_the_deploy() {
    let w = World::new("win-2");
    let g1 = w.system("a1", 0);
    w.bring_up(1, &g1);

    // activate_after: fetched now, activated only from then on.
    let g2 = w.system("a2", 0);
    w.publish_closure(&g2);
    let mut m = w.manifest(2, &g2.top);
    let after = Timestamp::now() + SignedDuration::from_secs(3);
    m.activate_after = Some(after);
    w.put_manifest(&m);
    let r = w.once_expect(STAGED);
    assert_eq!(r.report.state, AgentState::Staged, "{}", r.stderr);
    assert!(r.stderr.contains("activate_after"), "{}", r.stderr);
    assert!(fetched(&w, &g2.top));
    assert_eq!(w.activated(), vec![g1.top.clone()]);
    std::thread::sleep(
        Duration::try_from(after.duration_since(Timestamp::now())).unwrap_or_default(),
    );
    let r = w.once_expect(0);
    assert_eq!(r.report.current.unwrap().sequence, Some(2), "{}", r.stderr);

    // The manifest's own windows replace the host's (none here: always open).
    let g3 = w.system("a3", 0);
    w.publish_closure(&g3);
    let mut m = w.manifest(3, &g3.top);
    let (_, window) = window_in(SignedDuration::from_hours(1), SignedDuration::from_hours(2));
    m.maintenance_windows = Some(vec![window]);
    w.put_manifest(&m);
    let r = w.once_expect(STAGED);
    assert!(
        r.stderr.contains("outside the maintenance windows"),
        "{}",
        r.stderr
    );
    assert_eq!(w.activated().len(), 2);

    // A window that cannot be read refuses the manifest.
    let mut m = w.manifest(4, &g3.top);
    m.maintenance_windows = Some(vec!["Mon 02:00-02:00".into()]);
    w.put_manifest(&m);
    let r = w.once_expect(2);
    assert_eq!(r.kind(), "manifest-malformed", "{}", r.stderr);
    assert!(r.message().contains("never open"), "{}", r.message());
}

#[test]
fn fleet_publish_deploy_writes_activate_after_and_the_agent_stages_until_then() {
    let w = World::new("win-3");
    let g1 = w.system("p1", 0);
    w.bring_up(1, &g1);
    let g2 = w.system("p2", 0);
    w.publish_closure(&g2);
    let signing_key = w.dir.path().join("publisher-1.secret");
    w.publisher.write_new(&signing_key).unwrap();
    let after = Timestamp::now() + SignedDuration::from_hours(1);
    let out = fleet_tests::agent::clean_command(
        &fleet_tests::bin("fleet-publish"),
        &w.dir.path().join("xdg-cache"),
    )
    .args([
        "deploy",
        "--bucket",
        &w.store_url,
        "--host",
        w.host.as_str(),
    ])
    .arg("--cache-key")
    .arg(&w.cache_secret_file)
    .arg("--signing-key")
    .arg(&signing_key)
    .arg("--closure")
    .arg(g2.top.to_string())
    .args(["--activate-after", &after.to_string()])
    .args(["--maintenance-window", "daily 00:00-24:00"])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = w.once_expect(STAGED);
    assert!(r.stderr.contains("activate_after"), "{}", r.stderr);
    assert_eq!(r.report.desired.unwrap().sequence, Some(2));
    assert!(fetched(&w, &g2.top));
    assert_eq!(w.activated(), vec![g1.top.clone()]);
}
