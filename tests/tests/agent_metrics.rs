//! Agent metrics with the real `fleet-agent` and real Nix: after each cycle the file
//! named by `metrics-file` holds Prometheus text (node-exporter's textfile format)
//! with the state, the sequences, the last success, the last fetch and the cycles by
//! outcome; every sample line parses, and the values are those of the cycles run.

mod agent_common;

use std::collections::BTreeMap;

use agent_common::World;
use fleet_core::status::AgentState;

/// The samples of a Prometheus text file (`name{labels}` → value); panics on a line
/// that is neither a comment nor `NAME[{LABELS}] NUMBER`.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        assert!(
            !series.contains('{') || series.ends_with('}'),
            "bad labels in {line:?}"
        );
        let v: f64 = value.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(
            samples.insert(series.to_owned(), v).is_none(),
            "{line:?} twice"
        );
    }
    samples
}

#[test]
fn a_cycle_writes_parseable_metrics_with_the_right_values() {
    let mut w = World::new("metrics-1");
    let prom = w.dir.path().join("textfiles/fleet-agent.prom");
    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    w.extra_config = format!("metrics-file = \"{}\"\n", prom.display());
    let g1 = w.system("m1", 0);
    w.deploy(1, &g1);
    let before = jiff::Timestamp::now().as_second() as f64;
    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    let m = parse(&std::fs::read_to_string(&prom).unwrap());
    assert_eq!(m["fleet_agent_state{state=\"healthy\"}"], 1.0);
    assert_eq!(m["fleet_agent_state{state=\"failed\"}"], 0.0);
    assert_eq!(
        m.keys()
            .filter(|k| k.starts_with("fleet_agent_state{"))
            .count(),
        AgentState::ALL.len()
    );
    for kind in ["current", "desired", "highest-seen"] {
        assert_eq!(m[&format!("fleet_agent_sequence{{kind=\"{kind}\"}}")], 1.0);
    }
    let success = m["fleet_agent_last_success_timestamp_seconds"];
    assert!(success >= before && success <= before + 120.0, "{success}");
    // The fetch downloaded the closure's narinfos and NARs.
    assert!(m["fleet_agent_last_fetch_bytes"] > 1000.0, "{m:?}");
    assert!(m["fleet_agent_last_fetch_duration_seconds"] > 0.0, "{m:?}");
    assert_eq!(m["fleet_agent_cycles_total{outcome=\"healthy\"}"], 1.0);
    assert_eq!(m["fleet_agent_cycles_total{outcome=\"failed\"}"], 0.0);
    // Only the file itself: the temporary file was renamed over it.
    assert_eq!(
        std::fs::read_dir(prom.parent().unwrap()).unwrap().count(),
        1
    );

    // A failing generation: the next cycle rolls back, and the file says so.
    let bad = w.system("m2", 1);
    w.deploy(2, &bad);
    let r = w.once_expect(3);
    let m = parse(&std::fs::read_to_string(&prom).unwrap());
    assert_eq!(
        m["fleet_agent_state{state=\"rolled-back\"}"], 1.0,
        "{}",
        r.stderr
    );
    assert_eq!(m["fleet_agent_state{state=\"healthy\"}"], 0.0);
    assert_eq!(m["fleet_agent_sequence{kind=\"current\"}"], 1.0);
    assert_eq!(m["fleet_agent_sequence{kind=\"desired\"}"], 2.0);
    assert_eq!(m["fleet_agent_sequence{kind=\"highest-seen\"}"], 2.0);
    // A new process: its counters start again, and it has no success yet.
    assert_eq!(m["fleet_agent_cycles_total{outcome=\"rolled-back\"}"], 1.0);
    assert_eq!(m["fleet_agent_cycles_total{outcome=\"healthy\"}"], 0.0);
    assert!(!m.contains_key("fleet_agent_last_success_timestamp_seconds"));
}
