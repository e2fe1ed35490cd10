//! Routing: which answer each path gets (the table is in the crate docs). GET and
//! HEAD only; `/healthz` needs no token, every other route does when one is
//! configured ([`crate::auth`]).

use bytes::Bytes;
use fleet_core::HostName;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};

use crate::response::{error, json, secure_headers, text, unavailable};
use crate::{Reporter, api, auth, html, metrics};

impl Reporter {
    /// Answers one HTTP request. Never fails: errors become 4xx/5xx answers with a
    /// JSON `{"error": …}` body.
    pub async fn handle(&self, req: Request<Bytes>) -> Response<Bytes> {
        let head = req.method() == Method::HEAD;
        let mut res = self.route(&req).await;
        secure_headers(&mut res);
        if head {
            *res.body_mut() = Bytes::new();
        }
        res
    }

    async fn route(&self, req: &Request<Bytes>) -> Response<Bytes> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and HEAD are served",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let path = req.uri().path();
        if path == "/healthz" {
            return text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n");
        }
        if !auth::authorized(self.token_digest.as_ref(), req) {
            return auth::unauthorized();
        }
        let query = req.uri().query().unwrap_or("");
        match path {
            "/" | "/index.html" => text(StatusCode::OK, "text/html; charset=utf-8", html::PAGE),
            "/assets/app.js" => text(
                StatusCode::OK,
                "text/javascript; charset=utf-8",
                html::SCRIPT,
            ),
            "/assets/app.css" => text(StatusCode::OK, "text/css; charset=utf-8", html::STYLE),
            "/api/v1/summary" => match self.fleet().await {
                Ok(f) => json(StatusCode::OK, &api::summary(&f)),
                Err(e) => unavailable(&e),
            },
            "/api/v1/hosts" => {
                let q = match api::HostQuery::parse(query) {
                    Ok(q) => q,
                    Err(e) => return error(StatusCode::BAD_REQUEST, &e),
                };
                match self.fleet().await {
                    Ok(f) => json(StatusCode::OK, &api::hosts(&f, &q)),
                    Err(e) => unavailable(&e),
                }
            }
            "/api/v1/rollouts" => match self.rollouts().await {
                Ok(v) => json(StatusCode::OK, &v),
                Err(e) => unavailable(&e),
            },
            "/metrics" => match self.fleet().await {
                Ok(f) => text(
                    StatusCode::OK,
                    metrics::CONTENT_TYPE,
                    metrics::render(&f, self.opts.max_host_series),
                ),
                Err(e) => unavailable(&e),
            },
            _ => match path.strip_prefix("/api/v1/hosts/") {
                Some(name) => self.host_detail(name).await,
                None => error(StatusCode::NOT_FOUND, "no such page"),
            },
        }
    }

    async fn host_detail(&self, name: &str) -> Response<Bytes> {
        let host = match HostName::new(name) {
            Ok(h) => h,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        let fleet = match self.fleet().await {
            Ok(f) => f,
            Err(e) => return unavailable(&e),
        };
        let Some(row) = fleet.host(&host) else {
            return error(
                StatusCode::NOT_FOUND,
                &format!("host {host} has neither a status object nor a manifest"),
            );
        };
        let events = self.events(&host).await.map_err(|e| e.to_string());
        json(
            StatusCode::OK,
            &api::host_detail(row, fleet.generated_at, events),
        )
    }
}
