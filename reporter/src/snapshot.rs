//! `dashboard/snapshot.json`: the reporter's incremental cache of what it read, its
//! delta `dashboard/snapshot-delta.json`, and their codec.
//!
//! A snapshot records, per host, the outcome of reading its `status.json` and
//! `manifest.json` and the ETags they were read under (this was once called the
//! "dashboard summary"; `fleet-reporter summary` is the text table, not this).
//!
//! Written by reporters only (the reporter's IAM policy is the only one that may put
//! under `dashboard/`), read back at the start of a refresh so that only objects whose
//! ETag changed are fetched again. Several reporters (Lambda containers, `serve`
//! processes) may share one bucket: each writes with compare-and-swap
//! (`put_if_match` on the ETag it read, `put_if_absent` when there was none) and simply
//! skips the write when it loses, since its answer is correct either way. Most
//! writes are of the delta only (`crate::stored`, decision 32 in `docs/decisions.md`).
//!
//! # Format, version 4
//!
//! The object is a sequence of [zstd](https://facebook.github.io/zstd/) frames, each
//! recording its decompressed size, so `zstd -dc snapshot.json` prints it as text. The
//! first frame holds one JSON line, the header:
//!
//! ```json
//! {"version":4,"id":"<32 hex digits>","written_at":"2026-11-26T21:25:00Z","full_listing_at":"2026-11-26T21:20:00Z","trusted_keys":"<sha256 hex of the sorted trusted publisher keys, or empty>","hosts":2,"shards":1}
//! ```
//!
//! `id` is drawn at random each time the whole snapshot is written; a delta names the
//! snapshot it applies to by it.
//! `written_at` is when the refresh that made it started (by the reporter's clock):
//! the next refresh lists the change feed from a little before it.
//! `full_listing_at` is when the last refresh that listed `status/` and `hosts/`
//! whole started.
//!
//! and each of the `shards` frames that follow holds JSON lines, one per host, a host
//! name and what is cached for it; hosts are in strictly increasing order across all
//! shards:
//!
//! ```json
//! ["web-1",{"status":{"etag":"\"9b2c…\"","modified":"2026-11-26T21:24:31Z","outcome":{"report":{ …StatusReport v1… }}},"manifest":{"etag":"\"51aa…\"","outcome":{"verified":{"sequence":7,"closure":"/nix/store/…","issued_at":"…","expires_at":"…","activation":"switch","signed_by":"publisher-1","digest":"<sha256 hex>"}}}}]
//! ["web-2",{"status":{"etag":"\"77e0…\"","outcome":{"flagged":"status object … is malformed: …"}}}]
//! ```
//!
//! Each cached object also records `modified`, the store's last-modified time it was
//! listed with (the status's is the host's "last seen"), and a host may record
//! `hold_modified` (the listed time of its `hold.json`, which is read on every
//! refresh) and `marker` (the store time of its newest change-feed marker seen).
//!
//! ## The delta
//!
//! `dashboard/snapshot-delta.json` has the same form. Its header has `base` (the `id`
//! of the snapshot it applies to) instead of `id`, and the `written_at` and
//! `full_listing_at` of the snapshot it brings that one to; its lines are the hosts
//! changed since, each with its entry now or `null` when the host is gone:
//!
//! ```json
//! {"version":4,"base":"<32 hex digits>","written_at":"2026-11-26T21:26:00Z","full_listing_at":"2026-11-26T21:20:00Z","trusted_keys":"…","hosts":2,"shards":1}
//! ["web-1",{"status":{ … }}]
//! ["web-9",null]
//! ```
//!
//! A delta whose `base` is not the snapshot's `id`, whose keys differ or that is
//! older than the snapshot is not applied.
//!
//! Why this shape: at 100,000 hosts the JSON is about 100 MB; compressed it is a
//! tenth of that to store and move, and independent shards of about
//! [`HOSTS_PER_SHARD`] hosts are encoded and decoded on every core at once.
//!
//! A status report is stored in core's own `StatusReport` form; manifests are stored
//! as the facts of their verification (with the SHA-256 of the verified bytes, so a
//! manifest rewritten with the same bytes is recognised without verifying it again),
//! which are reused only while `trusted_keys` matches the reporter's configured keys
//! (expiry is re-checked on every refresh); without keys a manifest is recorded as
//! `"not-verified"`, only that it is there. Although only reporters write it, the file
//! is read defensively: it is size-bounded before ([`MAX_SNAPSHOT_SIZE`]) and after
//! decompression ([`MAX_SNAPSHOT_DECOMPRESSED`], checked on the sizes the frames
//! declare before anything is allocated), parsed strictly (unknown fields refused),
//! every report must name the host it is filed under, hosts must be in order and
//! unique, and strings are held to the same bounds as the status format. A file that
//! fails any check (one written by an older reporter included) is ignored, and a
//! cold refresh follows; it is never trusted in part. A delta is checked the same
//! way, and one that fails is ignored (the snapshot alone is used).

use std::collections::{BTreeMap, BTreeSet};

use fleet_core::status::{MAX_MESSAGE_LEN, MAX_SHORT_LEN};
use fleet_core::{HostName, TrustedKeys};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::outcome::{MAX_FLAG_LEN, ManifestOutcome, StatusOutcome};

/// Format version of the snapshot.
pub const SNAPSHOT_VERSION: u32 = 4;
/// Largest snapshot object read back, compressed (100,000 hosts take about 10 MiB).
pub const MAX_SNAPSHOT_SIZE: u64 = 256 * 1024 * 1024;
/// Largest snapshot accepted once decompressed (a host takes about 1 KiB, 6 KiB when
/// every bounded string is at its bound).
pub const MAX_SNAPSHOT_DECOMPRESSED: u64 = 1024 * 1024 * 1024;
/// Hosts per shard (one zstd frame of JSON lines).
pub const HOSTS_PER_SHARD: usize = 2000;
/// Most hosts a snapshot may hold. Parsed, a host line takes several times its text,
/// so the decompressed bound alone would let a tampered file of tiny lines exhaust
/// memory; the header's count is checked against this before any shard is read.
pub const MAX_SNAPSHOT_HOSTS: usize = 1_000_000;
/// Most decompressed bytes per host accepted (a host takes about 1 KiB, 6 KiB when
/// every bounded string is at its bound).
const MAX_HOST_BYTES: u64 = 8 * 1024;
/// Largest header frame accepted, decompressed.
const MAX_HEADER_SIZE: u64 = 4096;
/// zstd level: -1 (the fastest "fast" level worth having) compresses this JSON about
/// 7:1 at twice the speed of level 1 (9:1); the snapshot is rewritten on every change.
const ZSTD_LEVEL: i32 = -1;

/// An outcome and the ETag of the object it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cached<T> {
    /// The object's ETag.
    pub etag: String,
    /// The store's last-modified time of the object, as listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<Timestamp>,
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
    /// Its `manifest.json` (without trusted keys, only that it is there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Cached<ManifestOutcome>>,
    /// The store's last-modified time of its `hold.json`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_modified: Option<Timestamp>,
    /// The store's last-modified time of its newest change-feed marker seen (so its
    /// agent is known to write them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<Timestamp>,
}

/// The snapshot: what the next refresh may reuse.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Always [`SNAPSHOT_VERSION`].
    pub version: u32,
    /// Its identity once stored (a fresh one each time it is stored whole): a delta
    /// names the snapshot it applies to.
    pub id: String,
    /// When the refresh that computed it started.
    pub written_at: Timestamp,
    /// When the last full listing (of `status/` and `hosts/`) it builds on started.
    pub full_listing_at: Timestamp,
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

impl Snapshot {
    /// A snapshot of `hosts` computed at `written_at` from a full listing.
    pub fn new(
        written_at: Timestamp,
        trusted_keys: String,
        hosts: BTreeMap<HostName, CachedHost>,
    ) -> Self {
        Self {
            version: SNAPSHOT_VERSION,
            id: new_id(),
            written_at,
            full_listing_at: written_at,
            trusted_keys,
            hosts,
        }
    }

    /// Encodes the snapshot (format above), shards on every core.
    pub fn to_bytes(&self) -> Vec<u8> {
        let entries: Vec<(&HostName, &CachedHost)> = self.hosts.iter().collect();
        encode(
            self.header(Some(self.id.clone()), None, entries.len()),
            &entries,
        )
    }

    /// Encodes the delta from the stored snapshot of this one's `id` to this one:
    /// the entries of `changed` hosts as they are now (`null`: gone).
    pub fn delta_bytes(&self, changed: &BTreeSet<HostName>) -> Vec<u8> {
        let entries: Vec<(&HostName, Option<&CachedHost>)> =
            changed.iter().map(|h| (h, self.hosts.get(h))).collect();
        encode(
            self.header(None, Some(self.id.clone()), entries.len()),
            &entries,
        )
    }

    fn header(&self, id: Option<String>, base: Option<String>, hosts: usize) -> Header {
        Header {
            version: SNAPSHOT_VERSION,
            id,
            base,
            written_at: self.written_at,
            full_listing_at: self.full_listing_at,
            trusted_keys: self.trusted_keys.clone(),
            hosts,
            shards: hosts.div_ceil(HOSTS_PER_SHARD),
        }
    }

    /// Decodes and checks a snapshot read from `key`. Errors name the key and the
    /// problem; the caller then ignores the file.
    pub fn parse(bytes: &[u8], key: &str) -> Result<Self, String> {
        let (header, all) = decode::<(HostName, CachedHost)>(bytes, key)?;
        let id = header
            .id
            .filter(|_| header.base.is_none())
            .ok_or_else(|| format!("{key} is not a snapshot (its header has no id)"))?;
        Ok(Self {
            version: header.version,
            id,
            written_at: header.written_at,
            full_listing_at: header.full_listing_at,
            trusted_keys: header.trusted_keys,
            hosts: all.into_iter().collect(),
        })
    }

    /// Applies a delta read from `key` (`dashboard/snapshot-delta.json`): refused,
    /// leaving the snapshot as it was, unless it was made from this very snapshot
    /// (its `base` is this `id`, same trusted keys, not older).
    pub fn apply_delta(&mut self, bytes: &[u8], key: &str) -> Result<BTreeSet<HostName>, String> {
        let (header, lines) = decode::<(HostName, Option<CachedHost>)>(bytes, key)?;
        if header.id.is_some() || header.base.as_deref() != Some(self.id.as_str()) {
            return Err(format!(
                "{key} applies to snapshot {}, not to the stored snapshot {}",
                header.base.as_deref().unwrap_or("(none)"),
                self.id
            ));
        }
        if header.trusted_keys != self.trusted_keys {
            return Err(format!(
                "{key} was made with other trusted keys than the snapshot"
            ));
        }
        if header.written_at < self.written_at || header.full_listing_at < self.full_listing_at {
            return Err(format!("{key} is older than the snapshot it applies to"));
        }
        if self.hosts.len().saturating_add(lines.len()) > MAX_SNAPSHOT_HOSTS {
            return Err(format!(
                "{key} could make the snapshot hold more than {MAX_SNAPSHOT_HOSTS} hosts"
            ));
        }
        let mut changed = BTreeSet::new();
        for (host, entry) in lines {
            match entry {
                Some(e) => self.hosts.insert(host.clone(), e),
                None => self.hosts.remove(&host),
            };
            changed.insert(host);
        }
        self.written_at = header.written_at;
        self.full_listing_at = header.full_listing_at;
        Ok(changed)
    }
}

/// A fresh snapshot identity: 128 random bits, hex.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the operating system gives random bytes");
    hex::encode(b)
}

/// Encodes a header and its lines (format above), shards on every core.
fn encode<L: Serialize + Sync>(header: Header, entries: &[L]) -> Vec<u8> {
    let mut line = serde_json::to_vec(&header).expect("snapshot header serialises");
    line.push(b'\n');
    let mut out = compress(&line);
    let shards: Vec<&[L]> = entries.chunks(HOSTS_PER_SHARD).collect();
    for frame in crate::par::map(&shards, |shard| {
        let mut text = Vec::with_capacity(shard.len() * 1024);
        for entry in *shard {
            serde_json::to_writer(&mut text, entry).expect("snapshot entry serialises");
            text.push(b'\n');
        }
        compress(&text)
    }) {
        out.extend_from_slice(&frame);
    }
    out
}

/// Decodes and checks a snapshot or delta read from `key`: its header and lines.
fn decode<L: Line>(bytes: &[u8], key: &str) -> Result<(Header, Vec<L>), String> {
    if bytes.len() as u64 > MAX_SNAPSHOT_SIZE {
        return Err(format!(
            "{key} is {} bytes, larger than the {MAX_SNAPSHOT_SIZE}-byte bound",
            bytes.len()
        ));
    }
    let max_frames = MAX_SNAPSHOT_HOSTS.div_ceil(HOSTS_PER_SHARD) + 1;
    let frames = split_frames(bytes, max_frames).map_err(|why| format!("{key}: {why}"))?;
    let Some((first, shards)) = frames.split_first() else {
        return Err(format!("{key} is empty"));
    };
    let mut budget = MAX_SNAPSHOT_DECOMPRESSED;
    let header = decompress(first, MAX_HEADER_SIZE, &mut budget)
        .map_err(|why| format!("{key}: header: {why}"))?;
    let header: Header =
        serde_json::from_slice(&header).map_err(|e| format!("{key}: header is malformed: {e}"))?;
    if header.version != SNAPSHOT_VERSION {
        return Err(format!(
            "{key} has version {}, this reporter reads and writes {SNAPSHOT_VERSION}",
            header.version
        ));
    }
    for (field, v) in [
        ("trusted_keys", Some(&header.trusted_keys)),
        ("id", header.id.as_ref()),
        ("base", header.base.as_ref()),
    ] {
        if v.is_some_and(|v| v.len() > 64) {
            return Err(format!("{key}: field {field} is too long"));
        }
    }
    if header.hosts > MAX_SNAPSHOT_HOSTS {
        return Err(format!(
            "{key}: the header announces {} hosts, more than the {MAX_SNAPSHOT_HOSTS} accepted",
            header.hosts
        ));
    }
    if header.shards != header.hosts.div_ceil(HOSTS_PER_SHARD) {
        return Err(format!(
            "{key}: the header announces {} shards for {} hosts; a snapshot holds {HOSTS_PER_SHARD} hosts per shard",
            header.shards, header.hosts
        ));
    }
    // The hosts announced bound what the shards may decompress to.
    let bound = MAX_SNAPSHOT_DECOMPRESSED.min((header.hosts as u64).saturating_mul(MAX_HOST_BYTES));
    budget = budget.min(bound);
    if header.shards != shards.len() {
        return Err(format!(
            "{key}: the header announces {} shards, the file holds {}",
            header.shards,
            shards.len()
        ));
    }
    // Every frame's declared size is checked against the budget before any
    // shard is decompressed (each then gets exactly what it declared).
    let mut sizes = Vec::with_capacity(shards.len());
    for (i, f) in shards.iter().enumerate() {
        let size = declared_size(f).map_err(|why| format!("{key}: shard {i}: {why}"))?;
        budget = budget.checked_sub(size).ok_or_else(|| {
            format!(
                "{key} decompresses to more than {bound} bytes ({MAX_HOST_BYTES} per host announced, {MAX_SNAPSHOT_DECOMPRESSED} in all)"
            )
        })?;
        sizes.push(size);
    }
    let jobs: Vec<(usize, &[u8], u64)> = shards
        .iter()
        .zip(sizes)
        .enumerate()
        .map(|(i, (f, size))| (i, *f, size))
        .collect();
    let parsed = crate::par::map(&jobs, |&(i, frame, size)| {
        parse_shard::<L>(frame, size).map_err(|why| format!("{key}: shard {i}: {why}"))
    });
    let mut all = Vec::with_capacity(header.hosts.min(1 << 20));
    for shard in parsed {
        all.extend(shard?);
    }
    if all.len() != header.hosts {
        return Err(format!(
            "{key}: the header announces {} hosts, the shards hold {}",
            header.hosts,
            all.len()
        ));
    }
    if let Some(w) = all.windows(2).find(|w| w[0].host() >= w[1].host()) {
        return Err(format!(
            "{key}: host {} follows host {}: hosts must be unique and in order",
            w[1].host(),
            w[0].host()
        ));
    }
    Ok((header, all))
}

/// The first line of a snapshot or delta.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    version: u32,
    /// A snapshot: its identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    /// A delta: the identity of the snapshot it applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base: Option<String>,
    written_at: Timestamp,
    full_listing_at: Timestamp,
    trusted_keys: String,
    hosts: usize,
    shards: usize,
}

/// One line of a snapshot (a host and its entry) or of a delta (a host and its
/// entry, or `null` when it is gone).
trait Line: Serialize + serde::de::DeserializeOwned + Send + Sync {
    fn host(&self) -> &HostName;
    fn entry(&self) -> Option<&CachedHost>;
}

impl Line for (HostName, CachedHost) {
    fn host(&self) -> &HostName {
        &self.0
    }
    fn entry(&self) -> Option<&CachedHost> {
        Some(&self.1)
    }
}

impl Line for (HostName, Option<CachedHost>) {
    fn host(&self) -> &HostName {
        &self.0
    }
    fn entry(&self) -> Option<&CachedHost> {
        self.1.as_ref()
    }
}

fn compress(data: &[u8]) -> Vec<u8> {
    // One-shot compression records the content size in the frame header. It writes
    // into a buffer of the worst-case size (a little more than the input); giving
    // back the rest keeps the 50 shards of a 100,000-host snapshot at about 10 MB,
    // not the 100 MB of their worst cases.
    let mut frame =
        zstd::bulk::compress(data, ZSTD_LEVEL).expect("zstd compresses a buffer in memory");
    frame.shrink_to_fit();
    frame
}

/// Cuts a sequence of zstd frames into frames.
fn split_frames(bytes: &[u8], max_frames: usize) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if out.len() == max_frames {
            return Err(format!("more than {max_frames} zstd frames"));
        }
        let n = zstd::zstd_safe::find_frame_compressed_size(&bytes[at..]).map_err(|code| {
            format!(
                "byte {at} does not start a complete zstd frame ({})",
                zstd::zstd_safe::get_error_name(code)
            )
        })?;
        if n == 0 || at + n > bytes.len() {
            return Err(format!("byte {at} does not start a complete zstd frame"));
        }
        out.push(&bytes[at..at + n]);
        at += n;
    }
    Ok(out)
}

/// The decompressed size a frame declares.
fn declared_size(frame: &[u8]) -> Result<u64, String> {
    match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(n)) => Ok(n),
        Ok(None) => Err("the zstd frame does not record its size".into()),
        Err(_) => Err("not a zstd data frame".into()),
    }
}

/// Decompresses one frame of at most `limit` bytes, charged to `budget`.
fn decompress(frame: &[u8], limit: u64, budget: &mut u64) -> Result<Vec<u8>, String> {
    let size = declared_size(frame)?;
    if size > limit || size > *budget {
        return Err(format!(
            "the zstd frame declares {size} bytes, more than the {}-byte bound",
            limit.min(*budget)
        ));
    }
    *budget -= size;
    inflate(frame, size)
}

fn inflate(frame: &[u8], size: u64) -> Result<Vec<u8>, String> {
    let out = zstd::bulk::decompress(frame, size as usize)
        .map_err(|e| format!("the zstd frame does not decompress: {e}"))?;
    if out.len() as u64 != size {
        return Err(format!(
            "the zstd frame declares {size} bytes but holds {}",
            out.len()
        ));
    }
    Ok(out)
}

fn parse_shard<L: Line>(frame: &[u8], size: u64) -> Result<Vec<L>, String> {
    let text = inflate(frame, size)?;
    // Checked once here rather than string by string as `from_slice` would.
    let text = std::str::from_utf8(&text).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut out: Vec<L> = Vec::new();
    for (n, line) in text.split('\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        if out.len() == HOSTS_PER_SHARD {
            return Err(format!("more than {HOSTS_PER_SHARD} hosts"));
        }
        let l: L = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        let host = l.host();
        if let Some(c) = l.entry() {
            check_host(host, c).map_err(|why| format!("host {host}: {why}"))?;
        }
        if let Some(prev) = out.last().map(Line::host)
            && prev >= host
        {
            return Err(format!(
                "host {host} follows host {prev}: hosts must be unique and in order"
            ));
        }
        out.push(l);
    }
    Ok(out)
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
                    check_len("last_error.kind", e.kind.as_str(), MAX_SHORT_LEN)?;
                    check_len("last_error.message", &e.message, MAX_MESSAGE_LEN)?;
                }
            }
        }
    }
    if let Some(m) = &c.manifest {
        check_len("manifest.etag", &m.etag, MAX_SHORT_LEN)?;
        match &m.outcome {
            ManifestOutcome::Flagged(f) => check_len("manifest.flagged", f, MAX_FLAG_LEN)?,
            ManifestOutcome::NotVerified => {}
            ManifestOutcome::Verified(v) => {
                check_len("manifest.signed_by", &v.signed_by, MAX_SHORT_LEN)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
