//! Streaming reads ([`Bucket::get_stream`]): an object's announced size and its
//! body, for a caller that reads and checks it on a blocking thread (the agent's
//! NAR verifier) without holding it whole.
//!
//! A `file://` object is the bucket's own file, opened as every local read opens it
//! (no symlink below the root followed, no FIFO waited on, regular files only) and
//! read straight from that file by the [`BodyReader`]: no chunks handed between
//! threads, no copies. An object store's body arrives as chunks: a [`BodyFeed`] on
//! the async side gathers them into batches and hands them through a small channel
//! to the reader, each chunk bounded in time.

use std::io::{self, BufRead, Read};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::error::classify;
use super::local::open_regular;
use super::{Bucket, BucketError, Op};
use crate::layout::Key;

/// Read buffer of a `file://` object.
const FILE_READ: usize = 256 * 1024;
/// Batches of an object store's body in flight between the feed and the reader.
const CHUNKS_IN_FLIGHT: usize = 2;
/// Size chunks are gathered to before they go to the reader: stores hand out small
/// chunks, and one hand-over per chunk would cost more than the reader's work.
const BATCH: usize = 256 * 1024;

/// An object opened by [`Bucket::get_stream`]: its announced size and its body.
pub struct ObjectStream {
    size: u64,
    body: Body,
}

enum Body {
    /// A `file://` object, opened and checked.
    File(std::fs::File),
    /// An object store's response body.
    Chunks(BoxStream<'static, Result<Bytes, BucketError>>),
}

impl std::fmt::Debug for ObjectStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = match self.body {
            Body::File(_) => "file",
            Body::Chunks(_) => "chunks",
        };
        f.debug_struct("ObjectStream")
            .field("size", &self.size)
            .field("body", &body)
            .finish()
    }
}

impl Bucket {
    /// Opens an object for streaming: its announced size and its body. The caller
    /// bounds and verifies what it reads ([`ObjectStream::into_reader`]), and bounds
    /// the time it takes: on an object store the body has no overall timeout (a large
    /// object on a slow link may take longer than any one request should), only
    /// `request_timeout` on each read.
    pub async fn get_stream(&self, key: &Key) -> Result<ObjectStream, BucketError> {
        if let Some(root) = &self.local_root {
            let (root, url, k) = (root.clone(), self.url_text.clone(), key.to_string());
            let (file, meta) = tokio::task::spawn_blocking(move || open_regular(&root, &url, &k))
                .await
                .expect("local open task does not panic")?;
            return Ok(ObjectStream {
                size: meta.len(),
                body: Body::File(file),
            });
        }
        let res = self
            .stream_store
            .get(&self.path(key.as_str()))
            .await
            .map_err(|e| self.err(Op::Read, key.as_str(), e))?;
        let size = res.meta.size;
        let url = self.url_text.clone();
        let k = key.to_string();
        let stream = res
            .into_stream()
            .map_err(move |e| classify(&url, Op::Read, &k, e))
            .boxed();
        Ok(ObjectStream {
            size,
            body: Body::Chunks(stream),
        })
    }
}

impl ObjectStream {
    /// The size the store announced (the file's size on `file://`); the body may
    /// still be shorter or longer.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Splits the body into a reader for a blocking thread and, on object stores,
    /// the feed that fills it, which must run on the async side meanwhile. A
    /// `file://` object has no feed: the reader reads the file itself, so the
    /// caller bounds that read's time as a whole.
    pub fn into_reader(self) -> (BodyReader, Option<BodyFeed>) {
        match self.body {
            Body::File(file) => (
                BodyReader(Source::File(io::BufReader::with_capacity(FILE_READ, file))),
                None,
            ),
            Body::Chunks(chunks) => {
                let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
                let reader = BodyReader(Source::Channel {
                    rx,
                    current: Bytes::new(),
                });
                (reader, Some(BodyFeed { chunks, tx }))
            }
        }
    }
}

/// An object's body as a blocking reader ([`ObjectStream::into_reader`]). Call it
/// only from a blocking thread. A failed feed reads as an error, never as an end.
pub struct BodyReader(Source);

enum Source {
    File(io::BufReader<std::fs::File>),
    /// Chunks from a [`BodyFeed`], handed out in place (no copy).
    Channel {
        rx: mpsc::Receiver<io::Result<Bytes>>,
        current: Bytes,
    },
}

impl std::fmt::Debug for BodyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyReader").finish_non_exhaustive()
    }
}

impl BufRead for BodyReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match &mut self.0 {
            Source::File(f) => f.fill_buf(),
            Source::Channel { rx, current } => {
                while current.is_empty() {
                    match rx.blocking_recv() {
                        Some(Ok(b)) => *current = b,
                        Some(Err(e)) => return Err(e),
                        None => break,
                    }
                }
                Ok(current)
            }
        }
    }

    fn consume(&mut self, n: usize) {
        match &mut self.0 {
            Source::File(f) => f.consume(n),
            Source::Channel { current, .. } => current.advance(n.min(current.len())),
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Source::File(f) = &mut self.0 {
            // Large reads bypass the buffer.
            return f.read(buf);
        }
        let avail = self.fill_buf()?;
        let n = buf.len().min(avail.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Hands an object store's body to its [`BodyReader`] ([`BodyFeed::run`]).
pub struct BodyFeed {
    chunks: BoxStream<'static, Result<Bytes, BucketError>>,
    tx: mpsc::Sender<io::Result<Bytes>>,
}

impl std::fmt::Debug for BodyFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyFeed").finish_non_exhaustive()
    }
}

/// Why a [`BodyFeed`] stopped before the body's end.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// No chunk came within the stall timeout.
    #[error("the body stalled")]
    Stalled,
    /// The body did not end before the deadline.
    #[error("the body did not arrive before its deadline")]
    Deadline,
    /// The store failed while sending the body.
    #[error(transparent)]
    Bucket(#[from] BucketError),
}

impl BodyFeed {
    /// Hands the body to the reader, in batches, until it ends or the reader stops
    /// reading (it has its answer). Each chunk must arrive within `stall` and the
    /// whole body by `deadline`; when one does not, or the store fails, the reader
    /// gets an error rather than an end, so it cannot take a cut body for a whole
    /// one.
    pub async fn run(self, stall: Duration, deadline: Instant) -> Result<(), FeedError> {
        let BodyFeed { mut chunks, tx } = self;
        let mut failure = None;
        let mut batch = BytesMut::new();
        loop {
            let wait_until = deadline.min(Instant::now() + stall);
            let next = match tokio::time::timeout_at(wait_until, chunks.next()).await {
                Ok(n) => n,
                Err(_) => {
                    failure = Some(if Instant::now() >= deadline {
                        FeedError::Deadline
                    } else {
                        FeedError::Stalled
                    });
                    break;
                }
            };
            match next {
                Some(Ok(chunk)) => {
                    let ready = if batch.is_empty() && chunk.len() >= BATCH {
                        chunk
                    } else {
                        batch.extend_from_slice(&chunk);
                        if batch.len() < BATCH {
                            continue;
                        }
                        batch.split().freeze()
                    };
                    if tx.send(Ok(ready)).await.is_err() {
                        break;
                    }
                }
                Some(Err(e)) => {
                    failure = Some(FeedError::Bucket(e));
                    break;
                }
                None => {
                    if !batch.is_empty() {
                        let _ = tx.send(Ok(batch.split().freeze())).await;
                    }
                    break;
                }
            }
        }
        if failure.is_some() {
            let _ = tx
                .send(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "download failed",
                )))
                .await;
        }
        drop(tx);
        drop(chunks);
        failure.map_or(Ok(()), Err)
    }
}
