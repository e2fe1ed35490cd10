//! Releases and rollouts under a flaky S3 (part of `faults.rs`): `fleet-publish
//! release` and two racing `fleet-publish rollout advance` runs go through the
//! seeded fault injector, while the rollout's hosts run `fleet-agent once` cycles
//! through it too, so the health gates read real statuses. After every round the
//! test reads the bucket directly (not through the proxy) and checks, from the
//! objects alone:
//!
//! - the rollout state verifies, and its history only grows: the revision never
//!   goes back, the log read before is a prefix of the log now, a wave's start,
//!   settle and completion times and a host's recorded sequence never change once
//!   set, no wave starts before the one before it completed, and no step (wave
//!   started, deployed, settled, completed, rollout done, halted) is logged twice;
//! - no host was deployed twice: no two manifests with one sequence for a host in
//!   the audit chain, at most one `rollout` manifest of the release's closure per
//!   host, and the live manifest of a host the state says was written is the one
//!   it names (none was lost, none written over it);
//! - only the hosts of started waves run the release's closure;
//! - the cache is consistent;
//! - each step the state's log holds has exactly one `rollout-step` audit entry
//!   (no revision audited twice), and the release one `release` entry.
//!
//! Then the faults stop, and calm `rollout advance` runs (with calm agent cycles)
//! must carry the rollout from whatever the faulted runs left to `done`, or to
//! `halted` naming only hosts the test saw fail.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;

use fleet_core::audit_chain::{ActionKind, ChainEntry, sha256_hex};
use fleet_core::release::Release;
use fleet_core::rollout::{MAX_ROLLOUT_SIZE, Phase, RolloutState};
use fleet_core::status::AgentState;
use fleet_core::{HostName, Key, StorePath, TrustedKeys};
use fleet_tests::fault_proxy::FaultPlan;
use fleet_tests::s3::store_url_at;

use super::e2e_support::FleetWorld;
use super::{Replay, calm_proxy, check_cache_consistent, print_stats, seeds};

const HOSTS: [&str; 3] = ["fr-1", "fr-2", "fr-3"];
/// Faulted rounds (two racing advances, then a cycle on every host) per seed.
const FAULTED_ROUNDS: usize = 3;
/// Calm rounds allowed to finish the rollout (2 waves need about 4).
const CALM_ROUNDS: usize = 8;

/// One `fleet-publish` command on the world's bucket URL (through the proxy).
fn publish(w: &FleetWorld, args: &[&str]) -> std::process::Command {
    let mut cmd = w.publisher_command();
    cmd.args(args)
        .arg("--bucket")
        .arg(&w.store_url)
        .arg("--signing-key")
        .arg(&w.publisher_secret)
        .env("FLEET_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

use fleet_tests::output_text as text;

/// `fleet-publish release --id ID` of `closure` to every host, two waves.
fn release(w: &FleetWorld, id: &str, closure: &StorePath) -> Output {
    let hosts: BTreeMap<&str, String> = HOSTS.iter().map(|h| (*h, closure.to_string())).collect();
    let file = w.dir.path().join(format!("release-{id}.json"));
    std::fs::write(&file, serde_json::to_vec(&hosts).unwrap()).unwrap();
    let cache = w.cache_secret.to_str().unwrap();
    #[rustfmt::skip]
    let args = [
        "release", "--id", id, "--hosts", file.to_str().unwrap(), "--cache-key", cache,
        "--wave", "fr-1", "--wave", "100%", "--soak", "0s",
        "--wave-budget", "1", "--budget", "1", "--report-deadline", "10m",
    ];
    publish(w, &args).output().unwrap()
}

/// `n` `rollout advance ID` at once.
fn advance(w: &FleetWorld, id: &str, n: usize) -> Vec<Output> {
    let children: Vec<_> = (0..n)
        .map(|_| publish(w, &["rollout", "advance", id]).spawn().unwrap())
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

/// What the test saw and was told across one seed, for the checks.
#[derive(Default)]
struct Seen {
    /// The state as last read, to check that its history only grows.
    state: Option<RolloutState>,
    /// Hosts whose agent reported the release's closure failed or rolled back.
    bad: BTreeSet<String>,
    /// Revisions of the state that a failed run said may be written without their
    /// `rollout-step` audit entry ("IS written (revision N), but its audit entry
    /// could not be written", "writing … (revision N); whether it landed is not
    /// known").
    unaudited: BTreeSet<u64>,
    /// A failed `release` said the release is written without its audit entry.
    release_unaudited: bool,
    /// Unaudited revisions no run named, which logged no step.
    outcome_only_unaudited: usize,
    advances_failed: usize,
}

impl Seen {
    /// Notes a failed publisher run's output.
    fn failed(&mut self, out: &str) {
        if out.contains("rollout state")
            && (out.contains("audit entry could not be written") || out.contains("is not known"))
            && let Some(n) = out
                .split("(revision ")
                .nth(1)
                .and_then(|s| s.split(')').next())
                .and_then(|s| s.parse().ok())
        {
            self.unaudited.insert(n);
        }
        if out.contains("release") && out.contains("IS written, but its audit entry") {
            self.release_unaudited = true;
        }
    }
}

/// The step kinds that must appear at most once in a rollout's log.
fn step_kind(event: &str) -> Option<String> {
    if event.starts_with("halted") || event == "rollout done" {
        return Some(event.split(':').next().unwrap().to_owned());
    }
    let rest = event.strip_prefix("wave ")?;
    let (n, what) = rest.split_once(' ')?;
    let what = what.split([':', ';']).next()?;
    matches!(what, "started" | "deployed" | "settled" | "completed")
        .then(|| format!("wave {n} {what}"))
}

/// The invariants of the module docs, from the objects read directly. `settled`:
/// the faults are over and the rollout stopped (done or halted).
fn check_rollout(
    w: &FleetWorld,
    id: &str,
    closure: &StorePath,
    seen: &mut Seen,
    settled: bool,
) -> RolloutState {
    let trusted = TrustedKeys::new([w.publisher_public.clone()]);
    let admin = &w.admin;
    let rid = fleet_core::ObjectName::new(id).unwrap();
    let release_bytes = w.read(&Key::release(&rid));
    let release: Release = Release::verify(&release_bytes, id, &trusted)
        .unwrap_or_else(|e| panic!("{e}"))
        .release;
    let state_bytes = w
        .block_on(admin.get(&Key::rollout(&rid), MAX_ROLLOUT_SIZE))
        .unwrap()
        .bytes;
    let state = RolloutState::verify(&state_bytes, id, &trusted)
        .unwrap_or_else(|e| panic!("{e}"))
        .state;
    let dump = || serde_json::to_string_pretty(&state).unwrap();

    // The history only grows.
    if let Some(prev) = &seen.state {
        assert!(
            state.revision >= prev.revision,
            "revision went back from {} to {}",
            prev.revision,
            state.revision
        );
        assert!(
            state.log.starts_with(&prev.log),
            "the log lost or changed entries: before {:#?}\nnow {}",
            prev.log,
            dump()
        );
        for (k, (a, b)) in prev.waves.iter().zip(&state.waves).enumerate() {
            for (what, x, y) in [
                ("started", a.started_at, b.started_at),
                ("settled", a.settled_at, b.settled_at),
                ("completed", a.completed_at, b.completed_at),
            ] {
                assert!(
                    x.is_none() || x == y,
                    "wave {} {what} changed from {x:?} to {y:?}",
                    k + 1
                );
            }
            for (h, s) in &a.hosts {
                if s.sequence.is_some() {
                    assert_eq!(
                        b.hosts.get(h).and_then(|t| t.sequence),
                        s.sequence,
                        "{h}: recorded sequence changed: {}",
                        dump()
                    );
                }
            }
        }
    }
    for k in 1..state.waves.len() {
        if let Some(started) = state.waves[k].started_at {
            let done = state.waves[k - 1].completed_at;
            assert!(
                done.is_some_and(|d| d <= started),
                "wave {} started before wave {k} completed: {}",
                k + 1,
                dump()
            );
        }
    }
    let mut kinds = BTreeSet::new();
    for e in &state.log {
        if let Some(kind) = step_kind(&e.event) {
            assert!(
                kinds.insert(kind.clone()),
                "{kind} logged twice: {}",
                dump()
            );
        }
    }

    // Manifests: only started waves' hosts have the release's closure, and a
    // recorded sequence is the live manifest.
    let mut live = BTreeMap::new();
    for h in HOSTS {
        let host = HostName::new(h).unwrap();
        let m = w.manifest(h);
        let k = release.wave_of(&host).unwrap();
        let st = state.waves[k].hosts.get(&host);
        if m.closure == *closure {
            assert!(
                state.waves[k].started_at.is_some() && st.is_some_and(|s| !s.outcome.is_skipped()),
                "{h} got the release's closure (sequence {}) outside a started wave: {}",
                m.sequence,
                dump()
            );
        }
        if let Some(seq) = st.and_then(|s| s.sequence) {
            assert_eq!(
                (m.sequence, &m.closure),
                (seq, closure),
                "{h}: the state says sequence {seq} was deployed, the live manifest differs"
            );
        } else if settled && state.waves[k].started_at.is_some() {
            panic!(
                "{h}: its wave started but no sequence is recorded: {}",
                dump()
            );
        }
        live.insert(h.to_owned(), m.sequence);
    }

    // The audit chain.
    let chain: Vec<ChainEntry> = w.block_on(fleet_tests::audit::chain_entries(admin));
    let mut manifests: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut rollout_writes: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut revisions: BTreeMap<u64, &ChainEntry> = BTreeMap::new();
    let mut audited_events: Vec<String> = Vec::new();
    let mut releases = 0;
    for e in &chain {
        for m in &e.details.manifests {
            assert!(
                manifests.insert((m.host.to_string(), m.sequence)),
                "two manifests of {} with sequence {} in the audit chain",
                m.host,
                m.sequence
            );
            if e.action == ActionKind::Rollout && m.closure == *closure {
                rollout_writes
                    .entry(m.host.to_string())
                    .or_default()
                    .push(m.sequence);
            }
        }
        if e.details.extra.get("release").and_then(|r| r.as_str()) != Some(id) {
            continue;
        }
        match e.action {
            ActionKind::Release => releases += 1,
            ActionKind::RolloutStep => {
                let rev = e.details.extra["revision"].as_u64().unwrap();
                assert!(
                    revisions.insert(rev, e).is_none(),
                    "revision {rev} of {id} audited twice"
                );
                assert!(
                    rev <= state.revision,
                    "revision {rev} audited, state at {}",
                    state.revision
                );
                for ev in e.details.extra["events"].as_array().unwrap() {
                    audited_events.push(ev.as_str().unwrap().to_owned());
                }
            }
            _ => {}
        }
    }
    for (h, seqs) in &rollout_writes {
        assert_eq!(
            seqs.len(),
            1,
            "{h} was deployed the release's closure twice: {seqs:?}"
        );
        assert!(
            seqs[0] <= live[h],
            "{h}: audited rollout sequence {} is above the live {}",
            seqs[0],
            live[h]
        );
    }
    assert!(releases <= 1, "{releases} `release` entries for {id}");
    // Every step logged after the creation has its one audit entry, but in the
    // revisions a failed run named as possibly unaudited.
    let logged: Vec<String> = state.log[1..].iter().map(|e| e.event.clone()).collect();
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for e in &logged {
        *counts.entry(e).or_default() += 1;
    }
    for e in &audited_events {
        *counts.entry(e).or_default() -= 1;
    }
    let extra: Vec<_> = counts.iter().filter(|(_, n)| **n < 0).collect();
    assert!(
        extra.is_empty(),
        "audited steps not in the state's log: {extra:?}"
    );
    let missing: Vec<_> = counts.iter().filter(|(_, n)| **n > 0).collect();
    let unaudited: Vec<u64> = (1..=state.revision)
        .filter(|r| !revisions.contains_key(r))
        .collect();
    let named: Vec<&u64> = unaudited
        .iter()
        .filter(|r| seen.unaudited.contains(r))
        .collect();
    assert!(
        missing.is_empty() || !named.is_empty(),
        "steps logged without their audit entry: {missing:?}; unaudited revisions {unaudited:?}, \
         runs said {:?}",
        seen.unaudited
    );
    // Other unaudited revisions logged no step (every step is accounted for): a
    // write of outcomes only whose answer was lost and that another run overwrote
    // before the read-back (`landed` in publisher/src/rollout/store.rs).
    seen.outcome_only_unaudited = unaudited.len() - named.len();
    if settled && !seen.release_unaudited {
        assert_eq!(releases, 1, "the release of {id} has no audit entry");
    }
    if settled && !seen.unaudited.contains(&state.revision) {
        let last = revisions
            .get(&state.revision)
            .unwrap_or_else(|| panic!("the last revision {} is not audited", state.revision));
        assert_eq!(
            last.details.objects[0].sha256.as_deref(),
            Some(sha256_hex(&state_bytes).as_str()),
            "the last rollout-step entry names other bytes than the state's"
        );
    }
    let trusted_cache = TrustedKeys::new([w.cache_public.clone()]);
    w.block_on(check_cache_consistent(admin, &trusted_cache));
    seen.state = Some(state.clone());
    state
}

/// One `fleet-agent once` on every host; notes the hosts that report the release's
/// closure failed or rolled back.
fn cycle_all(w: &FleetWorld, closure: &StorePath, seen: &mut Seen) -> usize {
    let mut failed = 0;
    for h in HOSTS {
        let r = w.once(h);
        failed += usize::from(r.code != 0);
        let on_release = r.report.desired.as_ref().map(|d| &d.closure) == Some(closure);
        if on_release
            && matches!(
                r.report.state,
                AgentState::Failed | AgentState::RolledBack | AgentState::Refused
            )
        {
            seen.bad.insert(h.to_owned());
        }
    }
    failed
}

#[test]
fn rollouts_under_faults_deploy_each_wave_once_and_finish_calmly() {
    let seeds = seeds();
    let mut w = FleetWorld::new("faults-rollout", &HOSTS);
    let proxy = calm_proxy(w.server);
    w.store_url = store_url_at(&proxy.endpoint(), &w.bucket_name, "")
        .unwrap()
        .to_string();
    let gen0 = w.system("fr", "0", 0);
    let targets: Vec<(&str, &fleet_tests::nix::Closure)> =
        HOSTS.iter().map(|h| (*h, &gen0)).collect();
    w.publish(&targets);
    for h in HOSTS {
        assert_eq!(w.once_expect(h, 0).report.state, AgentState::Healthy, "{h}");
    }
    let (mut done, mut halted, mut failed_runs, mut failed_cycles) = (0, 0, 0, 0);
    for seed in seeds.iter().copied() {
        let _replay = Replay(seed, "rollouts_under_faults");
        let closure = w.system("fr", &format!("s{seed}"), 0).top;
        let id = format!("r{seed}");
        let mut seen = Seen::default();
        proxy.replan(FaultPlan {
            drop_after_apply: 15,
            ..FaultPlan::mixed(seed)
        });

        // The release, under faults; a failed one is run again calmly, which
        // finishes it (or writes it, if nothing was).
        proxy.calm(false);
        let o = release(&w, &id, &closure);
        if !o.status.success() {
            failed_runs += 1;
            eprintln!("seed {seed}: release failed under faults:\n{}", text(&o));
            seen.failed(&text(&o));
            proxy.calm(true);
            let again = release(&w, &id, &closure);
            // A release whose audit entry alone failed (said so) exists whole.
            let whole = seen.release_unaudited && text(&again).contains("already exists");
            assert!(
                again.status.success() || whole,
                "a calm `release` did not finish what the faulted one left:\n{}\nafter:\n{}",
                text(&again),
                text(&o)
            );
            proxy.calm(false);
        }
        check_rollout(&w, &id, &closure, &mut seen, false);

        // Two advances racing, then every host's cycle, all under faults.
        for _ in 0..FAULTED_ROUNDS {
            for o in advance(&w, &id, 2) {
                match o.status.code() {
                    Some(0 | 3 | 4) => {}
                    _ => {
                        failed_runs += 1;
                        seen.advances_failed += 1;
                        eprintln!("seed {seed}: an advance failed under faults:\n{}", text(&o));
                        seen.failed(&text(&o));
                    }
                }
            }
            check_rollout(&w, &id, &closure, &mut seen, false);
            failed_cycles += cycle_all(&w, &closure, &mut seen);
        }

        // Calm: advances (and cycles) carry it on from whatever is there.
        proxy.calm(true);
        let mut last = None;
        for _ in 0..CALM_ROUNDS {
            let o = &advance(&w, &id, 1)[0];
            let code = o.status.code();
            assert!(
                matches!(code, Some(0 | 3 | 4)),
                "a calm advance could not go on from what the faulted runs left:\n{}",
                text(o)
            );
            if code != Some(3) {
                last = Some(o.clone());
                break;
            }
            check_rollout(&w, &id, &closure, &mut seen, false);
            cycle_all(&w, &closure, &mut seen);
        }
        let o = last.expect("the rollout neither finished nor halted in the calm rounds");
        let state = check_rollout(&w, &id, &closure, &mut seen, true);
        match state.phase {
            Phase::Done => {
                done += 1;
                assert_eq!(o.status.code(), Some(0), "{}", text(&o));
                for h in HOSTS {
                    assert_eq!(w.manifest(h).closure, closure, "{h}");
                    let r = w.once_expect(h, 0);
                    assert_eq!(r.report.state, AgentState::Healthy, "{h}");
                    assert_eq!(r.report.current.map(|c| c.closure).as_ref(), Some(&closure));
                }
            }
            Phase::Halted => {
                halted += 1;
                assert_eq!(o.status.code(), Some(4), "{}", text(&o));
                let reason = state.halt_reason.clone().unwrap_or_default();
                let named: Vec<&str> = HOSTS
                    .iter()
                    .copied()
                    .filter(|h| reason.contains(h))
                    .collect();
                assert!(!named.is_empty(), "halted naming no host: {reason}");
                for h in named {
                    assert!(
                        seen.bad.contains(h),
                        "halted naming {h}, which never reported the release failed: {reason}"
                    );
                }
                eprintln!("seed {seed}: halted: {reason}");
            }
            p => panic!("the rollout ended {p}"),
        }
        eprintln!(
            "seed {seed}: rollout {} at revision {}; {} advance(s) failed under faults; \
             unaudited revisions: {} named by a failed run, {} of outcomes only",
            state.phase,
            state.revision,
            seen.advances_failed,
            seen.unaudited.len(),
            seen.outcome_only_unaudited
        );
    }
    print_stats("rollout fault runs", &proxy.stats());
    eprintln!(
        "{} rollout seeds passed: {done} done, {halted} halted on their budget; \
         {failed_runs} publisher runs and {failed_cycles} agent cycles failed under faults",
        seeds.len()
    );
}

/// Every write of `release` and `rollout advance` lands and loses its answer; then a
/// release whose rollout state is missing (as a run that stopped between the two
/// writes leaves it) is finished by running the same command again.
#[test]
fn a_release_and_rollout_whose_write_answers_are_all_lost_succeed_once() {
    let mut w = FleetWorld::new("faults-rollout-lost", &HOSTS);
    let proxy = calm_proxy(w.server);
    w.store_url = store_url_at(&proxy.endpoint(), &w.bucket_name, "")
        .unwrap()
        .to_string();
    let gen0 = w.system("frl", "0", 0);
    let targets: Vec<(&str, &fleet_tests::nix::Closure)> =
        HOSTS.iter().map(|h| (*h, &gen0)).collect();
    w.publish(&targets);
    // The closure goes up calmly (a NAR's plain PUT retried into a reset would
    // fail): the release then writes only its own objects.
    let gen1 = w.system("frl", "1", 0).top;
    let o = w
        .publisher_command()
        .args(["push", "--bucket", &w.store_url, "--cache-key"])
        .arg(&w.cache_secret)
        .arg(gen1.to_string())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));

    proxy.replan(FaultPlan {
        drop_after_apply: 100,
        ..FaultPlan::none(0)
    });
    let mut seen = Seen::default();
    let o = release(&w, "lost", &gen1);
    assert!(
        o.status.success(),
        "a release whose writes landed failed:\n{}",
        text(&o)
    );
    for _ in 0..2 {
        let o = &advance(&w, "lost", 1)[0];
        assert_eq!(o.status.code(), Some(3), "{}", text(o));
    }
    let state = check_rollout(&w, "lost", &gen1, &mut seen, false);
    assert!(
        state.waves[0].hosts.values().all(|h| h.sequence.is_some()),
        "{state:#?}"
    );
    assert!(
        state
            .log
            .iter()
            .any(|e| e.event.starts_with("wave 1 deployed")),
        "{state:#?}"
    );
    // Every revision audited once, the release once (check_rollout saw no run say
    // otherwise).
    let chain = w.block_on(fleet_tests::audit::chain_entries(&w.admin));
    let of = |kind: ActionKind| {
        chain
            .iter()
            .filter(|e| {
                e.action == kind
                    && e.details.extra.get("release").and_then(|r| r.as_str()) == Some("lost")
            })
            .count() as u64
    };
    assert_eq!(of(ActionKind::Release), 1);
    assert_eq!(of(ActionKind::RolloutStep), state.revision);
    assert!(proxy.stats()[&fleet_tests::fault_proxy::Fault::DropAfterApply] >= 4);

    // A release left without its state is finished by the same command; another
    // release under its id is still refused.
    proxy.calm(true);
    let o = release(&w, "half", &gen1);
    assert!(o.status.success(), "{}", text(&o));
    let state_key = Key::rollout(&fleet_core::ObjectName::new("half").unwrap());
    w.block_on(w.admin.delete(&state_key)).unwrap();
    let o = release(&w, "half", &gen1);
    assert!(
        o.status.success(),
        "the re-run did not finish it:\n{}",
        text(&o)
    );
    let trusted = TrustedKeys::new([w.publisher_public.clone()]);
    let state = RolloutState::verify(&w.read(&state_key), "half", &trusted)
        .unwrap()
        .state;
    assert_eq!((state.revision, state.phase), (0, Phase::Running));
    let o = release(&w, "half", &gen1);
    assert!(text(&o).contains("already exists"), "{}", text(&o));
    let o = release(&w, "half", &gen0.top);
    assert!(text(&o).contains("already exists"), "{}", text(&o));
}
