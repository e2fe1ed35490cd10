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
//!
//! Connections are served by hyper directly rather than by `axum::serve`, which
//! installs no timer and so leaves hyper's header-read timeout inert: a client must
//! send each request's headers within `header-timeout`, at most
//! [`MAX_CONNECTIONS`] connections are open at once (more are closed on accept), and
//! a connection is wound down gracefully after [`MAX_CONNECTION_AGE`], so neither
//! trickled headers nor idle keep-alives can hold the server's slots forever.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use fleet_core::{Bucket, BucketOptions};
use fleet_reporter::Reporter;
use fleet_reporter::config::{Config, Settings};

/// Largest request body read (the reporter serves GET only).
const MAX_BODY: usize = 64 * 1024;
/// Connections served at once; a dashboard needs a handful per viewer.
pub const MAX_CONNECTIONS: usize = 256;
/// Age after which a connection finishes its request in flight and closes (the
/// browser reconnects), so idle keep-alive connections do not pile up.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);
/// How long shutdown waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(10);

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
    let bucket = Bucket::open(&s.bucket, &BucketOptions::default())
        .with_context(|| format!("opening bucket {}", s.bucket))?;
    let reporter = Arc::new(Reporter::new(bucket, s.options));
    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| format!("listening on {}", s.listen))?;
    let addr = listener.local_addr()?;
    println!("fleet-reporter listening on http://{addr}/");
    let _ = std::io::stdout().flush();

    let header_timeout = s.header_timeout;
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let reporter = reporter.clone();
        async move {
            let (parts, body) = req.into_parts();
            // The body is bounded in time as well as size: a client announcing a body
            // and never sending it must not hold its connection.
            let read = tokio::time::timeout(header_timeout, axum::body::to_bytes(body, MAX_BODY));
            let body: Bytes = match read.await {
                Ok(Ok(b)) => b,
                Ok(Err(_)) => {
                    return error_response(
                        http::StatusCode::PAYLOAD_TOO_LARGE,
                        "request body too large",
                    );
                }
                Err(_) => {
                    return error_response(
                        http::StatusCode::REQUEST_TIMEOUT,
                        "request body not sent in time",
                    );
                }
            };
            reporter
                .handle(http::Request::from_parts(parts, body))
                .await
                .map(axum::body::Body::from)
        }
    });
    serve(listener, app, s.header_timeout).await;
    Ok(())
}

/// A JSON error answer.
fn error_response(status: http::StatusCode, msg: &str) -> http::Response<axum::body::Body> {
    let mut r = http::Response::new(axum::body::Body::from(format!("{{\"error\":\"{msg}\"}}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Accepts connections until SIGINT or SIGTERM, then lets requests in flight finish
/// (up to [`DRAIN`]).
async fn serve(listener: tokio::net::TcpListener, app: axum::Router, header_timeout: Duration) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut stop = std::pin::pin!(shutdown());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "{MAX_CONNECTIONS} connections open; closing a new one");
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let age = tokio::time::sleep(MAX_CONNECTION_AGE);
            let mut age = std::pin::pin!(age);
            let mut winding_down = false;
            // Graceful shutdown waits for the request in flight, which a client that
            // stops reading its answer could stretch forever: after DRAIN the
            // connection is dropped.
            let grace = tokio::time::sleep(Duration::MAX);
            let mut grace = std::pin::pin!(grace);
            let result = loop {
                tokio::select! {
                    r = conn.as_mut() => break Some(r),
                    () = &mut age, if !winding_down => {
                        winding_down = true;
                        conn.as_mut().graceful_shutdown();
                        grace.as_mut().reset(tokio::time::Instant::now() + DRAIN);
                    }
                    _ = stop_rx.wait_for(|s| *s), if !winding_down => {
                        winding_down = true;
                        conn.as_mut().graceful_shutdown();
                        grace.as_mut().reset(tokio::time::Instant::now() + DRAIN);
                    }
                    () = &mut grace, if winding_down => break None,
                }
            };
            match result {
                // Timeouts and clients going away: worth a trace, not a warning.
                Some(Err(e)) => tracing::debug!(%peer, "connection ended: {e}"),
                None => tracing::debug!(%peer, "connection dropped after {DRAIN:?} winding down"),
                Some(Ok(())) => {}
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends: all slots back means all done.
    let all = u32::try_from(MAX_CONNECTIONS).expect("MAX_CONNECTIONS fits u32");
    if tokio::time::timeout(DRAIN, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {DRAIN:?}; stopping anyway");
    }
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
