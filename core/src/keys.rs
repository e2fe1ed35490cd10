//! Ed25519 keys and signatures in Nix's `name:base64` format.
//!
//! - secret key: `<name>:<base64 of 64 bytes>`, the 32-byte seed followed by the
//!   32-byte public key (what `nix-store --generate-binary-cache-key` writes);
//! - public key: `<name>:<base64 of 32 bytes>`;
//! - signature: `<name>:<base64 of 64 bytes>` (a narinfo `Sig:` line).
//!
//! Both fleet's key kinds use this format: the cache key signs narinfo fingerprints
//! (so real `nix` can verify them with `trusted-public-keys`), the publisher key signs
//! manifests and releases. A key name is 1 to 128 characters of `A-Z a-z 0-9 . _ -`
//! (by convention `<who>-<n>`, such as `cache.example.org-1`).

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::Signer;

/// Longest key name accepted.
pub const MAX_KEY_NAME_LEN: usize = 128;

/// A secret signing key with its name.
#[derive(Clone)]
pub struct SecretKey {
    name: String,
    key: ed25519_dalek::SigningKey,
}

/// A public verification key with its name.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: ed25519_dalek::VerifyingKey,
}

/// A detached signature with the name of the key that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// Name of the signing key.
    pub key_name: String,
    /// The 64 signature bytes.
    pub bytes: [u8; 64],
}

/// What went wrong reading or writing a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read or written.
    #[error("{action} key file {path}: {error}")]
    Io {
        /// "reading" or "writing".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error (part of the message, so not also a `source`).
        error: std::io::Error,
    },
    /// Refused to replace an existing secret key file.
    #[error(
        "secret key file {path} already exists; refusing to overwrite a key (move it away first if you really mean to replace it)"
    )]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The text is not a key in Nix's format.
    #[error(
        "{source_desc} is not a valid {kind} key: {why}; expected `name:base64` as written by `fleet-publish keygen` or `nix-store --generate-binary-cache-key`"
    )]
    Malformed {
        /// Where the text came from (a file path or an option).
        source_desc: String,
        /// "secret" or "public".
        kind: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// A signature string is not in Nix's format.
    #[error("signature {text:?} is malformed: {why}")]
    BadSignature {
        /// The text (truncated).
        text: String,
        /// What is wrong with it.
        why: String,
    },
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name before `:` is empty".into());
    }
    if name.len() > MAX_KEY_NAME_LEN {
        return Err(format!(
            "the name is longer than {MAX_KEY_NAME_LEN} characters"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!("the name {name:?} may hold only A-Z a-z 0-9 . _ -"));
    }
    Ok(())
}

fn split_key(text: &str) -> Result<(&str, Vec<u8>), String> {
    let text = text.trim();
    let (name, b64) = text
        .split_once(':')
        .ok_or_else(|| "there is no `:` between name and key".to_owned())?;
    check_name(name)?;
    let bytes = B64
        .decode(b64)
        .map_err(|e| format!("the part after `:` is not base64 ({e})"))?;
    Ok((name, bytes))
}

fn read_key_file(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|error| KeyError::Io {
        action: "reading",
        path: path.to_owned(),
        error,
    })
}

impl SecretKey {
    /// Generates a fresh key from the operating system's random source.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        check_name(name).map_err(|why| KeyError::Malformed {
            source_desc: format!("key name {name:?}"),
            kind: "secret",
            why,
        })?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("the operating system has no random source");
        Ok(Self {
            name: name.to_owned(),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    /// Parses a secret key; `source_desc` names where it came from, for errors.
    pub fn parse(text: &str, source_desc: &str) -> Result<Self, KeyError> {
        let bad = |why: String| KeyError::Malformed {
            source_desc: source_desc.to_owned(),
            kind: "secret",
            why,
        };
        let (name, bytes) = split_key(text).map_err(bad)?;
        if bytes.len() == 32 {
            return Err(bad(
                "it holds 32 bytes, which is a public key; give the secret key file".into(),
            ));
        }
        let bytes: [u8; 64] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| bad(format!("it holds {} bytes, not 64", b.len())))?;
        let key = ed25519_dalek::SigningKey::from_bytes(bytes[..32].try_into().expect("32"));
        if key.verifying_key().as_bytes() != &bytes[32..] {
            return Err(bad(
                "its public half does not match its secret half (corrupted file?)".into(),
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            key,
        })
    }

    /// Reads a secret key file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Self::parse(&read_key_file(path)?, &format!("file {}", path.display()))
    }

    /// Writes the key to a new file, mode 0600, atomically; never overwrites.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        crate::fsutil::write_atomic(path, self.to_nix_string().as_bytes(), 0o600, false).map_err(
            |error| {
                if error.kind() == std::io::ErrorKind::AlreadyExists {
                    KeyError::Exists {
                        path: path.to_owned(),
                    }
                } else {
                    KeyError::Io {
                        action: "writing",
                        path: path.to_owned(),
                        error,
                    }
                }
            },
        )
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// `name:base64(seed ‖ public)`, Nix's secret key format.
    pub fn to_nix_string(&self) -> String {
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(self.key.as_bytes());
        bytes[32..].copy_from_slice(self.key.verifying_key().as_bytes());
        format!("{}:{}", self.name, B64.encode(bytes))
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature {
            key_name: self.name.clone(),
            bytes: self.key.sign(message).to_bytes(),
        }
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Parses a public key; `source_desc` names where it came from, for errors.
    pub fn parse(text: &str, source_desc: &str) -> Result<Self, KeyError> {
        let bad = |why: String| KeyError::Malformed {
            source_desc: source_desc.to_owned(),
            kind: "public",
            why,
        };
        let (name, bytes) = split_key(text).map_err(bad)?;
        if bytes.len() == 64 {
            return Err(bad(
                "it holds 64 bytes, which is a secret key; give the public key (and keep the secret one secret)".into(),
            ));
        }
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| bad(format!("it holds {} bytes, not 32", b.len())))?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| bad("the 32 bytes are not a valid ed25519 point".into()))?;
        Ok(Self {
            name: name.to_owned(),
            key,
        })
    }

    /// Reads a public key file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Self::parse(&read_key_file(path)?, &format!("file {}", path.display()))
    }

    /// Writes the key to `path` (mode 0644), atomically, replacing any file there.
    pub fn write(&self, path: &Path) -> Result<(), KeyError> {
        let text = format!("{}\n", self.to_nix_string());
        crate::fsutil::write_atomic(path, text.as_bytes(), 0o644, true).map_err(|error| {
            KeyError::Io {
                action: "writing",
                path: path.to_owned(),
                error,
            }
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `name:base64(public)`, Nix's public key format (what `trusted-public-keys` takes).
    pub fn to_nix_string(&self) -> String {
        format!("{}:{}", self.name, B64.encode(self.key.as_bytes()))
    }

    /// Whether `sig` is this key's valid signature over `message` (names must match).
    pub fn verify(&self, message: &[u8], sig: &Signature) -> bool {
        sig.key_name == self.name
            && self
                .key
                .verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig.bytes))
                .is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_nix_string())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_nix_string())
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_nix_string())
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PublicKey::parse(&s, "public key").map_err(serde::de::Error::custom)
    }
}

impl Signature {
    /// Parses `name:base64(64 bytes)`.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let bad = |why: String| KeyError::BadSignature {
            text: text.chars().take(120).collect(),
            why,
        };
        let (name, bytes) = split_key(text).map_err(bad)?;
        let bytes: [u8; 64] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| bad(format!("it holds {} bytes, not 64", b.len())))?;
        Ok(Self {
            key_name: name.to_owned(),
            bytes,
        })
    }

    /// `name:base64(signature)`.
    pub fn to_nix_string(&self) -> String {
        format!("{}:{}", self.key_name, B64.encode(self.bytes))
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_nix_string())
    }
}

/// A set of trusted public keys, looked up by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedKeys(Vec<PublicKey>);

impl TrustedKeys {
    /// Builds the set from keys.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        Self(keys.into_iter().collect())
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The keys.
    pub fn keys(&self) -> &[PublicKey] {
        &self.0
    }

    /// Whether a key of this name is trusted.
    pub fn knows(&self, name: &str) -> bool {
        self.0.iter().any(|k| k.name == name)
    }

    /// Whether any trusted key made `sig` over `message`.
    pub fn verify(&self, message: &[u8], sig: &Signature) -> bool {
        self.0.iter().any(|k| k.verify(message, sig))
    }

    /// Whether every `(message, signature)` verifies, checked together (ed25519
    /// batch verification: about a third of the cost per signature). `false` says
    /// only that not all do, or that the batch could not decide: callers then check
    /// each with [`TrustedKeys::verify`], which has the last word on every refusal.
    ///
    /// Each signature must name exactly one trusted key. A batch refuses what
    /// [`PublicKey::verify`]'s strict check refuses for any signer (a non-canonical
    /// `s`, an `R` that is no point, a small-order key, the identity as `R`); it may
    /// accept one thing the strict check refuses: a signature whose `R` carries a
    /// small torsion component, which only the key's holder can make valid (decision
    /// 31).
    pub fn verify_batch(&self, items: &[(&[u8], &Signature)]) -> bool {
        const IDENTITY: [u8; 32] = {
            let mut b = [0u8; 32];
            b[0] = 1;
            b
        };
        let mut messages = Vec::with_capacity(items.len());
        let mut signatures = Vec::with_capacity(items.len());
        let mut keys = Vec::with_capacity(items.len());
        for (message, sig) in items {
            let mut named = self.0.iter().filter(|k| k.name == sig.key_name);
            let (Some(key), None) = (named.next(), named.next()) else {
                return false;
            };
            if key.key.is_weak() || sig.bytes[..32] == IDENTITY {
                return false;
            }
            messages.push(*message);
            signatures.push(ed25519_dalek::Signature::from_bytes(&sig.bytes));
            keys.push(key.key);
        }
        !items.is_empty() && ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
    }

    /// Space-separated, as Nix's `trusted-public-keys` option takes them.
    pub fn to_nix_option(&self) -> String {
        self.0
            .iter()
            .map(PublicKey::to_nix_string)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by `nix-store --generate-binary-cache-key test-1 sk pk` (Nix 2.8).
    const NIX_SK: &str = "test-1:DWpoBYLq5XorECKQnfQEAHG5Ad1YwEjkeV45L9B+bJrWA23wc4dqJHqEWHgQ75/ySphseuCyvdWqdpJNj8zdEg==";
    const NIX_PK: &str = "test-1:1gNt8HOHaiR6hFh4EO+f8kqYbHrgsr3VqnaSTY/M3RI=";

    #[test]
    fn round_trips_generated_keys() {
        let sk = SecretKey::generate("fleet-test-1").unwrap();
        let again = SecretKey::parse(&sk.to_nix_string(), "test").unwrap();
        assert_eq!(again.public(), sk.public());
        let pk = PublicKey::parse(&sk.public().to_nix_string(), "test").unwrap();
        let sig = sk.sign(b"hello");
        assert!(pk.verify(b"hello", &sig));
        assert!(!pk.verify(b"hellO", &sig));
        let parsed = Signature::parse(&sig.to_nix_string()).unwrap();
        assert_eq!(parsed, sig);
    }

    #[test]
    fn secret_key_halves_must_match() {
        let sk = SecretKey::generate("a").unwrap();
        let other = SecretKey::generate("a").unwrap();
        let mut bytes = B64
            .decode(sk.to_nix_string().split_once(':').unwrap().1)
            .unwrap();
        let ob = B64
            .decode(other.to_nix_string().split_once(':').unwrap().1)
            .unwrap();
        bytes[32..].copy_from_slice(&ob[32..]);
        let err = SecretKey::parse(&format!("a:{}", B64.encode(&bytes)), "x").unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn malformed_keys_say_what_and_where() {
        let cases = [
            ("nocolon", "no `:`"),
            (":AAAA", "empty"),
            ("a b:AAAA", "may hold only"),
            ("a:!!!", "not base64"),
            ("a:AAAA", "3 bytes"),
        ];
        for (text, want) in cases {
            let err = SecretKey::parse(text, "file /k").unwrap_err().to_string();
            assert!(
                err.contains(want) && err.contains("file /k"),
                "{text}: {err}"
            );
        }
        let pk = SecretKey::generate("a").unwrap().public().to_nix_string();
        let err = SecretKey::parse(&pk, "file /k").unwrap_err().to_string();
        assert!(err.contains("public key"), "{err}");
        let sk = SecretKey::generate("a").unwrap().to_nix_string();
        let err = PublicKey::parse(&sk, "file /p").unwrap_err().to_string();
        assert!(err.contains("secret key"), "{err}");
    }

    #[test]
    fn verifying_needs_the_right_name() {
        let sk = SecretKey::generate("a").unwrap();
        let sig = sk.sign(b"m");
        let renamed = Signature {
            key_name: "b".into(),
            ..sig.clone()
        };
        assert!(!sk.public().verify(b"m", &renamed));
        let trusted = TrustedKeys::new([sk.public()]);
        assert!(trusted.verify(b"m", &sig));
        assert!(trusted.knows("a") && !trusted.knows("b"));
    }

    #[test]
    fn loads_a_key_made_by_nix() {
        let sk = SecretKey::parse(NIX_SK, "nix").unwrap();
        assert_eq!(sk.name(), "test-1");
        assert_eq!(sk.public().to_nix_string(), NIX_PK);
    }

    #[test]
    fn secret_files_are_0600_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sk");
        let sk = SecretKey::generate("x").unwrap();
        sk.write_new(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            SecretKey::generate("y").unwrap().write_new(&p),
            Err(KeyError::Exists { .. })
        ));
        assert_eq!(SecretKey::load(&p).unwrap().public(), sk.public());
        let missing = SecretKey::load(&d.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("nope"), "{missing}");
    }
}
