//! Faults of the host under a real `fleet-agent once`: its state or staging
//! directory full or read-only (real small tmpfs mounts), its state file deleted or
//! torn, `nix copy` killed with SIGKILL in the middle of an import, and its clock
//! hours ahead or behind (libfaketime). Each test checks the status the agent
//! reports, that nothing was left half done (state file, profile, Nix store), and that
//! the next cycle completes once the fault is gone.
//!
//! The mounts need root (or CAP_SYS_ADMIN); where `mount` is refused the tests that
//! need it print why and return. The clock tests need the `faketime` command
//! (`scripts/deps.sh` installs it).

mod agent_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use agent_common::{Run, World};
use fleet_core::StorePath;
use fleet_core::status::AgentState;
use fleet_tests::nix::Closure;

/// A tmpfs of a given size mounted over a directory for the life of the value.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount`'s syntax: `2m`) on `dir`; `None`, with the
    /// reason printed, when this machine does not allow it.
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self {
                dir: dir.to_owned(),
            }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: mount -t tmpfs is not permitted here ({}); this test needs root or CAP_SYS_ADMIN",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: `mount` could not run: {e}");
                None
            }
        }
    }

    /// `mount -o remount,OPTIONS`.
    fn remount(&self, options: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(st.success(), "remount,{options} of {}", self.dir.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a failed test may still have a process with a file open there.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status();
    }
}

/// Fills the filesystem of `dir` with a file of zeros until the kernel refuses more.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let _ = f.sync_all();
    path
}

/// Names in `dir` that look like temporary files (dot-named), which no fault may
/// leave behind.
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// `nix store verify --all` on the world's chroot store: every valid path's contents
/// match its registered hash. `Err` holds Nix's output.
fn verify_store(w: &World) -> Result<(), String> {
    let mut cmd = w.nix.command("nix");
    cmd.args(["store", "verify", "--all", "--no-trust", "--store"])
        .arg(&w.chroot);
    w.nix.output(cmd).map(drop)
}

#[test]
fn a_full_staging_directory_fails_the_fetch_cleanly_and_recovers() {
    let mut w = World::new("hf-staging-full");
    let staging = w.dir.path().join("staging-fs");
    let Some(fs) = Tmpfs::mount(&staging, "2m") else {
        return;
    };
    // Only the staged import (the default, pinned here so the test keeps its point if
    // the default changes) writes NARs to `staging-dir`; the substituter streams them.
    w.extra_config = format!(
        "staging-dir = \"{}\"\nimport-via = \"staging\"\n",
        staging.display()
    );
    let g1 = w.held_system("1", "hf-staging", 0);
    w.bring_up(1, &g1);
    // Random bytes: about 8 MB staged, four times the filesystem.
    let g2 = w.held_system("2", "hf-staging", 8_000_000);
    w.deploy(2, &g2);

    let r = w.once_expect(5);
    assert_eq!(r.report.state, AgentState::Failed, "{}", r.stderr);
    assert_eq!(r.kind(), "disk-full", "{}", r.message());
    assert!(
        r.message().contains(&staging.display().to_string()),
        "the message names the staging directory: {}",
        r.message()
    );
    assert_eq!(w.status().last_error.unwrap().kind, "disk-full");
    // The host stays on generation 1; nothing of generation 2 was imported or left
    // half written in the staging directory.
    assert_eq!(w.profile_target(), Some(g1.top.clone()));
    assert_eq!(w.activated(), std::slice::from_ref(&g1.top));
    assert_eq!(w.state().current.unwrap().closure, g1.top);
    assert!(!w.nix.is_valid_in(&w.chroot, &g2.top).unwrap());
    assert_eq!(temporaries(&staging.join("nar")), Vec::<String>::new());

    // Space comes back: the next cycle completes.
    fs.remount("size=64m");
    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    assert_eq!(r.report.current.unwrap().closure, g2.top);
    assert_eq!(w.activated(), [g1.top.clone(), g2.top.clone()]);
    verify_store(&w).unwrap();
}

#[test]
fn a_full_state_directory_changes_nothing_and_recovers() {
    let mut w = World::new("hf-state-full");
    let Some(_fs) = Tmpfs::mount(&w.state_dir, "1m") else {
        return;
    };
    let staging = w.dir.path().join("staging");
    // Only the staged import (the default, pinned here so the test keeps its point if
    // the default changes) writes NARs to `staging-dir`; the substituter streams them.
    w.extra_config = format!(
        "staging-dir = \"{}\"\nimport-via = \"staging\"\n",
        staging.display()
    );
    let g1 = w.held_system("1", "hf-state-full", 0);
    w.bring_up(1, &g1);
    let g2 = w.held_system("2", "hf-state-full", 0);
    w.deploy(2, &g2);
    let filler = fill(&w.state_dir);
    let state_file = w.state_dir.join("state.json");
    let before = std::fs::read(&state_file).unwrap();

    let r = w.once_expect(5);
    assert_eq!(r.kind(), "disk-full", "{}", r.stderr);
    assert!(
        r.message().contains("state.json") && r.message().contains("free space"),
        "{}",
        r.message()
    );
    // The failed write came before anything changed on the host: the state stays
    // what it was (generation 1 runs, healthy), with the error beside it.
    assert_eq!(r.report.state, AgentState::Healthy);
    assert_eq!(r.report.current.as_ref().unwrap().closure, g1.top);
    // The bucket is elsewhere, so the operator sees it there too.
    assert_eq!(w.status().last_error.unwrap().kind, "disk-full");
    // Not a byte of the state file changed, no temporary file is left, and the host
    // runs generation 1.
    assert_eq!(std::fs::read(&state_file).unwrap(), before);
    assert_eq!(temporaries(&w.state_dir), Vec::<String>::new());
    assert_eq!(w.profile_target(), Some(g1.top.clone()));
    assert_eq!(w.activated(), std::slice::from_ref(&g1.top));

    std::fs::remove_file(&filler).unwrap();
    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    assert_eq!(r.report.current.unwrap().closure, g2.top);
    assert_eq!(w.state().current.unwrap().closure, g2.top);
    assert_eq!(w.activated(), [g1.top.clone(), g2.top.clone()]);
}

#[test]
fn a_read_only_state_directory_changes_nothing_and_recovers() {
    let w = World::new("hf-state-ro");
    let Some(fs) = Tmpfs::mount(&w.state_dir, "8m") else {
        return;
    };
    let g1 = w.held_system("1", "hf-state-ro", 0);
    w.bring_up(1, &g1);
    let g2 = w.held_system("2", "hf-state-ro", 0);
    w.deploy(2, &g2);
    let state_file = w.state_dir.join("state.json");
    let before = std::fs::read(&state_file).unwrap();
    fs.remount("ro");

    let r = w.once_expect(5);
    assert_eq!(r.kind(), "disk-read-only", "{}", r.stderr);
    assert!(
        r.message().contains("state.json") && r.message().contains("remount"),
        "{}",
        r.message()
    );
    assert_eq!(w.status().last_error.unwrap().kind, "disk-read-only");
    assert_eq!(std::fs::read(&state_file).unwrap(), before);
    assert_eq!(w.profile_target(), Some(g1.top.clone()));
    assert_eq!(w.activated(), std::slice::from_ref(&g1.top));

    fs.remount("rw");
    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    assert_eq!(r.report.current.unwrap().closure, g2.top);
    assert_eq!(w.activated(), [g1.top.clone(), g2.top.clone()]);
}

#[test]
fn deleted_and_torn_state_files_are_rebuilt_from_the_running_system() {
    let w = World::new("hf-state-lost");
    let g1 = w.held_system("1", "hf-state-lost", 0);
    w.bring_up(1, &g1);
    let state_file = w.state_dir.join("state.json");

    // state.json and the staging directory deleted: a first start on a running
    // system. The manifest names what runs, so nothing is activated again.
    std::fs::remove_file(&state_file).unwrap();
    std::fs::remove_dir_all(w.state_dir.join("staging")).unwrap();
    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    assert_eq!(w.activated(), std::slice::from_ref(&g1.top));
    let s = w.state();
    assert_eq!(s.current.as_ref().unwrap().closure, g1.top);
    assert_eq!(s.current.unwrap().sequence, Some(1));
    assert_eq!(s.highest_seen.unwrap().sequence, 1);

    // Torn in half (a disk that lost the end of it): moved aside, started afresh,
    // reported as a state-reset event; still no second activation.
    let bytes = std::fs::read(&state_file).unwrap();
    std::fs::write(&state_file, &bytes[..bytes.len() / 2]).unwrap();
    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    assert_eq!(w.activated(), std::slice::from_ref(&g1.top));
    assert_eq!(
        std::fs::read(w.state_dir.join("state.json.damaged")).unwrap(),
        bytes[..bytes.len() / 2]
    );
    let resets: Vec<_> = w
        .events()
        .into_iter()
        .filter_map(|e| e.last_error)
        .filter(|e| e.kind == "state-reset")
        .collect();
    assert_eq!(resets.len(), 1, "one state-reset event");
    assert!(
        resets[0].message.contains("state.json.damaged"),
        "{}",
        resets[0].message
    );
    assert_eq!(w.state().current.unwrap().closure, g1.top);

    // And deploys carry on from there.
    let g2 = w.held_system("2", "hf-state-lost", 0);
    w.deploy(2, &g2);
    let r = w.once_expect(0);
    assert_eq!(r.report.current.unwrap().closure, g2.top);
    assert_eq!(w.activated(), [g1.top.clone(), g2.top.clone()]);
}

/// Blob size of the closure whose import is killed: large enough that writing it
/// into the store takes a while, small enough to keep the test short.
const KILLED_BLOB: u64 = 32 * 1024 * 1024;

#[test]
fn nix_copy_killed_mid_import_registers_nothing_and_the_next_cycle_completes() {
    let mut w = World::new("hf-nix-killed");
    // Only the staged import runs `nix copy` (pinned: the default unpacks itself).
    w.extra_config = "import-via = \"staging\"\n".to_owned();
    let g1 = w.held_system("1", "hf-nix-killed", 0);
    w.bring_up(1, &g1);
    let g2 = w.held_system("2", "hf-nix-killed", KILLED_BLOB);
    w.deploy(2, &g2);

    // A `nix` first on PATH that runs the real one and, for `nix copy`, kills it with
    // SIGKILL as soon as the blob's directory appears in the store (the import is
    // writing it), and says so in `killed`.
    let real_nix = which("nix");
    let bin = w.dir.path().join("wrapper-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let marker = w.dir.path().join("killed");
    let script = format!(
        r#"#!/bin/sh
case " $* " in *" copy "*) ;; *) exec {real} "$@" ;; esac
{real} "$@" &
pid=$!
while kill -0 $pid 2>/dev/null; do
  if ls {store} 2>/dev/null | grep -q 'fleet-agent-test-blob-{blob}-'; then
    kill -9 $pid && echo killed > {marker}
    break
  fi
  sleep 0.005
done
wait $pid
"#,
        real = real_nix.display(),
        store = w.chroot.join("nix/store").display(),
        blob = KILLED_BLOB,
        marker = marker.display(),
    );
    let wrapper = bin.join("nix");
    std::fs::write(&wrapper, script).unwrap();
    std::process::Command::new("chmod")
        .arg("0755")
        .arg(&wrapper)
        .status()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let r = Run::from(w.agent_cmd("once").env("PATH", &path).output().unwrap());
    assert!(
        marker.exists(),
        "nix copy finished before the blob appeared; this run proves nothing\n{}",
        r.stderr
    );
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert_eq!(r.kind(), "import-failed", "{}", r.message());
    assert_eq!(r.report.state, AgentState::Failed);
    // Nothing half registered: the killed import left neither the blob nor the top
    // valid, every valid path verifies, and the host is on generation 1.
    let blob = w.nix.closure(&g2.top).unwrap();
    let blob = blob
        .iter()
        .find(|p| p.to_string().contains("fleet-agent-test-blob-"))
        .unwrap();
    killed_import_registered_nothing_and_the_next_cycle_completes(&w, &g1, &g2, blob);
}

/// After an import of `g2` killed part-way (its `blob` being written): nothing of it
/// is valid, every valid path verifies and the host is on `g1`; then the next cycle
/// completes the deploy.
fn killed_import_registered_nothing_and_the_next_cycle_completes(
    w: &World,
    g1: &Closure,
    g2: &Closure,
    blob: &StorePath,
) {
    assert!(!w.nix.is_valid_in(&w.chroot, blob).unwrap());
    assert!(!w.nix.is_valid_in(&w.chroot, &g2.top).unwrap());
    verify_store(w).unwrap();
    assert_eq!(w.profile_target(), Some(g1.top.clone()));
    assert_eq!(w.activated(), std::slice::from_ref(&g1.top));

    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    assert_eq!(r.report.current.unwrap().closure, g2.top);
    assert!(w.nix.is_valid_in(&w.chroot, blob).unwrap());
    verify_store(w).unwrap();
}

#[test]
fn the_agent_killed_mid_unpack_registers_nothing_and_the_next_cycle_completes() {
    // The default import unpacks into the store itself: SIGKILL the agent while it
    // writes the blob, the way a power cut or the OOM killer would.
    let w = World::new("hf-unpack-killed");
    let g1 = w.held_system("1", "hf-unpack-killed", 0);
    w.bring_up(1, &g1);
    let g2 = w.held_system("2", "hf-unpack-killed", KILLED_BLOB);
    w.deploy(2, &g2);
    let store = w.chroot.join("nix/store");
    let blob_dir = || {
        std::fs::read_dir(&store).ok().and_then(|rd| {
            rd.filter_map(Result::ok).map(|e| e.path()).find(|p| {
                let n = p.file_name().unwrap().to_string_lossy().into_owned();
                n.contains(&format!("fleet-agent-test-blob-{KILLED_BLOB}-"))
                    && !n.ends_with(".lock")
            })
        })
    };
    let mut agent = w
        .agent_cmd("once")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let killed = loop {
        if blob_dir().is_some() {
            agent.kill().unwrap();
            break true;
        }
        if agent.try_wait().unwrap().is_some() || started.elapsed() > Duration::from_secs(60) {
            let _ = agent.kill();
            break false;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = agent.wait();
    assert!(
        killed,
        "the agent finished before the blob appeared; this run proves nothing"
    );
    // Something of the blob is on disk, unregistered; nothing of generation 2 is valid.
    let on_disk = blob_dir().expect("the blob's directory");
    let blob = StorePath::new(&format!(
        "/nix/store/{}",
        on_disk.file_name().unwrap().to_string_lossy()
    ))
    .unwrap();
    // The next cycle removes the leftover, unpacks it again and registers it.
    killed_import_registered_nothing_and_the_next_cycle_completes(&w, &g1, &g2, &blob);
}

fn which(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}

/// `fleet-agent once` with its clock moved by `offset` (libfaketime's syntax:
/// `+3h`, `-5h`); the monotonic clock is left alone, as a stepped wall clock would.
fn once_at(w: &World, offset: &str) -> Run {
    let agent = w.agent_cmd("once");
    let Some(faketime) = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("faketime"))
        .find(|p| p.is_file())
    else {
        panic!("the `faketime` command is missing: run scripts/deps.sh (Debian package faketime)");
    };
    let mut cmd = Command::new(faketime);
    cmd.arg("-f")
        .arg(offset)
        .arg(agent.get_program())
        .args(agent.get_args())
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .stdin(Stdio::null());
    for (k, v) in agent.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    Run::from(cmd.output().unwrap())
}

#[test]
fn a_clock_hours_off_refuses_or_heartbeats_and_recovers_when_set_right() {
    let mut w = World::new("hf-clock");
    let g1 = w.held_system("1", "hf-clock", 0);
    w.bring_up(1, &g1);
    w.expires_in = jiff::SignedDuration::from_hours(2);
    let g2 = w.held_system("2", "hf-clock", 0);
    w.deploy(2, &g2);

    // Three hours ahead: the new manifest looks expired; refused, nothing applied.
    let r = once_at(&w, "+3h");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.kind(), "manifest-expired", "{}", r.message());
    assert_eq!(w.activated(), std::slice::from_ref(&g1.top));
    let lead = r.report.time.duration_since(jiff::Timestamp::now());
    assert!(
        lead > jiff::SignedDuration::from_mins(170),
        "the agent's clock was not moved: {lead:?}"
    );

    // Clock set right: the same object is verified again and applied.
    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    assert_eq!(r.report.current.as_ref().unwrap().closure, g2.top);
    assert_eq!(w.activated(), [g1.top.clone(), g2.top.clone()]);

    // Five hours behind: the manifest is still valid, a heartbeat; the status time is
    // the agent's wrong time, nothing is activated.
    let r = once_at(&w, "-5h");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.report.state, AgentState::Healthy);
    assert!(r.report.time < jiff::Timestamp::now() - jiff::SignedDuration::from_hours(4));
    // Ahead again with the manifest applied: reported as expired (a freeze) while
    // the running generation is kept, and healthy again once the clock is right.
    let r = once_at(&w, "+3h");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.kind(), "manifest-expired");
    assert_eq!(w.profile_target(), Some(g2.top.clone()));
    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    assert_eq!(w.activated(), [g1.top.clone(), g2.top.clone()]);
}

#[test]
fn clock_skew_allows_a_manifest_just_past_its_expiry() {
    let mut w = World::new("hf-skew");
    let g1 = w.held_system("1", "hf-skew", 0);
    w.bring_up(1, &g1);
    let g2 = w.held_system("2", "hf-skew", 0);
    w.publish_closure(&g2);
    let now = jiff::Timestamp::now();
    let mut m = w.manifest(2, &g2.top);
    m.issued_at = now - jiff::SignedDuration::from_hours(1);
    m.expires_at = now - jiff::SignedDuration::from_mins(2);
    w.put_manifest(&m);

    // No allowance: two minutes past expires_at is expired.
    w.extra_config = "clock-skew = \"0s\"\n".into();
    let r = w.once_expect(2);
    assert_eq!(r.kind(), "manifest-expired", "{}", r.message());
    assert_eq!(w.activated(), std::slice::from_ref(&g1.top));

    // The default allowance (5 minutes) takes it.
    w.extra_config = String::new();
    let r = w.once_expect(0);
    assert_eq!(r.report.current.unwrap().closure, g2.top, "{}", r.stderr);
    assert_eq!(w.activated(), [g1.top.clone(), g2.top.clone()]);
}
