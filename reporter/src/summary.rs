//! `dashboard/summary.json`: the reporter's incremental summary.
//!
//! Written by reporters only (the reporter's IAM policy is the only one that may put
//! under `dashboard/`), read back at the start of a refresh so that only objects whose
//! ETag changed are fetched again. Several reporters (Lambda containers, `serve`
//! processes) may share one bucket: each writes with compare-and-swap
//! (`put_if_match` on the ETag it read, `put_if_absent` when there was none) and simply
//! skips the write when it loses, since its answer is correct either way.
//!
//! # Format, version 2
//!
//! The object is a sequence of [zstd](https://facebook.github.io/zstd/) frames, each
//! recording its decompressed size, so `zstd -dc summary.json` prints it as text. The
//! first frame holds one JSON line, the header:
//!
//! ```json
//! {"version":2,"written_at":"2026-11-26T21:25:00Z","trusted_keys":"<sha256 hex of the sorted trusted publisher keys, or empty>","hosts":2,"shards":1}
//! ```
//!
//! and each of the `shards` frames that follow holds JSON lines, one per host, a host
//! name and what is cached for it; hosts are in strictly increasing order across all
//! shards:
//!
//! ```json
//! ["web-1",{"status":{"etag":"\"9b2c…\"","outcome":{"report":{ …StatusReport v1… }}},"manifest":{"etag":"\"51aa…\"","outcome":{"verified":{"sequence":7,"closure":"/nix/store/…","issued_at":"…","expires_at":"…","activation":"switch","signed_by":"publisher-1","digest":"<sha256 hex>"}}}}]
//! ["web-2",{"status":{"etag":"\"77e0…\"","outcome":{"flagged":"status object … is malformed: …"}}}]
//! ```
//!
//! Why this shape: at 100,000 hosts the JSON is about 100 MB; compressed it is a
//! tenth of that to store and move, and independent shards of about
//! [`HOSTS_PER_SHARD`] hosts are encoded and decoded on every core at once.
//!
//! A status report is stored in core's own `StatusReport` form; manifests are stored
//! as the facts of their verification (with the SHA-256 of the verified bytes, so a
//! manifest rewritten with the same bytes is recognised without verifying it again),
//! which are reused only while `trusted_keys` matches the reporter's configured keys
//! (expiry is re-checked on every refresh). Although only reporters write it, the file
//! is read defensively: it is size-bounded before ([`MAX_SUMMARY_SIZE`]) and after
//! decompression ([`MAX_SUMMARY_DECOMPRESSED`], checked on the sizes the frames
//! declare before anything is allocated), parsed strictly (unknown fields refused),
//! every report must name the host it is filed under, hosts must be in order and
//! unique, and strings are held to the same bounds as the status format. A file that
//! fails any check (a version 1 file written by an older reporter included) is
//! ignored, and a cold refresh follows; it is never trusted in part.

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
pub const SUMMARY_VERSION: u32 = 2;
/// Largest summary object read back, compressed (100,000 hosts take about 10 MiB).
pub const MAX_SUMMARY_SIZE: u64 = 256 * 1024 * 1024;
/// Largest summary accepted once decompressed (a host takes about 1 KiB, 6 KiB when
/// every bounded string is at its bound).
pub const MAX_SUMMARY_DECOMPRESSED: u64 = 1024 * 1024 * 1024;
/// Hosts per shard (one zstd frame of JSON lines).
pub const HOSTS_PER_SHARD: usize = 2000;
/// Most hosts a summary may hold. Parsed, a host line takes several times its text,
/// so the decompressed bound alone would let a tampered file of tiny lines exhaust
/// memory; the header's count is checked against this before any shard is read.
pub const MAX_SUMMARY_HOSTS: usize = 1_000_000;
/// Most decompressed bytes per host accepted (a host takes about 1 KiB, 6 KiB when
/// every bounded string is at its bound).
const MAX_HOST_BYTES: u64 = 8 * 1024;
/// Largest header frame accepted, decompressed.
const MAX_HEADER_SIZE: u64 = 4096;
/// zstd level: -1 (the fastest "fast" level worth having) compresses this JSON about
/// 7:1 at twice the speed of level 1 (9:1); the summary is rewritten on every change.
const ZSTD_LEVEL: i32 = -1;

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
#[derive(Clone, Debug, PartialEq)]
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

    /// Encodes the summary (format above), shards on every core.
    pub fn to_bytes(&self) -> Vec<u8> {
        let entries: Vec<(&HostName, &CachedHost)> = self.hosts.iter().collect();
        let shards: Vec<&[(&HostName, &CachedHost)]> = entries.chunks(HOSTS_PER_SHARD).collect();
        let header = Header {
            version: SUMMARY_VERSION,
            written_at: self.written_at,
            trusted_keys: self.trusted_keys.clone(),
            hosts: entries.len(),
            shards: shards.len(),
        };
        let mut line = serde_json::to_vec(&header).expect("summary header serialises");
        line.push(b'\n');
        let mut out = compress(&line);
        for frame in crate::par::map(&shards, |shard| {
            let mut text = Vec::with_capacity(shard.len() * 1024);
            for entry in *shard {
                serde_json::to_writer(&mut text, entry).expect("summary entry serialises");
                text.push(b'\n');
            }
            compress(&text)
        }) {
            out.extend_from_slice(&frame);
        }
        out
    }

    /// Decodes and checks a summary read from `key`. Errors name the key and the
    /// problem; the caller then ignores the file.
    pub fn parse(bytes: &[u8], key: &str) -> Result<Self, String> {
        if bytes.len() as u64 > MAX_SUMMARY_SIZE {
            return Err(format!(
                "{key} is {} bytes, larger than the {MAX_SUMMARY_SIZE}-byte bound",
                bytes.len()
            ));
        }
        let max_frames = MAX_SUMMARY_HOSTS.div_ceil(HOSTS_PER_SHARD) + 1;
        let frames = split_frames(bytes, max_frames).map_err(|why| format!("{key}: {why}"))?;
        let Some((first, shards)) = frames.split_first() else {
            return Err(format!("{key} is empty"));
        };
        let mut budget = MAX_SUMMARY_DECOMPRESSED;
        let header = decompress(first, MAX_HEADER_SIZE, &mut budget)
            .map_err(|why| format!("{key}: header: {why}"))?;
        let header: Header = serde_json::from_slice(&header)
            .map_err(|e| format!("{key}: header is malformed: {e}"))?;
        if header.version != SUMMARY_VERSION {
            return Err(format!(
                "{key} has version {}, this reporter reads and writes {SUMMARY_VERSION}",
                header.version
            ));
        }
        if header.trusted_keys.len() > 64 {
            return Err(format!("{key}: field trusted_keys is too long"));
        }
        if header.hosts > MAX_SUMMARY_HOSTS {
            return Err(format!(
                "{key}: the header announces {} hosts, more than the {MAX_SUMMARY_HOSTS} accepted",
                header.hosts
            ));
        }
        if header.shards != header.hosts.div_ceil(HOSTS_PER_SHARD) {
            return Err(format!(
                "{key}: the header announces {} shards for {} hosts; a summary holds {HOSTS_PER_SHARD} hosts per shard",
                header.shards, header.hosts
            ));
        }
        // The hosts announced bound what the shards may decompress to.
        let bound =
            MAX_SUMMARY_DECOMPRESSED.min((header.hosts as u64).saturating_mul(MAX_HOST_BYTES));
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
                    "{key} decompresses to more than {bound} bytes ({MAX_HOST_BYTES} per host announced, {MAX_SUMMARY_DECOMPRESSED} in all)"
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
            parse_shard(frame, size).map_err(|why| format!("{key}: shard {i}: {why}"))
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
        if let Some(w) = all.windows(2).find(|w| w[0].0 >= w[1].0) {
            return Err(format!(
                "{key}: host {} follows host {}: hosts must be unique and in order",
                w[1].0, w[0].0
            ));
        }
        Ok(Self {
            version: header.version,
            written_at: header.written_at,
            trusted_keys: header.trusted_keys,
            hosts: all.into_iter().collect(),
        })
    }
}

/// The first line of a summary.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    version: u32,
    written_at: Timestamp,
    trusted_keys: String,
    hosts: usize,
    shards: usize,
}

fn compress(data: &[u8]) -> Vec<u8> {
    // One-shot compression records the content size in the frame header.
    zstd::bulk::compress(data, ZSTD_LEVEL).expect("zstd compresses a buffer in memory")
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

fn parse_shard(frame: &[u8], size: u64) -> Result<Vec<(HostName, CachedHost)>, String> {
    let text = inflate(frame, size)?;
    let mut out: Vec<(HostName, CachedHost)> = Vec::new();
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        if out.len() == HOSTS_PER_SHARD {
            return Err(format!("more than {HOSTS_PER_SHARD} hosts"));
        }
        let (host, c): (HostName, CachedHost) =
            serde_json::from_slice(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        check_host(&host, &c).map_err(|why| format!("host {host}: {why}"))?;
        if let Some((prev, _)) = out.last()
            && *prev >= host
        {
            return Err(format!(
                "host {host} follows host {prev}: hosts must be unique and in order"
            ));
        }
        out.push((host, c));
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

    /// The summary as text: every frame decompressed.
    fn text(bytes: &[u8]) -> String {
        String::from_utf8(zstd::decode_all(bytes).unwrap()).unwrap()
    }

    /// Text (a header line, then host lines) encoded as a header frame and one shard.
    fn encode(text: &str) -> Vec<u8> {
        let (header, hosts) = text.split_once('\n').unwrap();
        let mut out = compress(format!("{header}\n").as_bytes());
        out.extend(compress(hosts.as_bytes()));
        out
    }

    fn many(n: usize) -> SummaryFile {
        let mut s = sample();
        let c = s.hosts.values().next().unwrap().clone();
        s.hosts = (0..n)
            .map(|i| {
                let h = HostName::new(&format!("h-{i:06}")).unwrap();
                let mut c = c.clone();
                if let Some(Cached {
                    outcome: StatusOutcome::Report(r),
                    ..
                }) = &mut c.status
                {
                    Arc::make_mut(r).host = h.clone();
                }
                (h, c)
            })
            .collect();
        s
    }

    #[test]
    fn round_trips() {
        let s = sample();
        let bytes = s.to_bytes();
        assert_eq!(SummaryFile::parse(&bytes, KEY).unwrap(), s);
        // Readable with `zstd -dc`: a header line, then one line per host.
        let t = text(&bytes);
        assert!(t.starts_with("{\"version\":2,"), "{t}");
        assert!(t.lines().nth(1).unwrap().starts_with("[\"web-1\",{"), "{t}");
        assert_eq!(SummaryFile::parse(&encode(&t), KEY).unwrap(), s);
        // Several shards, decoded in parallel, in order.
        let big = many(HOSTS_PER_SHARD * 2 + 7);
        let bytes = big.to_bytes();
        assert_eq!(split_frames(&bytes, 4).unwrap().len(), 1 + 3);
        assert!(split_frames(&bytes, 3).unwrap_err().contains("more than 3"));
        assert_eq!(SummaryFile::parse(&bytes, KEY).unwrap(), big);
        // Compact: far less than the JSON.
        assert!(bytes.len() * 5 < text(&bytes).len());
    }

    #[test]
    fn refuses_a_report_filed_under_another_host() {
        let t = text(&sample().to_bytes());
        let moved = t.replacen("[\"web-1\",", "[\"web-2\",", 1);
        let e = SummaryFile::parse(&encode(&moved), KEY).unwrap_err();
        assert!(e.contains("web-2") && e.contains(KEY), "{e}");
    }

    #[test]
    fn refuses_malformed_oversized_and_inconsistent_files() {
        let t = text(&sample().to_bytes());
        let two = text(&many(2).to_bytes());
        let (head2, lines2) = two.split_once('\n').unwrap();
        let lines2: Vec<&str> = lines2.lines().collect();
        let mut bad: Vec<(Vec<u8>, &str)> = vec![
            (b"{}".to_vec(), "zstd frame"),
            (Vec::new(), "empty"),
            // A version 1 file (plain JSON) from an older reporter.
            (
                br#"{"version":1,"written_at":"2026-11-26T12:00:00Z","trusted_keys":"","hosts":{}}"#
                    .to_vec(),
                "zstd frame",
            ),
            (encode(&t.replace("\"version\":2", "\"version\":3")), "version 3"),
            (
                encode(&t.replace("bad signature", &"x".repeat(MAX_FLAG_LEN + 1))),
                "manifest.flagged",
            ),
            (encode(&t.replacen("{", "{\"extra\":1,", 1)), "extra"),
            (encode(&t.replacen("{\"status\"", "{\"extra\":1,\"status\"", 1)), "extra"),
            (encode(&t.replace("\"hosts\":1", "\"hosts\":2")), "announces 2 hosts"),
            (encode(&t.replace("\"shards\":1", "\"shards\":2")), "announces 2 shards"),
            // The same host twice, and hosts out of order.
            (
                encode(&format!("{head2}\n{}\n{}\n", lines2[0], lines2[0])),
                "unique and in order",
            ),
            (
                encode(&format!("{head2}\n{}\n{}\n", lines2[1], lines2[0])),
                "unique and in order",
            ),
            // A header beyond its bound.
            (
                encode(&t.replacen("{", &format!("{{\"pad\":\"{}\",", "x".repeat(5000)), 1)),
                "header",
            ),
        ];
        // More hosts than any summary holds, announced before any shard is read.
        bad.push((
            encode(&t.replace(
                "\"hosts\":1",
                &format!("\"hosts\":{}", MAX_SUMMARY_HOSTS + 1),
            )),
            "more than the 1000000",
        ));
        // A shard with more lines than a shard holds (the header's counts agree).
        let over = text(&many(HOSTS_PER_SHARD + 1).to_bytes());
        let (head, lines) = over.split_once('\n').unwrap();
        let mut crammed = compress(format!("{head}\n").as_bytes());
        crammed.extend(compress(lines.as_bytes()));
        crammed.extend(compress(b""));
        bad.push((crammed, "more than 2000 hosts"));
        let good = sample().to_bytes();
        bad.push((good[..good.len() - 1].to_vec(), "zstd frame"));
        // A frame that does not record its size cannot be bounded before it is read.
        let mut unsized_frame = compress(t.lines().next().unwrap().as_bytes());
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
        enc.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut enc, t.split_once('\n').unwrap().1.as_bytes()).unwrap();
        unsized_frame.extend(enc.finish().unwrap());
        bad.push((unsized_frame, "record its size"));
        for (bytes, why) in bad {
            let e = SummaryFile::parse(&bytes, KEY).unwrap_err();
            assert!(e.contains(KEY) && e.contains(why), "{why}: {e}");
        }
    }

    /// A valid zstd frame that holds nothing but declares `size` bytes.
    fn frame_declaring(size: u64) -> Vec<u8> {
        // Magic, a descriptor with an 8-byte content size, a 1 KiB window, the size,
        // then one empty last raw block.
        let mut f = vec![0x28, 0xB5, 0x2F, 0xFD, 0xC0, 0x00];
        f.extend(size.to_le_bytes());
        f.extend([0x01, 0x00, 0x00]);
        f
    }

    #[test]
    fn shards_declaring_more_than_the_bound_are_refused_before_they_are_inflated() {
        let t = text(&sample().to_bytes());
        let header = t.lines().next().unwrap();
        assert_eq!(declared_size(&frame_declaring(7)), Ok(7));
        for sizes in [
            vec![MAX_SUMMARY_DECOMPRESSED + 1],
            vec![MAX_SUMMARY_DECOMPRESSED / 2 + 1; 2],
        ] {
            // As many hosts as the shards could hold, so only the sizes are wrong.
            let h = header
                .replace("\"shards\":1", &format!("\"shards\":{}", sizes.len()))
                .replace(
                    "\"hosts\":1",
                    &format!("\"hosts\":{}", HOSTS_PER_SHARD * sizes.len()),
                );
            let mut bytes = compress(format!("{h}\n").as_bytes());
            for s in &sizes {
                bytes.extend(frame_declaring(*s));
            }
            let e = SummaryFile::parse(&bytes, KEY).unwrap_err();
            assert!(e.contains("decompresses to more than"), "{e}");
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
