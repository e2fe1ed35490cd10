//! HTTP answers: the security headers every answer carries, and the small builders
//! for text, JSON and error bodies (errors are JSON `{"error": "…"}`).

use bytes::Bytes;
use fleet_core::bucket::BucketError;
use http::{HeaderValue, Response, StatusCode, header};

/// The Content-Security-Policy of every answer: only this origin's script and style,
/// no inline code, no framing, no forms.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Adds the headers every answer carries: [`CSP`], no sniffing, no framing, no
/// referrer, no caching.
pub(crate) fn secure_headers(res: &mut Response<Bytes>) {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// An answer with `body` of `content_type`.
pub(crate) fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Bytes> {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A JSON answer, one line.
pub(crate) fn json(status: StatusCode, v: &serde_json::Value) -> Response<Bytes> {
    let mut body = serde_json::to_vec(v).expect("JSON values serialise");
    body.push(b'\n');
    text(status, "application/json", body)
}

/// An error answer: `{"error": msg}`.
pub(crate) fn error(status: StatusCode, msg: &str) -> Response<Bytes> {
    json(status, &serde_json::json!({ "error": msg }))
}

/// 503: the bucket could not be read (logged too).
pub(crate) fn unavailable(e: &BucketError) -> Response<Bytes> {
    tracing::error!("{e}");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("cannot read the fleet bucket: {e}"),
    )
}
