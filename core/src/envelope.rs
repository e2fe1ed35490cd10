//! Signed envelopes for manifests and releases: DSSE (Dead Simple Signing Envelope,
//! the in-toto/Sigstore format) with fleet's key names as `keyid`.
//!
//! Stored form (JSON, one object):
//!
//! ```json
//! {"payloadType":"application/vnd.fleet.manifest.v1+json",
//!  "payload":"<base64 of the exact payload bytes>",
//!  "signatures":[{"keyid":"publisher-1","sig":"<base64 of 64 bytes>"}]}
//! ```
//!
//! Each signature is ed25519 over DSSE's pre-authentication encoding
//! `"DSSEv1" SP len(type) SP type SP len(payload) SP payload`, lengths in ASCII
//! decimal. Signing the exact payload bytes (not a re-serialisation) means what is
//! verified is byte for byte what is parsed afterwards; binding the type means a
//! signed release can never be replayed as a manifest or the reverse.
//!
//! [`open`] checks the size bound, parses the envelope strictly and verifies a
//! signature by a trusted key *before* it hands out the payload; callers never see
//! unverified payload bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::keys::{SecretKey, Signature, TrustedKeys};

/// The envelope as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Envelope {
    payload_type: String,
    payload: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeSignature {
    keyid: String,
    sig: String,
}

/// A payload whose signature has been checked.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The exact payload bytes that were signed.
    pub payload: Vec<u8>,
    /// Name of the trusted key whose signature verified.
    pub signed_by: String,
}

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The object is larger than the bound for its kind.
    #[error("it is {size} bytes, larger than the {limit}-byte bound")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// Not a well-formed envelope.
    #[error("it is not a well-formed signed envelope: {0}")]
    Malformed(String),
    /// The envelope carries another kind of payload.
    #[error("it holds a {found:?} payload where a {expected:?} was expected")]
    WrongType {
        /// What was expected.
        expected: String,
        /// What it holds.
        found: String,
    },
    /// None of its signatures is by a trusted key.
    #[error("it is signed only by key(s) {names:?}, none of which is trusted here")]
    UnknownKey {
        /// The key names found in the envelope.
        names: Vec<String>,
    },
    /// A trusted key's signature does not verify.
    #[error(
        "the signature by trusted key {name:?} does not verify: the content was changed after signing, or the signature was forged"
    )]
    BadSignature {
        /// The trusted key's name.
        name: String,
    },
}

/// DSSE's pre-authentication encoding (also what a signed status report signs,
/// `crate::status_sig`).
pub(crate) fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    m.extend_from_slice(payload);
    m
}

/// Signs `payload` as `payload_type` with `key` and returns the stored envelope bytes.
pub fn seal(payload_type: &str, payload: &[u8], key: &SecretKey) -> Vec<u8> {
    seal_many(payload_type, payload, std::slice::from_ref(key))
}

/// Checks size, form and type; returns the envelope and its decoded payload.
fn parse(
    bytes: &[u8],
    payload_type: &str,
    limit: u64,
) -> Result<(Envelope, Vec<u8>), EnvelopeError> {
    if bytes.len() as u64 > limit {
        return Err(EnvelopeError::TooLarge {
            size: bytes.len() as u64,
            limit,
        });
    }
    let env: Envelope =
        serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    if env.payload_type != payload_type {
        return Err(EnvelopeError::WrongType {
            expected: payload_type.to_owned(),
            found: env.payload_type.chars().take(100).collect(),
        });
    }
    if env.signatures.is_empty() {
        return Err(EnvelopeError::Malformed("it has no signatures".into()));
    }
    let payload = B64
        .decode(&env.payload)
        .map_err(|e| EnvelopeError::Malformed(format!("payload is not base64: {e}")))?;
    Ok((env, payload))
}

/// Whether `s` is a valid signature over `message` by a key of `keys`.
fn verifies(keys: &TrustedKeys, message: &[u8], s: &EnvelopeSignature) -> bool {
    B64.decode(&s.sig)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .is_some_and(|bytes| {
            keys.verify(
                message,
                &Signature {
                    key_name: s.keyid.clone(),
                    bytes,
                },
            )
        })
}

/// Checks size, form, type and signature, and returns the verified payload.
pub fn open(
    bytes: &[u8],
    payload_type: &str,
    trusted: &TrustedKeys,
    limit: u64,
) -> Result<Opened, EnvelopeError> {
    let (env, payload) = parse(bytes, payload_type, limit)?;
    let message = pae(payload_type, &payload);
    let mut bad_trusted = None;
    for s in &env.signatures {
        if !trusted.knows(&s.keyid) {
            continue;
        }
        if verifies(trusted, &message, s) {
            return Ok(Opened {
                payload,
                signed_by: s.keyid.clone(),
            });
        }
        bad_trusted.get_or_insert_with(|| s.keyid.clone());
    }
    match bad_trusted {
        Some(name) => Err(EnvelopeError::BadSignature { name }),
        None => Err(EnvelopeError::UnknownKey {
            names: env
                .signatures
                .iter()
                .map(|s| s.keyid.chars().take(64).collect())
                .collect(),
        }),
    }
}

/// Signs `payload` as `payload_type` with every key of `keys` (a threshold-signed
/// object such as a trust root) and returns the stored envelope bytes.
pub fn seal_many(payload_type: &str, payload: &[u8], keys: &[SecretKey]) -> Vec<u8> {
    let message = pae(payload_type, payload);
    let env = Envelope {
        payload_type: payload_type.to_owned(),
        payload: B64.encode(payload),
        signatures: keys
            .iter()
            .map(|k| {
                let sig = k.sign(&message);
                EnvelopeSignature {
                    keyid: sig.key_name,
                    sig: B64.encode(sig.bytes),
                }
            })
            .collect(),
    };
    let mut out = serde_json::to_vec(&env).expect("envelope serialises");
    out.push(b'\n');
    out
}

/// A threshold-signed envelope taken apart: its payload and the names of the keys
/// whose signature verified.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The exact payload bytes. Not yet trusted: the caller decides whether
    /// `signers` are enough before it acts on them.
    pub payload: Vec<u8>,
    /// Names of the keys of the given set whose signature verifies, each once.
    pub signers: std::collections::BTreeSet<String>,
    /// Every `keyid` in the envelope, for messages.
    pub keyids: Vec<String>,
}

/// Checks size, form and type, and every signature against `keys`. Unlike [`open`]
/// it does not stop at the first good signature: a threshold rule counts them.
pub fn signers(
    bytes: &[u8],
    payload_type: &str,
    keys: &TrustedKeys,
    limit: u64,
) -> Result<Signed, EnvelopeError> {
    let (env, payload) = parse(bytes, payload_type, limit)?;
    let message = pae(payload_type, &payload);
    let mut signers = std::collections::BTreeSet::new();
    for s in &env.signatures {
        if verifies(keys, &message, s) {
            signers.insert(s.keyid.clone());
        }
    }
    Ok(Signed {
        payload,
        signers,
        keyids: env
            .signatures
            .iter()
            .map(|s| s.keyid.chars().take(64).collect())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "application/vnd.fleet.test.v1+json";

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn seal_then_open() {
        let k = SecretKey::generate("p-1").unwrap();
        let bytes = seal(T, b"{\"a\":1}", &k);
        let o = open(&bytes, T, &TrustedKeys::new([k.public()]), 1 << 16).unwrap();
        assert_eq!(o.payload, b"{\"a\":1}");
        assert_eq!(o.signed_by, "p-1");
    }

    #[test]
    fn type_is_bound_into_the_signature() {
        let k = SecretKey::generate("p-1").unwrap();
        let bytes = seal(T, b"{}", &k);
        let trusted = TrustedKeys::new([k.public()]);
        assert!(matches!(
            open(&bytes, "other", &trusted, 1 << 16),
            Err(EnvelopeError::WrongType { .. })
        ));
        // Rewriting the type field in place breaks the signature.
        let forged = String::from_utf8(bytes)
            .unwrap()
            .replace(T, "application/vnd.fleet.tEst.v1+json");
        assert!(matches!(
            open(
                forged.as_bytes(),
                "application/vnd.fleet.tEst.v1+json",
                &trusted,
                1 << 16
            ),
            Err(EnvelopeError::BadSignature { .. })
        ));
    }
}
