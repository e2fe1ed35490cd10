//! `dashboard/summary.json`: the reporter's incremental summary.
//!
//! Written by reporters only (the reporter's IAM policy is the only one that may put
//! under `dashboard/`), read back at the start of a refresh so that only objects whose
//! ETag changed are fetched again. Several reporters (Lambda containers, `serve`
//! processes) may share one bucket: each writes with compare-and-swap
//! (`put_if_match` on the ETag it read, `put_if_absent` when there was none) and simply
//! skips the write when it loses, since its answer is correct either way.
//!
//! Format (JSON, version 1, unknown fields refused):
//!
//! ```json
//! {
//!   "version": 1,
//!   "written_at": "2026-11-26T21:25:00Z",
//!   "trusted_keys": "<sha256 hex of the sorted trusted publisher keys, or empty>",
//!   "hosts": {
//!     "web-1": {
//!       "status": {"etag": "\"9b2c…\"", "outcome": {"report": { …StatusReport v1… }}},
//!       "manifest": {"etag": "\"51aa…\"", "outcome": {"verified": {
//!         "sequence": 7, "closure": "/nix/store/…", "issued_at": "…", "expires_at": "…",
//!         "activation": "switch", "signed_by": "publisher-1", "digest": "<sha256 hex>"}}}
//!     },
//!     "web-2": {
//!       "status": {"etag": "\"77e0…\"", "outcome": {"flagged": "status object … is malformed: …"}}
//!     }
//!   }
//! }
//! ```
//!
//! A status report is stored in core's own `StatusReport` form; manifests are stored
//! as the facts of their verification, which are reused only while `trusted_keys`
//! matches the reporter's configured keys (expiry is re-checked on every refresh).
//! Although only reporters write it, the file is read defensively: it is size-bounded
//! ([`MAX_SUMMARY_SIZE`]), parsed strictly, every report must name the host it is
//! filed under, and strings are held to the same bounds as the status format. A file
//! that fails any check is ignored (a cold refresh follows), never trusted in part.

use std::collections::BTreeMap;
use std::sync::Arc;

use fleet_core::manifest::Activation;
use fleet_core::status::{MAX_MESSAGE_LEN, MAX_SHORT_LEN};
use fleet_core::{HostName, StatusReport, StorePath, TrustedKeys};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::fleet::MAX_FLAG_LEN;

/// Format version of the summary.
pub const SUMMARY_VERSION: u32 = 1;
/// Largest summary read back (about 2 KiB per host at worst; 100,000 hosts take
/// ~60 MiB in practice).
pub const MAX_SUMMARY_SIZE: u64 = 512 * 1024 * 1024;

/// The facts of a verified manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestInfo {
    /// Its sequence number.
    pub sequence: u64,
    /// The closure it asks for.
    pub closure: StorePath,
    /// When it was signed.
    pub issued_at: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
    /// How the agent activates it.
    pub activation: Activation,
    /// The publisher key that signed it.
    pub signed_by: String,
    /// SHA-256 of the stored object, hex.
    pub digest: String,
}

/// What reading a host's `status.json` gave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum StatusOutcome {
    /// It parsed.
    Report(Arc<StatusReport>),
    /// It was refused; why.
    Flagged(String),
}

/// What verifying a host's manifest gave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum ManifestOutcome {
    /// Signature, host and format checked.
    Verified(Arc<ManifestInfo>),
    /// Refused; why.
    Flagged(String),
}

/// An outcome and the ETag of the object it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cached<T> {
    /// The object's ETag.
    pub etag: String,
    /// What it gave.
    pub outcome: T,
}

/// The cached outcomes of one host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachedHost {
    /// Its `status.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Cached<StatusOutcome>>,
    /// Its `manifest.json` (only when manifests are verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Cached<ManifestOutcome>>,
}

/// The summary file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryFile {
    /// Always [`SUMMARY_VERSION`].
    pub version: u32,
    /// When it was computed.
    pub written_at: Timestamp,
    /// [`fingerprint`] of the keys manifests were verified with.
    pub trusted_keys: String,
    /// Per host.
    pub hosts: BTreeMap<HostName, CachedHost>,
}

/// Fingerprint of a trusted key set: SHA-256 of the sorted keys, hex; empty for none.
pub fn fingerprint(keys: &TrustedKeys) -> String {
    if keys.is_empty() {
        return String::new();
    }
    let mut all: Vec<String> = keys.keys().iter().map(|k| k.to_nix_string()).collect();
    all.sort();
    hex::encode(Sha256::digest(all.join("\n").as_bytes()))
}

impl SummaryFile {
    /// A summary of `hosts` computed at `written_at`.
    pub fn new(
        written_at: Timestamp,
        trusted_keys: String,
        hosts: BTreeMap<HostName, CachedHost>,
    ) -> Self {
        Self {
            version: SUMMARY_VERSION,
            written_at,
            trusted_keys,
            hosts,
        }
    }

    /// Serialises the summary (compact: it is read by programs only).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("summary serialises")
    }

    /// Parses and checks a summary read from `key`. Errors name the key and the
    /// problem; the caller then ignores the file.
    pub fn parse(bytes: &[u8], key: &str) -> Result<Self, String> {
        if bytes.len() as u64 > MAX_SUMMARY_SIZE {
            return Err(format!(
                "{key} is {} bytes, larger than the {MAX_SUMMARY_SIZE}-byte bound",
                bytes.len()
            ));
        }
        let s: SummaryFile =
            serde_json::from_slice(bytes).map_err(|e| format!("{key} is malformed: {e}"))?;
        if s.version != SUMMARY_VERSION {
            return Err(format!(
                "{key} has version {}, this reporter writes {SUMMARY_VERSION}",
                s.version
            ));
        }
        if s.trusted_keys.len() > 64 {
            return Err(format!("{key}: field trusted_keys is too long"));
        }
        for (host, c) in &s.hosts {
            check_host(host, c).map_err(|why| format!("{key}: host {host}: {why}"))?;
        }
        Ok(s)
    }
}

fn check_len(field: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        return Err(format!(
            "field {field} is {} bytes, longer than {max}",
            s.len()
        ));
    }
    Ok(())
}

fn check_host(host: &HostName, c: &CachedHost) -> Result<(), String> {
    if let Some(st) = &c.status {
        check_len("status.etag", &st.etag, MAX_SHORT_LEN)?;
        match &st.outcome {
            StatusOutcome::Flagged(f) => check_len("status.flagged", f, MAX_FLAG_LEN)?,
            StatusOutcome::Report(r) => {
                if &r.host != host {
                    return Err(format!("its report names host {}", r.host));
                }
                check_len("agent_version", &r.agent_version, MAX_SHORT_LEN)?;
                for (f, v) in [
                    ("facts.nixos_version", &r.facts.nixos_version),
                    ("facts.kernel", &r.facts.kernel),
                    ("facts.boot_id", &r.facts.boot_id),
                ] {
                    check_len(f, v.as_deref().unwrap_or(""), MAX_SHORT_LEN)?;
                }
                if let Some(e) = &r.last_error {
                    check_len("last_error.kind", &e.kind, MAX_SHORT_LEN)?;
                    check_len("last_error.message", &e.message, MAX_MESSAGE_LEN)?;
                }
            }
        }
    }
    if let Some(m) = &c.manifest {
        check_len("manifest.etag", &m.etag, MAX_SHORT_LEN)?;
        match &m.outcome {
            ManifestOutcome::Flagged(f) => check_len("manifest.flagged", f, MAX_FLAG_LEN)?,
            ManifestOutcome::Verified(v) => {
                check_len("manifest.signed_by", &v.signed_by, MAX_SHORT_LEN)?;
                check_len("manifest.digest", &v.digest, 64)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_core::status::{AgentState, Facts, ReportedError};

    fn sample() -> SummaryFile {
        let h = HostName::new("web-1").unwrap();
        let report = StatusReport {
            version: 1,
            host: h.clone(),
            agent_version: "0.1.0".into(),
            state: AgentState::Failed,
            desired: None,
            current: None,
            last_error: Some(ReportedError {
                kind: "x".into(),
                message: "<script>alert(1)</script>".into(),
                at: "2026-11-26T12:00:00Z".parse().unwrap(),
            }),
            facts: Facts::default(),
            time: "2026-11-26T12:00:00Z".parse().unwrap(),
        };
        let mut hosts = BTreeMap::new();
        hosts.insert(
            h,
            CachedHost {
                status: Some(Cached {
                    etag: "e1".into(),
                    outcome: StatusOutcome::Report(Arc::new(report)),
                }),
                manifest: Some(Cached {
                    etag: "e2".into(),
                    outcome: ManifestOutcome::Flagged("bad signature".into()),
                }),
            },
        );
        SummaryFile::new(
            "2026-11-26T12:00:00Z".parse().unwrap(),
            String::new(),
            hosts,
        )
    }

    const KEY: &str = "dashboard/summary.json";

    #[test]
    fn round_trips() {
        let s = sample();
        assert_eq!(SummaryFile::parse(&s.to_bytes(), KEY).unwrap(), s);
    }

    #[test]
    fn refuses_a_report_filed_under_another_host() {
        let text = String::from_utf8(sample().to_bytes()).unwrap();
        let moved = text.replacen("\"web-1\":", "\"web-2\":", 1);
        let e = SummaryFile::parse(moved.as_bytes(), KEY).unwrap_err();
        assert!(e.contains("web-2") && e.contains(KEY), "{e}");
    }

    #[test]
    fn refuses_malformed_and_oversized_fields() {
        for bad in [
            "{}".to_owned(),
            "[]".to_owned(),
            String::from_utf8(sample().to_bytes())
                .unwrap()
                .replace("\"version\":1", "\"version\":2"),
            String::from_utf8(sample().to_bytes())
                .unwrap()
                .replace("bad signature", &"x".repeat(MAX_FLAG_LEN + 1)),
            String::from_utf8(sample().to_bytes())
                .unwrap()
                .replacen("{", "{\"extra\":1,", 1),
        ] {
            let e = SummaryFile::parse(bad.as_bytes(), KEY).unwrap_err();
            assert!(e.contains(KEY), "{e}");
        }
    }

    #[test]
    fn fingerprint_ignores_order_and_is_empty_for_no_keys() {
        let a = fleet_core::SecretKey::generate("a").unwrap().public();
        let b = fleet_core::SecretKey::generate("b").unwrap().public();
        assert_eq!(
            fingerprint(&TrustedKeys::new([a.clone(), b.clone()])),
            fingerprint(&TrustedKeys::new([b, a.clone()]))
        );
        assert_ne!(fingerprint(&TrustedKeys::new([a])), "");
        assert_eq!(fingerprint(&TrustedKeys::default()), "");
    }
}
