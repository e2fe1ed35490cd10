//! Reboot-aware `boot` deploys, with the real `fleet-agent` binary and real Nix.
//!
//! A real reboot cannot happen in a test, so the test plays the machine: the agent's
//! `facts-root` holds a fake `run/booted-system` link and
//! `proc/sys/kernel/random/boot_id`, and its `reboot-command` is a script that only
//! counts its calls. "Booting" is the test pointing `run/booted-system` at what the
//! profile (the boot default) names and writing a new boot id, as the boot loader
//! and kernel would.

mod agent_common;

use std::path::PathBuf;

use agent_common::World;
use fleet_core::status::AgentState;
use fleet_core::{Activation, StorePath};
use fleet_tests::nix::Closure;

/// Exit code of `once` while a boot generation waits for its reboot.
const REBOOT_PENDING: i32 = 8;

struct Machine {
    reboots_log: PathBuf,
    unhealthy: PathBuf,
}

/// Sets up the fake boot facts (booted into `running`, boot id `boot-0`), a
/// reboot command that counts its calls, a health check that fails while the
/// machine's `unhealthy` file exists, and `reboot = policy`.
fn machine(w: &mut World, running: &StorePath, policy: &str) -> Machine {
    let reboots_log = w.dir.path().join("reboots.log");
    let script = w.dir.path().join("fake-reboot");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho reboot >> '{}'\n", reboots_log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let unhealthy = w.dir.path().join("unhealthy");
    w.extra_config = format!(
        "reboot = \"{policy}\"\nreboot-command = [\"{}\"]\nhealth-timeout = \"2s\"\n\
         health-checks = [ {{ command = [\"/bin/sh\", \"-c\", \"test ! -e '{}'\"] }} ]\n",
        script.display(),
        unhealthy.display()
    );
    boot(w, running, "boot-0");
    Machine {
        reboots_log,
        unhealthy,
    }
}

/// Plays a boot: `run/booted-system` → `system`, a new boot id.
fn boot(w: &World, system: &StorePath, boot_id: &str) {
    let run = w.facts_root.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let link = run.join("booted-system");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(system.to_string(), &link).unwrap();
    let dir = w.facts_root.join("proc/sys/kernel/random");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("boot_id"), format!("{boot_id}\n")).unwrap();
}

fn reboots(m: &Machine) -> usize {
    std::fs::read_to_string(&m.reboots_log)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn deploy_boot(w: &World, sequence: u64, closure: &Closure) {
    w.publish_closure(closure);
    let mut m = w.manifest(sequence, &closure.top);
    m.activation = Activation::Boot;
    w.put_manifest(&m);
}

fn modes(w: &World) -> Vec<(StorePath, String)> {
    w.activations()
        .into_iter()
        .map(|c| (c.toplevel, c.args.join(" ")))
        .collect()
}

#[test]
fn a_boot_deploy_reports_reboot_pending_until_the_host_runs_it_then_checks_and_commits() {
    let mut w = World::new("boot-1");
    let g1 = w.system("b1", 0);
    let m = machine(&mut w, &g1.top, "never");
    w.bring_up(1, &g1);

    let g2 = w.system("b2", 0);
    deploy_boot(&w, 2, &g2);
    for _ in 0..2 {
        let r = w.once_expect(REBOOT_PENDING);
        assert_eq!(r.report.state, AgentState::RebootPending, "{}", r.stderr);
        assert_eq!(r.report.facts.reboot_needed, Some(true));
        assert_eq!(r.report.desired.as_ref().unwrap().sequence, Some(2));
        assert_eq!(r.report.current.as_ref().unwrap().closure, g1.top);
        assert!(r.stderr.contains("reboot = \"never\""), "{}", r.stderr);
    }
    assert_eq!(w.status().state, AgentState::RebootPending);
    // The boot entry is set, nothing else ran, and the agent did not reboot.
    assert_eq!(w.profile_target(), Some(g2.top.clone()));
    assert_eq!(
        modes(&w),
        vec![
            (g1.top.clone(), "switch".into()),
            (g2.top.clone(), "boot".into())
        ]
    );
    assert_eq!(reboots(&m), 0);

    // The operator reboots; the agent checks the booted system and commits.
    boot(&w, &g2.top, "boot-1");
    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    assert_eq!(r.report.current.as_ref().unwrap().sequence, Some(2));
    assert!(
        r.stderr.contains("booted into the new generation"),
        "{}",
        r.stderr
    );
    assert!(
        w.event_states().contains(&AgentState::RebootPending),
        "{:?}",
        w.event_states()
    );
}

#[test]
fn when_idle_the_agent_reboots_once_and_an_unhealthy_boot_reboots_back_once() {
    let mut w = World::new("boot-2");
    let g1 = w.system("i1", 0);
    let m = machine(&mut w, &g1.top, "when-idle");
    w.bring_up(1, &g1);

    // Someone is logged in: no reboot yet.
    let sessions = w.facts_root.join("run/systemd/sessions");
    std::fs::create_dir_all(&sessions).unwrap();
    std::fs::write(sessions.join("3"), "UID=1000\n").unwrap();
    let g2 = w.system("i2", 0);
    deploy_boot(&w, 2, &g2);
    let r = w.once_expect(REBOOT_PENDING);
    assert!(r.stderr.contains("login session"), "{}", r.stderr);
    assert_eq!(reboots(&m), 0);

    // Idle: one reboot, never asked twice while it is under way.
    std::fs::remove_file(sessions.join("3")).unwrap();
    w.once_expect(REBOOT_PENDING);
    assert_eq!(reboots(&m), 1);
    let r = w.once_expect(REBOOT_PENDING);
    assert!(r.stderr.contains("waiting for it"), "{}", r.stderr);
    assert_eq!(reboots(&m), 1);

    // It boots the new generation, which fails its health check: the previous one
    // is made the boot default again and the agent reboots back, once.
    std::fs::write(&m.unhealthy, "").unwrap();
    boot(&w, &g2.top, "boot-1");
    let r = w.once_expect(3);
    assert_eq!(r.report.state, AgentState::RolledBack, "{}", r.stderr);
    assert_eq!(r.kind(), "health-check-failed");
    assert_eq!(w.profile_target(), Some(g1.top.clone()));
    assert_eq!(modes(&w).last().unwrap(), &(g1.top.clone(), "boot".into()));
    assert_eq!(reboots(&m), 2);

    // Back in the old generation: no further reboot, whatever happens.
    boot(&w, &g1.top, "boot-2");
    for _ in 0..2 {
        let r = w.once_expect(3);
        assert_eq!(r.report.state, AgentState::RolledBack, "{}", r.stderr);
    }
    assert_eq!(reboots(&m), 2);
    assert_eq!(r_current(&w), g1.top);
}

fn r_current(w: &World) -> StorePath {
    w.state().current.unwrap().closure
}

#[test]
fn a_host_that_comes_back_in_the_old_system_restores_its_boot_default() {
    let mut w = World::new("boot-3");
    let g1 = w.system("o1", 0);
    let m = machine(&mut w, &g1.top, "when-idle");
    w.bring_up(1, &g1);
    let g2 = w.system("o2", 0);
    deploy_boot(&w, 2, &g2);
    w.once_expect(REBOOT_PENDING);
    assert_eq!(reboots(&m), 1);
    // The boot loader fell back to the old entry.
    boot(&w, &g1.top, "boot-1");
    let r = w.once_expect(3);
    assert_eq!(r.kind(), "boot-failed", "{}", r.stderr);
    assert!(r.message().contains(&g1.top.to_string()), "{}", r.message());
    assert_eq!(w.profile_target(), Some(g1.top.clone()));
    assert_eq!(reboots(&m), 1, "it already runs the old system: no reboot");
}

#[test]
fn a_kernel_change_in_a_switch_deploy_reports_reboot_needed() {
    let w = World::new("boot-4");
    let run = w.facts_root.join("run");
    for (name, kernel) in [("booted-system", "k1"), ("current-system", "k2")] {
        let d = w.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(kernel), "").unwrap();
        std::os::unix::fs::symlink(d.join(kernel), d.join("kernel")).unwrap();
        std::fs::create_dir_all(&run).unwrap();
        std::os::unix::fs::symlink(&d, run.join(name)).unwrap();
    }
    let g1 = w.system("k1", 0);
    w.deploy(1, &g1);
    let r = w.once_expect(0);
    assert_eq!(r.report.facts.reboot_needed, Some(true), "{}", r.stderr);
}

#[test]
fn bad_reboot_and_window_settings_are_refused_naming_the_setting() {
    let mut w = World::new("boot-5");
    for (extra, want) in [
        ("reboot = \"sometimes\"\n", "reboot = \"sometimes\""),
        (
            "maintenance-windows = [\"Mon 02:00-02:00\"]\n",
            "maintenance-windows[0]",
        ),
        ("reboot = \"window\"\n", "needs maintenance-windows"),
        ("time-zone = \"Mars/Olympus\"\n", "time-zone"),
    ] {
        w.extra_config = extra.to_owned();
        let out = w.agent_cmd("once").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra}: {err}");
        assert!(err.contains(want), "{extra}: {err}");
    }
}
