//! narinfo files: the per-store-path index entries of a Nix binary cache.
//!
//! Stored at `cache/<hash>.narinfo`, `Key: value` lines as Nix writes them:
//!
//! ```text
//! StorePath: /nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-top
//! URL: nar/0kp2vm4kqif4c1w9m5izzlcw4ira95735lc1gvqsnav3lv6x7fjn.nar.zst
//! Compression: zstd
//! FileHash: sha256:0kp2vm4kqif4c1w9m5izzlcw4ira95735lc1gvqsnav3lv6x7fjn
//! FileSize: 208
//! NarHash: sha256:02ym7by3vdbans15sbmby9kv7jqi35sh90905l8y2f43lf0pys7c
//! NarSize: 568
//! References: f6f5m6dkn5c1qq0ncbaanl6pn2cr18f7-dep
//! Deriver: fc8ar4qr6njccprq15d2b8xx7bw5qrfk-top.drv
//! Sig: test-1:R00KXtallJNxtCpcnIAaqc+46qQ8SGL1BvX4OYZThDvN8Cc7Z1LrzMtsHgxboOCDJ5QV+ZfUbVzYCCryJ1HLAg==
//! ```
//!
//! A `Sig` is ed25519 over Nix's fingerprint
//! `1;<store path>;<NarHash as sha256:base32>;<NarSize>;<References as full paths, comma-separated>`,
//! so it covers the path, the content hash and size, and the references, but not
//! `URL`, `Compression`, `FileHash` or `FileSize`: those are checked against the
//! downloaded bytes, and the signed `NarHash`/`NarSize` against the decompressed NAR.
//!
//! `cache/nix-cache-info` holds `StoreDir: /nix/store` (plus optional
//! `WantMassQuery`/`Priority`).

use std::fmt::{self, Write as _};

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::keys::{SecretKey, Signature, TrustedKeys};
use crate::nixbase32;
use crate::store_path::{STORE_DIR, StorePath};

/// Largest narinfo accepted, in bytes (a system closure's top path has a few hundred
/// references, about 20 KiB).
pub const MAX_NARINFO_SIZE: u64 = 256 * 1024;

/// Contents of `cache/nix-cache-info` as fleet writes it.
pub fn nix_cache_info() -> String {
    format!("StoreDir: {STORE_DIR}\nWantMassQuery: 0\nPriority: 50\n")
}

/// A SHA-256 hash as Nix prints it (`sha256:<base32>`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Hash(pub [u8; 32]);

impl Sha256Hash {
    /// Parses `sha256:<52 base32>`, `sha256:<64 hex>` or SRI `sha256-<base64>`.
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(b64) = s.strip_prefix("sha256-") {
            let v = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            return Some(Self(v.try_into().ok()?));
        }
        let body = s.strip_prefix("sha256:")?;
        let bytes = match body.len() {
            52 => nixbase32::decode(body, 32)?,
            64 => hex::decode(body).ok()?,
            _ => return None,
        };
        Some(Self(bytes.try_into().ok()?))
    }

    /// The hash in Nix base-32, without the `sha256:` prefix (NAR file names use this).
    pub fn to_base32(&self) -> String {
        nixbase32::encode(&self.0)
    }

    /// The SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The hash as 64 lowercase hex digits, without prefix (fleet's own objects name
    /// digests so: manifests, releases, the dashboard snapshot).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits, without prefix; `None` for anything else.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
}

impl fmt::Display for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_base32())
    }
}

impl fmt::Debug for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// How a NAR file is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Not compressed (`.nar`).
    None,
    /// xz (`.nar.xz`), Nix's historical default.
    Xz,
    /// zstd (`.nar.zst`), fleet's default.
    Zstd,
}

impl Compression {
    /// The `Compression:` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }

    /// The NAR file name extension after `.nar`.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Xz => ".xz",
            Compression::Zstd => ".zst",
        }
    }

    /// Parses a `Compression:` value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" | "" => Some(Compression::None),
            "xz" => Some(Compression::Xz),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s).ok_or_else(|| format!("compression {s:?} is not one of zstd, xz, none"))
    }
}

/// A parsed narinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarInfo {
    /// The store path described.
    pub store_path: StorePath,
    /// Where the NAR file is, relative to the cache root (`nar/<filehash>.nar.zst`).
    pub url: String,
    /// How the NAR file is compressed.
    pub compression: Compression,
    /// SHA-256 of the NAR file as stored.
    pub file_hash: Option<Sha256Hash>,
    /// Size of the NAR file as stored.
    pub file_size: Option<u64>,
    /// SHA-256 of the uncompressed NAR (signed).
    pub nar_hash: Sha256Hash,
    /// Size of the uncompressed NAR (signed).
    pub nar_size: u64,
    /// Store paths this one refers to (signed).
    pub references: Vec<StorePath>,
    /// Base name of the derivation that built it, if known.
    pub deriver: Option<String>,
    /// Signatures over the fingerprint.
    pub sigs: Vec<Signature>,
    /// Content address, if the path is content-addressed.
    pub ca: Option<String>,
}

/// Why a narinfo was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NarInfoError {
    /// Larger than [`MAX_NARINFO_SIZE`].
    #[error("narinfo {key} is {size} bytes, over the {limit}-byte bound")]
    TooLarge {
        /// Where it was read from.
        key: String,
        /// Its size.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// Not a well-formed narinfo.
    #[error("narinfo {key} is malformed: {why}")]
    Malformed {
        /// Where it was read from.
        key: String,
        /// What is wrong (names the field).
        why: String,
    },
    /// No signature by a trusted key verifies.
    #[error(
        "narinfo {key} for {store_path} has no valid signature by a trusted cache key (signed by {signers:?}; trusted: {trusted:?})"
    )]
    Untrusted {
        /// Where it was read from.
        key: String,
        /// The store path it describes.
        store_path: String,
        /// Names of the keys that claim to have signed it.
        signers: Vec<String>,
        /// Names of the trusted keys.
        trusted: Vec<String>,
    },
}

impl NarInfo {
    /// Parses narinfo text read from `key` (for messages).
    pub fn parse(text: &[u8], key: &str) -> Result<Self, NarInfoError> {
        if text.len() as u64 > MAX_NARINFO_SIZE {
            return Err(NarInfoError::TooLarge {
                key: key.into(),
                size: text.len() as u64,
                limit: MAX_NARINFO_SIZE,
            });
        }
        let bad = |why: String| NarInfoError::Malformed {
            key: key.into(),
            why,
        };
        let text = std::str::from_utf8(text).map_err(|_| bad("it is not UTF-8 text".into()))?;
        let mut store_path = None;
        let mut url = None;
        let mut compression = None;
        let mut file_hash = None;
        let mut file_size = None;
        let mut nar_hash = None;
        let mut nar_size = None;
        let mut references = None;
        let mut deriver = None;
        let mut sigs = Vec::new();
        let mut ca = None;
        let mut seen = std::collections::HashSet::new();
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            let (field, value) = line
                .split_once(": ")
                .or_else(|| line.split_once(':').map(|(f, v)| (f, v.trim_start())))
                .ok_or_else(|| bad(format!("line {line:?} is not `Field: value`")))?;
            if field != "Sig" && !seen.insert(field) {
                return Err(bad(format!("field {field} appears twice")));
            }
            let num = |v: &str| -> Result<u64, NarInfoError> {
                v.parse()
                    .map_err(|_| bad(format!("field {field} is not a number: {v:?}")))
            };
            let hash = |v: &str| {
                Sha256Hash::parse(v)
                    .ok_or_else(|| bad(format!("field {field} is not a sha256 hash: {v:?}")))
            };
            match field {
                "StorePath" => {
                    store_path = Some(
                        StorePath::new(value).map_err(|e| bad(format!("field StorePath: {e}")))?,
                    );
                }
                "URL" => {
                    crate::layout::Key::nar(value)
                        .map_err(|_| bad(format!("field URL {value:?} is not nar/<file name>")))?;
                    url = Some(value.to_owned());
                }
                "Compression" => {
                    compression = Some(Compression::parse(value).ok_or_else(|| {
                        bad(format!(
                            "field Compression {value:?} is not supported (zstd, xz, none)"
                        ))
                    })?);
                }
                "FileHash" => {
                    file_hash = Some(hash(value)?);
                }
                "FileSize" => {
                    file_size = Some(num(value)?);
                }
                "NarHash" => {
                    nar_hash = Some(hash(value)?);
                }
                "NarSize" => {
                    nar_size = Some(num(value)?);
                }
                "References" => {
                    let mut refs = Vec::new();
                    for r in value.split(' ').filter(|r| !r.is_empty()) {
                        refs.push(
                            StorePath::from_base_name(r)
                                .map_err(|e| bad(format!("field References: {e}")))?,
                        );
                    }
                    references = Some(refs);
                }
                "Deriver" if value != "unknown-deriver" => deriver = Some(value.to_owned()),
                "Sig" => {
                    sigs.push(Signature::parse(value).map_err(|e| bad(format!("field Sig: {e}")))?)
                }
                "CA" => {
                    ca = Some(value.to_owned());
                }
                // Fields Nix may add and fleet does not use are skipped, as Nix does.
                _ => {}
            }
        }
        let missing = |f: &str| bad(format!("field {f} is missing"));
        Ok(NarInfo {
            store_path: store_path.ok_or_else(|| missing("StorePath"))?,
            url: url.ok_or_else(|| missing("URL"))?,
            // Nix's default when the field is absent.
            compression: compression.unwrap_or(Compression::Xz),
            file_hash,
            file_size,
            nar_hash: nar_hash.ok_or_else(|| missing("NarHash"))?,
            nar_size: nar_size.ok_or_else(|| missing("NarSize"))?,
            references: references.unwrap_or_default(),
            deriver,
            sigs,
            ca,
        })
    }

    /// Nix's fingerprint, the message every `Sig` signs.
    pub fn fingerprint(&self) -> String {
        fingerprint(
            &self.store_path,
            &self.nar_hash,
            self.nar_size,
            &self.references,
        )
    }

    /// Adds a signature by `key` (replacing an earlier one by the same key name).
    pub fn sign(&mut self, key: &SecretKey) {
        let sig = key.sign(self.fingerprint().as_bytes());
        self.sigs.retain(|s| s.key_name != sig.key_name);
        self.sigs.push(sig);
    }

    /// Checks that a trusted key signed this narinfo. `key` names it in errors.
    pub fn verify(&self, trusted: &TrustedKeys, key: &str) -> Result<(), NarInfoError> {
        let fp = self.fingerprint();
        if self.sigs.iter().any(|s| trusted.verify(fp.as_bytes(), s)) {
            return Ok(());
        }
        Err(NarInfoError::Untrusted {
            key: key.into(),
            store_path: self.store_path.to_string(),
            signers: self.sigs.iter().map(|s| s.key_name.clone()).collect(),
            trusted: trusted.keys().iter().map(|k| k.name().to_owned()).collect(),
        })
    }

    /// The narinfo text, fields in Nix's order.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "StorePath: {}", self.store_path);
        let _ = writeln!(s, "URL: {}", self.url);
        let _ = writeln!(s, "Compression: {}", self.compression);
        if let Some(h) = &self.file_hash {
            let _ = writeln!(s, "FileHash: {h}");
        }
        if let Some(n) = self.file_size {
            let _ = writeln!(s, "FileSize: {n}");
        }
        let _ = writeln!(s, "NarHash: {}", self.nar_hash);
        let _ = writeln!(s, "NarSize: {}", self.nar_size);
        let refs: Vec<String> = self.references.iter().map(|r| r.base_name()).collect();
        let _ = writeln!(s, "References: {}", refs.join(" "));
        if let Some(d) = &self.deriver {
            let _ = writeln!(s, "Deriver: {d}");
        }
        for sig in &self.sigs {
            let _ = writeln!(s, "Sig: {sig}");
        }
        if let Some(ca) = &self.ca {
            let _ = writeln!(s, "CA: {ca}");
        }
        s
    }
}

/// Nix's fingerprint of a store path:
/// `1;<path>;<sha256:base32 NarHash>;<NarSize>;<comma-separated full reference paths>`.
pub fn fingerprint(
    path: &StorePath,
    nar_hash: &Sha256Hash,
    nar_size: u64,
    references: &[StorePath],
) -> String {
    let refs: Vec<String> = references.iter().map(|r| r.to_string()).collect();
    format!("1;{path};{nar_hash};{nar_size};{}", refs.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PublicKey;

    // Written by `nix copy --to file://…?compression=zstd&secret-key=…` (Nix 2.8),
    // signed with the key below.
    const NIX_NARINFO: &str = "StorePath: /nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-top
URL: nar/0kp2vm4kqif4c1w9m5izzlcw4ira95735lc1gvqsnav3lv6x7fjn.nar.zst
Compression: zstd
FileHash: sha256:0kp2vm4kqif4c1w9m5izzlcw4ira95735lc1gvqsnav3lv6x7fjn
FileSize: 208
NarHash: sha256:02ym7by3vdbans15sbmby9kv7jqi35sh90905l8y2f43lf0pys7c
NarSize: 568
References: f6f5m6dkn5c1qq0ncbaanl6pn2cr18f7-dep
Deriver: fc8ar4qr6njccprq15d2b8xx7bw5qrfk-top.drv
Sig: test-1:R00KXtallJNxtCpcnIAaqc+46qQ8SGL1BvX4OYZThDvN8Cc7Z1LrzMtsHgxboOCDJ5QV+ZfUbVzYCCryJ1HLAg==
";
    const NIX_PK: &str = "test-1:gJVA5AiRq2SYX4tdUWcF+yZgkqP6uIflglJj5RStBvE=";

    #[test]
    fn parses_and_verifies_what_nix_wrote() {
        let ni = NarInfo::parse(NIX_NARINFO.as_bytes(), "cache/x.narinfo").unwrap();
        assert_eq!(ni.compression, Compression::Zstd);
        assert_eq!(ni.nar_size, 568);
        assert_eq!(ni.references.len(), 1);
        assert_eq!(ni.to_text(), NIX_NARINFO);
        let trusted = TrustedKeys::new([PublicKey::parse(NIX_PK, "t").unwrap()]);
        ni.verify(&trusted, "k").unwrap();
    }

    #[test]
    fn any_signed_field_change_breaks_the_signature() {
        let trusted = TrustedKeys::new([PublicKey::parse(NIX_PK, "t").unwrap()]);
        for (from, to) in [
            ("NarSize: 568", "NarSize: 569"),
            ("02ym7by3", "12ym7by3"),
            (
                "References: f6f5m6dkn5c1qq0ncbaanl6pn2cr18f7-dep",
                "References: ",
            ),
            (
                "aql5kla6x8r78rrdfyxr471hbn3himl6-top",
                "aql5kla6x8r78rrdfyxr471hbn3himl6-toq",
            ),
        ] {
            let text = NIX_NARINFO.replace(from, to);
            let ni = NarInfo::parse(text.as_bytes(), "k").unwrap();
            assert!(
                matches!(
                    ni.verify(&trusted, "k"),
                    Err(NarInfoError::Untrusted { .. })
                ),
                "{from} -> {to}"
            );
        }
        // Unsigned fields do not break it; they are checked against the bytes instead.
        let text = NIX_NARINFO.replace("FileSize: 208", "FileSize: 209");
        NarInfo::parse(text.as_bytes(), "k")
            .unwrap()
            .verify(&trusted, "k")
            .unwrap();
    }

    #[test]
    fn sign_produces_what_verify_accepts() {
        let k = SecretKey::generate("cache-1").unwrap();
        let mut ni = NarInfo::parse(NIX_NARINFO.as_bytes(), "k").unwrap();
        ni.sign(&k);
        let again = NarInfo::parse(ni.to_text().as_bytes(), "k").unwrap();
        again.verify(&TrustedKeys::new([k.public()]), "k").unwrap();
        assert_eq!(again.sigs.len(), 2);
    }

    #[test]
    fn malformed_narinfos_name_the_field() {
        for (from, to, want) in [
            ("URL: nar/", "URL: ../../hosts/", "URL"),
            ("NarSize: 568", "NarSize: lots", "NarSize"),
            ("NarHash: sha256:", "NarHash: md5:", "NarHash"),
            ("StorePath: /nix/store/", "StorePath: /etc/", "StorePath"),
            ("Compression: zstd", "Compression: bzip2", "Compression"),
            ("References: f6f5", "References: ../f6f5", "References"),
            ("Deriver:", "NarSize: 1\nDeriver:", "twice"),
        ] {
            let text = NIX_NARINFO.replace(from, to);
            let err = NarInfo::parse(text.as_bytes(), "cache/x.narinfo")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(want) && err.contains("cache/x.narinfo"),
                "{to}: {err}"
            );
        }
        let text = NIX_NARINFO.replace("NarHash", "Nope");
        assert!(
            NarInfo::parse(text.as_bytes(), "k")
                .unwrap_err()
                .to_string()
                .contains("NarHash is missing")
        );
        let big = vec![b'a'; MAX_NARINFO_SIZE as usize + 1];
        assert!(matches!(
            NarInfo::parse(&big, "k"),
            Err(NarInfoError::TooLarge { .. })
        ));
    }

    #[test]
    fn hash_forms() {
        let h = Sha256Hash::parse("sha256:02ym7by3vdbans15sbmby9kv7jqi35sh90905l8y2f43lf0pys7c")
            .unwrap();
        let hex = format!("sha256:{}", hex::encode(h.0));
        assert_eq!(Sha256Hash::parse(&hex), Some(h));
        let sri = format!(
            "sha256-{}",
            base64::engine::general_purpose::STANDARD.encode(h.0)
        );
        assert_eq!(Sha256Hash::parse(&sri), Some(h));
        assert_eq!(Sha256Hash::parse("sha256:zz"), None);
    }
}
