//! `fleet-reporter`: the stateless fleet dashboard.
//!
//! Every answer is computed from the bucket (status objects and manifests; see
//! [`fleet`]), so the reporter runs as an AWS Lambda function with no database, and
//! the very same [`Reporter::handle`] (an `http::Request` in, an `http::Response`
//! out) serves locally behind `fleet-reporter serve`.
//!
//! Routes (GET and HEAD only):
//!
//! | path | answer |
//! |---|---|
//! | `/` | the HTML page (static; data comes from the JSON API, rendered with `textContent`) |
//! | `/assets/app.js`, `/assets/app.css` | its script and style (no CDN, works offline) |
//! | `/api/v1/summary` | counts per state, verification status, refresh counters ([`api::summary`]) |
//! | `/api/v1/hosts` | the host list, filtered, sorted, paged ([`api::HostQuery`]) |
//! | `/api/v1/hosts/<host>` | one host and its newest events |
//! | `/metrics` | Prometheus text ([`metrics`]) |
//! | `/healthz` | `ok` (no bucket access, no token needed) |
//!
//! Security: a strict Content-Security-Policy (`script-src 'self'`, no inline code, no
//! host data in HTML), `X-Content-Type-Options: nosniff`, no CORS headers, and, when a
//! token is configured, every route but `/healthz` needs it as a bearer token or as the
//! password of HTTP Basic auth (compared in constant time).
//!
//! Within one process, an aggregation answers repeated requests for `cache-ttl`, and
//! the previous aggregation's outcomes replace `dashboard/summary.json` as the
//! starting point of the next refresh ([`summary`]).

#![warn(missing_docs)]

pub mod api;
pub mod config;
pub mod fleet;
pub mod html;
pub mod lambda;
pub mod metrics;
mod par;
pub mod summary;
pub mod synth;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fleet_core::bucket::BucketError;
use fleet_core::layout::ObjectName;
use fleet_core::status::MAX_STATUS_SIZE;
use fleet_core::{Bucket, HostName, Key, KeyPrefix, StatusReport, TrustedKeys};
use futures::StreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::fleet::{Fleet, RefreshParams, cut};
use crate::summary::{MAX_SUMMARY_SIZE, StatusOutcome, SummaryFile};

/// What the reporter needs besides its bucket.
#[derive(Clone, Debug)]
pub struct ReporterOptions {
    /// Publisher keys that sign manifests; empty: manifests are shown as not verified.
    pub trusted: TrustedKeys,
    /// A host whose status is older than this is stale.
    pub stale_after: SignedDuration,
    /// Most GETs in flight during a refresh.
    pub concurrency: usize,
    /// Events shown per host.
    pub events: usize,
    /// How long one aggregation answers repeated requests.
    pub cache_ttl: Duration,
    /// Whether to write `dashboard/summary.json`.
    pub write_summary: bool,
    /// Per-host Prometheus series up to this many hosts.
    pub max_host_series: usize,
    /// Token required on every request but `/healthz`.
    pub token: Option<String>,
}

impl Default for ReporterOptions {
    fn default() -> Self {
        Self {
            trusted: TrustedKeys::default(),
            stale_after: config::DEFAULT_STALE_AFTER,
            concurrency: config::DEFAULT_CONCURRENCY,
            events: config::DEFAULT_EVENTS,
            cache_ttl: config::DEFAULT_CACHE_TTL,
            write_summary: true,
            max_host_series: config::DEFAULT_MAX_HOST_SERIES,
            token: None,
        }
    }
}

/// What the reporter knows of `dashboard/summary.json` in the bucket.
#[derive(Clone, Debug)]
enum SummaryTag {
    /// Not known: read it (or its ETag) before writing.
    Unknown,
    /// There is none.
    Absent,
    /// It has this ETag.
    Etag(String),
}

struct State {
    fleet: Option<(Arc<Fleet>, Instant)>,
    summary: Option<Arc<SummaryFile>>,
    tag: SummaryTag,
}

/// The dashboard over one bucket. Cheap to share (`Arc<Reporter>`).
pub struct Reporter {
    bucket: Bucket,
    opts: ReporterOptions,
    params: RefreshParams,
    token_digest: Option<[u8; 32]>,
    state: tokio::sync::Mutex<State>,
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

impl Reporter {
    /// A reporter over `bucket`.
    pub fn new(bucket: Bucket, opts: ReporterOptions) -> Self {
        let params = RefreshParams {
            trusted: Arc::new(opts.trusted.clone()),
            trusted_fingerprint: summary::fingerprint(&opts.trusted),
            stale_after: opts.stale_after,
            concurrency: opts.concurrency,
        };
        Self {
            bucket,
            token_digest: opts.token.as_deref().map(|t| sha256(t.as_bytes())),
            opts,
            params,
            state: tokio::sync::Mutex::new(State {
                fleet: None,
                summary: None,
                tag: SummaryTag::Unknown,
            }),
        }
    }

    /// The bucket.
    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// The options.
    pub fn options(&self) -> &ReporterOptions {
        &self.opts
    }

    /// The fleet, aggregated at most `cache-ttl` ago. Concurrent callers share one
    /// refresh.
    pub async fn fleet(&self) -> Result<Arc<Fleet>, BucketError> {
        let mut st = self.state.lock().await;
        if let Some((f, at)) = &st.fleet
            && at.elapsed() < self.opts.cache_ttl
        {
            return Ok(f.clone());
        }
        self.refresh_locked(&mut st).await
    }

    /// Aggregates now, whatever the cache holds.
    pub async fn refresh(&self) -> Result<Arc<Fleet>, BucketError> {
        let mut st = self.state.lock().await;
        self.refresh_locked(&mut st).await
    }

    /// Drops the in-process cache, so the next refresh starts from
    /// `dashboard/summary.json` as a fresh Lambda container would.
    pub async fn forget(&self) {
        let mut st = self.state.lock().await;
        st.fleet = None;
        st.summary = None;
        st.tag = SummaryTag::Unknown;
    }

    async fn refresh_locked(&self, st: &mut State) -> Result<Arc<Fleet>, BucketError> {
        let started = Instant::now();
        let mut source = "memory";
        if st.summary.is_none() {
            source = "none";
            let key = Key::dashboard_summary();
            match self.bucket.get(&key, MAX_SUMMARY_SIZE).await {
                Ok(obj) => {
                    st.tag = obj
                        .etag
                        .clone()
                        .map(SummaryTag::Etag)
                        .unwrap_or(SummaryTag::Unknown);
                    // Decoding is CPU work on every core: off the async threads.
                    let parsed = tokio::task::spawn_blocking(move || {
                        SummaryFile::parse(&obj.bytes, Key::dashboard_summary().as_str())
                    })
                    .await
                    .unwrap_or_else(|e| Err(format!("decoding the summary failed: {e}")));
                    match parsed {
                        Ok(s) => {
                            st.summary = Some(Arc::new(s));
                            source = "bucket";
                        }
                        Err(e) => tracing::warn!("ignoring the stored summary: {e}"),
                    }
                }
                Err(BucketError::NotFound { .. }) => st.tag = SummaryTag::Absent,
                Err(e) => tracing::warn!("cannot read the stored summary, refreshing cold: {e}"),
            }
        }
        let summary_read_ms = started.elapsed().as_millis() as u64;
        let now = Timestamp::now();
        let r = fleet::refresh(&self.bucket, &self.params, st.summary.as_deref(), now).await?;
        let mut fleet = r.fleet;
        fleet.stats.previous = source;
        fleet.stats.summary_read_ms = summary_read_ms;
        let summary = Arc::new(r.summary);
        let write_started = Instant::now();
        fleet.stats.summary_write = if !self.opts.write_summary {
            "disabled".into()
        } else if !r.changed {
            "unchanged".into()
        } else {
            self.write_summary(st, &summary).await
        };
        fleet.stats.summary_write_ms = write_started.elapsed().as_millis() as u64;
        fleet.stats.duration_ms = started.elapsed().as_millis() as u64;
        st.summary = Some(summary);
        let fleet = Arc::new(fleet);
        st.fleet = Some((fleet.clone(), Instant::now()));
        Ok(fleet)
    }

    /// Writes the summary with compare-and-swap; losing to another reporter is fine.
    async fn write_summary(&self, st: &mut State, summary: &Arc<SummaryFile>) -> String {
        let key = Key::dashboard_summary();
        let s = summary.clone();
        let bytes = match tokio::task::spawn_blocking(move || Bytes::from(s.to_bytes())).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("encoding the summary failed: {e}");
                return "error".into();
            }
        };
        if matches!(st.tag, SummaryTag::Unknown) {
            st.tag = match self.bucket.head(&key).await {
                Ok(Some(info)) => info
                    .etag
                    .map(SummaryTag::Etag)
                    .unwrap_or(SummaryTag::Unknown),
                Ok(None) => SummaryTag::Absent,
                Err(e) => {
                    tracing::warn!("not writing the summary: {e}");
                    let denied = matches!(e, BucketError::AccessDenied { .. });
                    return if denied { "denied" } else { "error" }.into();
                }
            };
        }
        let res = match &st.tag {
            SummaryTag::Etag(e) => self.bucket.put_if_match(&key, bytes, e).await,
            SummaryTag::Absent => self.bucket.put_if_absent(&key, bytes).await,
            SummaryTag::Unknown => {
                tracing::warn!("not writing the summary: the store gives it no ETag to swap on");
                return "error".into();
            }
        };
        match res {
            Ok(etag) => {
                st.tag = etag.map(SummaryTag::Etag).unwrap_or(SummaryTag::Unknown);
                "written".into()
            }
            Err(BucketError::Conflict { .. } | BucketError::AlreadyExists { .. }) => {
                // Another reporter wrote it first; this answer is still right.
                st.tag = SummaryTag::Unknown;
                "conflict".into()
            }
            Err(e @ BucketError::AccessDenied { .. }) => {
                tracing::warn!("{e}");
                "denied".into()
            }
            Err(e) => {
                tracing::warn!("writing the summary failed: {e}");
                st.tag = SummaryTag::Unknown;
                "error".into()
            }
        }
    }

    /// The newest events of `host`, newest first (at most `events`).
    pub async fn events(&self, host: &HostName) -> Result<Vec<api::Event>, BucketError> {
        if self.opts.events == 0 {
            return Ok(vec![]);
        }
        let prefix = KeyPrefix::status_events(host);
        let mut listed = self.bucket.list(&prefix).await?;
        // Newest by the store's clock; the key breaks ties.
        listed.sort_by(|a, b| {
            b.last_modified
                .cmp(&a.last_modified)
                .then_with(|| b.key.cmp(&a.key))
        });
        listed.truncate(self.opts.events);
        let prefix = &prefix;
        let reads = listed.into_iter().map(|info| async move {
            let name = info
                .key
                .strip_prefix(prefix.as_str())
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| ObjectName::new(n).ok());
            let outcome = match name {
                None => StatusOutcome::Flagged(
                    "not an event object name (status/<host>/events/<name>.json)".into(),
                ),
                Some(_) if info.size > MAX_STATUS_SIZE => StatusOutcome::Flagged(format!(
                    "event is {} bytes, larger than the {MAX_STATUS_SIZE}-byte bound",
                    info.size
                )),
                Some(n) => {
                    let key = Key::status_event(host, &n);
                    match self.bucket.get(&key, MAX_STATUS_SIZE).await {
                        Ok(o) => match StatusReport::parse(&o.bytes, key.as_str(), host) {
                            Ok(r) => StatusOutcome::Report(Arc::new(r)),
                            Err(e) => StatusOutcome::Flagged(cut(e.to_string())),
                        },
                        Err(e) => StatusOutcome::Flagged(cut(e.to_string())),
                    }
                }
            };
            api::Event {
                key: info.key,
                last_modified: info.last_modified,
                outcome,
            }
        });
        Ok(futures::stream::iter(reads)
            .buffered(self.opts.concurrency.clamp(1, 32))
            .collect()
            .await)
    }

    fn authorized(&self, req: &Request<Bytes>) -> bool {
        let Some(want) = &self.token_digest else {
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
        if !self.authorized(req) {
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
            return r;
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

/// The Content-Security-Policy of every answer: only this origin's script and style,
/// no inline code, no framing, no forms.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn secure_headers(res: &mut Response<Bytes>) {
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

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Bytes> {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Bytes> {
    let mut body = serde_json::to_vec(v).expect("JSON values serialise");
    body.push(b'\n');
    text(status, "application/json", body)
}

fn error(status: StatusCode, msg: &str) -> Response<Bytes> {
    json(status, &serde_json::json!({ "error": msg }))
}

fn unavailable(e: &BucketError) -> Response<Bytes> {
    tracing::error!("{e}");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("cannot read the fleet bucket: {e}"),
    )
}
