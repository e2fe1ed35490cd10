use std::collections::{BTreeMap, BTreeSet};

use fleet_core::release::{Budget, Plan, ReleaseHost, Selector, WaveSpec, resolve_waves};
use fleet_core::{Activation, SecretKey, StorePath};

use super::*;

fn h(s: &str) -> HostName {
    HostName::new(s).unwrap()
}

/// A release of web-1..web-4 in two waves (web-1, web-2 | the rest), soak 10 min,
/// wave budget 0 then 1, overall 1.
fn release() -> Release {
    let names: BTreeSet<HostName> = (1..=4).map(|i| h(&format!("web-{i}"))).collect();
    let spec = |select, budget| WaveSpec {
        select,
        soak_seconds: 600,
        budget,
    };
    let waves = resolve_waves(
        &names,
        &[
            spec(
                Selector::Hosts(vec!["web-1".into(), "web-2".into()]),
                Budget::Hosts(0),
            ),
            spec(Selector::Percent(100), Budget::Hosts(1)),
        ],
    )
    .unwrap();
    let closure = StorePath::new("/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-new").unwrap();
    Release {
        version: 1,
        id: "r".into(),
        created_at: "2026-12-02T21:00:00Z".parse().unwrap(),
        cache_keys: vec![SecretKey::generate("c-1").unwrap().public()],
        hosts: names
            .iter()
            .map(|n| {
                let rh = ReleaseHost {
                    closure: closure.clone(),
                    activation: Activation::Switch,
                };
                (n.clone(), rh)
            })
            .collect::<BTreeMap<_, _>>(),
        plan: Plan {
            waves,
            budget: Budget::Hosts(1),
            report_deadline_seconds: 600,
        },
    }
}

/// A state whose wave `k` is written for `hosts`, each with `outcome`.
fn written(k: usize, hosts: &[(&str, HostOutcome)], t: Timestamp) -> RolloutState {
    let mut s = RolloutState::new("r", "00", 2, false, "p-1");
    for w in 0..k {
        s.waves[w].started_at = Some(t);
        s.waves[w].completed_at = Some(t);
    }
    s.waves[k].started_at = Some(t);
    for (n, o) in hosts {
        let st = HostState {
            previous: None,
            sequence: Some(2),
            outcome: *o,
            rolled_back_to: None,
        };
        s.waves[k].hosts.insert(h(n), st);
    }
    s
}

#[test]
fn a_wave_settles_soaks_completes_and_the_last_finishes() {
    let r = release();
    let t: Timestamp = "2026-12-02T22:00:00Z".parse().unwrap();
    let pending = written(
        0,
        &[
            ("web-1", HostOutcome::Pending),
            ("web-2", HostOutcome::Pending),
        ],
        t,
    );
    let mut s = pending.clone();
    assert_eq!(
        decide(&r, &pending, &mut s, 0, t, "p-1"),
        None,
        "nothing to do"
    );
    let healthy = written(
        0,
        &[
            ("web-1", HostOutcome::Healthy),
            ("web-2", HostOutcome::Healthy),
        ],
        t,
    );
    let e = decide(&r, &healthy, &mut s, 0, t, "p-1").unwrap();
    assert_eq!(e, ["wave 1 settled; soaking for 10m"]);
    assert_eq!(s.waves[0].settled_at, Some(t));
    assert_eq!(
        decide(
            &r,
            &healthy,
            &mut s,
            0,
            t + SignedDuration::from_mins(9),
            "p-1"
        ),
        None
    );
    let e = decide(
        &r,
        &healthy,
        &mut s,
        0,
        t + SignedDuration::from_mins(10),
        "p-1",
    )
    .unwrap();
    assert_eq!(e, ["wave 1 completed"]);
    assert_eq!((s.current_wave(), s.phase), (Some(1), Phase::Running));
    // Moved on meanwhile: the decision for wave 1 is void.
    assert_eq!(decide(&r, &healthy, &mut s, 0, t, "p-1"), None);

    let last = written(
        1,
        &[
            ("web-3", HostOutcome::Healthy),
            ("web-4", HostOutcome::Healthy),
        ],
        t,
    );
    let mut s = last.clone();
    decide(&r, &last, &mut s, 1, t, "p-1").unwrap();
    let e = decide(
        &r,
        &last,
        &mut s,
        1,
        t + SignedDuration::from_hours(1),
        "p-1",
    )
    .unwrap();
    assert_eq!(e, ["wave 2 completed", "rollout done"]);
    assert_eq!(s.phase, Phase::Done);
}

#[test]
fn a_spent_budget_halts_with_the_bad_hosts_named() {
    let r = release();
    let t: Timestamp = "2026-12-02T22:00:00Z".parse().unwrap();
    // Wave 2 allows one bad host: a silent one is within budget, and it settles.
    let one = written(
        1,
        &[
            ("web-3", HostOutcome::Silent),
            ("web-4", HostOutcome::Healthy),
        ],
        t,
    );
    let mut s = one.clone();
    let e = decide(&r, &one, &mut s, 1, t, "p-1").unwrap();
    assert_eq!(e, ["wave 2 settled; soaking for 10m"]);
    // Wave 1 allows none.
    let bad = written(
        0,
        &[
            ("web-1", HostOutcome::RolledBack),
            ("web-2", HostOutcome::Pending),
        ],
        t,
    );
    let mut s = bad.clone();
    let e = decide(&r, &bad, &mut s, 0, t, "p-1").unwrap();
    assert_eq!(s.phase, Phase::Halted);
    assert!(
        e[0].contains("wave 1: 1 bad host(s) (web-1 rolled-back)"),
        "{e:?}"
    );
    assert_eq!(
        s.halt_reason.as_deref(),
        Some(e[0].trim_start_matches("halted: "))
    );
    assert_eq!(
        decide(&r, &bad, &mut s, 0, t, "p-1"),
        None,
        "halted is final"
    );
    // Held hosts count neither way.
    let held = written(
        0,
        &[
            ("web-1", HostOutcome::SkippedHeld),
            ("web-2", HostOutcome::Healthy),
        ],
        t,
    );
    let mut s = held.clone();
    assert!(decide(&r, &held, &mut s, 0, t, "p-1").is_some());
    assert_eq!(s.phase, Phase::Running);
}
