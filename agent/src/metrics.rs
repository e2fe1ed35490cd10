//! Agent metrics in the Prometheus text format, for node-exporter's textfile
//! collector: after every cycle the agent rewrites `metrics-file` (off by default)
//! whole with [`fleet_core::fsutil::write_atomic`] (a dot-named temporary file in the
//! same directory, then a rename), so the collector never reads half a file. The file
//! name must end in `.prom`, the only files the collector reads.
//!
//! ```text
//! # TYPE fleet_agent_state gauge
//! fleet_agent_state{state="healthy"} 1          (one line per state; 0 for the others)
//! # TYPE fleet_agent_sequence gauge
//! fleet_agent_sequence{kind="current"} 7        (and desired, highest-seen; when known)
//! # TYPE fleet_agent_last_success_timestamp_seconds gauge
//! fleet_agent_last_success_timestamp_seconds 1796241600
//! # TYPE fleet_agent_last_fetch_bytes gauge
//! fleet_agent_last_fetch_bytes 48213
//! # TYPE fleet_agent_last_fetch_duration_seconds gauge
//! fleet_agent_last_fetch_duration_seconds 1.250
//! # TYPE fleet_agent_cycles_total counter
//! fleet_agent_cycles_total{outcome="healthy"} 12 (one line per outcome)
//! ```
//!
//! Counters and the last fetch are those of the running process (a restart starts
//! them again, as Prometheus expects of counters); the last success time is that of
//! the last cycle that ended `healthy` in this process.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use fleet_core::status::AgentState;
use jiff::Timestamp;

use crate::Outcome;
use crate::state::State;

/// What the agent has counted since it started.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    cycles: BTreeMap<&'static str, u64>,
    last_success: Option<Timestamp>,
    last_fetch: Option<(u64, Duration)>,
}

impl Metrics {
    /// Counts a finished cycle.
    pub fn cycle(&mut self, outcome: &Outcome, now: Timestamp) {
        *self.cycles.entry(outcome.as_str()).or_default() += 1;
        if *outcome == Outcome::Healthy {
            self.last_success = Some(now);
        }
    }

    /// Records a closure fetch: bytes downloaded and how long it took.
    pub fn fetched(&mut self, bytes: u64, took: Duration) {
        self.last_fetch = Some((bytes, took));
    }

    /// The text of the metrics file for `state`.
    pub fn render(&self, state: &State) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "fleet_agent_state",
            "gauge",
            "The state the agent reports: 1 for it, 0 for the others.",
        );
        for s in AgentState::ALL {
            let v = u8::from(s == state.reported.state);
            let _ = writeln!(out, "fleet_agent_state{{state=\"{s}\"}} {v}");
        }
        header(
            &mut out,
            "fleet_agent_sequence",
            "gauge",
            "Manifest sequences: running (current), wanted (desired), highest verified (highest-seen).",
        );
        let seqs = [
            ("current", state.current.as_ref().and_then(|g| g.sequence)),
            ("desired", state.desired.as_ref().and_then(|g| g.sequence)),
            (
                "highest-seen",
                state.highest_seen.as_ref().map(|s| s.sequence),
            ),
        ];
        for (kind, seq) in seqs {
            if let Some(n) = seq {
                let _ = writeln!(out, "fleet_agent_sequence{{kind=\"{kind}\"}} {n}");
            }
        }
        let gauge = |out: &mut String, name: &str, help: &str, value: Option<String>| {
            header(out, name, "gauge", help);
            if let Some(v) = value {
                let _ = writeln!(out, "{name} {v}");
            }
        };
        gauge(
            &mut out,
            "fleet_agent_last_success_timestamp_seconds",
            "End of the last cycle that ended healthy (Unix time).",
            self.last_success.map(|t| t.as_second().to_string()),
        );
        gauge(
            &mut out,
            "fleet_agent_last_fetch_bytes",
            "Bytes the last closure fetch downloaded (narinfos and compressed NARs).",
            self.last_fetch.map(|(b, _)| b.to_string()),
        );
        gauge(
            &mut out,
            "fleet_agent_last_fetch_duration_seconds",
            "How long the last closure fetch took, import included.",
            self.last_fetch
                .map(|(_, d)| format!("{:.3}", d.as_secs_f64())),
        );
        header(
            &mut out,
            "fleet_agent_cycles_total",
            "counter",
            "Cycles since the agent started, by outcome.",
        );
        for o in Outcome::ALL {
            let name = o.as_str();
            let n = self.cycles.get(name).copied().unwrap_or(0);
            let _ = writeln!(out, "fleet_agent_cycles_total{{outcome=\"{name}\"}} {n}");
        }
        out
    }

    /// Writes [`Metrics::render`] to `path` atomically.
    pub fn write(&self, path: &Path, state: &State) -> std::io::Result<()> {
        fleet_core::fsutil::write_atomic(path, self.render(state).as_bytes(), 0o644, true)
    }
}

/// The `# HELP` and `# TYPE` lines of a metric family.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_core::StorePath;
    use fleet_core::status::Generation;

    #[test]
    fn the_text_carries_the_state_sequences_and_counts() {
        let mut m = Metrics::default();
        let mut s = State::default();
        s.reported.state = AgentState::Healthy;
        s.current = Some(Generation {
            sequence: Some(7),
            closure: StorePath::new("/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-x").unwrap(),
        });
        let t: Timestamp = "2026-12-02T20:00:00Z".parse().unwrap();
        m.cycle(&Outcome::Retry, t);
        m.cycle(&Outcome::Healthy, t);
        m.fetched(1234, Duration::from_millis(1500));
        let text = m.render(&s);
        for want in [
            "fleet_agent_state{state=\"healthy\"} 1",
            "fleet_agent_state{state=\"paused\"} 0",
            "fleet_agent_sequence{kind=\"current\"} 7",
            "fleet_agent_last_success_timestamp_seconds 1796241600",
            "fleet_agent_last_fetch_bytes 1234",
            "fleet_agent_last_fetch_duration_seconds 1.500",
            "fleet_agent_cycles_total{outcome=\"healthy\"} 1",
            "fleet_agent_cycles_total{outcome=\"retry\"} 1",
            "fleet_agent_cycles_total{outcome=\"paused\"} 0",
        ] {
            assert!(text.lines().any(|l| l == want), "{want} missing:\n{text}");
        }
        assert!(!text.contains("kind=\"desired\""), "{text}");
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fleet-agent.prom");
        m.write(&p, &s).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
