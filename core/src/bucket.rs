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
//! - [`Bucket::list`], [`Bucket::get_stream`], [`Bucket::writer`] (multipart for large
//!   objects).
//!
//! Every error names the key, the store and what to do ([`BucketError`]). HTTP 403
//! becomes [`BucketError::AccessDenied`] however the server phrases it (SeaweedFS's
//! 403 on a list reaches `object_store` as a generic error).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as OsPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, RetryConfig, UpdateVersion,
};

use crate::layout::{Key, KeyPrefix};
use crate::url::StoreUrl;

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
    /// Bound on one request, body included.
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

/// The operation that failed, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Reading an object.
    Read,
    /// Writing an object.
    Write,
    /// Listing a prefix.
    List,
    /// Deleting an object.
    Delete,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::List => "list",
            Op::Delete => "delete",
        })
    }
}

/// What went wrong talking to the bucket. Every variant names the key and the store.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// The store URL could not be opened.
    #[error("cannot open store {url}: {why}")]
    Open {
        /// The store.
        url: String,
        /// Why.
        why: String,
    },
    /// No object at that key.
    #[error("{key} does not exist in {url}")]
    NotFound {
        /// The store.
        url: String,
        /// The key.
        key: String,
    },
    /// The credentials in use may not do this.
    #[error(
        "access denied for key {key} in {url}: these credentials may not {op} it (check which credentials are in use and the IAM policy from `fleet-publish policy`)"
    )]
    AccessDenied {
        /// The store.
        url: String,
        /// The key or prefix.
        key: String,
        /// The operation.
        op: Op,
    },
    /// A create-only write found an object there.
    #[error("{key} already exists in {url}")]
    AlreadyExists {
        /// The store.
        url: String,
        /// The key.
        key: String,
    },
    /// A compare-and-swap write lost: the object changed since it was read.
    #[error(
        "{key} in {url} changed since it was read (another writer won the compare-and-swap); read it again and retry"
    )]
    Conflict {
        /// The store.
        url: String,
        /// The key.
        key: String,
    },
    /// The object is larger than the caller's bound.
    #[error(
        "{key} in {url} is {size} bytes, larger than the {limit}-byte bound; refusing to read it"
    )]
    TooLarge {
        /// The store.
        url: String,
        /// The key.
        key: String,
        /// Its size (at least).
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// The store could not be reached, or stopped answering.
    #[error(
        "cannot reach {url} to {op} {key}: {why} (check the endpoint, the network and that the server is up)"
    )]
    Unreachable {
        /// The store.
        url: String,
        /// The key.
        key: String,
        /// The operation.
        op: Op,
        /// The underlying error.
        why: String,
    },
    /// Anything else the store reported.
    #[error("{op} {key} in {url} failed: {why}")]
    Other {
        /// The store.
        url: String,
        /// The key.
        key: String,
        /// The operation.
        op: Op,
        /// The underlying error.
        why: String,
    },
}

impl BucketError {
    /// Whether retrying later may help (network trouble), as opposed to a refusal
    /// that will repeat (403, missing object, bad bounds).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BucketError::Unreachable { .. } | BucketError::Other { .. }
        )
    }
}

/// An object read whole.
#[derive(Clone, Debug)]
pub struct Object {
    /// Its bytes.
    pub bytes: Bytes,
    /// Its ETag, if the store gives one.
    pub etag: Option<String>,
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

/// A fleet bucket.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    url: StoreUrl,
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

/// Name of the lock file serialising conditional writes on `file://` buckets.
pub const LOCAL_LOCK_FILE: &str = ".fleet-cas.lock";

impl Bucket {
    /// Opens the store at `url`. For `file://` the directory is created if missing.
    pub fn open(url: &StoreUrl, opts: &BucketOptions) -> Result<Self, BucketError> {
        let url_text = url.to_string();
        let open_err = |why: String| BucketError::Open {
            url: url_text.clone(),
            why,
        };
        let (store, prefix, local_root): (Arc<dyn ObjectStore>, String, Option<PathBuf>) = match url
        {
            StoreUrl::S3 {
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
                b = b
                    .with_virtual_hosted_style_request(*virtual_hosted)
                    .with_client_options(
                        ClientOptions::new()
                            .with_timeout(opts.request_timeout)
                            .with_connect_timeout(opts.connect_timeout)
                            .with_allow_http(
                                endpoint
                                    .as_deref()
                                    .is_some_and(|e| e.starts_with("http://")),
                            ),
                    )
                    .with_retry(RetryConfig {
                        backoff: BackoffConfig::default(),
                        max_retries: opts.max_retries,
                        retry_timeout: opts.request_timeout * (opts.max_retries as u32 + 1),
                    });
                let s3 = b.build().map_err(|e| open_err(e.to_string()))?;
                (Arc::new(s3), prefix.clone(), None)
            }
            StoreUrl::File { root } => {
                std::fs::create_dir_all(root)
                    .map_err(|e| open_err(format!("creating directory {}: {e}", root.display())))?;
                let fs =
                    LocalFileSystem::new_with_prefix(root).map_err(|e| open_err(e.to_string()))?;
                (Arc::new(fs), String::new(), Some(root.clone()))
            }
            StoreUrl::Memory { .. } => (Arc::new(InMemory::new()), String::new(), None),
        };
        Ok(Self {
            store,
            prefix,
            url: url.clone(),
            url_text,
            local_root,
        })
    }

    /// Parses `url` and opens it with default options and environment credentials.
    pub fn open_url(url: &str) -> Result<Self, BucketError> {
        let parsed = StoreUrl::parse(url).map_err(|e| BucketError::Open {
            url: url.to_owned(),
            why: e.to_string(),
        })?;
        Self::open(&parsed, &BucketOptions::default())
    }

    /// The store URL.
    pub fn url(&self) -> &StoreUrl {
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
                .get_local(root.join(key.as_str()), key, if_none_match, limit)
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
        let too_large = |size: u64| BucketError::TooLarge {
            url: self.url_text.clone(),
            key: key.to_string(),
            size,
            limit,
        };
        if res.meta.size > limit {
            return Err(too_large(res.meta.size));
        }
        let etag = res.meta.e_tag.clone();
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
        }))
    }

    /// `file://` reads without `object_store`'s per-8-KiB blocking hops: one blocking
    /// task opens, checks and reads the file. The ETag is computed exactly as
    /// `object_store` computes it for local files, so ETags from `get`, `head`,
    /// `list` and `put` stay comparable.
    async fn get_local(
        &self,
        path: PathBuf,
        key: &Key,
        if_none_match: Option<&str>,
        limit: u64,
    ) -> Result<Fetched, BucketError> {
        let url = self.url_text.clone();
        let k = key.to_string();
        let inm = if_none_match.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let io_err = |e: std::io::Error| local_io_error(&url, Op::Read, &k, e);
            let file = std::fs::File::open(&path).map_err(io_err)?;
            let meta = file.metadata().map_err(io_err)?;
            if !meta.is_file() {
                return Err(BucketError::NotFound { url, key: k });
            }
            let etag = local_etag(&meta);
            if inm.as_deref() == Some(etag.as_str()) {
                return Ok(Fetched::NotModified);
            }
            if meta.len() > limit {
                return Err(BucketError::TooLarge {
                    url,
                    key: k,
                    size: meta.len(),
                    limit,
                });
            }
            let mut buf = Vec::with_capacity(meta.len() as usize);
            // The file may grow between metadata and read: read at most limit + 1.
            file.take(limit + 1).read_to_end(&mut buf).map_err(io_err)?;
            if buf.len() as u64 > limit {
                return Err(BucketError::TooLarge {
                    url,
                    key: k,
                    size: buf.len() as u64,
                    limit,
                });
            }
            Ok(Fetched::Object(Object {
                bytes: buf.into(),
                etag: Some(etag),
            }))
        })
        .await
        .expect("local read task does not panic")
    }

    /// Streams an object: its announced size and its body. The caller bounds and
    /// verifies what it reads.
    pub async fn get_stream(
        &self,
        key: &Key,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, BucketError>>), BucketError> {
        if let Some(root) = &self.local_root {
            let path = root.join(key.as_str());
            let io_err = |e| local_io_error(&self.url_text, Op::Read, key.as_str(), e);
            let file = tokio::fs::File::open(&path).await.map_err(io_err)?;
            let meta = file.metadata().await.map_err(io_err)?;
            if !meta.is_file() {
                return Err(BucketError::NotFound {
                    url: self.url_text.clone(),
                    key: key.to_string(),
                });
            }
            let url = self.url_text.clone();
            let k = key.to_string();
            // 1 MiB reads: few blocking hops per NAR, memory still flat.
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)
                .map_err(move |e| local_io_error(&url, Op::Read, &k, e))
                .boxed();
            return Ok((meta.len(), stream));
        }
        let res = self
            .store
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
        Ok((size, stream))
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
            last_modified: jiff::Timestamp::from_millisecond(meta.last_modified.timestamp_millis())
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
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

    /// Lists every object under `prefix`.
    pub async fn list(&self, prefix: &KeyPrefix) -> Result<Vec<ObjectInfo>, BucketError> {
        let p = self.path(prefix.as_str().trim_end_matches('/'));
        let mut out = Vec::new();
        let mut s = self.store.list(Some(&p));
        while let Some(item) = s.next().await {
            match item {
                Ok(meta) => out.push(self.info(meta)),
                // A missing directory on file:// is an empty listing.
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(self.err(Op::List, prefix.as_str(), e)),
            }
        }
        Ok(out)
    }

    /// Deletes an object (absent objects are not an error).
    pub async fn delete(&self, key: &Key) -> Result<(), BucketError> {
        match self.store.delete(&self.path(key.as_str())).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(Op::Delete, key.as_str(), e)),
        }
    }

    /// On `file://`, an exclusive advisory lock held until the guard drops; elsewhere
    /// nothing (the server orders conditional writes).
    async fn local_lock(&self) -> Result<Option<std::fs::File>, BucketError> {
        let Some(root) = self.local_root.clone() else {
            return Ok(None);
        };
        let url = self.url_text.clone();
        tokio::task::spawn_blocking(move || {
            let path = root.join(LOCAL_LOCK_FILE);
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| BucketError::Other {
                    url: url.clone(),
                    key: LOCAL_LOCK_FILE.into(),
                    op: Op::Write,
                    why: format!("opening lock file {}: {e}", path.display()),
                })?;
            rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
                BucketError::Other {
                    url,
                    key: LOCAL_LOCK_FILE.into(),
                    op: Op::Write,
                    why: format!("locking {}: {e}", path.display()),
                }
            })?;
            Ok(Some(f))
        })
        .await
        .expect("lock task does not panic")
    }
}

/// The ETag `object_store` gives a local file: inode, modification time in
/// microseconds and size, in hex, quoted.
fn local_etag(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    format!("\"{:x}-{:x}-{:x}\"", meta.ino(), mtime, meta.len())
}

fn local_io_error(url: &str, op: Op, key: &str, e: std::io::Error) -> BucketError {
    let (url, key) = (url.to_owned(), key.to_owned());
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => {
            BucketError::NotFound { url, key }
        }
        std::io::ErrorKind::PermissionDenied => BucketError::AccessDenied { url, key, op },
        _ => BucketError::Other {
            url,
            key,
            op,
            why: e.to_string(),
        },
    }
}

/// Maps an `object_store` error to a [`BucketError`] that names the key.
fn classify(url: &str, op: Op, key: &str, e: object_store::Error) -> BucketError {
    use object_store::Error as E;
    let url = url.to_owned();
    let key = key.to_owned();
    match e {
        E::NotFound { .. } => BucketError::NotFound { url, key },
        E::AlreadyExists { .. } => BucketError::AlreadyExists { url, key },
        E::Precondition { .. } => BucketError::Conflict { url, key },
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            BucketError::AccessDenied { url, key, op }
        }
        other => {
            let why = error_chain(&other);
            if looks_denied(&why) {
                BucketError::AccessDenied { url, key, op }
            } else if looks_unreachable(&why) {
                BucketError::Unreachable { url, key, op, why }
            } else {
                BucketError::Other { url, key, op, why }
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

fn looks_denied(why: &str) -> bool {
    why.contains("403 Forbidden")
        || why.contains("status: 403")
        || why.contains("AccessDenied")
        || why.contains("InvalidAccessKeyId")
        || why.contains("SignatureDoesNotMatch")
}

fn looks_unreachable(why: &str) -> bool {
    let w = why.to_ascii_lowercase();
    w.contains("error sending request")
        || w.contains("connection refused")
        || w.contains("timed out")
        || w.contains("timeout")
        || w.contains("dns error")
        || w.contains("connection reset")
        || w.contains("connect error")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostName;

    fn host(s: &str) -> HostName {
        HostName::new(s).unwrap()
    }

    async fn exercise(b: &Bucket) {
        let k = Key::manifest(&host("web-1"));
        assert!(matches!(
            b.get(&k, 100).await,
            Err(BucketError::NotFound { .. })
        ));
        assert!(b.head(&k).await.unwrap().is_none());

        let e1 = b.put_if_absent(&k, &b"one"[..]).await.unwrap();
        assert!(matches!(
            b.put_if_absent(&k, &b"two"[..]).await,
            Err(BucketError::AlreadyExists { .. })
        ));
        let got = b.get(&k, 100).await.unwrap();
        assert_eq!(&got.bytes[..], b"one");
        let etag = got.etag.clone().or(e1).expect("stores give etags");

        // Conditional GET.
        assert!(matches!(
            b.get_if_changed(&k, Some(&etag), 100).await.unwrap(),
            Fetched::NotModified
        ));

        // Compare-and-swap: first wins, a stale etag loses.
        b.put_if_match(&k, &b"two"[..], &etag).await.unwrap();
        assert!(matches!(
            b.put_if_match(&k, &b"three"[..], &etag).await,
            Err(BucketError::Conflict { .. })
        ));
        let now = b.get(&k, 100).await.unwrap();
        assert_eq!(&now.bytes[..], b"two");
        assert!(matches!(
            b.get_if_changed(&k, Some(&etag), 100).await.unwrap(),
            Fetched::Object(_)
        ));

        // Size bound.
        assert!(matches!(
            b.get(&k, 2).await,
            Err(BucketError::TooLarge {
                size: 3,
                limit: 2,
                ..
            })
        ));

        // Listing returns keys relative to the root.
        b.put(&Key::status(&host("web-1")), &b"{}"[..])
            .await
            .unwrap();
        b.put(&Key::status(&host("web-2")), &b"{}"[..])
            .await
            .unwrap();
        let mut keys: Vec<_> = b
            .list(&KeyPrefix::status())
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.key)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            ["status/web-1/status.json", "status/web-2/status.json"]
        );
        assert!(b.list(&KeyPrefix::audit()).await.unwrap().is_empty());

        // CAS on a deleted object is a conflict, not a silent create.
        b.delete(&k).await.unwrap();
        assert!(matches!(
            b.put_if_match(&k, &b"x"[..], &etag).await,
            Err(BucketError::Conflict { .. })
        ));
    }

    #[tokio::test]
    async fn memory_bucket_semantics() {
        exercise(&Bucket::open_url("memory://").unwrap()).await;
    }

    #[tokio::test]
    async fn file_bucket_semantics() {
        let d = tempfile::tempdir().unwrap();
        let url = format!("file://{}", d.path().join("bucket").display());
        exercise(&Bucket::open_url(&url).unwrap()).await;
    }

    #[tokio::test]
    async fn file_etags_agree_between_get_head_list_and_put() {
        let d = tempfile::tempdir().unwrap();
        let b = Bucket::open_url(&format!("file://{}", d.path().display())).unwrap();
        let k = Key::status(&host("a"));
        let put = b.put(&k, &b"{}"[..]).await.unwrap();
        let got = b.get(&k, 10).await.unwrap().etag;
        let head = b.head(&k).await.unwrap().unwrap().etag;
        let listed = b.list(&KeyPrefix::status()).await.unwrap()[0].etag.clone();
        assert!(got.is_some());
        assert_eq!(got, head);
        assert_eq!(got, listed);
        assert_eq!(got, put);
        let (size, mut s) = b.get_stream(&k).await.unwrap();
        assert_eq!(size, 2);
        assert_eq!(&s.next().await.unwrap().unwrap()[..], b"{}");
        assert!(matches!(
            b.get_stream(&Key::status(&host("zz"))).await,
            Err(BucketError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn file_cas_is_exclusive_under_contention() {
        let d = tempfile::tempdir().unwrap();
        let url = format!("file://{}", d.path().display());
        let b = Bucket::open_url(&url).unwrap();
        let k = Key::manifest(&host("a"));
        b.put(&k, &b"0"[..]).await.unwrap();
        // 16 writers race to increment a counter with CAS; every increment lands once.
        let mut tasks = vec![];
        for _ in 0..16 {
            let b = Bucket::open_url(&url).unwrap();
            let k = k.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let o = b.get(&k, 100).await.unwrap();
                    let n: u64 = std::str::from_utf8(&o.bytes).unwrap().parse().unwrap();
                    match b
                        .put_if_match(&k, (n + 1).to_string(), o.etag.as_deref().unwrap())
                        .await
                    {
                        Ok(_) => break,
                        Err(BucketError::Conflict { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(&b.get(&k, 100).await.unwrap().bytes[..], b"16");
    }

    #[test]
    fn errors_name_key_and_store() {
        let e = classify(
            "s3://b/p",
            Op::List,
            "status/",
            object_store::Error::Generic {
                store: "S3",
                source: "Client error with status 403 Forbidden: <Code>AccessDenied</Code>".into(),
            },
        );
        let msg = e.to_string();
        assert!(matches!(e, BucketError::AccessDenied { op: Op::List, .. }));
        assert!(
            msg.contains("access denied for key status/") && msg.contains("s3://b/p"),
            "{msg}"
        );
    }
}
