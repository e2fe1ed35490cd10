//! Releases and rollouts on real SeaweedFS with a scoped IAM user per host and for
//! the publisher, real Nix and real agents (`fleet-agent once` per cycle, driven by
//! the test), through the real `fleet-publish` binary:
//!
//! - bad input (a wave naming an unknown host, a release for hosts that have no
//!   manifest, a budget over 100 %, an unknown release) is refused with a clear
//!   error and changes nothing in the bucket;
//! - a 12-host release in 3 waves: two `rollout advance` runs at once, round after
//!   round, deploy each wave exactly once (one `rollout` audit entry per host) and
//!   never start a wave before the one before it completed; a held host is skipped;
//!   wave 2's failing hosts (activation fails, the agents roll back) spend its
//!   budget and the rollout halts (exit 4) with the reason; wave 3 is never touched;
//!   `rollout advance --auto-rollback` returns every touched host to its previous
//!   closure, which the agents then run; the audit entries and the rollout's log
//!   show every step; the dashboard's JSON API shows the rollout;
//! - `rollback --to-release ID` goes back to the closure a release names.

mod e2e_support;

use std::collections::BTreeMap;
use std::process::Output;

use e2e_support::FleetWorld;
use fleet_core::audit::AuditEntry;
use fleet_core::status::AgentState;
use fleet_core::{KeyPrefix, StorePath};
use serde_json::Value;

const N: usize = 12;

fn names() -> Vec<String> {
    (1..=N).map(|i| format!("host-{i:02}")).collect()
}

fn run(w: &FleetWorld, args: &[&str]) -> Output {
    let mut cmd = w.publisher_command();
    cmd.args(args)
        .arg("--bucket")
        .arg(&w.store_url)
        .arg("--signing-key")
        .arg(&w.publisher_secret);
    cmd.output().unwrap()
}

use fleet_tests::output_text as text;

/// `fleet-publish release` with the cache key too.
fn release(w: &FleetWorld, id: &str, hosts: &BTreeMap<String, StorePath>, plan: &[&str]) -> Output {
    let file = w.dir.path().join(format!("release-{id}.json"));
    std::fs::write(&file, serde_json::to_vec(hosts).unwrap()).unwrap();
    let cache = w.cache_secret.to_str().unwrap();
    let mut args = vec!["release", "--id", id, "--hosts", file.to_str().unwrap()];
    args.extend_from_slice(plan);
    args.extend_from_slice(&["--cache-key", cache]);
    run(w, &args)
}

/// Every key (and size) under hosts/, audit/ and releases/.
fn written(w: &FleetWorld) -> Vec<(String, u64)> {
    let mut all = Vec::new();
    for p in [
        KeyPrefix::hosts(),
        KeyPrefix::audit(),
        KeyPrefix::releases(),
    ] {
        for e in w.block_on(w.admin.list(&p)).unwrap() {
            all.push((e.key, e.size));
        }
    }
    all.sort();
    all
}

fn audit(w: &FleetWorld) -> Vec<AuditEntry> {
    let mut out = w.block_on(fleet_tests::audit::audit_entries(&w.admin));
    out.sort_by_key(|e| (e.host.clone(), e.sequence));
    out
}

/// Per host, the actions of its audit entries in sequence order.
fn actions(w: &FleetWorld) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in audit(w) {
        m.entry(e.host.to_string()).or_default().push(e.action);
    }
    m
}

fn status_json(w: &FleetWorld, id: &str) -> (i32, Value) {
    let o = run(w, &["rollout", "status", id, "--json"]);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    (o.status.code().unwrap(), v)
}

/// Two `rollout advance` at once; returns both outputs.
fn advance_twice(w: &FleetWorld, id: &str) -> [Output; 2] {
    let spawn = || {
        let mut cmd = w.publisher_command();
        cmd.args(["rollout", "advance", id, "--bucket", &w.store_url])
            .arg("--signing-key")
            .arg(&w.publisher_secret)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let (a, b) = (spawn(), spawn());
    [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()]
}

#[test]
fn a_rollout_halts_on_its_budget_and_rolls_back() {
    let names = names();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let w = FleetWorld::new("rollout", &refs);
    let gen1 = w.system("fleet", "1", 0);
    let gen2 = w.system("fleet", "2", 0);
    let bad = w.system("fleet", "2-bad", 1);
    let targets: Vec<(&str, &fleet_tests::nix::Closure)> =
        refs.iter().map(|h| (*h, &gen1)).collect();
    w.publish(&targets);
    for h in &refs {
        assert_eq!(w.once_expect(h, 0).report.state, AgentState::Healthy, "{h}");
    }

    // The release: gen2 everywhere but host-03 and host-04, which get a closure
    // whose activation fails.
    let hosts: BTreeMap<String, StorePath> = names
        .iter()
        .map(|h| {
            let c = if h == "host-03" || h == "host-04" {
                &bad
            } else {
                &gen2
            };
            (h.clone(), c.top.clone())
        })
        .collect();
    let plan = [
        "--wave",
        "host-01,host-02",
        "--wave",
        "host-03,host-04,host-05,host-06",
        "--wave",
        "100%",
        "--soak",
        "0s",
        "--wave-budget",
        "1",
        "--budget",
        "25%",
        "--report-deadline",
        "10m",
    ];

    // Bad input: a clear error, nothing written.
    let before = written(&w);
    let o = release(
        &w,
        "r1",
        &hosts,
        &["--wave", "host-01,host-99", "--wave", "100%"],
    );
    assert!(
        !o.status.success() && text(&o).contains("host-99") && text(&o).contains("matches no host"),
        "{}",
        text(&o)
    );
    let mut ghost = hosts.clone();
    ghost.insert("ghost-1".into(), gen2.top.clone());
    let o = release(&w, "r1", &ghost, &["--wave", "100%"]);
    assert!(
        !o.status.success() && text(&o).contains("ghost-1") && text(&o).contains("no manifest"),
        "{}",
        text(&o)
    );
    let o = release(&w, "r1", &hosts, &["--wave", "100%", "--budget", "150%"]);
    assert!(
        !o.status.success() && text(&o).contains("over 100%"),
        "{}",
        text(&o)
    );
    let o = release(
        &w,
        "r1",
        &hosts,
        &["--wave", "100%", "--wave-budget", "101%"],
    );
    assert!(
        !o.status.success() && text(&o).contains("over 100%"),
        "{}",
        text(&o)
    );
    let o = run(&w, &["rollout", "advance", "nope"]);
    assert!(
        !o.status.success() && text(&o).contains("no release nope"),
        "{}",
        text(&o)
    );
    let o = run(&w, &["rollout", "status", "nope"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(written(&w), before, "refused input wrote something");

    // The dry run prints every wave and writes nothing.
    let o = release(
        &w,
        "r1",
        &hosts,
        &[&plan[..], &["--dry-run", "--json"]].concat(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let dry: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(dry.as_array().unwrap().len(), 3, "{dry:#}");
    assert_eq!(dry[0]["hosts"][0]["current_closure"], gen1.top.to_string());
    assert_eq!(dry[0]["hosts"][0]["new_closure"], gen2.top.to_string());
    assert_eq!(written(&w), before, "the dry run wrote something");

    let o = release(&w, "r1", &hosts, &plan);
    assert!(o.status.success(), "{}", text(&o));
    let o = release(&w, "r1", &hosts, &plan);
    assert!(text(&o).contains("already exists"), "{}", text(&o));
    let o = run(&w, &["rollout", "plan", "r1"]);
    assert!(
        o.status.success() && text(&o).contains("wave 3 (100%"),
        "{}",
        text(&o)
    );
    let (code, s) = status_json(&w, "r1");
    assert_eq!((code, s["phase"].as_str()), (3, Some("running")), "{s:#}");
    let wave3: Vec<String> = s["waves"][2]["hosts"]
        .as_object()
        .map_or_else(Vec::new, |m| m.keys().cloned().collect());
    assert!(wave3.is_empty());

    // Hold host-06: wave 2 skips it.
    let o = run(&w, &["hold", "host-06", "--reason", "disk swap"]);
    assert!(o.status.success(), "{}", text(&o));

    // Wave 1, by two runs at once: deployed once.
    for o in advance_twice(&w, "r1") {
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    }
    let acts = actions(&w);
    for h in ["host-01", "host-02"] {
        assert_eq!(acts[h], ["deploy", "rollout"], "{h}");
    }
    for h in &refs[2..] {
        assert_eq!(acts[*h], ["deploy"], "{h}: a later wave started early");
    }
    // Nothing reported yet: advancing again changes nothing.
    for o in advance_twice(&w, "r1") {
        assert!(
            text(&o).contains("waiting for host-01, host-02"),
            "{}",
            text(&o)
        );
    }
    for h in ["host-01", "host-02"] {
        assert_eq!(
            w.once_expect(h, 0).report.current.unwrap().closure,
            gen2.top
        );
    }

    // Wave 1 completes (soak 0) and wave 2 starts, once, by two runs at once.
    for o in advance_twice(&w, "r1") {
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    }
    let acts = actions(&w);
    for h in ["host-03", "host-04", "host-05"] {
        assert_eq!(acts[h], ["deploy", "rollout"], "{h}");
    }
    assert_eq!(acts["host-06"], ["deploy"], "held host-06 was deployed");
    for h in &refs[6..] {
        assert_eq!(acts[*h], ["deploy"], "{h}: wave 3 started early");
    }
    let (_, s) = status_json(&w, "r1");
    assert_eq!(s["current_wave"], 2, "{s:#}");
    assert_eq!(s["waves"][0]["stage"], "completed");
    assert_eq!(s["waves"][1]["hosts"]["host-06"]["outcome"], "skipped-held");

    // The failing hosts roll themselves back; the others are healthy.
    for h in ["host-03", "host-04"] {
        let r = w.once_expect(h, 3);
        assert_eq!(r.report.state, AgentState::RolledBack, "{h}: {}", r.stderr);
    }
    assert_eq!(
        w.once_expect("host-05", 0).report.state,
        AgentState::Healthy
    );

    // Over wave 2's budget (2 bad > 1): halted, wave 3 never touched.
    let [a, b] = advance_twice(&w, "r1");
    for o in [&a, &b] {
        assert_eq!(o.status.code(), Some(4), "{}", text(o));
    }
    let (code, s) = status_json(&w, "r1");
    assert_eq!((code, s["phase"].as_str()), (4, Some("halted")), "{s:#}");
    let reason = s["halt_reason"].as_str().unwrap();
    assert!(
        reason.contains("wave 2")
            && reason.contains("host-03 rolled-back")
            && reason.contains("host-04 rolled-back"),
        "{reason}"
    );
    let acts = actions(&w);
    for h in &refs[6..] {
        assert_eq!(acts[*h], ["deploy"], "{h}: wave 3 was touched");
        assert_eq!(w.manifest(h).closure, gen1.top, "{h}");
    }
    let o = run(&w, &["rollout", "resume", "r1"]);
    assert!(
        !o.status.success() && text(&o).contains("does not resume"),
        "{}",
        text(&o)
    );

    // The dashboard shows the halted rollout.
    {
        let rep = w.reporter();
        let v = rep.get_json("/api/v1/rollouts");
        let r = &v["rollouts"][0];
        assert_eq!(
            (r["release"].as_str(), r["phase"].as_str()),
            (Some("r1"), Some("halted")),
            "{v:#}"
        );
        assert_eq!(r["current_wave"], 2, "{v:#}");
        assert_eq!(r["halt_reason"], reason, "{v:#}");
        assert_eq!(r["waves"][0]["counts"]["healthy"], 2, "{v:#}");
        assert_eq!(r["waves"][1]["counts"]["bad"], 2, "{v:#}");
    }

    // --auto-rollback on the halted rollout: every touched host back to gen1, once.
    let o = run(&w, &["rollout", "advance", "r1", "--auto-rollback"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("rolled back 5 host(s)"), "{}", text(&o));
    let o = run(&w, &["rollout", "rollback", "r1"]);
    assert!(
        o.status.success() && text(&o).contains("no host to roll back"),
        "{}",
        text(&o)
    );
    let acts = actions(&w);
    for h in ["host-01", "host-02", "host-03", "host-04", "host-05"] {
        assert_eq!(acts[h], ["deploy", "rollout", "rollback"], "{h}");
        assert_eq!(w.manifest(h).closure, gen1.top, "{h}");
        let r = w.once(h);
        assert_eq!(r.report.state, AgentState::Healthy, "{h}: {}", r.stderr);
        assert_eq!(r.report.current.unwrap().closure, gen1.top, "{h}");
    }
    assert_eq!(acts["host-06"], ["deploy"]);
    let (_, s) = status_json(&w, "r1");
    let log: Vec<String> = s["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    for step in [
        "release r1 created, 3 wave(s)",
        "wave 1 started: host-01, host-02",
        "wave 1 deployed",
        "wave 1 settled",
        "wave 1 completed",
        "wave 2 started: host-03, host-04, host-05, host-06; held, skipped: host-06 (disk swap)",
        "wave 2 deployed",
        "halted: wave 2",
        "options set: auto-rollback true",
        "rolled back host-03",
    ] {
        assert!(
            log.iter().any(|e| e.starts_with(step)),
            "no {step:?} in {log:#?}"
        );
    }
    assert_eq!(
        log.iter()
            .filter(|e| e.starts_with("wave 2 started"))
            .count(),
        1
    );
    assert_eq!(
        log.iter().filter(|e| e.starts_with("rolled back")).count(),
        5
    );

    // rollback --to-release: back to the closure r1 names.
    let o = run(&w, &["rollback", "--host", "host-01", "--to-release", "r1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(w.manifest("host-01").closure, gen2.top);
    let o = run(&w, &["rollback", "--host", "host-07", "--to-release", "r1"]);
    assert!(text(&o).contains("never ran"), "{}", text(&o));
    let o = run(
        &w,
        &["rollback", "--host", "host-01", "--to-release", "nope"],
    );
    assert!(text(&o).contains("no release nope"), "{}", text(&o));
}

#[test]
fn pause_resume_abort_soak_silence_and_exit_codes() {
    let w = FleetWorld::new("rollout-ctl", &["ctl-1", "ctl-2", "ctl-3"]);
    let gen1 = w.system("ctl", "1", 0);
    let gen2 = w.system("ctl", "2", 0);
    w.publish(&[("ctl-1", &gen1), ("ctl-2", &gen1), ("ctl-3", &gen1)]);
    let hosts: BTreeMap<String, StorePath> = ["ctl-1", "ctl-2"]
        .iter()
        .map(|h| (h.to_string(), gen2.top.clone()))
        .collect();
    let o = release(
        &w,
        "c1",
        &hosts,
        &[
            "--wave", "ctl-1", "--wave", "100%", "--soak", "1h", "--soak", "0s",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));

    let o = run(&w, &["rollout", "advance", "c1"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(
        w.once_expect("ctl-1", 0).report.current.unwrap().closure,
        gen2.top
    );
    // Healthy, then soaking for an hour: the next wave waits.
    let o = run(&w, &["rollout", "advance", "c1"]);
    assert!(
        text(&o).contains("wave 1 settled") && text(&o).contains("soaking until"),
        "{}",
        text(&o)
    );
    let o = run(&w, &["rollout", "status", "c1"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("1     soaking"),
        "{}",
        text(&o)
    );

    // Paused: advance does nothing; resume; abort for good.
    let o = run(&w, &["rollout", "pause", "c1", "--reason", "incident 42"]);
    assert!(text(&o).contains("rollout c1: paused"), "{}", text(&o));
    let o = run(&w, &["rollout", "advance", "c1"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "paused");
    let o = run(&w, &["rollout", "resume", "c1"]);
    assert!(text(&o).contains("rollout c1: running"), "{}", text(&o));
    let o = run(&w, &["rollout", "rollback", "c1"]);
    assert!(
        text(&o).contains("only a halted or aborted rollout"),
        "{}",
        text(&o)
    );
    let o = run(&w, &["rollout", "abort", "c1", "--reason", "superseded"]);
    assert!(text(&o).contains("rollout c1: aborted"), "{}", text(&o));
    let o = run(&w, &["rollout", "advance", "c1"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let o = run(
        &w,
        &["rollout", "status", "c1", "--follow", "--interval", "1s"],
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("aborted: superseded"), "{}", text(&o));
    let o = run(&w, &["rollout", "pause", "c1"]);
    assert!(text(&o).contains("it cannot be paused"), "{}", text(&o));
    // The aborted rollout's touched host goes back; ctl-2 was never touched.
    let o = run(&w, &["rollout", "rollback", "c1"]);
    assert!(text(&o).contains("ctl-1: sequence 2 -> 3"), "{}", text(&o));
    assert_eq!(w.manifest("ctl-1").closure, gen1.top);
    assert_eq!(w.manifest("ctl-2").sequence, 1);

    // A host that never reports within the deadline is silent: over a budget of 0.
    let one: BTreeMap<String, StorePath> = [("ctl-3".to_owned(), gen2.top.clone())].into();
    let o = release(
        &w,
        "c2",
        &one,
        &["--wave", "100%", "--report-deadline", "1s"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&w, &["rollout", "advance", "c2"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let o = run(&w, &["rollout", "advance", "c2"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("ctl-3 silent"), "{}", text(&o));
}
