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
//! | `/api/v1/rollouts` | the newest releases' rollouts: phase, wave, progress, halt reason ([`rollouts`]) |
//! | `/metrics` | Prometheus text ([`metrics`]) |
//! | `/healthz` | `ok` (no bucket access, no token needed) |
//!
//! Security: a strict Content-Security-Policy (`script-src 'self'`, no inline code, no
//! host data in HTML), `X-Content-Type-Options: nosniff`, no CORS headers, and, when a
//! token is configured, every route but `/healthz` needs it as a bearer token or as the
//! password of HTTP Basic auth (compared in constant time).
//!
//! Within one process, an aggregation answers repeated requests for `cache-ttl`, and
//! the previous aggregation's outcomes replace `dashboard/snapshot.json` as the
//! starting point of the next refresh ([`snapshot`]).
//!
//! Modules: `routes` answers a request (with `auth` for the token and [`response`]
//! for headers and bodies); [`fleet`] aggregates the bucket into [`outcome`]s, which
//! [`snapshot`] caches between refreshes (`stored` reads and writes it around a refresh); [`api`],
//! [`metrics`] and [`html`] render them; [`config`] holds the options; [`lambda`]
//! adapts API Gateway events.

#![warn(missing_docs)]

pub mod api;
mod auth;
pub mod config;
mod events;
pub mod fleet;
pub mod html;
pub mod lambda;
pub mod metrics;
pub mod outcome;
mod par;
pub mod response;
pub mod rollouts;
mod routes;
pub mod snapshot;
mod stored;
#[cfg(feature = "synth")]
pub mod synth;
mod trust;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use fleet_core::bucket::BucketError;
use fleet_core::{Bucket, HostName};

use crate::config::ReporterOptions;
use crate::fleet::{Fleet, RefreshParams};

/// What the reporter knows of a stored object (`dashboard/snapshot.json`, or its
/// delta) in the bucket.
#[derive(Clone, Debug)]
enum SnapshotTag {
    /// Not known: read it (or its ETag) before writing.
    Unknown,
    /// There is none.
    Absent,
    /// It has this ETag.
    Etag(String),
}

/// The reporter's state between requests.
struct State {
    /// The last aggregation and when it was made.
    fleet: Option<(Arc<Fleet>, Instant)>,
    /// The snapshot and rows the next refresh starts from.
    memory: fleet::Memory,
    /// What is known of the stored snapshot.
    tag: SnapshotTag,
    /// What is known of the stored delta (`dashboard/snapshot-delta.json`).
    delta_tag: SnapshotTag,
    /// The id of the stored snapshot, when this process read or wrote it.
    stored_id: Option<String>,
    /// The hosts whose entries changed since the stored snapshot of `stored_id`.
    changed: BTreeSet<HostName>,
}

impl State {
    /// Nothing known: the next refresh reads the stored snapshot first.
    fn new() -> Self {
        Self {
            fleet: None,
            memory: fleet::Memory::default(),
            tag: SnapshotTag::Unknown,
            delta_tag: SnapshotTag::Unknown,
            stored_id: None,
            changed: BTreeSet::new(),
        }
    }
}

/// The dashboard over one bucket. Cheap to share (`Arc<Reporter>`).
pub struct Reporter {
    bucket: Bucket,
    opts: ReporterOptions,
    params: RefreshParams,
    token_digest: Option<[u8; 32]>,
    state: tokio::sync::Mutex<State>,
    root_cache: trust::RootCache,
}

impl Reporter {
    /// A reporter over `bucket`.
    pub fn new(bucket: Bucket, opts: ReporterOptions) -> Self {
        let params = RefreshParams {
            trusted: Arc::new(opts.trusted.clone()),
            trusted_fingerprint: snapshot::fingerprint(&opts.trusted),
            stale_after: opts.stale_after,
            concurrency: opts.concurrency,
            registry: Arc::default(),
            full_listing_every: opts.full_listing_every,
        };
        Self {
            bucket,
            token_digest: opts.token.as_deref().map(auth::token_digest),
            opts,
            params,
            state: tokio::sync::Mutex::new(State::new()),
            root_cache: trust::RootCache::default(),
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
    /// `dashboard/snapshot.json` as a fresh Lambda container would.
    pub async fn forget(&self) {
        *self.state.lock().await = State::new();
    }
}
