//! AWS Lambda glue: API Gateway (REST v1, HTTP API v2) and Lambda Function URL events
//! in, the same [`Reporter::handle`] as `serve`, Lambda responses out.
//!
//! `lambda_http` turns each event into an `http::Request`. For API Gateway stages
//! other than `$default` it puts the stage in front of the path (`/prod/api/v1/hosts`);
//! [`from_lambda`] removes it again so routes are the same everywhere, and the page
//! uses relative URLs so it works under the stage. A request for the bare stage path
//! (`/prod`) is redirected to `/prod/`, where those relative URLs resolve.
//!
//! Every answer of the reporter is text (HTML, JSON, JavaScript, CSS, Prometheus), so
//! it travels as a text body; anything else would be sent base64-encoded.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, RequestExt};

use crate::Reporter;

/// The API Gateway stage of a request, unless it is `$default` (or there is none,
/// as for Function URLs).
fn stage(req: &lambda_http::Request) -> Option<String> {
    let s = match req.request_context_ref()? {
        RequestContext::ApiGatewayV2(c) => c.stage.clone(),
        RequestContext::ApiGatewayV1(c) => c.stage.clone(),
        #[allow(unreachable_patterns)]
        _ => None,
    };
    s.filter(|s| !s.is_empty() && s != "$default")
}

/// Converts a Lambda request into a plain one, without the stage prefix.
pub fn from_lambda(req: lambda_http::Request) -> Request<Bytes> {
    let stage = stage(&req);
    let (mut parts, body) = req.into_parts();
    let body = match body {
        Body::Empty => Bytes::new(),
        Body::Text(t) => Bytes::from(t),
        Body::Binary(b) => Bytes::from(b),
        #[allow(unreachable_patterns)]
        _ => Bytes::new(),
    };
    if let Some(stage) = stage {
        let path = parts.uri.path();
        let prefix = format!("/{stage}");
        if let Some(rest) = path.strip_prefix(&prefix)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            let rest = if rest.is_empty() { "/" } else { rest };
            let pq = match parts.uri.query() {
                Some(q) => format!("{rest}?{q}"),
                None => rest.to_owned(),
            };
            let mut uri = http::uri::Parts::default();
            uri.path_and_query = pq.parse().ok();
            if let Ok(u) = http::Uri::from_parts(uri) {
                parts.uri = u;
            }
        }
    }
    Request::from_parts(parts, body)
}

/// Converts a reporter answer into a Lambda response.
pub fn to_lambda(res: Response<Bytes>) -> Response<Body> {
    res.map(|b| {
        if b.is_empty() {
            return Body::Empty;
        }
        match String::from_utf8(b.to_vec()) {
            Ok(s) => Body::Text(s),
            Err(e) => Body::Binary(e.into_bytes()),
        }
    })
}

/// Answers one Lambda HTTP event.
pub async fn invoke(reporter: &Reporter, req: lambda_http::Request) -> Response<Body> {
    if let Some(stage) = stage(&req)
        && req.raw_http_path() == format!("/{stage}")
    {
        let mut r = Response::new(Body::Empty);
        *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
        if let Ok(v) = HeaderValue::from_str(&format!("/{stage}/")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return r;
    }
    to_lambda(reporter.handle(from_lambda(req)).await)
}
