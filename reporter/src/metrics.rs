//! `/metrics`: the fleet in the Prometheus text exposition format (version 0.0.4).
//!
//! ```text
//! # HELP fleet_hosts Hosts in each dashboard state.
//! # TYPE fleet_hosts gauge
//! fleet_hosts{state="up-to-date"} 41
//! fleet_host_state{host="web-1",state="up-to-date"} 1
//! fleet_host_last_seen_seconds{host="web-1"} 1795734300
//! ```
//!
//! Fleet-wide series are always there. Per-host series (`fleet_host_*`) are emitted
//! only while the fleet has at most `max-host-series` hosts, to bound the scrape size
//! and Prometheus' cardinality; `fleet_host_series_truncated` says when they were left
//! out. Host names are validated DNS labels, and label values are escaped anyway.

use std::fmt::Write as _;

use crate::fleet::Fleet;
use crate::outcome::ManifestView;

/// The content type of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

/// Renders the fleet.
pub fn render(fleet: &Fleet, max_host_series: usize) -> String {
    let mut out = String::new();
    header(&mut out, "fleet_hosts", "Hosts in each dashboard state.");
    for (state, n) in fleet.counts() {
        let _ = writeln!(
            out,
            "fleet_hosts{{state=\"{}\"}} {n}",
            escape_label(state.as_str())
        );
    }
    header(
        &mut out,
        "fleet_hosts_total",
        "Hosts known from status objects or manifests.",
    );
    let _ = writeln!(out, "fleet_hosts_total {}", fleet.hosts.len());
    header(
        &mut out,
        "fleet_ignored_objects",
        "Objects under status/ or hosts/ that belong to no valid host name.",
    );
    let _ = writeln!(out, "fleet_ignored_objects {}", fleet.ignored.count);
    header(
        &mut out,
        "fleet_manifests_verified",
        "1 when manifests are verified against trusted publisher keys, 0 when no key is configured.",
    );
    let _ = writeln!(
        out,
        "fleet_manifests_verified {}",
        u8::from(!fleet.trusted_key_names.is_empty())
    );
    header(
        &mut out,
        "fleet_reporter_refresh_duration_seconds",
        "Wall time of the last aggregation.",
    );
    let _ = writeln!(
        out,
        "fleet_reporter_refresh_duration_seconds {}",
        fleet.stats.duration_ms as f64 / 1000.0
    );
    header(
        &mut out,
        "fleet_reporter_refresh_fetched_objects",
        "Objects read by the last aggregation (the rest came from the snapshot).",
    );
    let _ = writeln!(
        out,
        "fleet_reporter_refresh_fetched_objects {}",
        fleet.stats.fetched_status + fleet.stats.fetched_manifests
    );
    header(
        &mut out,
        "fleet_reporter_generated_timestamp_seconds",
        "When the last aggregation ran (Unix time).",
    );
    let _ = writeln!(
        out,
        "fleet_reporter_generated_timestamp_seconds {}",
        fleet.generated_at.as_second()
    );

    let truncated = fleet.hosts.len() > max_host_series;
    header(
        &mut out,
        "fleet_host_series_truncated",
        "1 when per-host series were left out because the fleet has more hosts than max-host-series.",
    );
    let _ = writeln!(out, "fleet_host_series_truncated {}", u8::from(truncated));
    if truncated {
        return out;
    }

    header(
        &mut out,
        "fleet_host_state",
        "1 for the host's dashboard state.",
    );
    for r in &fleet.hosts {
        let _ = writeln!(
            out,
            "fleet_host_state{{host=\"{}\",state=\"{}\"}} 1",
            escape_label(r.host.as_str()),
            r.state
        );
    }
    header(
        &mut out,
        "fleet_host_last_seen_seconds",
        "When the host's status object was last written (Unix time, store clock).",
    );
    for r in &fleet.hosts {
        if let Some(t) = r.last_seen {
            let _ = writeln!(
                out,
                "fleet_host_last_seen_seconds{{host=\"{}\"}} {}",
                escape_label(r.host.as_str()),
                t.as_second()
            );
        }
    }
    header(
        &mut out,
        "fleet_host_desired_sequence",
        "Sequence of the manifest the host should run.",
    );
    for r in &fleet.hosts {
        if let Some(seq) = r.desired.as_ref().and_then(|g| g.sequence) {
            let _ = writeln!(
                out,
                "fleet_host_desired_sequence{{host=\"{}\"}} {seq}",
                escape_label(r.host.as_str())
            );
        }
    }
    header(
        &mut out,
        "fleet_host_current_sequence",
        "Sequence of the manifest whose closure the host runs.",
    );
    for r in &fleet.hosts {
        let seq = r
            .report
            .as_ref()
            .and_then(|x| x.current.as_ref())
            .and_then(|g| g.sequence);
        if let Some(seq) = seq {
            let _ = writeln!(
                out,
                "fleet_host_current_sequence{{host=\"{}\"}} {seq}",
                escape_label(r.host.as_str())
            );
        }
    }
    header(
        &mut out,
        "fleet_host_reboot_needed",
        "1 when the booted kernel differs from the current system's.",
    );
    for r in &fleet.hosts {
        if let Some(b) = r.report.as_ref().and_then(|x| x.facts.reboot_needed) {
            let _ = writeln!(
                out,
                "fleet_host_reboot_needed{{host=\"{}\"}} {}",
                escape_label(r.host.as_str()),
                u8::from(b)
            );
        }
    }
    header(
        &mut out,
        "fleet_host_manifest_expiry_seconds",
        "When the host's verified manifest expires (Unix time).",
    );
    for r in &fleet.hosts {
        if let ManifestView::Verified(m) = &r.manifest {
            let _ = writeln!(
                out,
                "fleet_host_manifest_expiry_seconds{{host=\"{}\"}} {}",
                escape_label(r.host.as_str()),
                m.expires_at.as_second()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_label("web-1"), "web-1");
    }
}
