//! The bucket layout: every object key fleet reads or writes, as a typed value.
//!
//! Keys are relative to the bucket's root prefix (see [`crate::bucket::Bucket`]):
//!
//! | key | written by | read by |
//! |---|---|---|
//! | `cache/nix-cache-info` | publisher | agents, `nix` |
//! | `cache/<hash>.narinfo` | publisher | agents, `nix` |
//! | `cache/nar/<filehash>.nar[.zst\|.xz]` | publisher | agents, `nix` |
//! | `hosts/<host>/manifest.json` | publisher | that host's agent |
//! | `hosts/<host>/hold.json` | publisher | publisher, reporter |
//! | `status/<host>/status.json` | that host's agent | reporter, publisher |
//! | `status/<host>/events/<time>-<seq>.json` | that host's agent | reporter, publisher |
//! | `audit/<time>-<host>-<seq>.json` | publisher | admins |
//! | `releases/<id>.json` | publisher | publisher, reporter |
//! | `releases/<id>/rollout.json` | publisher | publisher, reporter |
//! | `dashboard/snapshot.json` | reporter | reporter |
//! | `dashboard/snapshot-delta.json` | reporter | reporter |
//! | `registry/hosts/<host>.json` | admin (`fleet-publish enroll`) | reporter |
//! | `audit/chain/<index>.json` | publisher | publisher, admins |
//! | `audit/head.json` | publisher | publisher |
//! | `trust/<version>.root.json` | root key holders | agents, admins |
//! | `trust/root.json` | root key holders | agents, admins |
//! | `cache/gc-condemned.json` | `fleet-publish gc` | `fleet-publish gc`, publisher |
//! | `changes/<day>/<time>/<host>` | that host's agent | reporter |
//!
//! [`LAYOUT`] holds the same table; `core/tests/formats_doc.rs` checks that this one
//! and `docs/formats.md`'s equal it, and that each row's key is what its constructor
//! builds. A rollout's state lives beside its release under `releases/`, so the
//! roles that may read or write releases cover it.
//!
//! A [`Key`] can only be built through the constructors below, each of which takes
//! validated parts ([`HostName`], [`ObjectName`]), so no user input can produce `..`,
//! an empty segment or a key in another host's prefix.

use std::fmt;

use crate::host::HostName;

/// Folder of the Nix binary cache.
pub const CACHE_DIR: &str = "cache";
/// Folder of per-host manifests.
pub const HOSTS_DIR: &str = "hosts";
/// Folder of per-host status objects.
pub const STATUS_DIR: &str = "status";
/// Folder of signed releases.
pub const RELEASES_DIR: &str = "releases";
/// Folder of audit entries.
pub const AUDIT_DIR: &str = "audit";
/// Sub-folder of [`AUDIT_DIR`] holding the signed audit chain.
pub const AUDIT_CHAIN_DIR: &str = "chain";

/// Folder of the root of trust.
pub const TRUST_DIR: &str = "trust";
/// Folder the reporter keeps its incremental snapshot in.
pub const DASHBOARD_DIR: &str = "dashboard";
/// Folder of the signed host registry.
pub const REGISTRY_DIR: &str = "registry";
/// Folder of the change feed: empty markers agents write beside each status write,
/// under time-ordered keys, so a reporter can list what changed since its last
/// refresh ([`Key::change_marker`]).
pub const CHANGES_DIR: &str = "changes";

/// Longest object name accepted in a key segment.
pub const MAX_OBJECT_NAME_LEN: usize = 200;

/// One row of the bucket layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutRow {
    /// The key, with `<placeholders>` and `[optional|alternative]` endings.
    pub pattern: &'static str,
    /// Who writes it.
    pub written_by: &'static str,
    /// Who reads it.
    pub read_by: &'static str,
}

/// Every key fleet reads or writes (the table in the module docs and in
/// `docs/formats.md`).
pub const LAYOUT: &[LayoutRow] = &[
    LayoutRow {
        pattern: "cache/nix-cache-info",
        written_by: "publisher",
        read_by: "agents, `nix`",
    },
    LayoutRow {
        pattern: "cache/<hash>.narinfo",
        written_by: "publisher",
        read_by: "agents, `nix`",
    },
    LayoutRow {
        pattern: "cache/nar/<filehash>.nar[.zst|.xz]",
        written_by: "publisher",
        read_by: "agents, `nix`",
    },
    LayoutRow {
        pattern: "hosts/<host>/manifest.json",
        written_by: "publisher",
        read_by: "that host's agent",
    },
    LayoutRow {
        pattern: "hosts/<host>/hold.json",
        written_by: "publisher",
        read_by: "publisher, reporter",
    },
    LayoutRow {
        pattern: "status/<host>/status.json",
        written_by: "that host's agent",
        read_by: "reporter, publisher",
    },
    LayoutRow {
        pattern: "status/<host>/events/<time>-<seq>.json",
        written_by: "that host's agent",
        read_by: "reporter, publisher",
    },
    LayoutRow {
        pattern: "audit/<time>-<host>-<seq>.json",
        written_by: "publisher",
        read_by: "admins",
    },
    LayoutRow {
        pattern: "releases/<id>.json",
        written_by: "publisher",
        read_by: "publisher, reporter",
    },
    LayoutRow {
        pattern: "releases/<id>/rollout.json",
        written_by: "publisher",
        read_by: "publisher, reporter",
    },
    LayoutRow {
        pattern: "dashboard/snapshot.json",
        written_by: "reporter",
        read_by: "reporter",
    },
    LayoutRow {
        pattern: "dashboard/snapshot-delta.json",
        written_by: "reporter",
        read_by: "reporter",
    },
    LayoutRow {
        pattern: "registry/hosts/<host>.json",
        written_by: "admin (`fleet-publish enroll`)",
        read_by: "reporter",
    },
    LayoutRow {
        pattern: "audit/chain/<index>.json",
        written_by: "publisher",
        read_by: "publisher, admins",
    },
    LayoutRow {
        pattern: "audit/head.json",
        written_by: "publisher",
        read_by: "publisher",
    },
    LayoutRow {
        pattern: "trust/<version>.root.json",
        written_by: "root key holders",
        read_by: "agents, admins",
    },
    LayoutRow {
        pattern: "trust/root.json",
        written_by: "root key holders",
        read_by: "agents, admins",
    },
    LayoutRow {
        pattern: "cache/gc-condemned.json",
        written_by: "`fleet-publish gc`",
        read_by: "`fleet-publish gc`, publisher",
    },
    LayoutRow {
        pattern: "changes/<day>/<time>/<host>",
        written_by: "that host's agent",
        read_by: "reporter",
    },
];

/// A key in the bucket, relative to its root prefix.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(String);

/// A key prefix (folder) for listing, relative to the bucket's root prefix; always ends in `/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyPrefix(String);

/// One path segment chosen by a program rather than by the layout: an event or
/// audit entry name, a release id, a NAR file name.
///
/// Allowed: 1 to 200 characters of `A-Z a-z 0-9 . _ -`, not starting with `.`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectName(String);

/// Why a string is not a valid [`ObjectName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "object name {name:?} is not allowed in a bucket key: use 1 to 200 characters of A-Z a-z 0-9 . _ - not starting with `.`"
)]
pub struct ObjectNameError {
    /// The offending name (truncated for display).
    pub name: String,
}

impl ObjectName {
    /// The name of a host's status event number `counter`, made at `time`:
    /// `<YYYYmmddTHHMMSSZ>-<counter, 6 digits or more>`. Names sort by time, and by
    /// counter within one second, so a listing is the host's history in order.
    pub fn status_event(time: jiff::Timestamp, counter: u64) -> Self {
        Self(format!("{}-{counter:06}", time.strftime("%Y%m%dT%H%M%SZ")))
    }

    /// The name of the audit entry for `host`'s manifest `sequence`, written at
    /// `time`: `<YYYYmmddTHHMMSS.mmmZ>-<host>-<sequence>`.
    pub fn audit_entry(time: jiff::Timestamp, host: &HostName, sequence: u64) -> Self {
        // Digits, letters, `.`, `-` and a host name (a DNS label): always valid.
        Self(format!(
            "{}-{host}-{sequence}",
            time.strftime("%Y%m%dT%H%M%S%.3fZ")
        ))
    }

    /// Validates `name` as one key segment.
    pub fn new(name: &str) -> Result<Self, ObjectNameError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_OBJECT_NAME_LEN
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(ObjectNameError {
                name: name.chars().take(MAX_OBJECT_NAME_LEN + 10).collect(),
            })
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Key {
    /// `cache/nix-cache-info`: the binary cache's description, read by `nix`.
    pub fn cache_info() -> Self {
        Self(format!("{CACHE_DIR}/nix-cache-info"))
    }

    /// `cache/<hash>.narinfo` for a store path's 32-character hash part.
    pub fn narinfo(hash: &crate::store_path::StorePathHash) -> Self {
        Self(format!("{CACHE_DIR}/{hash}.narinfo"))
    }

    /// `cache/<url>` for a narinfo's `URL:` field (for example `nar/<filehash>.nar.zst`).
    ///
    /// The URL is untrusted input, so it must be exactly `nar/<ObjectName>`.
    pub fn nar(url: &str) -> Result<Self, ObjectNameError> {
        let name = url
            .strip_prefix("nar/")
            .ok_or_else(|| ObjectNameError { name: url.into() })?;
        let name = ObjectName::new(name)?;
        Ok(Self(format!("{CACHE_DIR}/nar/{name}")))
    }

    /// `hosts/<host>/manifest.json`: the signed manifest of one host.
    pub fn manifest(host: &HostName) -> Self {
        Self(format!("{HOSTS_DIR}/{host}/manifest.json"))
    }

    /// `hosts/<host>/hold.json`: the signed hold of one host (`crate::hold`).
    pub fn hold(host: &HostName) -> Self {
        Self(format!("{HOSTS_DIR}/{host}/hold.json"))
    }

    /// `status/<host>/status.json`: the latest status a host reported.
    pub fn status(host: &HostName) -> Self {
        Self(format!("{STATUS_DIR}/{host}/status.json"))
    }

    /// `status/<host>/events/<name>.json`: one state change of a host, with a name
    /// from [`ObjectName::status_event`].
    pub fn status_event(host: &HostName, name: &ObjectName) -> Self {
        Self(format!("{STATUS_DIR}/{host}/events/{name}.json"))
    }

    /// `releases/<id>.json`: a signed release.
    pub fn release(id: &ObjectName) -> Self {
        Self(format!("{RELEASES_DIR}/{id}.json"))
    }

    /// `releases/<id>/rollout.json`: the rollout state of a release
    /// (`crate::rollout`).
    pub fn rollout(id: &ObjectName) -> Self {
        Self(format!("{RELEASES_DIR}/{id}/rollout.json"))
    }

    /// The release id whose rollout state this key is, if it is one.
    pub fn rollout_release(key: &str) -> Option<ObjectName> {
        let rest = key.strip_prefix(RELEASES_DIR)?.strip_prefix('/')?;
        ObjectName::new(rest.strip_suffix("/rollout.json")?).ok()
    }

    /// `audit/<name>.json`: one append-only audit entry.
    pub fn audit(name: &ObjectName) -> Self {
        Self(format!("{AUDIT_DIR}/{name}.json"))
    }

    /// `audit/chain/<index>.json`: entry `index` of the signed audit chain
    /// (`crate::audit_chain`), the index zero-padded to 20 digits so keys sort as
    /// numbers.
    pub fn audit_chain(index: u64) -> Self {
        Self(format!("{AUDIT_DIR}/{AUDIT_CHAIN_DIR}/{index:020}.json"))
    }

    /// The index of an `audit/chain/<index>.json` key, if `key` is one.
    pub fn audit_chain_index(key: &str) -> Option<u64> {
        let rest = key.strip_prefix(AUDIT_DIR)?.strip_prefix('/')?;
        let digits = rest
            .strip_prefix(AUDIT_CHAIN_DIR)?
            .strip_prefix('/')?
            .strip_suffix(".json")?;
        let index = (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok())??;
        Some(index)
    }

    /// `audit/head.json`: a hint of the audit chain's last index; only an
    /// optimisation, never trusted.
    pub fn audit_head() -> Self {
        Self(format!("{AUDIT_DIR}/head.json"))
    }

    /// `dashboard/snapshot.json`: the reporter's incremental cache of what it read.
    pub fn dashboard_snapshot() -> Self {
        Self(format!("{DASHBOARD_DIR}/snapshot.json"))
    }

    /// `dashboard/snapshot-delta.json`: what changed since `dashboard/snapshot.json`
    /// was written.
    pub fn dashboard_snapshot_delta() -> Self {
        Self(format!("{DASHBOARD_DIR}/snapshot-delta.json"))
    }

    /// `registry/hosts/<host>.json`: the signed registry entry of one host
    /// (`crate::registry`).
    pub fn registry_host(host: &HostName) -> Self {
        Self(format!("{REGISTRY_DIR}/{HOSTS_DIR}/{host}.json"))
    }

    /// The host whose registry entry this key is, if it is one.
    pub fn registry_host_of(key: &str) -> Option<HostName> {
        let rest = key
            .strip_prefix(REGISTRY_DIR)?
            .strip_prefix('/')?
            .strip_prefix(HOSTS_DIR)?
            .strip_prefix('/')?;
        HostName::new(rest.strip_suffix(".json")?).ok()
    }

    /// `trust/<version>.root.json`: one version of the root of trust, written once.
    pub fn trust_root_version(version: u64) -> Self {
        Self(format!("{TRUST_DIR}/{version}.root.json"))
    }

    /// `trust/root.json`: a copy of the newest root of trust version.
    pub fn trust_root() -> Self {
        Self(format!("{TRUST_DIR}/root.json"))
    }

    /// `cache/gc-condemned.json`: what `fleet-publish gc` will delete on its next
    /// run (`fleet_core::gc_condemned`); a push re-uploads what it lists.
    pub fn gc_condemned() -> Self {
        Self(format!("{CACHE_DIR}/gc-condemned.json"))
    }

    /// `changes/<YYYYmmdd>/<HHMMSS>/<host>`: the change-feed marker `host` writes
    /// when it writes its status at `time` (by its own clock, UTC). The object is
    /// empty and only a hint to re-read the host; the host name is the last segment,
    /// so an IAM pattern `changes/*/<host>` lets a host write only its own markers
    /// (a key with more segments is no marker, see [`Key::change_marker_host`]).
    pub fn change_marker(time: jiff::Timestamp, host: &HostName) -> Self {
        Self(format!(
            "{CHANGES_DIR}/{}/{host}",
            time.strftime("%Y%m%d/%H%M%S")
        ))
    }

    /// `changes/<YYYYmmdd>/<HHMMSS>`: the listing cursor for the markers of `time`'s
    /// second and later. It sorts before every marker of that second and after
    /// every marker of an earlier one; no object is ever written under it.
    pub fn change_cursor(time: jiff::Timestamp) -> Self {
        Self(format!("{CHANGES_DIR}/{}", time.strftime("%Y%m%d/%H%M%S")))
    }

    /// The host and time of a change-feed marker key: exactly
    /// `changes/<8 digits>/<6 digits>/<host>`, anything else is `None`.
    pub fn change_marker_host(key: &str) -> Option<(HostName, jiff::Timestamp)> {
        let rest = key.strip_prefix(CHANGES_DIR)?.strip_prefix('/')?;
        let mut parts = rest.split('/');
        let (day, time, host) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || day.len() != 8 || time.len() != 6 {
            return None;
        }
        if !(day.bytes().chain(time.bytes())).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let at = jiff::civil::DateTime::strptime("%Y%m%d%H%M%S", format!("{day}{time}"))
            .ok()?
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()?
            .timestamp();
        Some((HostName::new(host).ok()?, at))
    }

    /// The key as a string, relative to the bucket's root prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host whose `status.json` this key is, if it is one.
    pub fn status_host(key: &str) -> Option<HostName> {
        let rest = key.strip_prefix(STATUS_DIR)?.strip_prefix('/')?;
        let host = rest.strip_suffix("/status.json")?;
        HostName::new(host).ok()
    }

    /// The host whose `manifest.json` this key is, if it is one.
    pub fn manifest_host(key: &str) -> Option<HostName> {
        let rest = key.strip_prefix(HOSTS_DIR)?.strip_prefix('/')?;
        let host = rest.strip_suffix("/manifest.json")?;
        HostName::new(host).ok()
    }

    /// The root version whose `trust/<version>.root.json` this key is, if it is one
    /// (digits only, no leading zero, so one version has one key).
    pub fn trust_root_version_of(key: &str) -> Option<u64> {
        let rest = key.strip_prefix(TRUST_DIR)?.strip_prefix('/')?;
        let digits = rest.strip_suffix(".root.json")?;
        if digits.is_empty()
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        digits.parse().ok()
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl KeyPrefix {
    /// `cache/`.
    pub fn cache() -> Self {
        Self(format!("{CACHE_DIR}/"))
    }
    /// `hosts/`.
    pub fn hosts() -> Self {
        Self(format!("{HOSTS_DIR}/"))
    }
    /// `status/`.
    pub fn status() -> Self {
        Self(format!("{STATUS_DIR}/"))
    }
    /// `status/<host>/events/`.
    pub fn status_events(host: &HostName) -> Self {
        Self(format!("{STATUS_DIR}/{host}/events/"))
    }
    /// `releases/`.
    pub fn releases() -> Self {
        Self(format!("{RELEASES_DIR}/"))
    }
    /// `audit/`.
    pub fn audit() -> Self {
        Self(format!("{AUDIT_DIR}/"))
    }
    /// `registry/hosts/`.
    pub fn registry_hosts() -> Self {
        Self(format!("{REGISTRY_DIR}/{HOSTS_DIR}/"))
    }
    /// `audit/chain/`.
    pub fn audit_chain() -> Self {
        Self(format!("{AUDIT_DIR}/{AUDIT_CHAIN_DIR}/"))
    }
    /// `hosts/<host>/`: everything the publisher keeps for one host.
    pub fn host(host: &HostName) -> Self {
        Self(format!("{HOSTS_DIR}/{host}/"))
    }
    /// `status/<host>/`: everything one host reported.
    pub fn host_status(host: &HostName) -> Self {
        Self(format!("{STATUS_DIR}/{host}/"))
    }
    /// `trust/`: the root of trust's versions and pointer.
    pub fn trust() -> Self {
        Self(format!("{TRUST_DIR}/"))
    }

    /// `changes/`: the change feed ([`Key::change_marker`]).
    pub fn changes() -> Self {
        Self(format!("{CHANGES_DIR}/"))
    }
    /// The prefix as a string, relative to the bucket's root prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A key that a listing of this prefix returned, as a [`Key`]: `None` unless it
    /// lies under the prefix and every further segment is a valid [`ObjectName`]
    /// (so a hostile listing cannot name a key elsewhere).
    pub fn listed(&self, key: &str) -> Option<Key> {
        let rest = key.strip_prefix(&self.0)?;
        rest.split('/')
            .all(|seg| ObjectName::new(seg).is_ok())
            .then(|| Key(key.to_owned()))
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> HostName {
        HostName::new(s).unwrap()
    }

    #[test]
    fn listed_keys_stay_under_their_prefix() {
        let p = KeyPrefix::host_status(&h("web-1"));
        assert_eq!(
            p.listed("status/web-1/events/e-1.json").unwrap().as_str(),
            "status/web-1/events/e-1.json"
        );
        assert!(p.listed("status/web-2/status.json").is_none());
        assert!(p.listed("status/web-1/../x").is_none());
        assert!(p.listed("status/web-1//x").is_none());
        assert_eq!(KeyPrefix::host(&h("a")).as_str(), "hosts/a/");
    }

    #[test]
    fn keys_follow_the_layout() {
        assert_eq!(Key::cache_info().as_str(), "cache/nix-cache-info");
        assert_eq!(
            Key::manifest(&h("web-1")).as_str(),
            "hosts/web-1/manifest.json"
        );
        assert_eq!(
            Key::status(&h("web-1")).as_str(),
            "status/web-1/status.json"
        );
        let ev = ObjectName::new("20261126T212500Z-000001").unwrap();
        assert_eq!(
            Key::status_event(&h("a"), &ev).as_str(),
            "status/a/events/20261126T212500Z-000001.json"
        );
        assert_eq!(
            Key::nar("nar/abc.nar.zst").unwrap().as_str(),
            "cache/nar/abc.nar.zst"
        );
        assert_eq!(
            Key::dashboard_snapshot().as_str(),
            "dashboard/snapshot.json"
        );
        assert_eq!(
            Key::dashboard_snapshot_delta().as_str(),
            "dashboard/snapshot-delta.json"
        );
    }

    #[test]
    fn audit_chain_keys_sort_as_numbers_and_parse_back() {
        assert_eq!(
            Key::audit_chain(17).as_str(),
            "audit/chain/00000000000000000017.json"
        );
        assert!(Key::audit_chain(9) < Key::audit_chain(10));
        assert_eq!(
            Key::audit_chain_index(Key::audit_chain(u64::MAX).as_str()),
            Some(u64::MAX)
        );
        for bad in [
            "audit/chain/17.json",
            "audit/chain/0000000000000000001x.json",
            "audit/head.json",
        ] {
            assert_eq!(Key::audit_chain_index(bad), None, "{bad}");
        }
    }

    #[test]
    fn hostile_nar_urls_are_refused() {
        for bad in [
            "nar/../hosts/x/manifest.json",
            "../x",
            "nar/",
            "nar/.hidden",
            "nar/a/b",
            "http://evil/x",
            "nar/a b",
        ] {
            assert!(Key::nar(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn object_names_are_one_safe_segment() {
        for bad in ["", ".", "..", "a/b", ".x", "a\\b", "a b", &"x".repeat(201)] {
            assert!(ObjectName::new(bad).is_err(), "{bad:?}");
        }
        assert!(ObjectName::new("2026-11-26T21_25_00Z-1.a").is_ok());
    }

    #[test]
    fn parses_hosts_back_out_of_keys() {
        assert_eq!(
            Key::status_host("status/web-1/status.json"),
            Some(h("web-1"))
        );
        assert_eq!(Key::status_host("status/../status.json"), None);
        assert_eq!(Key::status_host("status/a/events/x.json"), None);
        assert_eq!(Key::manifest_host("hosts/b/manifest.json"), Some(h("b")));
        assert_eq!(
            Key::registry_host(&h("web-1")).as_str(),
            "registry/hosts/web-1.json"
        );
        assert_eq!(
            Key::registry_host_of("registry/hosts/web-1.json"),
            Some(h("web-1"))
        );
        assert_eq!(Key::registry_host_of("registry/hosts/../x.json"), None);
        assert_eq!(Key::registry_host_of("registry/hosts/a/b.json"), None);
    }

    #[test]
    fn status_event_names_are_valid_and_sort_by_time_then_counter() {
        let t: jiff::Timestamp = "2026-11-26T21:25:00Z".parse().unwrap();
        let n = ObjectName::status_event(t, 42);
        assert_eq!(n.as_str(), "20261126T212500Z-000042");
        assert!(ObjectName::new(n.as_str()).is_ok());
        assert!(ObjectName::status_event(t, 9) < ObjectName::status_event(t, 10));
        let later: jiff::Timestamp = "2026-11-26T21:25:01Z".parse().unwrap();
        assert!(ObjectName::status_event(t, 999) < ObjectName::status_event(later, 1));
        assert_eq!(
            Key::status_event(&HostName::new("web-1").unwrap(), &n).as_str(),
            "status/web-1/events/20261126T212500Z-000042.json"
        );
    }

    #[test]
    fn change_markers_name_their_host_and_nothing_else_parses() {
        let t: jiff::Timestamp = "2026-12-03T04:31:05Z".parse().unwrap();
        let k = Key::change_marker(t, &h("web-1"));
        assert_eq!(k.as_str(), "changes/20261203/043105/web-1");
        assert_eq!(Key::change_marker_host(k.as_str()), Some((h("web-1"), t)));
        assert!(Key::change_cursor(t).as_str() < k.as_str());
        let earlier = Key::change_marker(t - jiff::SignedDuration::from_secs(1), &h("zz"));
        assert!(earlier.as_str() < Key::change_cursor(t).as_str());
        for bad in [
            "changes/20261203/043105/a/web-1",
            "changes/20261203/043105",
            "changes/2026120/043105/web-1",
            "changes/20261203/04310x/web-1",
            "changes/20261303/043105/web-1",
            "changes/20261203/043105/Web_1",
            "status/20261203/043105/web-1",
        ] {
            assert_eq!(Key::change_marker_host(bad), None, "{bad}");
        }
    }
}
