//! Steps 3 and 4 with [`ImportVia::Substituter`](super::ImportVia) (opt-in): a
//! verifying binary cache that the agent serves to Nix over HTTP on `127.0.0.1`, for
//! the length of one `nix copy --from http://127.0.0.1:PORT`.
//!
//! Nix asks for `nix-cache-info`, then for the narinfo of each path it was told to
//! copy, then for its NAR:
//!
//! - **Narinfos** are the ones the walk downloaded and verified (trusted signature,
//!   `StorePath:` as asked), re-serialised from the parsed form like the staged ones
//!   (`Compression: none`, `FileHash`/`FileSize` = `NarHash`/`NarSize`) with
//!   `URL: nar/<hash>.nar` naming the store path rather than the bucket's file, so
//!   each NAR request maps to exactly one verified narinfo. Anything else is a 404.
//! - **A NAR** is read from the bucket as Nix asks for it and streamed through the
//!   same checks as a staged one (`verify.rs`: `FileSize`/`FileHash`, decompression,
//!   `NarSize`/`NarHash`, NAR structure, every size and time bound), the NAR passed
//!   on to Nix, decompressed, as it is checked. The last chunk written (at least
//!   [`CHUNK`] bytes, or the whole NAR when it is smaller) is **held back until every
//!   check has passed**: until then Nix holds an incomplete NAR, which it cannot
//!   parse to its end, let alone register. When a check fails, the response is cut
//!   off (the connection is closed short of its `Content-Length`), so Nix fails that
//!   path and registers nothing; the refusal is kept and is what the fetch reports,
//!   and every later request gets a 403 (which Nix does not retry, unlike a 5xx), so
//!   that `nix copy` stops soon.
//!
//! Nix then hashes the NAR once more and checks the signature itself (the import
//! keeps `require-sigs` and the trusted keys). Its work overlaps the agent's, NAR by
//! NAR and chunk by chunk, instead of following it, and nothing is written to disk
//! twice: the wall time is about the larger of the two, not their sum.
//!
//! The server listens on an ephemeral port of the loopback interface only while the
//! import runs. Another local user could connect to it, but could only read NARs of
//! paths about to become world-readable in the store anyway; a connection that is
//! not Nix's cannot change what Nix receives. Connections are bounded
//! ([`MAX_CONNECTIONS`]), and downloads by [`FetchLimits::concurrency`](super::FetchLimits).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use fleet_core::narinfo::nix_cache_info;
use fleet_core::{NarInfo, StorePath};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::download::{expectations, nar_key, staged_narinfo, verify_stream};
use super::error::refusal_error;
use super::verify::{self, Refusal, Verified};
use super::waves::import;
use super::{Ctx, FetchError};

/// Size of the chunks handed to Nix.
const CHUNK: usize = 256 * 1024;
/// Chunks on their way to one connection (besides the one held back and the one
/// being filled): with [`CHUNK`], about 1.5 MiB per NAR in flight.
const CHUNKS_IN_FLIGHT: usize = 4;
/// Connections open at once; Nix opens a few (its `http-connections`).
const MAX_CONNECTIONS: usize = 64;

/// A NAR that passed every check and was handed to Nix whole.
pub(super) type Served = (StorePath, Verified);

/// What the server knows and learns during one import.
struct State {
    /// The verified narinfos, by store path hash.
    narinfos: HashMap<String, Arc<NarInfo>>,
    /// The first refusal (or bucket failure); once set, every request gets a 403.
    failure: Mutex<Option<FetchError>>,
    /// NARs handed over whole, by store path (Nix may ask for one twice).
    served: Mutex<HashMap<StorePath, Verified>>,
    /// Downloads running at once.
    downloads: Semaphore,
}

impl State {
    fn failed(&self) -> bool {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn fail(&self, e: FetchError) {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            tracing::warn!(error = %e, "refusing a NAR Nix asked for; nix copy will fail that path");
            *f = Some(e);
        }
    }
}

/// A NAR request handed from the connection to the download loop.
struct Job {
    ni: Arc<NarInfo>,
    chunks: mpsc::Sender<Bytes>,
    abort: oneshot::Sender<()>,
}

/// Imports `order` (every missing path, in dependency order) with `nix copy` from
/// a verifying substituter serving `narinfos`; returns the NARs served.
///
/// A refusal of any NAR is returned in preference to `nix copy`'s own failure: it
/// says what was wrong with the bucket's file, where Nix only saw the connection cut.
pub(super) async fn import_served(
    ctx: &Ctx<'_>,
    narinfos: Vec<Arc<NarInfo>>,
    order: &[StorePath],
) -> Result<Vec<Served>, FetchError> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .and_then(|l| Ok((l.local_addr()?, l)))
        .map_err(|e| FetchError::ImportFailed {
            root: ctx.root.to_string(),
            why: format!("could not listen on 127.0.0.1 to serve the verified paths to Nix: {e}"),
        });
    let (addr, listener) = listener?;
    let url = format!("http://{addr}");
    let state = State {
        narinfos: narinfos
            .into_iter()
            .map(|ni| (ni.store_path.hash().to_string(), ni))
            .collect(),
        failure: Mutex::new(None),
        served: Mutex::new(HashMap::new()),
        downloads: Semaphore::new(ctx.limits.concurrency),
    };
    let (job_tx, mut job_rx) = mpsc::unbounded_channel::<Job>();
    let state_ref = &state;
    let job_tx_ref = &job_tx;

    let mut conns: FuturesUnordered<Pin<Box<dyn Future<Output = ()> + Send + '_>>> =
        FuturesUnordered::new();
    let mut jobs = FuturesUnordered::new();
    let importing = import(ctx, &url, order);
    let mut importing = std::pin::pin!(importing);
    tracing::debug!(%url, paths = order.len(), "serving verified paths to nix copy");
    let imported = loop {
        tokio::select! {
            done = &mut importing => break done,
            accepted = listener.accept(), if conns.len() < MAX_CONNECTIONS => {
                let Ok((stream, _)) = accepted else { continue };
                no_delay(&stream);
                let service = hyper::service::service_fn(move |req| {
                    std::future::ready(Ok::<_, Infallible>(respond(state_ref, job_tx_ref, &req)))
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                conns.push(Box::pin(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "a connection of the local substituter ended");
                    }
                }));
            },
            Some(()) = conns.next(), if !conns.is_empty() => {},
            Some(job) = job_rx.recv() => jobs.push(serve_nar(ctx, state_ref, job)),
            Some(()) = jobs.next(), if !jobs.is_empty() => {},
        }
    };
    // Nix has exited: its connections are closed or idle, and a download still
    // running has nobody to hand its NAR to.
    drop((conns, jobs));
    if let Some(e) = state
        .failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        return Err(e);
    }
    imported?;
    let served = state.served.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(served.into_iter().collect())
}

/// Switches Nagle's algorithm off on an accepted connection. A NAR's head goes out
/// before its body (the body waits for the checks), so the body is a second small
/// write: with Nagle's algorithm it waits for the ACK of the head, which Nix's side
/// delays by 40 ms. Every small NAR paid that (49 s for 1,000 tiny paths).
fn no_delay(stream: &tokio::net::TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY on a local connection");
    }
}

/// Answers one request; NAR requests become [`Job`]s whose chunks make the body.
fn respond(
    state: &State,
    jobs: &mpsc::UnboundedSender<Job>,
    req: &Request<Incoming>,
) -> Response<ServedBody> {
    let status = |code: StatusCode| {
        let mut r = Response::new(ServedBody::Full(None));
        *r.status_mut() = code;
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    if state.failed() {
        // Not a 5xx: Nix retries those, with backoff, for seconds.
        return status(StatusCode::FORBIDDEN);
    }
    let path = req.uri().path();
    let text = |t: String| Response::new(ServedBody::Full(Some(Bytes::from(t))));
    if path == "/nix-cache-info" {
        return text(nix_cache_info());
    }
    if let Some(hash) = path
        .strip_prefix('/')
        .and_then(|p| p.strip_suffix(".narinfo"))
    {
        return match state.narinfos.get(hash) {
            Some(ni) => text(served_narinfo(ni).to_text()),
            None => status(StatusCode::NOT_FOUND),
        };
    }
    let Some(ni) = path
        .strip_prefix("/nar/")
        .and_then(|p| p.strip_suffix(".nar"))
        .and_then(|hash| state.narinfos.get(hash))
    else {
        return status(StatusCode::NOT_FOUND);
    };
    if req.method() == Method::HEAD {
        return status(StatusCode::OK);
    }
    let (chunks, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let (abort, abort_rx) = oneshot::channel();
    let job = Job {
        ni: ni.clone(),
        chunks,
        abort,
    };
    if jobs.send(job).is_err() {
        return status(StatusCode::SERVICE_UNAVAILABLE);
    }
    Response::new(ServedBody::Nar {
        rx,
        abort: Some(abort_rx),
        left: ni.nar_size,
    })
}

/// The narinfo Nix is served for `ni`: the staged form, with a `URL:` of its own.
fn served_narinfo(ni: &NarInfo) -> NarInfo {
    NarInfo {
        url: format!("nar/{}.nar", ni.store_path.hash()),
        ..staged_narinfo(ni)
    }
}

/// Downloads and checks one NAR into its response; records the refusal, or the NAR
/// once Nix has all of it.
async fn serve_nar(ctx: &Ctx<'_>, state: &State, job: Job) {
    let Job { ni, chunks, abort } = job;
    let refuse = |e: FetchError| {
        // Recorded before the cut, so the fetch reports it whatever Nix makes of it.
        state.fail(e);
        let _ = abort.send(());
    };
    let Ok(_permit) = state.downloads.acquire().await else {
        return;
    };
    let (key, exp) = match nar_key(&ni).and_then(|k| Ok((k, expectations(&ni, &ctx.limits)?))) {
        Ok(v) => v,
        Err(e) => return refuse(e),
    };
    let sink = HoldBack::new(chunks);
    let checked = verify_stream(ctx, &ni, &key, &exp, move |source, exp| {
        let mut sink = sink;
        (
            verify::verify(source, exp, verify::Output::Copy(&mut sink)),
            sink,
        )
    })
    .await;
    match checked {
        Err(e) => refuse(e),
        // Nix hung up (it failed the path, or another local client went away): not
        // the bucket's fault, and nothing to hand over.
        Ok((Err(Refusal::Sink(e)), _)) => {
            tracing::debug!(path = %ni.store_path, error = %e, "the NAR's reader went away");
        }
        Ok((Err(r), _)) => refuse(refusal_error(r, &ni, &key, std::path::Path::new(""))),
        Ok((Ok(v), sink)) => {
            if sink.release().await {
                tracing::debug!(path = %ni.store_path, bytes = v.file_size, "NAR verified and handed to nix");
                state
                    .served
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(ni.store_path.clone(), v);
            }
        }
    }
}

/// The verifier's sink: passes the NAR on in [`CHUNK`]s, always keeping the latest
/// full chunk and whatever follows it until [`HoldBack::release`].
struct HoldBack {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    held: Option<Bytes>,
}

impl HoldBack {
    fn new(tx: mpsc::Sender<Bytes>) -> Self {
        Self {
            tx,
            buf: Vec::new(),
            held: None,
        }
    }

    /// Hands over what was held back (every check passed); false if the reader is
    /// gone.
    async fn release(self) -> bool {
        let HoldBack { tx, buf, held } = self;
        for chunk in held.into_iter().chain(Some(Bytes::from(buf))) {
            if !chunk.is_empty() && tx.send(chunk).await.is_err() {
                return false;
            }
        }
        true
    }
}

impl Write for HoldBack {
    /// Called on the verifier's blocking thread: waits while the reader is behind.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.capacity() == 0 {
            self.buf.reserve(CHUNK + data.len());
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            let full = Bytes::from(std::mem::take(&mut self.buf));
            if let Some(prev) = self.held.replace(full) {
                self.tx.blocking_send(prev).map_err(|_| {
                    io::Error::new(io::ErrorKind::BrokenPipe, "nix stopped reading")
                })?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A response body: a small text, or a NAR as it is checked.
enum ServedBody {
    Full(Option<Bytes>),
    Nar {
        rx: mpsc::Receiver<Bytes>,
        /// Fires when the NAR is refused: the body fails, and hyper closes the
        /// connection short of the announced length.
        abort: Option<oneshot::Receiver<()>>,
        /// Bytes still to come of the NAR's `NarSize` (the `Content-Length`).
        left: u64,
    },
}

impl Body for ServedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            ServedBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ServedBody::Nar { rx, abort, left } => {
                if let Some(a) = abort {
                    match Pin::new(a).poll(cx) {
                        Poll::Ready(Ok(())) => {
                            return Poll::Ready(Some(Err(io::Error::other("the NAR was refused"))));
                        }
                        // Every check passed (or the download was dropped): the
                        // chunks decide.
                        Poll::Ready(Err(_)) => *abort = None,
                        Poll::Pending => {}
                    }
                }
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(b)) => {
                        *left = left.saturating_sub(b.len() as u64);
                        Poll::Ready(Some(Ok(Frame::data(b))))
                    }
                    Poll::Ready(None) if *left > 0 => Poll::Ready(Some(Err(io::Error::other(
                        "the NAR ended before its NarSize",
                    )))),
                    Poll::Ready(None) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ServedBody::Full(b) => b.is_none(),
            ServedBody::Nar { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ServedBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ServedBody::Nar { left, .. } => SizeHint::with_exact(*left),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The served connections must not wait for delayed ACKs (see [`no_delay`]).
    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (stream, _) = accepted.unwrap();
        drop(client);
        assert!(!stream.nodelay().unwrap(), "Nagle is on by default");
        no_delay(&stream);
        assert!(stream.nodelay().unwrap());
    }
}
