//! `fleet-reporter serve`: the shared handler behind a local HTTP/1.1 server (axum).
//!
//! Binds 127.0.0.1:8080 by default. Binding any other address requires a token
//! (`--token-file`, `--token` or `FLEET_REPORTER_TOKEN`): without one the command
//! refuses to start, unless `--insecure-no-auth` is given, which starts it with a
//! loud warning. The token travels in clear over plain HTTP, so put TLS (a reverse
//! proxy) in front of any non-loopback address.
//!
//! Prints `fleet-reporter listening on http://ADDR/` on standard output once the
//! socket is bound (with `--listen 127.0.0.1:0` this names the port chosen).

use std::io::Write as _;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use fleet_core::{Bucket, BucketOptions};
use fleet_reporter::Reporter;
use fleet_reporter::config::{Config, Settings};

/// Largest request body read (the reporter serves GET only).
const MAX_BODY: usize = 64 * 1024;

fn check_bind(s: &Settings) -> anyhow::Result<()> {
    if s.listen.ip().is_loopback() {
        return Ok(());
    }
    if s.options.token.is_none() {
        if !s.insecure_no_auth {
            bail!(
                "refusing to serve the fleet dashboard on non-loopback address {} without a token: \
                 give --token-file FILE (or FLEET_REPORTER_TOKEN), or pass --insecure-no-auth if \
                 something in front of it already authenticates",
                s.listen
            );
        }
        eprintln!(
            "\n*** WARNING: fleet-reporter serves {} WITHOUT AUTHENTICATION (--insecure-no-auth).\n\
             *** Anyone who can reach this address sees every host, its versions and its errors.\n",
            s.listen
        );
    } else {
        tracing::warn!(
            "serving on {} over plain HTTP: the token travels in clear; put TLS in front",
            s.listen
        );
    }
    Ok(())
}

/// Serves until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let s = config.resolve()?;
    check_bind(&s)?;
    let bucket = Bucket::open(&s.store, &BucketOptions::default())
        .with_context(|| format!("opening store {}", s.store))?;
    let reporter = Arc::new(Reporter::new(bucket, s.options));
    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| format!("listening on {}", s.listen))?;
    let addr = listener.local_addr()?;
    println!("fleet-reporter listening on http://{addr}/");
    let _ = std::io::stdout().flush();

    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let reporter = reporter.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
                Ok(b) => b,
                Err(_) => {
                    let mut r = http::Response::new(axum::body::Body::from(
                        "{\"error\":\"request body too large\"}\n",
                    ));
                    *r.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
                    return r;
                }
            };
            reporter
                .handle(http::Request::from_parts(parts, body))
                .await
                .map(axum::body::Body::from)
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
        .context("serving HTTP")?;
    Ok(())
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
