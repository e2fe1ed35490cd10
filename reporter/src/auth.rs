//! The token check: when a token is configured, every route but `/healthz` needs it,
//! as `Authorization: Bearer <token>` or as the password of HTTP Basic auth (any
//! user name, so browsers can log in). Compared in constant time, on SHA-256 digests
//! so that the length does not leak either.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::response::error;

/// The digest a configured token is kept as.
pub(crate) fn token_digest(token: &str) -> [u8; 32] {
    sha256(token.as_bytes())
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Whether `req` carries the token whose digest is `want` (always, without one).
pub(crate) fn authorized(want: Option<&[u8; 32]>, req: &Request<Bytes>) -> bool {
    let Some(want) = want else {
        return true;
    };
    let Some(value) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let given = if let Some(t) = value.strip_prefix("Bearer ") {
        t.trim().as_bytes().to_vec()
    } else if let Some(b) = value.strip_prefix("Basic ") {
        // Browsers: any user name, the token as password.
        use base64::Engine;
        match base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .ok()
        {
            Some(raw) => match raw.iter().position(|&c| c == b':') {
                Some(i) => raw[i + 1..].to_vec(),
                None => return false,
            },
            None => return false,
        }
    } else {
        return false;
    };
    // Comparing digests makes the comparison constant-time in the length too.
    bool::from(sha256(&given).ct_eq(want))
}

/// 401, offering both ways to send the token.
pub(crate) fn unauthorized() -> Response<Bytes> {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "a token is required: send `Authorization: Bearer <token>` (or log in with the token as password)",
    );
    let h = r.headers_mut();
    h.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"fleet-reporter\", charset=\"UTF-8\""),
    );
    h.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"fleet-reporter\""),
    );
    r
}
