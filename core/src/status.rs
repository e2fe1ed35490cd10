//! `StatusReport` v1: what an agent reports about its host.
//!
//! Written by the host's agent to `status/<host>/status.json` (the latest) and to
//! `status/<host>/events/<time>-<seq>.json` (one per state change), read by the
//! reporter and the publisher. JSON, exactly these fields:
//!
//! ```json
//! {
//!   "version": 1,
//!   "host": "web-1",
//!   "agent_version": "0.1.0",
//!   "state": "healthy",
//!   "desired": {"sequence": 7, "closure": "/nix/store/…-nixos-system-web-1"},
//!   "current": {"sequence": 7, "closure": "/nix/store/…-nixos-system-web-1"},
//!   "last_error": null,
//!   "facts": {"nixos_version": "24.05", "kernel": "6.6.30", "uptime_seconds": 3600,
//!             "boot_id": "0b5d…", "reboot_needed": false},
//!   "time": "2026-11-26T21:25:00Z"
//! }
//! ```
//!
//! An agent with an identity key (`fleet-agent init`) adds a last field,
//! `"signature": {"keyid": "web-1-identity", "sig": "<base64>"}` (see
//! `crate::status_sig`); readers that know the host's registry entry check it.
//!
//! Anyone holding a host's credentials can write its status, so for readers a status
//! object is hostile input: [`StatusReport::parse`] bounds its size, refuses unknown
//! fields and over-long strings, and checks that the `host` field matches the key the
//! object was read from. Display code must still escape every string.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error_kind::ErrorKind;
use crate::host::HostName;
use crate::store_path::StorePath;

/// Largest status object accepted, in bytes.
pub const MAX_STATUS_SIZE: u64 = 64 * 1024;
/// Longest error message kept.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Longest short string (versions, kernel, boot id, error kind).
pub const MAX_SHORT_LEN: usize = 256;

/// Where an agent is in its cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentState {
    /// Started, no cycle finished yet.
    Starting,
    /// Reading and verifying the manifest.
    Checking,
    /// Downloading and verifying store paths.
    Fetching,
    /// Running `switch-to-configuration`.
    Activating,
    /// Running health checks on the new generation.
    CheckingHealth,
    /// Running the desired generation, health checks passed.
    Healthy,
    /// The new generation failed; the previous one was restored.
    RolledBack,
    /// The newest manifest or its closure was refused (bad signature, expired, …);
    /// the running generation is kept.
    Refused,
    /// Something failed and no rollback was possible or needed.
    Failed,
    /// An operator paused deploys on the host (`fleet-agent pause`): it keeps polling
    /// and reporting; `desired` is what it will apply once resumed.
    Paused,
    /// The host's manifest is a tombstone (`fleet-publish retire`): it applies
    /// nothing and only reports.
    Retired,
    /// A `boot` activation set the new generation as the boot default; it runs after
    /// the next reboot (which the agent's `reboot` policy may start).
    RebootPending,
    /// The desired closure is downloaded and verified, waiting for a maintenance
    /// window or the manifest's `activate_after`.
    Staged,
}

impl AgentState {
    /// Every state.
    pub const ALL: [AgentState; 13] = [
        AgentState::Starting,
        AgentState::Checking,
        AgentState::Fetching,
        AgentState::Activating,
        AgentState::CheckingHealth,
        AgentState::Healthy,
        AgentState::RolledBack,
        AgentState::Refused,
        AgentState::Failed,
        AgentState::Paused,
        AgentState::Retired,
        AgentState::RebootPending,
        AgentState::Staged,
    ];

    /// The state's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Starting => "starting",
            AgentState::Checking => "checking",
            AgentState::Fetching => "fetching",
            AgentState::Activating => "activating",
            AgentState::CheckingHealth => "checking-health",
            AgentState::Healthy => "healthy",
            AgentState::RolledBack => "rolled-back",
            AgentState::Refused => "refused",
            AgentState::Failed => "failed",
            AgentState::Paused => "paused",
            AgentState::Retired => "retired",
            AgentState::RebootPending => "reboot-pending",
            AgentState::Staged => "staged",
        }
    }
}

impl std::fmt::Display for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One deployed system: the manifest sequence and its closure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generation {
    /// Sequence of the manifest that named it; `None` for a system the agent found
    /// running before it deployed anything.
    pub sequence: Option<u64>,
    /// The system closure.
    pub closure: StorePath,
}

/// The last error, as a stable machine-readable kind plus a message for humans.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportedError {
    /// Stable kind, such as `manifest-bad-signature` or `health-check-failed`.
    pub kind: ErrorKind,
    /// What went wrong, naming the key, field or path.
    pub message: String,
    /// When it happened.
    pub at: Timestamp,
}

/// Facts about the host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    /// `VERSION_ID` from `/etc/os-release`.
    pub nixos_version: Option<String>,
    /// Running kernel release.
    pub kernel: Option<String>,
    /// Seconds since boot.
    pub uptime_seconds: Option<u64>,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: Option<String>,
    /// Whether the booted kernel differs from the current system's.
    pub reboot_needed: Option<bool>,
}

/// A status report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    /// Format version; always 1 here.
    pub version: u32,
    /// The reporting host.
    pub host: HostName,
    /// Version of the agent binary.
    pub agent_version: String,
    /// Where the agent is.
    pub state: AgentState,
    /// What the newest accepted manifest asks for.
    pub desired: Option<Generation>,
    /// What runs now.
    pub current: Option<Generation>,
    /// The last error, kept until a cycle succeeds. (This and the other parts most
    /// reports lack are boxed: a reporter holds 100,000 reports at once.)
    pub last_error: Option<Box<ReportedError>>,
    /// Facts about the host.
    pub facts: Facts,
    /// When the report was made.
    pub time: Timestamp,
    /// The operator's local pause while one holds (`fleet-agent pause`); absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Box<PauseNote>>,
    /// The agent's signature with its identity key (`crate::status_sig`); absent
    /// when the host has no identity key (set-ups without enrollment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Box<StatusSignature>>,
}

/// A status report's signature: ed25519 by the host's identity key (see
/// `crate::status_sig` for what is signed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusSignature {
    /// Name of the identity key.
    pub keyid: String,
    /// Base64 of the 64 signature bytes.
    pub sig: String,
}

/// A local pause as the status reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseNote {
    /// When it was set.
    pub since: Timestamp,
    /// When it ends by itself; `None`: at `fleet-agent resume`.
    pub until: Option<Timestamp>,
    /// Why, in the operator's words (at most [`MAX_MESSAGE_LEN`] bytes).
    pub reason: Option<String>,
}

/// Why a status object was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// Larger than [`MAX_STATUS_SIZE`].
    #[error("status object {key} is {size} bytes, larger than the {limit}-byte bound")]
    TooLarge {
        /// The key it was read from.
        key: String,
        /// Its size.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// Does not match the schema.
    #[error("status object {key} is malformed: {why}")]
    Malformed {
        /// The key it was read from.
        key: String,
        /// What is wrong.
        why: String,
    },
    /// Names a host other than the one whose prefix it was read from.
    #[error(
        "status object {key} claims to be from host {claimed:?}; ignoring it (a host may only report for itself)"
    )]
    WrongHost {
        /// The key it was read from.
        key: String,
        /// The host it names.
        claimed: String,
    },
}

impl StatusReport {
    /// Serialises the report for storage.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("status serialises");
        v.push(b'\n');
        v
    }

    /// Parses a status object read from `key`, which belongs to host `key_host`.
    pub fn parse(bytes: &[u8], key: &str, key_host: &HostName) -> Result<Self, StatusError> {
        if bytes.len() as u64 > MAX_STATUS_SIZE {
            return Err(StatusError::TooLarge {
                key: key.to_owned(),
                size: bytes.len() as u64,
                limit: MAX_STATUS_SIZE,
            });
        }
        let malformed = |why: String| StatusError::Malformed {
            key: key.to_owned(),
            why,
        };
        // Check the claimed host before the full schema, so a wrong-host object is
        // reported as such even if it is otherwise malformed.
        #[derive(Deserialize)]
        struct HostOnly {
            host: serde_json::Value,
        }
        if let Ok(h) = serde_json::from_slice::<HostOnly>(bytes)
            && h.host.as_str() != Some(key_host.as_str())
        {
            return Err(StatusError::WrongHost {
                key: key.to_owned(),
                claimed: h.host.to_string().chars().take(80).collect(),
            });
        }
        let report: StatusReport =
            serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        if report.version != 1 {
            return Err(malformed(format!(
                "format version {} is not 1 (agent newer than this reader?)",
                report.version
            )));
        }
        let short = |field: &str, v: Option<&String>| -> Result<(), StatusError> {
            match v {
                Some(s) if s.len() > MAX_SHORT_LEN => Err(malformed(format!(
                    "field {field} is {} bytes, longer than {MAX_SHORT_LEN}",
                    s.len()
                ))),
                _ => Ok(()),
            }
        };
        short("agent_version", Some(&report.agent_version))?;
        short("facts.nixos_version", report.facts.nixos_version.as_ref())?;
        short("facts.kernel", report.facts.kernel.as_ref())?;
        short("facts.boot_id", report.facts.boot_id.as_ref())?;
        if let Some(sig) = &report.signature {
            short("signature.keyid", Some(&sig.keyid))?;
            short("signature.sig", Some(&sig.sig))?;
        }
        if let Some(reason) = report.pause.as_ref().and_then(|p| p.reason.as_ref())
            && reason.len() > MAX_MESSAGE_LEN
        {
            return Err(malformed(format!(
                "field pause.reason is {} bytes, longer than {MAX_MESSAGE_LEN}",
                reason.len()
            )));
        }
        if let Some(e) = &report.last_error {
            short("last_error.kind", Some(&e.kind.to_string()))?;
            if e.message.len() > MAX_MESSAGE_LEN {
                return Err(malformed(format!(
                    "field last_error.message is {} bytes, longer than {MAX_MESSAGE_LEN}",
                    e.message.len()
                )));
            }
        }
        Ok(report)
    }
}

/// Cuts `message` to at most [`MAX_MESSAGE_LEN`] bytes on a character boundary, so an
/// agent never writes a report its readers would refuse.
pub fn truncate_message(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_LEN {
        return message.to_owned();
    }
    let mut end = MAX_MESSAGE_LEN - 3;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostName {
        HostName::new("web-1").unwrap()
    }

    fn report() -> StatusReport {
        let closure = StorePath::new("/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-top").unwrap();
        StatusReport {
            version: 1,
            host: host(),
            agent_version: "0.1.0".into(),
            state: AgentState::Healthy,
            desired: Some(Generation {
                sequence: Some(7),
                closure: closure.clone(),
            }),
            current: Some(Generation {
                sequence: Some(7),
                closure,
            }),
            last_error: None,
            facts: Facts {
                nixos_version: Some("24.05".into()),
                kernel: Some("6.6.30".into()),
                uptime_seconds: Some(3600),
                boot_id: Some("0b5d".into()),
                reboot_needed: Some(false),
            },
            time: "2026-11-26T21:25:00Z".parse().unwrap(),
            pause: None,
            signature: None,
        }
    }

    const KEY: &str = "status/web-1/status.json";

    #[test]
    fn round_trips() {
        let r = report();
        assert_eq!(StatusReport::parse(&r.to_bytes(), KEY, &host()).unwrap(), r);
    }

    #[test]
    fn wrong_host_is_flagged() {
        let mut r = report();
        r.host = HostName::new("web-2").unwrap();
        let err = StatusReport::parse(&r.to_bytes(), KEY, &host()).unwrap_err();
        assert!(matches!(err, StatusError::WrongHost { .. }), "{err}");
        // Even when the claimed host is not a valid name at all.
        let bad = String::from_utf8(report().to_bytes())
            .unwrap()
            .replace("\"web-1\"", "\"<script>\"");
        assert!(matches!(
            StatusReport::parse(bad.as_bytes(), KEY, &host()),
            Err(StatusError::WrongHost { .. })
        ));
    }

    #[test]
    fn hostile_objects_are_refused_with_the_key() {
        let big = vec![b' '; MAX_STATUS_SIZE as usize + 1];
        assert!(matches!(
            StatusReport::parse(&big, KEY, &host()),
            Err(StatusError::TooLarge { .. })
        ));
        for junk in [
            "not json".to_owned(),
            "{}".to_owned(),
            String::from_utf8(report().to_bytes())
                .unwrap()
                .replacen('{', "{\"x\":1,", 1),
            String::from_utf8(report().to_bytes())
                .unwrap()
                .replace("\"healthy\"", "\"owned\""),
            String::from_utf8(report().to_bytes())
                .unwrap()
                .replace("\"version\": 1", "\"version\": 2"),
        ] {
            let err = StatusReport::parse(junk.as_bytes(), KEY, &host()).unwrap_err();
            assert!(
                matches!(err, StatusError::Malformed { .. }),
                "{junk}: {err}"
            );
            assert!(err.to_string().contains(KEY));
        }
        let mut r = report();
        r.agent_version = "x".repeat(MAX_SHORT_LEN + 1);
        let err = StatusReport::parse(&r.to_bytes(), KEY, &host()).unwrap_err();
        assert!(err.to_string().contains("agent_version"), "{err}");
    }

    #[test]
    fn truncation_keeps_reports_parseable() {
        let mut r = report();
        r.last_error = Some(Box::new(ReportedError {
            kind: ErrorKind::Other("x".into()),
            message: truncate_message(&"é".repeat(MAX_MESSAGE_LEN)),
            at: r.time,
        }));
        StatusReport::parse(&r.to_bytes(), KEY, &host()).unwrap();
    }
}
