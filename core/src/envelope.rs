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
    decoded(s).is_some_and(|sig| keys.verify(message, &sig))
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

/// [`open`] for many envelopes of one type at once, with the same answers: the
/// first trusted signature of each is checked in one ed25519 batch
/// ([`TrustedKeys::verify_batch`]). An envelope with no such signature (or not well
/// formed) is opened on its own, and when the batch does not pass every envelope
/// is, so every refusal and its message is exactly [`open`]'s.
pub fn open_many(
    objects: &[&[u8]],
    payload_type: &str,
    trusted: &TrustedKeys,
    limit: u64,
) -> Vec<Result<Opened, EnvelopeError>> {
    let single = |b: &[u8]| open(b, payload_type, trusted, limit);
    // Per envelope, its payload, signed message and first trusted signature.
    type Candidate = (Vec<u8>, Vec<u8>, Signature);
    let candidates: Vec<Option<Candidate>> = objects
        .iter()
        .map(|bytes| {
            let (env, payload) = parse(bytes, payload_type, limit).ok()?;
            let first_trusted = env.signatures.into_iter().find(|s| trusted.knows(&s.keyid));
            let sig = decoded(&first_trusted?)?;
            let message = pae(payload_type, &payload);
            Some((payload, message, sig))
        })
        .collect();
    let items: Vec<(&[u8], &Signature)> = candidates
        .iter()
        .flatten()
        .map(|(_, m, s)| (m.as_slice(), s))
        .collect();
    if !items.is_empty() && !trusted.verify_batch(&items) {
        return objects.iter().map(|b| single(b)).collect();
    }
    objects
        .iter()
        .zip(candidates)
        .map(|(bytes, c)| match c {
            Some((payload, _, sig)) => Ok(Opened {
                payload,
                signed_by: sig.key_name,
            }),
            None => single(bytes),
        })
        .collect()
}

/// An envelope signature as a [`Signature`], if it is 64 bytes of base64.
fn decoded(s: &EnvelopeSignature) -> Option<Signature> {
    let bytes = B64.decode(&s.sig).ok()?.try_into().ok()?;
    Some(Signature {
        key_name: s.keyid.clone(),
        bytes,
    })
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

    /// The first signature's bytes in an envelope, replaced by `f` of them.
    fn with_sig(bytes: &[u8], f: impl Fn(&mut [u8; 64])) -> Vec<u8> {
        let mut env: Envelope = serde_json::from_slice(bytes).unwrap();
        let mut sig: [u8; 64] = B64
            .decode(&env.signatures[0].sig)
            .unwrap()
            .try_into()
            .unwrap();
        f(&mut sig);
        env.signatures[0].sig = B64.encode(sig);
        serde_json::to_vec(&env).unwrap()
    }

    #[test]
    fn open_many_gives_what_open_gives_for_each() {
        let k = SecretKey::generate("p-1").unwrap();
        let other = SecretKey::generate("p-2").unwrap();
        let trusted = TrustedKeys::new([k.public()]);
        let good: Vec<Vec<u8>> = (0..40)
            .map(|i| seal(T, format!("{{\"n\":{i}}}").as_bytes(), &k))
            .collect();
        let objects: Vec<&[u8]> = good.iter().map(Vec::as_slice).collect();
        let all = open_many(&objects, T, &trusted, 1 << 16);
        for (i, o) in all.iter().enumerate() {
            let o = o.as_ref().unwrap();
            assert_eq!(o.payload, format!("{{\"n\":{i}}}").as_bytes());
            assert_eq!(o.signed_by, "p-1");
        }
        assert!(open_many(&[], T, &trusted, 1 << 16).is_empty());

        // One bad apple of each kind among good ones: every answer is open's.
        let identity_r = with_sig(&good[0], |s| {
            s[..32].fill(0);
            s[0] = 1;
        });
        let bad: Vec<Vec<u8>> = vec![
            with_sig(&good[1], |s| s[40] ^= 1),
            // An `s` of all ones is not a canonical scalar.
            with_sig(&good[2], |s| s[32..].fill(0xff)),
            // An `R` that is no point on the curve (y = 2 has no x).
            with_sig(&good[3], |s| {
                s[..32].fill(0);
                s[0] = 2;
            }),
            identity_r,
            seal(T, b"{}", &other),
            seal("other", b"{}", &k),
            b"not json".to_vec(),
            String::from_utf8(good[4].clone())
                .unwrap()
                .replace("\"payload\":\"", "\"payload\":\"AAAA")
                .into_bytes(),
        ];
        for b in &bad {
            let mut objects: Vec<&[u8]> = good.iter().map(Vec::as_slice).collect();
            objects.insert(17, b);
            let many = open_many(&objects, T, &trusted, 1 << 16);
            for (o, m) in objects.iter().zip(&many) {
                let single = open(o, T, &trusted, 1 << 16);
                match (&single, m) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!((&a.payload, &a.signed_by), (&b.payload, &b.signed_by))
                    }
                    (Err(a), Err(b)) => assert_eq!(a, b),
                    _ => panic!("open gave {single:?}, open_many {m:?}"),
                }
            }
            assert!(many[17].is_err(), "{:?}", many[17]);
            assert_eq!(many.iter().filter(|m| m.is_err()).count(), 1);
        }
    }

    #[test]
    fn a_batch_refuses_what_the_strict_check_refuses() {
        let k = SecretKey::generate("p-1").unwrap();
        let trusted = TrustedKeys::new([k.public()]);
        let sigs: Vec<(Vec<u8>, Signature)> = (0..8)
            .map(|i| {
                let m = format!("message {i}").into_bytes();
                let s = k.sign(&m);
                (m, s)
            })
            .collect();
        let items = |sigs: &[(Vec<u8>, Signature)]| -> Vec<(Vec<u8>, Signature)> { sigs.to_vec() };
        let check = |v: &[(Vec<u8>, Signature)]| {
            let refs: Vec<(&[u8], &Signature)> = v.iter().map(|(m, s)| (m.as_slice(), s)).collect();
            trusted.verify_batch(&refs)
        };
        assert!(check(&sigs));
        assert!(!check(&[]), "an empty batch decides nothing");
        // A changed message, a key name not trusted, a name trusted twice.
        let mut v = items(&sigs);
        v[3].0.push(b'!');
        assert!(!check(&v));
        let mut v = items(&sigs);
        v[5].1.key_name = "p-2".into();
        assert!(!check(&v));
        let twice = TrustedKeys::new([k.public(), SecretKey::generate("p-1").unwrap().public()]);
        let refs: Vec<(&[u8], &Signature)> = sigs.iter().map(|(m, s)| (m.as_slice(), s)).collect();
        assert!(!twice.verify_batch(&refs));
        assert!(sigs.iter().all(|(m, s)| twice.verify(m, s)));
    }
}
