//! `fleet-reporter summary`: one aggregation of the fleet, printed as a text table for
//! a terminal (the quickstart prints it after each step).
//!
//! It reads the bucket exactly as the dashboard does (the same [`Reporter`], the same
//! options: store, trusted keys, staleness bound) and prints:
//!
//! ```text
//! HOST    STATE        CURRENT  DESIRED  SEEN  LAST ERROR
//! host-1  up-to-date   2        2        1s    -
//! host-2  rolled-back  1        3        1s    activation-failed
//! 2 hosts: 1 rolled-back, 1 up-to-date; manifests verified with publisher-1
//!   host-2 activation-failed: activating sequence 3 (/nix/store/…) failed: …
//! ```
//!
//! `STATE` is the dashboard's classification (`up-to-date`, `pending`, `refused`,
//! `rolled-back`, `failed`, `stale`, `never-seen`, `flagged`); `CURRENT` and `DESIRED`
//! are manifest sequence numbers (`-` when unknown, `?` for a system found running
//! before any deploy); `SEEN` is the age of the host's `status.json` by the store's
//! clock. Every string a host wrote is hostile: control characters (terminal escape
//! sequences) and bidirectional overrides are printed escaped, and long texts are cut.
//!
//! Retired hosts (`fleet-publish retire`) are listed in the table with state
//! `retired` but left out of the count (`3 hosts (+1 retired): …`).
//!
//! `--json` prints `/api/v1/summary`'s object with every host's row (as
//! `/api/v1/hosts` gives it) under `"rows"` instead of the table.
//!
//! Exit codes, for CI to gate on: 0 when no host fails the gate, 3 when any host is
//! failed, rolled back, refused, stale or flagged (the table or the JSON's
//! `gate.failing` says which), 1 when the fleet could not be read.
//!
//! Unlike `serve`, it does not write the dashboard's cache `dashboard/snapshot.json`
//! unless `--write-snapshot true` is given, so credentials that may only read (a
//! publisher's) are enough.

use std::fmt::Write as _;

use anyhow::Context;
use fleet_core::status::Generation;
use fleet_core::{Bucket, BucketOptions};
use fleet_reporter::Reporter;
use fleet_reporter::config::Config;
use fleet_reporter::fleet::Fleet;
use fleet_reporter::outcome::{HostRow, HostState};
use jiff::Timestamp;

/// Longest error kind shown in the table.
const MAX_KIND: usize = 40;
/// Longest error message or flag shown under the table.
const MAX_MESSAGE: usize = 600;

/// `summary` arguments: the reporter's options and the output format.
#[derive(clap::Args, Debug)]
pub struct SummaryArgs {
    /// The reporter's options.
    #[command(flatten)]
    pub config: Config,
    /// Print JSON (the API's summary plus every host's row) instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Exit code when some host fails the gate.
pub const GATE_FAILED: u8 = 3;

/// Aggregates once and prints the table (or JSON) on stdout; `Ok(false)` when
/// some host fails the gate.
pub async fn run(args: SummaryArgs) -> anyhow::Result<bool> {
    let SummaryArgs { mut config, json } = args;
    config.take_deprecated();
    config.write_snapshot.get_or_insert(false);
    let s = config.resolve()?;
    let bucket = Bucket::open(&s.bucket, &BucketOptions::default())
        .with_context(|| format!("opening bucket {}", s.bucket))?;
    let reporter = Reporter::new(bucket, s.options);
    let fleet = reporter
        .refresh()
        .await
        .with_context(|| format!("reading the fleet from {}", s.bucket))?;
    if json {
        let mut v = fleet_reporter::api::summary(&fleet);
        v["rows"] = fleet
            .hosts
            .iter()
            .map(|r| fleet_reporter::api::host_row(r, fleet.generated_at))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render(&fleet));
    }
    Ok(fleet.failing_gate().next().is_none())
}

/// `s` with control characters and bidirectional overrides escaped, cut to `max`
/// characters (with `…`).
fn clean(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        // Controls and every bidirectional formatting mark, so host text cannot
        // reorder what the terminal shows.
        if c.is_control()
            || matches!(
                c,
                '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
            )
        {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

fn sequence(g: Option<&Generation>) -> String {
    match g {
        None => "-".into(),
        Some(g) => g.sequence.map_or_else(|| "?".into(), |s| s.to_string()),
    }
}

fn age(row: &HostRow, now: Timestamp) -> String {
    let Some(seen) = row.last_seen else {
        return "never".into();
    };
    let secs = now.duration_since(seen).as_secs().max(0);
    match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        7200..172800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// The table, the counts line and one line per host with an error, flag or note.
pub fn render(fleet: &Fleet) -> String {
    let header = ["HOST", "STATE", "CURRENT", "DESIRED", "SEEN", "LAST ERROR"];
    let rows: Vec<[String; 6]> = fleet
        .hosts
        .iter()
        .map(|r| {
            let report = r.report.as_deref();
            [
                r.host.to_string(),
                r.state.to_string(),
                sequence(report.and_then(|x| x.current.as_ref())),
                sequence(r.desired.as_ref()),
                age(r, fleet.generated_at),
                report
                    .and_then(|x| x.last_error.as_ref())
                    .map_or_else(|| "-".into(), |e| clean(e.kind.as_str(), MAX_KIND)),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }

    let counts: Vec<String> = fleet
        .counts()
        .into_iter()
        .filter(|(s, n)| *n > 0 && *s != HostState::Retired)
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    let n = fleet.active().count();
    let retired = fleet.retired().count();
    let _ = write!(
        out,
        "{n} host{}{}{}{}; ",
        if n == 1 { "" } else { "s" },
        if retired > 0 {
            format!(" (+{retired} retired)")
        } else {
            String::new()
        },
        if counts.is_empty() { "" } else { ": " },
        counts.join(", ")
    );
    if fleet.trusted_key_names.is_empty() {
        out.push_str("manifests NOT verified (no trusted publisher key given)\n");
    } else {
        let _ = writeln!(
            out,
            "manifests verified with {}",
            fleet.trusted_key_names.join(", ")
        );
    }
    for r in &fleet.hosts {
        if let Some(e) = r.report.as_ref().and_then(|x| x.last_error.as_ref()) {
            let _ = writeln!(
                out,
                "  {} {}: {}",
                r.host,
                clean(e.kind.as_str(), MAX_KIND),
                clean(&e.message, MAX_MESSAGE)
            );
        }
        for f in &r.flags {
            let _ = writeln!(out, "  {} flagged: {}", r.host, clean(f, MAX_MESSAGE));
        }
        for note in &r.notes {
            let _ = writeln!(out, "  {} note: {}", r.host, clean(note, MAX_MESSAGE));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_core::{HostName, Key, Manifest, SecretKey, StatusReport};
    use fleet_reporter::config::ReporterOptions;

    const CLOSURE: &str = "/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-nixos-system";

    fn manifest(host: &str, seq: u64) -> Manifest {
        serde_json::from_value(serde_json::json!({
            "version": 1, "host": host, "sequence": seq,
            "closure": format!("{CLOSURE}-{seq}"),
            "issued_at": "2026-01-01T00:00:00Z", "expires_at": "2099-01-01T00:00:00Z",
            "cache_keys": [], "activation": "switch",
        }))
        .unwrap()
    }

    fn status(host: &str, state: &str, current: u64, error: Option<(&str, &str)>) -> Vec<u8> {
        let r: StatusReport = serde_json::from_value(serde_json::json!({
            "version": 1, "host": host, "agent_version": "0.1.0", "state": state,
            "desired": {"sequence": 2, "closure": format!("{CLOSURE}-2")},
            "current": {"sequence": current, "closure": format!("{CLOSURE}-{current}")},
            "last_error": error.map(|(k, m)| serde_json::json!({
                "kind": k, "message": m, "at": "2026-11-26T21:25:00Z"})),
            "facts": {},
            "time": "2026-11-26T21:25:00Z",
        }))
        .unwrap();
        r.to_bytes()
    }

    #[tokio::test]
    async fn renders_every_host_and_escapes_what_hosts_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::open_url(&format!("file://{}", dir.path().display())).unwrap();
        let publisher = SecretKey::generate("publisher-1").unwrap();
        let h = |s: &str| HostName::new(s).unwrap();
        for host in ["web-1", "web-2", "web-3"] {
            bucket
                .put(&Key::manifest(&h(host)), manifest(host, 2).sign(&publisher))
                .await
                .unwrap();
        }
        bucket
            .put(
                &Key::status(&h("web-1")),
                status("web-1", "healthy", 2, None),
            )
            .await
            .unwrap();
        let evil = "boom \u{1b}[2J\u{1b}]0;pwned\u{7}\nsecond line \u{202e}txt.exe \u{200f}\u{61c}";
        bucket
            .put(
                &Key::status(&h("web-2")),
                status("web-2", "rolled-back", 1, Some(("activation-failed", evil))),
            )
            .await
            .unwrap();
        let reporter = Reporter::new(
            bucket,
            ReporterOptions {
                trusted: fleet_core::TrustedKeys::new([publisher.public()]),
                write_snapshot: false,
                ..Default::default()
            },
        );
        let text = render(&reporter.refresh().await.unwrap());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("HOST   STATE "), "{text}");
        let cells = |host: &str| -> Vec<String> {
            let l = lines.iter().find(|l| l.starts_with(host)).unwrap();
            l.split_whitespace().map(str::to_owned).collect()
        };
        assert_eq!(
            cells("web-1"),
            ["web-1", "up-to-date", "2", "2", &cells("web-1")[4], "-"]
        );
        assert_eq!(cells("web-2")[1..4], ["rolled-back", "1", "2"]);
        assert_eq!(cells("web-2")[5], "activation-failed");
        assert_eq!(
            cells("web-3"),
            ["web-3", "never-seen", "-", "2", "never", "-"]
        );
        assert!(
            text.contains("3 hosts: 1 rolled-back, 1 never-seen, 1 up-to-date; manifests verified with publisher-1"),
            "{text}"
        );
        // The hostile message is on one line, with no raw control or bidi character.
        let detail = lines
            .iter()
            .find(|l| l.starts_with("  web-2 activation-failed: boom "))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(detail.contains("\\u{1b}[2J") && detail.contains("second line \\u{202e}txt"));
        assert!(
            !text.chars().any(|c| c != '\n'
                && (c.is_control() || matches!(c, '\u{202e}' | '\u{200f}' | '\u{61c}'))),
            "{text:?}"
        );
        assert_eq!(clean("abcdef", 3), "abc…");
    }
}
