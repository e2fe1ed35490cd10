//! `Bucket`: every read and write fleet makes to S3, MinIO, SeaweedFS, a local
//! directory or memory, through one type over [`object_store`].
//!
//! Keys are [`Key`]s relative to the bucket's root prefix; the bucket adds the prefix.
//! Operations and their guarantees:
//!
//! - [`Bucket::get`] reads a whole object under a size bound (the bound is checked on
//!   the object's size before its body is read, and again while reading, so a
//!   server lying about sizes cannot make us buffer more);
//! - [`Bucket::get_if_changed`] is a conditional GET (`If-None-Match`), one request
//!   that answers [`Fetched::NotModified`] when the ETag still matches;
//! - [`Bucket::put`], [`Bucket::put_if_absent`] (create-only) and
//!   [`Bucket::put_if_match`] (compare-and-swap on the ETag). S3 servers do the
//!   conditional writes themselves; on `file://` fleet serialises them with an
//!   advisory lock on `<root>/.fleet-cas.lock`, which all fleet writers take;
//! - [`Bucket::list`], [`Bucket::list_pruned`], [`Bucket::list_folders`] (one level
//!   deep) (`list.rs`), [`Bucket::get_stream`]
//!   (`body.rs`), [`Bucket::writer`] (multipart for large objects).
//!
//! `file://` buckets are read by fleet itself (`local.rs`), not through
//! `object_store`'s local store: faster, and safe against a bucket directory whose
//! writers plant symlinks or FIFOs. Writes go through `object_store` everywhere.
//!
//! Every error names the key, the store and what to do ([`BucketError`], `error.rs`).
//! HTTP 403 becomes [`BucketError::AccessDenied`] however the server phrases it
//! (SeaweedFS's 403 on a list reaches `object_store` as a generic error).

mod body;
mod error;
mod list;
mod local;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as OsPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, RetryConfig, UpdateVersion,
};

use crate::layout::Key;
use crate::url::BucketUrl;

pub use body::{BodyFeed, BodyReader, FeedError, ObjectStream};
pub use error::{BucketError, Op};
use error::{classify, local_io_error};
use local::{LocalRoot, head_below, read_below, read_local};

/// Explicit S3 credentials (instead of the standard AWS environment chain).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token, for temporary credentials.
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// How to talk to the store.
#[derive(Clone, Debug)]
pub struct BucketOptions {
    /// Explicit credentials; `None` uses the standard AWS environment chain.
    pub credentials: Option<S3Credentials>,
    /// Bound on one request, body included, except the body of a
    /// [`Bucket::get_stream`], which its caller bounds (a NAR's time grows with its
    /// size); there it bounds each read of the body instead.
    pub request_timeout: Duration,
    /// Bound on opening a connection.
    pub connect_timeout: Duration,
    /// Retries of a failed request (with backoff) before giving up.
    pub max_retries: usize,
}

impl Default for BucketOptions {
    fn default() -> Self {
        Self {
            credentials: None,
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_retries: 3,
        }
    }
}

/// An object read whole.
#[derive(Clone, Debug)]
pub struct Object {
    /// Its bytes.
    pub bytes: Bytes,
    /// Its ETag, if the store gives one.
    pub etag: Option<String>,
    /// The store's last-modified time (a GET on S3 gives whole seconds, a listing
    /// milliseconds).
    pub last_modified: jiff::Timestamp,
}

/// Result of a conditional GET.
#[derive(Clone, Debug)]
pub enum Fetched {
    /// The ETag still matches; nothing was transferred.
    NotModified,
    /// The object changed (or no ETag was given).
    Object(Object),
}

/// An entry of a listing.
#[derive(Clone, Debug)]
pub struct ObjectInfo {
    /// Key relative to the bucket's root prefix.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag, if the store gives one.
    pub etag: Option<String>,
    /// Last modification time.
    pub last_modified: jiff::Timestamp,
}

/// What [`Bucket::list_pruned`] lists of one folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    /// Its objects, and its sub-folders as each is answered for.
    All,
    /// Nothing in it.
    Skip,
    /// Only the objects of these names directly in it (nothing else, no sub-folder).
    Only(&'static [&'static str]),
}

/// A fleet bucket.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// The client of [`Bucket::get_stream`]: the same store, without the per-request
    /// bound on the body (see `open`). Shares `store` where no such bound exists.
    stream_store: Arc<dyn ObjectStore>,
    prefix: String,
    url: BucketUrl,
    url_text: String,
    local_root: Option<PathBuf>,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket")
            .field("url", &self.url_text)
            .finish()
    }
}

/// A store's time given in milliseconds since 1970 (unrepresentable: 1970).
fn timestamp(millis: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(millis).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// Name of the lock file serialising conditional writes on `file://` buckets.
pub const LOCAL_LOCK_FILE: &str = ".fleet-cas.lock";

impl Bucket {
    /// Opens the store at `url`. For `file://` the directory is created if missing.
    pub fn open(url: &BucketUrl, opts: &BucketOptions) -> Result<Self, BucketError> {
        let url_text = url.to_string();
        let open_err = |why: String| BucketError::Open {
            url: url_text.clone(),
            why,
        };
        type Stores = (Arc<dyn ObjectStore>, Arc<dyn ObjectStore>);
        let ((store, stream_store), prefix, local_root): (Stores, String, Option<PathBuf>) =
            match url {
                BucketUrl::S3 {
                    bucket,
                    prefix,
                    endpoint,
                    region,
                    virtual_hosted,
                } => {
                    // Explicit credentials mean nothing is taken from the environment: an
                    // ambient AWS_SESSION_TOKEN must not be mixed with other keys (and an
                    // empty token header is refused by some servers).
                    let mut b = match &opts.credentials {
                        None => AmazonS3Builder::from_env(),
                        Some(c) => {
                            let b = AmazonS3Builder::new()
                                .with_access_key_id(&c.access_key_id)
                                .with_secret_access_key(&c.secret_access_key);
                            match &c.session_token {
                                Some(t) => b.with_token(t),
                                None => b,
                            }
                        }
                    }
                    .with_bucket_name(bucket);
                    if let Some(e) = endpoint {
                        b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
                    }
                    let region = region
                        .clone()
                        .or_else(|| std::env::var("AWS_REGION").ok())
                        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
                        .unwrap_or_else(|| "us-east-1".into());
                    b = b.with_region(region);
                    // `Bucket::delete` removes one key at a time: a plain DELETE, which
                    // every store authorises per key (moto checks a bulk `POST ?delete`
                    // against the bucket's ARN, so a per-prefix delete grant fails there).
                    let client = ClientOptions::new()
                        .with_connect_timeout(opts.connect_timeout)
                        .with_allow_http(
                            endpoint
                                .as_deref()
                                .is_some_and(|e| e.starts_with("http://")),
                        );
                    b = b
                        .with_disable_bulk_delete(true)
                        .with_virtual_hosted_style_request(*virtual_hosted)
                        .with_retry(RetryConfig {
                            backoff: BackoffConfig::default(),
                            max_retries: opts.max_retries,
                            retry_timeout: opts.request_timeout * (opts.max_retries as u32 + 1),
                        });
                    let s3 = b
                        .clone()
                        .with_client_options(client.clone().with_timeout(opts.request_timeout))
                        .build()
                        .map_err(|e| open_err(e.to_string()))?;
                    // The overall timeout counts the whole body: with it, a NAR that takes
                    // longer than `request_timeout` to arrive (400 MB at 100 Mbit/s, 40 MB
                    // at 10 Mbit/s, against 30 s) fails however steadily it comes, on
                    // every retry. Streams get a client bounded per read instead; their
                    // caller bounds the whole (the agent: a deadline that grows with size).
                    let s3_stream = b
                        .with_client_options(
                            client
                                .with_timeout_disabled()
                                .with_read_timeout(opts.request_timeout),
                        )
                        .build()
                        .map_err(|e| open_err(e.to_string()))?;
                    ((Arc::new(s3), Arc::new(s3_stream)), prefix.clone(), None)
                }
                BucketUrl::File { root } => {
                    std::fs::create_dir_all(root).map_err(|e| {
                        open_err(format!("creating directory {}: {e}", root.display()))
                    })?;
                    let fs = LocalFileSystem::new_with_prefix(root)
                        .map_err(|e| open_err(e.to_string()))?;
                    let fs: Arc<dyn ObjectStore> = Arc::new(fs);
                    ((fs.clone(), fs), String::new(), Some(root.clone()))
                }
                BucketUrl::Memory { .. } => {
                    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
                    ((mem.clone(), mem), String::new(), None)
                }
            };
        Ok(Self {
            store,
            stream_store,
            prefix,
            url: url.clone(),
            url_text,
            local_root,
        })
    }

    /// Parses `url` and opens it with default options and environment credentials.
    pub fn open_url(url: &str) -> Result<Self, BucketError> {
        let parsed = BucketUrl::parse(url).map_err(|e| BucketError::Open {
            url: url.to_owned(),
            why: e.to_string(),
        })?;
        Self::open(&parsed, &BucketOptions::default())
    }

    /// The bucket URL.
    pub fn url(&self) -> &BucketUrl {
        &self.url
    }

    fn path(&self, key: &str) -> OsPath {
        // Keys are built from validated parts, so this parse cannot fail; fall back to
        // a raw path that object_store would refuse to resolve outside the store.
        let full = format!("{}{}", self.prefix, key);
        OsPath::parse(&full).unwrap_or_else(|_| OsPath::from(full.as_str()))
    }

    fn rel(&self, location: &OsPath) -> String {
        let s = location.as_ref();
        s.strip_prefix(&self.prefix).unwrap_or(s).to_owned()
    }

    fn err(&self, op: Op, key: &str, e: object_store::Error) -> BucketError {
        classify(&self.url_text, op, key, e)
    }

    /// Reads a whole object of at most `limit` bytes.
    pub async fn get(&self, key: &Key, limit: u64) -> Result<Object, BucketError> {
        match self.get_opts(key, None, limit).await? {
            Fetched::Object(o) => Ok(o),
            Fetched::NotModified => unreachable!("no If-None-Match was sent"),
        }
    }

    /// Conditional GET: [`Fetched::NotModified`] when `etag` still matches.
    pub async fn get_if_changed(
        &self,
        key: &Key,
        etag: Option<&str>,
        limit: u64,
    ) -> Result<Fetched, BucketError> {
        self.get_opts(key, etag, limit).await
    }

    async fn get_opts(
        &self,
        key: &Key,
        if_none_match: Option<&str>,
        limit: u64,
    ) -> Result<Fetched, BucketError> {
        if let Some(root) = &self.local_root {
            return self
                .get_local(root.clone(), key, if_none_match, limit)
                .await;
        }
        let opts = GetOptions {
            if_none_match: if_none_match.map(str::to_owned),
            ..Default::default()
        };
        let res = match self.store.get_opts(&self.path(key.as_str()), opts).await {
            Ok(r) => r,
            Err(object_store::Error::NotModified { .. }) => return Ok(Fetched::NotModified),
            Err(e) => return Err(self.err(Op::Read, key.as_str(), e)),
        };
        let etag = res.meta.e_tag.clone();
        let last_modified = timestamp(res.meta.last_modified.timestamp_millis());
        let too_large = |size: u64| BucketError::TooLarge {
            url: self.url_text.clone(),
            key: key.to_string(),
            size,
            limit,
            etag: etag.clone(),
        };
        if res.meta.size > limit {
            return Err(too_large(res.meta.size));
        }
        let mut body = res.into_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.err(Op::Read, key.as_str(), e))?;
            if (buf.len() + chunk.len()) as u64 > limit {
                return Err(too_large((buf.len() + chunk.len()) as u64));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Fetched::Object(Object {
            bytes: buf.into(),
            etag,
            last_modified,
        }))
    }

    /// `file://` reads without `object_store`'s per-8-KiB blocking hops: one blocking
    /// task opens, checks and reads the file. The ETag is computed exactly as
    /// `object_store` computes it for local files, so ETags from `get`, `head`,
    /// `list` and `put` stay comparable.
    async fn get_local(
        &self,
        root: PathBuf,
        key: &Key,
        if_none_match: Option<&str>,
        limit: u64,
    ) -> Result<Fetched, BucketError> {
        let url = self.url_text.clone();
        let k = key.to_string();
        let inm = if_none_match.map(str::to_owned);
        tokio::task::spawn_blocking(move || read_local(&root, &url, k, inm.as_deref(), limit))
            .await
            .expect("local read task does not panic")
    }

    /// Reads several whole objects of at most `limit` bytes each; the results are in
    /// the order of `keys`, each as [`Bucket::get`] would give it.
    ///
    /// On `file://` one blocking task reads them all: for small objects the hop to a
    /// blocking thread and back costs more than the read, so a batch pays it once.
    /// Elsewhere the GETs run concurrently.
    pub async fn get_many(&self, keys: &[Key], limit: u64) -> Vec<Result<Object, BucketError>> {
        let as_object = |r: Result<Fetched, BucketError>| match r {
            Ok(Fetched::Object(o)) => Ok(o),
            Ok(Fetched::NotModified) => unreachable!("no If-None-Match was sent"),
            Err(e) => Err(e),
        };
        let Some(root) = &self.local_root else {
            return futures::future::join_all(keys.iter().map(|k| self.get(k, limit))).await;
        };
        let (root, url, keys) = (root.clone(), self.url_text.clone(), keys.to_vec());
        tokio::task::spawn_blocking(move || {
            let Ok(dir) = LocalRoot::open(&root) else {
                // Each read then says why, as a read of one object does.
                return keys
                    .into_iter()
                    .map(|k| as_object(read_local(&root, &url, k.to_string(), None, limit)))
                    .collect();
            };
            keys.into_iter()
                .map(|k| as_object(read_below(&dir, &url, k.to_string(), None, limit)))
                .collect()
        })
        .await
        .expect("local read task does not panic")
    }

    /// [`Bucket::head`] of each of `keys`, in the order of `keys`.
    ///
    /// On `file://` one blocking task asks about them all (`statx` below the open
    /// root), as [`Bucket::get_many`] reads; elsewhere the HEADs run concurrently, at
    /// most `concurrency` at a time.
    pub async fn head_many(
        &self,
        keys: &[Key],
        concurrency: usize,
    ) -> Vec<Result<Option<ObjectInfo>, BucketError>> {
        let Some(root) = &self.local_root else {
            // Owned futures: a stream of futures borrowing `keys` is not `Send` for
            // every lifetime, which callers spawned on a runtime need.
            let heads = keys.iter().cloned().map(|k| {
                let bucket = self.clone();
                async move { bucket.head(&k).await }
            });
            return futures::stream::iter(heads)
                .buffered(concurrency.max(1))
                .collect()
                .await;
        };
        let (root, url, keys) = (root.clone(), self.url_text.clone(), keys.to_vec());
        tokio::task::spawn_blocking(move || match LocalRoot::open(&root) {
            Ok(dir) => keys
                .into_iter()
                .map(|k| head_below(&dir, &url, k.to_string()))
                .collect(),
            // No bucket folder: no objects, as `head` says of each.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                keys.iter().map(|_| Ok(None)).collect()
            }
            Err(e) => keys
                .iter()
                .map(|k| {
                    let e = std::io::Error::new(e.kind(), e.to_string());
                    Err(local_io_error(&url, Op::Read, k.as_str(), e))
                })
                .collect(),
        })
        .await
        .expect("local stat task does not panic")
    }

    /// Size and ETag of an object, or `None` if it does not exist.
    pub async fn head(&self, key: &Key) -> Result<Option<ObjectInfo>, BucketError> {
        match self.store.head(&self.path(key.as_str())).await {
            Ok(meta) => Ok(Some(self.info(meta))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(Op::Read, key.as_str(), e)),
        }
    }

    fn info(&self, meta: object_store::ObjectMeta) -> ObjectInfo {
        ObjectInfo {
            key: self.rel(&meta.location),
            size: meta.size,
            etag: meta.e_tag,
            last_modified: timestamp(meta.last_modified.timestamp_millis()),
        }
    }

    async fn put_mode(
        &self,
        key: &Key,
        bytes: Bytes,
        mode: PutMode,
    ) -> Result<Option<String>, BucketError> {
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        self.store
            .put_opts(
                &self.path(key.as_str()),
                PutPayload::from_bytes(bytes),
                opts,
            )
            .await
            .map(|r| r.e_tag)
            .map_err(|e| self.err(Op::Write, key.as_str(), e))
    }

    /// Writes an object, replacing any there. Returns its new ETag.
    pub async fn put(
        &self,
        key: &Key,
        bytes: impl Into<Bytes>,
    ) -> Result<Option<String>, BucketError> {
        self.put_mode(key, bytes.into(), PutMode::Overwrite).await
    }

    /// Writes an object only if none exists; [`BucketError::AlreadyExists`] otherwise.
    pub async fn put_if_absent(
        &self,
        key: &Key,
        bytes: impl Into<Bytes>,
    ) -> Result<Option<String>, BucketError> {
        let bytes = bytes.into();
        let _guard = self.local_lock().await?;
        self.put_mode(key, bytes, PutMode::Create).await
    }

    /// Replaces an object only if its ETag is still `etag` (compare-and-swap);
    /// [`BucketError::Conflict`] otherwise, including when it was deleted.
    pub async fn put_if_match(
        &self,
        key: &Key,
        bytes: impl Into<Bytes>,
        etag: &str,
    ) -> Result<Option<String>, BucketError> {
        let bytes = bytes.into();
        if self.local_root.is_some() {
            let _guard = self.local_lock().await?;
            let current = self.head(key).await?;
            if current.as_ref().and_then(|c| c.etag.as_deref()) != Some(etag) {
                return Err(BucketError::Conflict {
                    url: self.url_text.clone(),
                    key: key.to_string(),
                });
            }
            return self.put_mode(key, bytes, PutMode::Overwrite).await;
        }
        let mode = PutMode::Update(UpdateVersion {
            e_tag: Some(etag.to_owned()),
            version: None,
        });
        match self.put_mode(key, bytes, mode).await {
            // AWS answers If-Match on a missing key with 404, SeaweedFS with 412: both
            // mean the object is not the one that was read.
            Err(BucketError::NotFound { url, key }) => Err(BucketError::Conflict { url, key }),
            other => other,
        }
    }

    /// A buffered writer for large objects: small ones become one PUT, large ones a
    /// multipart upload. Call `shutdown` to complete it; dropping it aborts.
    pub fn writer(&self, key: &Key) -> BufWriter {
        BufWriter::new(self.store.clone(), self.path(key.as_str()))
    }

    /// Deletes an object (absent objects are not an error).
    pub async fn delete(&self, key: &Key) -> Result<(), BucketError> {
        match self.store.delete(&self.path(key.as_str())).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(Op::Delete, key.as_str(), e)),
        }
    }
}
