//! `systemd-unit` and `system-running` health checks, run for real by the real
//! `fleet-agent` after real (fixture) activations. There is no systemd here, so the
//! test gives the agent what it looks for: a facts root with `run/systemd/system`,
//! and a stand-in `systemctl` first on its `PATH` that answers from files the test
//! writes (one state per line, one line per call, the last line repeating) and logs
//! every call.
//!
//! - an active unit and a running system: healthy, after exactly the calls expected;
//! - a unit `activating` twice, then `active`: waited for, healthy;
//! - a `failed` unit with a 1 s `grace` and a 60 s timeout: rolled back within
//!   seconds, naming the unit's state;
//! - a `degraded` system: rolled back, saying so.

mod agent_common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent_common::World;
use fleet_core::status::AgentState;

/// The stand-in `systemctl`: `is-active -- UNIT` reads `<dir>/unit-UNIT`,
/// `is-system-running` reads `<dir>/system`; each call prints the next line (the last
/// one repeats) and exits 0 only for `active` / `running`, as systemctl does.
const STAND_IN: &str = r#"#!/bin/sh
dir=@DIR@
echo "$*" >> "$dir/calls"
case "$1" in
  is-active) f="$dir/unit-$3" ;;
  is-system-running) f="$dir/system" ;;
  *) echo "stand-in systemctl: unexpected $*" >&2; exit 1 ;;
esac
n=$(cat "$f.n" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$f.n"
s=$(sed -n "${n}p" "$f")
[ -n "$s" ] || s=$(tail -n 1 "$f")
echo "$s"
[ "$s" = active ] || [ "$s" = running ]
"#;

struct Stand {
    dir: PathBuf,
}

impl Stand {
    /// Installs the stand-in in `w` and puts its directory first on the agent's PATH.
    fn install(w: &mut World) -> Self {
        let dir = w.dir.path().join("systemctl");
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let script = bin.join("systemctl");
        std::fs::write(
            &script,
            STAND_IN.replace("@DIR@", &dir.display().to_string()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(w.facts_root.join("run/systemd/system")).unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        w.env.push(("PATH".into(), path));
        Self { dir }
    }

    /// Sets what the next calls answer (and forgets earlier calls).
    fn answer(&self, file: &str, states: &[&str]) {
        std::fs::write(self.dir.join(file), states.join("\n") + "\n").unwrap();
        let _ = std::fs::remove_file(self.dir.join(format!("{file}.n")));
        let _ = std::fs::remove_file(self.dir.join("calls"));
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn checks(unit_grace: &str) -> String {
    format!(
        "health-checks = [ {{ systemd-unit = \"web.service\", timeout = \"60s\"{unit_grace} }}, {{ system-running = true, timeout = \"60s\", grace = \"1s\" }} ]\n"
    )
}

#[test]
fn systemd_checks_run_through_systemctl_and_decide_the_outcome() {
    let mut w = World::new("health-1");
    let stand = Stand::install(&mut w);
    w.extra_config = checks("");

    // Active and running: healthy, after one call each.
    stand.answer("unit-web.service", &["active"]);
    stand.answer("system", &["running"]);
    let g1 = w.system("h1", 0);
    w.bring_up(1, &g1);
    assert_eq!(
        stand.calls(),
        ["is-active -- web.service", "is-system-running"]
    );

    // Activating, then active: the check waits for it.
    stand.answer("unit-web.service", &["activating", "activating", "active"]);
    stand.answer("system", &["starting", "running"]);
    let g2 = w.system("h2", 0);
    w.deploy(2, &g2);
    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    assert_eq!(
        stand.calls(),
        [
            "is-active -- web.service",
            "is-active -- web.service",
            "is-active -- web.service",
            "is-system-running",
            "is-system-running"
        ]
    );

    // Failed, with a 1 s grace: rolled back long before the 60 s timeout.
    w.extra_config = checks(", grace = \"1s\"");
    stand.answer("unit-web.service", &["failed"]);
    let g3 = w.system("h3", 0);
    w.deploy(3, &g3);
    let t = Instant::now();
    let r = w.once_expect(3);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert_eq!(r.kind(), "health-check-failed", "{}", r.stderr);
    assert!(
        r.message().contains("systemd-unit web.service") && r.message().contains("unit is failed"),
        "{}",
        r.message()
    );
    assert_eq!(w.profile_target(), Some(g2.top.clone()));

    // A degraded system: rolled back, saying so.
    stand.answer("unit-web.service", &["active"]);
    stand.answer("system", &["degraded"]);
    let g4 = w.system("h4", 0);
    w.deploy(4, &g4);
    let r = w.once_expect(3);
    assert!(
        r.message().contains("system-running") && r.message().contains("degraded"),
        "{}",
        r.message()
    );
    assert_eq!(w.profile_target(), Some(g2.top.clone()));

    // Without run/systemd/system under the facts root the checks are skipped.
    std::fs::remove_dir(w.facts_root.join("run/systemd/system")).unwrap();
    stand.answer("system", &["degraded"]);
    let g5 = w.system("h5", 0);
    w.deploy(5, &g5);
    let r = w.once_expect(0);
    assert!(
        r.stderr
            .contains("skipping health check: systemd is not running here"),
        "{}",
        r.stderr
    );
    assert!(stand.calls().is_empty(), "{:?}", stand.calls());
}
