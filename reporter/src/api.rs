//! The JSON API's documents: `/api/v1/summary`, `/api/v1/hosts` (filtered, sorted,
//! paged) and `/api/v1/hosts/<host>`.
//!
//! Every string that came from a host is passed through as a JSON string; the page
//! puts it into the DOM with `textContent` only. Host lists are paged (at most
//! [`MAX_LIMIT`] rows per answer) so one answer stays well under Lambda's 6 MB
//! response limit whatever the fleet size.
//!
//! `/api/v1/hosts` query parameters:
//!
//! | parameter | meaning |
//! |---|---|
//! | `state` | comma-separated states to keep (`flagged,failed,…`) |
//! | `q` | substring of the host name |
//! | `sort` | `severity` (default: failing first), `host`, `last-seen`, `current`, `desired`; `-` before it reverses |
//! | `offset`, `limit` | paging; `limit` is 1 to 1000, default 200 |

use std::cmp::Ordering;

use fleet_core::status::MAX_SHORT_LEN;
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::fleet::Fleet;
use crate::outcome::{HostRow, HostState, ManifestView, StatusOutcome, StatusSignatureView};

/// Default page size.
pub const DEFAULT_LIMIT: usize = 200;
/// Largest page size.
pub const MAX_LIMIT: usize = 1000;

/// A host list query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostQuery {
    /// States to keep (empty: all).
    pub states: Vec<HostState>,
    /// Substring of the host name.
    pub q: String,
    /// Sort field.
    pub sort: SortBy,
    /// Reverse the order.
    pub desc: bool,
    /// Rows to skip.
    pub offset: usize,
    /// Rows to return.
    pub limit: usize,
}

/// Sort fields of the host list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortBy {
    /// Failing first, then by name.
    Severity,
    /// By name.
    Host,
    /// Oldest report first.
    LastSeen,
    /// By current sequence.
    Current,
    /// By desired sequence.
    Desired,
}

impl HostQuery {
    /// Parses a URL query string. Errors name the parameter.
    pub fn parse(query: &str) -> Result<Self, String> {
        let mut out = HostQuery {
            states: vec![],
            q: String::new(),
            sort: SortBy::Severity,
            desc: false,
            offset: 0,
            limit: DEFAULT_LIMIT,
        };
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "state" => {
                    for s in v.split(',').filter(|s| !s.is_empty()) {
                        out.states.push(HostState::parse(s).ok_or_else(|| {
                            format!(
                                "parameter state: {:?} is not one of {}",
                                s.chars().take(40).collect::<String>(),
                                HostState::ALL.map(|s| s.as_str()).join(", ")
                            )
                        })?);
                    }
                }
                "q" => {
                    if v.len() > 63 {
                        return Err("parameter q is longer than a host name (63)".into());
                    }
                    out.q = v.into_owned();
                }
                "sort" => {
                    let (desc, field) = match v.strip_prefix('-') {
                        Some(f) => (true, f),
                        None => (false, &*v),
                    };
                    out.desc = desc;
                    out.sort = match field {
                        "severity" | "state" => SortBy::Severity,
                        "host" => SortBy::Host,
                        "last-seen" => SortBy::LastSeen,
                        "current" => SortBy::Current,
                        "desired" => SortBy::Desired,
                        _ => {
                            return Err(
                                "parameter sort: use severity, host, last-seen, current or desired (prefix - to reverse)"
                                    .into(),
                            );
                        }
                    };
                }
                "offset" => {
                    out.offset = v
                        .parse()
                        .map_err(|_| "parameter offset: give a whole number".to_owned())?
                }
                "limit" => {
                    let n: usize = v
                        .parse()
                        .map_err(|_| "parameter limit: give a whole number".to_owned())?;
                    if !(1..=MAX_LIMIT).contains(&n) {
                        return Err(format!("parameter limit: give 1 to {MAX_LIMIT}"));
                    }
                    out.limit = n;
                }
                // Unknown parameters (cache busters, Lambda's own) are ignored.
                _ => {}
            }
        }
        Ok(out)
    }
}

fn cmp_rows(a: &HostRow, b: &HostRow, by: SortBy) -> Ordering {
    let seq = |g: Option<&fleet_core::status::Generation>| g.and_then(|g| g.sequence);
    let primary = match by {
        SortBy::Severity => a.state.cmp(&b.state),
        SortBy::Host => Ordering::Equal,
        // Never-seen hosts count as the oldest.
        SortBy::LastSeen => a.last_seen.cmp(&b.last_seen),
        SortBy::Current => seq(a.report.as_ref().and_then(|r| r.current.as_ref()))
            .cmp(&seq(b.report.as_ref().and_then(|r| r.current.as_ref()))),
        SortBy::Desired => seq(a.desired.as_ref()).cmp(&seq(b.desired.as_ref())),
    };
    primary.then_with(|| a.host.cmp(&b.host))
}

/// `/api/v1/hosts`: one page of the filtered, sorted host list.
pub fn hosts(fleet: &Fleet, query: &HostQuery) -> Value {
    let mut rows: Vec<&HostRow> = fleet
        .hosts
        .iter()
        .map(|r| &**r)
        .filter(|r| query.states.is_empty() || query.states.contains(&r.state))
        .filter(|r| query.q.is_empty() || r.host.as_str().contains(&query.q))
        .collect();
    rows.sort_by(|a, b| {
        let o = cmp_rows(a, b, query.sort);
        if query.desc { o.reverse() } else { o }
    });
    let matched = rows.len();
    let page: Vec<Value> = rows
        .into_iter()
        .skip(query.offset)
        .take(query.limit)
        .map(|r| host_row(r, fleet.generated_at))
        .collect();
    json!({
        "generated_at": fleet.generated_at,
        "total": fleet.hosts.len(),
        "matched": matched,
        "offset": query.offset,
        "limit": query.limit,
        "hosts": page,
    })
}

/// One host's row as JSON.
pub fn host_row(r: &HostRow, now: Timestamp) -> Value {
    let rep = r.report.as_deref();
    json!({
        "host": r.host,
        "state": r.state,
        "agent_state": rep.map(|x| x.state),
        "desired": r.desired,
        "desired_source": r.desired_source,
        "current": rep.and_then(|x| x.current.as_ref()),
        "last_seen": r.last_seen,
        "age_seconds": r.last_seen.map(|t| now.duration_since(t).as_secs()),
        "reported_at": rep.map(|x| x.time),
        "agent_version": rep.map(|x| &x.agent_version),
        "last_error": rep.and_then(|x| x.last_error.as_ref()),
        "facts": rep.map(|x| &x.facts),
        "manifest": manifest(&r.manifest),
        "flags": r.flags,
        "notes": r.notes,
        "status_signature": status_signature(&r.status_signature),
        "hold": r.hold,
    })
}

fn status_signature(s: &StatusSignatureView) -> Value {
    match s {
        StatusSignatureView::Unverified => json!({"status": "unverified"}),
        StatusSignatureView::Verified(key) => json!({"status": "verified", "key": key}),
        StatusSignatureView::Invalid(e) => json!({"status": "invalid", "error": e}),
    }
}

fn manifest(m: &ManifestView) -> Value {
    match m {
        ManifestView::Missing => json!({"status": "missing"}),
        ManifestView::NotVerified => json!({
            "status": "not-verified",
            "reason": "no trusted key configured",
        }),
        ManifestView::Verified(i) => json!({
            "status": "verified",
            "sequence": i.sequence,
            "closure": i.closure,
            "issued_at": i.issued_at,
            "expires_at": i.expires_at,
            "activation": i.activation,
            "signed_by": i.signed_by,
        }),
        ManifestView::Flagged(f) => json!({"status": "invalid", "error": f}),
    }
}

/// `/api/v1/summary`.
pub fn summary(fleet: &Fleet) -> Value {
    let counts: serde_json::Map<String, Value> = fleet
        .counts()
        .into_iter()
        .map(|(s, n)| (s.as_str().to_owned(), n.into()))
        .collect();
    let verification = if fleet.trusted_key_names.is_empty() {
        json!({"verified": false, "note": "not verified (no trusted key configured)", "keys": []})
    } else {
        json!({"verified": true, "keys": fleet.trusted_key_names})
    };
    json!({
        "generated_at": fleet.generated_at,
        "hosts": fleet.hosts.len(),
        "active_hosts": fleet.active().count(),
        "retired_hosts": fleet.retired().map(|r| &r.host).collect::<Vec<_>>(),
        "held_hosts": fleet
            .held()
            .map(|r| json!({"host": r.host, "hold": r.hold}))
            .collect::<Vec<_>>(),
        "gate": {
            "ok": fleet.failing_gate().next().is_none(),
            "failing": fleet
                .failing_gate()
                .map(|r| json!({"host": r.host, "state": r.state}))
                .collect::<Vec<_>>(),
        },
        "states": counts,
        "stale_after_seconds": fleet.stale_after.as_secs(),
        "manifests": verification,
        "ignored_objects": fleet.ignored,
        "refresh": fleet.stats,
    })
}

/// One event of a host (a status object under `status/<host>/events/`).
#[derive(Clone, Debug)]
pub struct Event {
    /// Its key.
    pub key: String,
    /// The store's last-modified time.
    pub last_modified: Timestamp,
    /// What it held.
    pub outcome: StatusOutcome,
    /// Its signature checked against the host's registry entry.
    pub signature: StatusSignatureView,
}

/// `/api/v1/hosts/<host>`: the row plus its newest events.
pub fn host_detail(row: &HostRow, now: Timestamp, events: Result<Vec<Event>, String>) -> Value {
    let (events, events_error) = match events {
        Ok(ev) => (ev, None),
        Err(e) => (vec![], Some(e)),
    };
    let events: Vec<Value> = events
        .into_iter()
        .map(|e| {
            let key: String = e.key.chars().take(MAX_SHORT_LEN + 64).collect();
            match e.outcome {
                StatusOutcome::Report(r) => json!({
                    "key": key,
                    "last_modified": e.last_modified,
                    "report": r,
                    "signature": status_signature(&e.signature),
                }),
                StatusOutcome::Flagged(f) => json!({
                    "key": key,
                    "last_modified": e.last_modified,
                    "flag": f,
                }),
            }
        })
        .collect();
    json!({
        "host": host_row(row, now),
        "events": events,
        "events_error": events_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_queries() {
        let q = HostQuery::parse("state=failed,stale&q=web&sort=-last-seen&offset=5&limit=10&_=1")
            .unwrap();
        assert_eq!(q.states, [HostState::Failed, HostState::Stale]);
        assert_eq!(
            (q.q.as_str(), q.sort, q.desc),
            ("web", SortBy::LastSeen, true)
        );
        assert_eq!((q.offset, q.limit), (5, 10));
        assert_eq!(HostQuery::parse("").unwrap().limit, DEFAULT_LIMIT);
        for (bad, want) in [
            ("state=%3Cscript%3E", "parameter state"),
            ("sort=evil", "parameter sort"),
            ("limit=0", "parameter limit"),
            ("limit=100000", "parameter limit"),
            ("offset=-1", "parameter offset"),
        ] {
            let e = HostQuery::parse(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
