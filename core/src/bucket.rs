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
        /// The object's ETag, when the store sent one: lets a caller ask again with
        /// `If-None-Match` instead of downloading the same oversized object.
        etag: Option<String>,
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

/// What [`Bucket::list_pruned`] lists of one folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    /// Its objects, and its sub-folders as each is answered for.
    All,
    /// Nothing in it.
    Skip,
    /// Only the object of this name directly in it (nothing else, no sub-folder).
    Only(&'static str),
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

    /// On `file://`, opens `key` as a plain file in the calling (blocking) thread and
    /// returns its size and the open file, for callers that read and verify it on that
    /// thread; `None` on other stores.
    pub fn open_local_blocking(
        &self,
        key: &Key,
    ) -> Option<Result<(u64, std::fs::File), BucketError>> {
        let root = self.local_root.as_ref()?;
        let io_err = |e| local_io_error(&self.url_text, Op::Read, key.as_str(), e);
        Some((|| {
            let file = open_local_object(root, key.as_str()).map_err(io_err)?;
            let meta = file.metadata().map_err(io_err)?;
            if !meta.is_file() {
                return Err(BucketError::NotFound {
                    url: self.url_text.clone(),
                    key: key.to_string(),
                });
            }
            Ok((meta.len(), file))
        })())
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
            keys.into_iter()
                .map(|k| as_object(read_local(&root, &url, k.to_string(), None, limit)))
                .collect()
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

    /// Lists the objects under `prefix` that `visit` keeps, in no particular order.
    ///
    /// `visit` is asked about each folder strictly below `prefix`, as a key relative
    /// to the root ending in `/` (`status/web-1/`), outermost first, and answers with
    /// a [`Visit`]: an object is listed when every folder it is in answers
    /// [`Visit::All`], or when the first one that does not answers
    /// [`Visit::Only`] with its name (directly in that folder). What that buys depends
    /// on the store:
    ///
    /// - `file://`: skipped folders are never read, an `Only` folder costs one `stat`
    ///   of that name, and `All` folders are walked by several threads (one `readdir`
    ///   per folder and one `stat` per object, against about three path-resolving
    ///   `stat`s per object in `object_store`'s walker).
    ///   Files get the same ETag as from [`Bucket::get`], [`Bucket::head`] and
    ///   [`Bucket::list`]; a symbolic link to a file is listed as that file, a
    ///   symbolic link to a folder is not followed (so a link loop cannot hang it);
    /// - object stores: the server lists everything, so `split_after` cuts the key
    ///   space after each of these keys (relative to the root) into ranges that are
    ///   listed concurrently with `ListObjectsV2`'s `start-after`, each range stopping
    ///   at its first key past its end (S3 lists in key order). Objects `visit` does
    ///   not keep are dropped as the pages arrive, so they are never held. Give split keys that cut
    ///   the expected keys into similar shares; none lists one range, as
    ///   [`Bucket::list`] does. A split key must not name a folder (`status/web-1`
    ///   while `status/web-1/…` exists): SeaweedFS's `start-after` then skips that
    ///   whole folder. End it in a character no name there has, such as
    ///   `status/web-1/~`.
    pub async fn list_pruned<F>(
        &self,
        prefix: &KeyPrefix,
        visit: F,
        split_after: &[String],
    ) -> Result<Vec<ObjectInfo>, BucketError>
    where
        F: Fn(&str) -> Visit + Send + Sync + 'static,
    {
        Ok(match &self.local_root {
            Some(root) => {
                let (root, prefix, url) = (
                    root.clone(),
                    prefix.as_str().to_owned(),
                    self.url_text.clone(),
                );
                tokio::task::spawn_blocking(move || walk_local(&root, &prefix, &visit, &url))
                    .await
                    .expect("local list task does not panic")?
            }
            None => self.list_ranges(prefix, &visit, split_after).await?,
        })
    }

    async fn list_ranges(
        &self,
        prefix: &KeyPrefix,
        visit: &(dyn Fn(&str) -> Visit + Send + Sync),
        split_after: &[String],
    ) -> Result<Vec<ObjectInfo>, BucketError> {
        let p = self.path(prefix.as_str().trim_end_matches('/'));
        // Bounds are compared as the store compares them: full paths, as sent.
        let mut bounds: Vec<OsPath> = split_after
            .iter()
            .map(|s| self.path(s))
            .filter(|b| b.as_ref().starts_with(p.as_ref()))
            .collect();
        bounds.sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
        bounds.dedup();
        let ranges: Vec<(Option<&OsPath>, Option<&OsPath>)> = (0..=bounds.len())
            .map(|i| (i.checked_sub(1).map(|j| &bounds[j]), bounds.get(i)))
            .collect();
        let rel_prefix = prefix.as_str();
        let lists = ranges.into_iter().map(|(after, upto)| {
            let p = &p;
            async move {
                let mut s = match after {
                    None => self.store.list(Some(p)),
                    Some(a) => self.store.list_with_offset(Some(p), a),
                };
                let mut out = Vec::new();
                let (after, upto) = (after.map(OsPath::as_ref), upto.map(OsPath::as_ref));
                while let Some(item) = s.next().await {
                    match item {
                        Ok(meta) => {
                            let at = meta.location.as_ref();
                            if upto.is_some_and(|u| range_passed(at, u)) {
                                break;
                            }
                            if !in_range(at, after, upto) {
                                continue;
                            }
                            let info = self.info(meta);
                            if kept(&info.key, rel_prefix, visit) {
                                out.push(info);
                            }
                        }
                        Err(object_store::Error::NotFound { .. }) => break,
                        Err(e) => return Err(self.err(Op::List, rel_prefix, e)),
                    }
                }
                Ok(out)
            }
        });
        let parts = futures::future::try_join_all(lists).await?;
        // A key in the byte range of one cut and the folder range of another is
        // listed by both.
        let mut all: Vec<ObjectInfo> = parts.into_iter().flatten().collect();
        all.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        all.dedup_by(|a, b| a.key == b.key);
        Ok(all)
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

/// Stores list in one of two orders: S3 proper (AWS, MinIO, moto) by the key's bytes,
/// SeaweedFS folder by folder (`a/x` before `a-b/x`, though `-` sorts before `/`),
/// and `start-after` follows the same order. A range listing must be right in both:
/// it keeps a key inside its range in either order, and stops only at a key past its
/// end in both.
fn range_passed(key: &str, upto: &str) -> bool {
    key > upto && folder_order(key, upto).is_gt()
}

/// Whether `key` lies in `(after, upto]` by bytes or by folders (see [`range_passed`]).
fn in_range(key: &str, after: Option<&str>, upto: Option<&str>) -> bool {
    let by_bytes = after.is_none_or(|a| key > a) && upto.is_none_or(|u| key <= u);
    let by_folders = after.is_none_or(|a| folder_order(key, a).is_gt())
        && upto.is_none_or(|u| folder_order(key, u).is_le());
    by_bytes || by_folders
}

/// Compares keys folder by folder, as a store that walks folders lists them.
fn folder_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

/// Opens the object at `rel` below a `file://` bucket's `root` for reading.
///
/// Whoever can write the bucket's directory must not be able to make a reader (the
/// agent runs as root) open anything else: no symlink below the root is followed
/// (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`; on kernels before 5.6, at
/// least not in the last component), and the open does not block on a FIFO or claim
/// a terminal. Callers then refuse anything that is not a regular file.
fn open_local_object(root: &std::path::Path, rel: &str) -> std::io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    use rustix::io::Errno;
    let dir = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // O_NONBLOCK only matters for the open itself: reads of regular files ignore it.
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let fd = match rustix::fs::openat2(
        &dir,
        rel,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        // No openat2 (old kernel, or a seccomp filter that refuses unknown calls).
        Err(Errno::NOSYS | Errno::PERM) => {
            rustix::fs::openat(&dir, rel, flags | OFlags::NOFOLLOW, Mode::empty())?
        }
        Err(Errno::LOOP | Errno::XDEV) => {
            return Err(std::io::Error::other(format!(
                "{rel} is or passes through a symlink below the bucket root; a file:// bucket \
                 holds plain files and directories only, and fleet follows no symlink in it"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(std::fs::File::from(fd))
}

/// Reads a `file://` object in the calling (blocking) thread: opens, checks and reads
/// the file. The ETag is computed exactly as `object_store` computes it for local
/// files, so ETags from `get`, `head`, `list` and `put` stay comparable.
fn read_local(
    root: &std::path::Path,
    url: &str,
    key: String,
    if_none_match: Option<&str>,
    limit: u64,
) -> Result<Fetched, BucketError> {
    use std::io::Read;
    let io_err = |e: std::io::Error| local_io_error(url, Op::Read, &key, e);
    let file = open_local_object(root, &key).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(BucketError::NotFound {
            url: url.to_owned(),
            key,
        });
    }
    let etag = local_etag(&meta);
    if if_none_match == Some(etag.as_str()) {
        return Ok(Fetched::NotModified);
    }
    let too_large = |size: u64| BucketError::TooLarge {
        url: url.to_owned(),
        key: key.clone(),
        size,
        limit,
        etag: Some(etag.clone()),
    };
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    // The file may grow between metadata and read: read at most limit + 1.
    file.take(limit + 1).read_to_end(&mut buf).map_err(io_err)?;
    if buf.len() as u64 > limit {
        return Err(too_large(buf.len() as u64));
    }
    Ok(Fetched::Object(Object {
        bytes: buf.into(),
        etag: Some(etag),
    }))
}

/// Whether [`Bucket::list_pruned`] keeps `key`, by what `visit` answers for the
/// folders it is in below `prefix`.
fn kept(key: &str, prefix: &str, visit: &(dyn Fn(&str) -> Visit + Send + Sync)) -> bool {
    let Some(rest) = key.strip_prefix(prefix) else {
        return true;
    };
    let start = prefix.len();
    for (i, _) in rest.match_indices('/') {
        let end = start + i + 1;
        match visit(&key[..end]) {
            Visit::All => {}
            Visit::Skip => return false,
            Visit::Only(name) => return &key[end..] == name,
        }
    }
    true
}

/// Object names `object_store`'s local store leaves out of listings (its in-progress
/// multipart parts, `<name>#<digits>`); left out here too so both listings agree.
fn is_part_file(name: &str) -> bool {
    matches!(name.rsplit_once('#'), Some((_, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The last segment of a folder key (`status/web-1/` gives `web-1`).
fn name_of(folder: &str) -> &str {
    let f = folder.trim_end_matches('/');
    f.rsplit('/').next().unwrap_or(f)
}

fn is_regular(st: &rustix::fs::Statx) -> bool {
    rustix::fs::FileType::from_raw_mode(st.stx_mode.into()) == rustix::fs::FileType::RegularFile
}

/// [`local_info`] from `statx`: the same ETag (inode, modification time in
/// microseconds, size) and time.
fn statx_info(key: String, st: &rustix::fs::Statx) -> ObjectInfo {
    let (secs, nanos) = (st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec);
    // Before 1970 counts as 0, as `local_etag` has it.
    let micros = u128::try_from(secs).map_or(0, |s| s * 1_000_000 + u128::from(nanos / 1000));
    let last_modified = jiff::Timestamp::new(secs, nanos.try_into().unwrap_or(0))
        .ok()
        .and_then(|t| jiff::Timestamp::from_millisecond(t.as_millisecond()).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ObjectInfo {
        key,
        size: st.stx_size,
        etag: Some(format!(
            "\"{:x}-{:x}-{:x}\"",
            st.stx_ino, micros, st.stx_size
        )),
        last_modified,
    }
}

fn local_info(key: String, meta: &std::fs::Metadata) -> ObjectInfo {
    let last_modified = meta
        .modified()
        .ok()
        .and_then(|t| jiff::Timestamp::try_from(t).ok())
        // Millisecond precision, as `object_store` reports it.
        .and_then(|t| jiff::Timestamp::from_millisecond(t.as_millisecond()).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ObjectInfo {
        key,
        size: meta.len(),
        etag: Some(local_etag(meta)),
        last_modified,
    }
}

/// Reads one `file://` folder: its objects into `out`, the objects its `Only`
/// sub-folders name into `out`, its `All` sub-folders into `dirs` (as keys ending in
/// `/`). A folder or file that vanished while being read is skipped, as a concurrent
/// delete would make it.
fn read_local_dir(
    root: &std::path::Path,
    dir_key: &str,
    visit: &(dyn Fn(&str) -> Visit + Send + Sync),
    url: &str,
    out: &mut Vec<ObjectInfo>,
    dirs: &mut Vec<String>,
) -> Result<(), BucketError> {
    let dir = root.join(dir_key);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(local_io_error(url, Op::List, dir_key, e)),
    };
    // Opened on the first `Only` sub-folder: its objects are stat'ed relative to this
    // folder, so the kernel resolves two path components, not the whole path.
    let mut dir_fd: Option<rustix::fd::OwnedFd> = None;
    for entry in rd {
        let entry = entry.map_err(|e| local_io_error(url, Op::List, dir_key, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let key = format!("{dir_key}{name}");
        let ft = match entry.file_type() {
            Ok(ft) => ft,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(local_io_error(url, Op::List, &key, e)),
        };
        if ft.is_dir() {
            let sub = format!("{key}/");
            match visit(&sub) {
                Visit::All => dirs.push(sub),
                Visit::Skip => {}
                Visit::Only(name) => {
                    let only = format!("{sub}{name}");
                    let fd = match &dir_fd {
                        Some(fd) => fd,
                        None => {
                            use rustix::fs::{Mode, OFlags};
                            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
                            let fd = rustix::fs::open(&dir, flags, Mode::empty())
                                .map_err(|e| local_io_error(url, Op::List, dir_key, e.into()))?;
                            dir_fd.insert(fd)
                        }
                    };
                    let rel = format!("{}/{name}", name_of(&sub));
                    // Follows links, as the walk and `object_store` do for files.
                    let st = rustix::fs::statx(
                        fd,
                        rel.as_str(),
                        rustix::fs::AtFlags::empty(),
                        rustix::fs::StatxFlags::BASIC_STATS,
                    );
                    match st {
                        Ok(st) if is_regular(&st) && !is_part_file(name) => {
                            out.push(statx_info(only, &st))
                        }
                        Ok(_) => {}
                        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => {}
                        Err(e) => return Err(local_io_error(url, Op::List, &only, e.into())),
                    }
                }
            }
            continue;
        }
        let meta = if ft.is_symlink() {
            match std::fs::metadata(entry.path()) {
                Ok(m) if m.is_file() => m,
                // Broken links and links to folders are not objects.
                _ => continue,
            }
        } else if ft.is_file() {
            match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(local_io_error(url, Op::List, &key, e)),
            }
        } else {
            continue;
        };
        if is_part_file(&name) {
            continue;
        }
        out.push(local_info(key, &meta));
    }
    Ok(())
}

/// Walks `<root>/<prefix>` for [`Bucket::list_pruned`]: the top folder on this
/// thread, then its sub-folders shared out to up to 8 threads (each takes the next
/// one and walks it depth-first with an explicit stack).
fn walk_local(
    root: &std::path::Path,
    prefix: &str,
    visit: &(dyn Fn(&str) -> Visit + Send + Sync),
    url: &str,
) -> Result<Vec<ObjectInfo>, BucketError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut out = Vec::new();
    let mut top = Vec::new();
    read_local_dir(root, prefix, visit, url, &mut out, &mut top)?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(top.len().div_ceil(64).max(1));
    let next = AtomicUsize::new(0);
    let work = || -> Result<Vec<ObjectInfo>, BucketError> {
        let mut found = Vec::new();
        let mut stack = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(d) = top.get(i) else {
                return Ok(found);
            };
            stack.push(d.clone());
            while let Some(d) = stack.pop() {
                read_local_dir(root, &d, visit, url, &mut found, &mut stack)?;
            }
        }
    };
    if threads == 1 {
        out.extend(work()?);
        return Ok(out);
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
        for h in handles {
            out.extend(h.join().expect("local list thread does not panic")?);
        }
        Ok(out)
    })
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
    async fn local_objects_open_as_plain_files_only_on_file_stores() {
        use std::io::Read;
        let d = tempfile::tempdir().unwrap();
        let b = Bucket::open_url(&format!("file://{}", d.path().display())).unwrap();
        let k = Key::status(&host("a"));
        b.put(&k, &b"{}"[..]).await.unwrap();
        let (size, mut f) = b.open_local_blocking(&k).unwrap().unwrap();
        let mut body = String::new();
        f.read_to_string(&mut body).unwrap();
        assert_eq!((size, body.as_str()), (2, "{}"));
        assert!(matches!(
            b.open_local_blocking(&Key::status(&host("zz"))),
            Some(Err(BucketError::NotFound { .. }))
        ));
        let m = Bucket::open_url("memory://").unwrap();
        assert!(m.open_local_blocking(&k).is_none());
    }

    #[tokio::test]
    async fn file_reads_follow_no_symlink_and_never_block_on_a_fifo() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("bucket");
        let b = Bucket::open_url(&format!("file://{}", root.display())).unwrap();
        let secret = d.path().join("secret");
        std::fs::write(&secret, b"outside the bucket").unwrap();

        // The object itself a symlink to a file outside the bucket.
        let k = Key::status(&host("a"));
        b.put(&k, &b"{}"[..]).await.unwrap();
        let file = root.join(k.as_str());
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink(&secret, &file).unwrap();
        let e = b.get(&k, 1 << 20).await.unwrap_err();
        assert!(!e.to_string().contains("outside the bucket"), "{e}");
        assert!(b.open_local_blocking(&k).unwrap().is_err());
        assert!(b.get_many(std::slice::from_ref(&k), 1 << 20).await[0].is_err());

        // A folder on the way a symlink (to a real folder holding a real object).
        let other = d.path().join("elsewhere");
        std::fs::create_dir_all(other.join("b")).unwrap();
        std::fs::write(other.join("b/status.json"), b"{}").unwrap();
        std::os::unix::fs::symlink(other.join("b"), root.join("status/b")).unwrap();
        let e = b.get(&Key::status(&host("b")), 1 << 20).await.unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");

        // A FIFO where an object should be: refused at once, not waited on.
        let k = Key::status(&host("c"));
        let fifo = root.join(k.as_str());
        std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), b.get(&k, 1 << 20))
            .await
            .expect("a FIFO in the bucket must not block the read");
        assert!(matches!(got, Err(BucketError::NotFound { .. })), "{got:?}");
        assert!(b.open_local_blocking(&k).unwrap().is_err());
    }

    #[test]
    fn range_listings_are_right_in_byte_and_folder_order() {
        // Hosts db, db-2 and db0: by bytes db-2/ < db/ < db0/, by folders db/ < db-2/
        // < db0/. Every key must land in some range, whichever order the store lists
        // in, for a cut after either host.
        let keys = ["s/db-2/x", "s/db/x", "s/db0/x", "s/c/x", "s/e/x"];
        for cut in ["s/db/~", "s/db-2/~", "s/db0/~"] {
            for k in keys {
                let first = in_range(k, None, Some(cut));
                let second = in_range(k, Some(cut), None);
                assert!(first || second, "{k} in no range for cut {cut}");
            }
            // A store in either order reaches every key of the first range before
            // the listing stops.
            for order in [
                vec!["s/c/x", "s/db-2/x", "s/db/x", "s/db0/x", "s/e/x"],
                vec!["s/c/x", "s/db/x", "s/db-2/x", "s/db0/x", "s/e/x"],
            ] {
                let stop = order
                    .iter()
                    .position(|k| range_passed(k, cut))
                    .unwrap_or(order.len());
                for k in &order[stop..] {
                    assert!(!in_range(k, None, Some(cut)), "{k} after the stop at {cut}");
                }
            }
        }
        assert!(!range_passed("s/db/x", "s/db-2/~"));
        assert!(range_passed("s/db0/x", "s/db-2/~"));
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

    #[tokio::test]
    async fn get_many_reads_like_get_in_order() {
        let d = tempfile::tempdir().unwrap();
        let file = Bucket::open_url(&format!("file://{}", d.path().display())).unwrap();
        for b in [file, Bucket::open_url("memory://").unwrap()] {
            let keys: Vec<Key> = (0..5)
                .map(|i| Key::status(&host(&format!("h-{i}"))))
                .collect();
            for (i, k) in keys.iter().enumerate().take(4) {
                b.put(k, "x".repeat(i + 1)).await.unwrap();
            }
            let got = b.get_many(&keys, 3).await;
            assert_eq!(got.len(), 5);
            for (i, r) in got.iter().enumerate().take(3) {
                let o = r.as_ref().unwrap();
                assert_eq!(o.bytes.len(), i + 1);
                assert_eq!(o.etag, b.get(&keys[i], 3).await.unwrap().etag);
            }
            assert!(matches!(got[3], Err(BucketError::TooLarge { size: 4, .. })));
            assert!(
                matches!(&got[4], Err(BucketError::NotFound { key, .. }) if key == keys[4].as_str())
            );
            assert!(b.get_many(&[], 3).await.is_empty());
        }
    }

    /// Objects in and around pruned folders, listed with and without pruning.
    async fn pruned_listing(b: &Bucket) {
        let mut all = vec![
            "status/stray.json".to_owned(),
            "status/Bad_Host/x/y.json".to_owned(),
            "status/Bad_Host/status.json".to_owned(),
            "hosts/web-1/manifest.json".to_owned(),
        ];
        for i in 0..150 {
            all.push(format!("status/web-{i}/status.json"));
            all.push(format!("status/web-{i}/events/a-{i}.json"));
            all.push(format!("status/web-{i}/events/b-{i}.json"));
        }
        all.push("status/web-1-a/status.json".to_owned());
        for k in &all {
            // Raw keys: some are deliberately outside the layout.
            b.store
                .put(&b.path(k), PutPayload::from_static(b"{}"))
                .await
                .unwrap();
        }
        // Skip every folder two levels below status/ (events and the like).
        let prune = |d: &str| {
            if d.matches('/').count() >= 3 {
                Visit::Skip
            } else {
                Visit::All
            }
        };
        let mut want: Vec<_> = b
            .list(&KeyPrefix::status())
            .await
            .unwrap()
            .into_iter()
            .filter(|i| i.key.matches('/').count() <= 2)
            .collect();
        want.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(want.len(), 150 + 3);
        let key_etag = |v: &[ObjectInfo]| {
            v.iter()
                .map(|i| (i.key.clone(), i.etag.clone(), i.size, i.last_modified))
                .collect::<Vec<_>>()
        };
        // Split points anywhere: before, inside and after the keys, at a key, at a
        // folder, and between `web-1-a/` and `web-1/` (which sort around each other).
        let splits: Vec<String> = [
            "a",
            "status/web-1",
            "status/web-1/",
            "status/web-1/status.json",
            "status/web-50/events/a-50.json",
            "status/web-7",
            "status/web-99/",
            "zzz",
        ]
        .map(str::to_owned)
        .to_vec();
        for split in [&[][..], &splits[..]] {
            let mut got = b
                .list_pruned(&KeyPrefix::status(), prune, split)
                .await
                .unwrap();
            got.sort_by(|a, b| a.key.cmp(&b.key));
            assert_eq!(key_etag(&got), key_etag(&want), "splits {split:?}");
        }
        // Nothing pruned: every object under the prefix, each once.
        let got = b
            .list_pruned(&KeyPrefix::status(), |_| Visit::All, &splits)
            .await
            .unwrap();
        assert_eq!(got.len(), all.len() - 1);
        // Only status.json of each folder directly under status/: no events, no other
        // object of those folders, top-level objects still listed.
        let only = |d: &str| {
            if d.matches('/').count() == 2 {
                Visit::Only("status.json")
            } else {
                Visit::All
            }
        };
        // What the one-stat path gives equals what the walk gives.
        let walked = b
            .list_pruned(&KeyPrefix::status(), |_| Visit::All, &[])
            .await
            .unwrap();
        for o in b
            .list_pruned(&KeyPrefix::status(), only, &[])
            .await
            .unwrap()
        {
            let w = walked.iter().find(|w| w.key == o.key).unwrap();
            assert_eq!(
                (&w.etag, w.size, w.last_modified),
                (&o.etag, o.size, o.last_modified)
            );
        }
        let want: Vec<String> = all
            .iter()
            .filter(|k| {
                k.starts_with("status/")
                    && (k.matches('/').count() == 1
                        || (k.matches('/').count() == 2 && k.ends_with("/status.json")))
            })
            .cloned()
            .collect();
        for split in [&[][..], &splits[..]] {
            let mut got: Vec<String> = b
                .list_pruned(&KeyPrefix::status(), only, split)
                .await
                .unwrap()
                .into_iter()
                .map(|i| i.key)
                .collect();
            got.sort();
            let mut want = want.clone();
            want.sort();
            assert_eq!(got, want);
        }
        // An absent prefix lists nothing.
        assert!(
            b.list_pruned(&KeyPrefix::audit(), |_| Visit::All, &[])
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn pruned_listing_on_memory() {
        pruned_listing(&Bucket::open_url("memory://").unwrap()).await;
    }

    #[tokio::test]
    async fn pruned_listing_on_file_skips_pruned_folders_and_keeps_etags() {
        let d = tempfile::tempdir().unwrap();
        let b = Bucket::open_url(&format!("file://{}", d.path().display())).unwrap();
        pruned_listing(&b).await;
        // ETags agree with get; a part file, a broken link and a folder link are left
        // out, a link to a file is listed; an unreadable pruned folder is never read.
        let k = Key::status(&host("web-3"));
        let listed = b
            .list_pruned(&KeyPrefix::status(), |_| Visit::All, &[])
            .await
            .unwrap();
        let info = listed.iter().find(|i| i.key == k.as_str()).unwrap();
        assert_eq!(info.etag, b.get(&k, 10).await.unwrap().etag);
        let root = d.path().join("status/web-3");
        std::fs::write(root.join("x.json#1"), "{}").unwrap();
        std::os::unix::fs::symlink("/nonexistent", root.join("broken")).unwrap();
        std::os::unix::fs::symlink(d.path().join("status"), root.join("loop")).unwrap();
        std::os::unix::fs::symlink(root.join("status.json"), root.join("alias.json")).unwrap();
        let mut keys: Vec<String> = b
            .list_pruned(&KeyPrefix::status(), |_| Visit::All, &[])
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.key)
            .filter(|k| k.starts_with("status/web-3/"))
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "status/web-3/alias.json",
                "status/web-3/events/a-3.json",
                "status/web-3/events/b-3.json",
                "status/web-3/status.json"
            ]
        );
        let events = root.join("events");
        std::fs::set_permissions(&events, std::os::unix::fs::PermissionsExt::from_mode(0o000))
            .unwrap();
        let pruned = b
            .list_pruned(
                &KeyPrefix::status(),
                |d| {
                    if d.ends_with("/events/") {
                        Visit::Skip
                    } else {
                        Visit::All
                    }
                },
                &[],
            )
            .await;
        let unpruned = b
            .list_pruned(&KeyPrefix::status(), |_| Visit::All, &[])
            .await;
        // Root reads it anyway; for anyone else the folder is unreadable.
        let readable = std::fs::read_dir(&events).is_ok();
        std::fs::set_permissions(&events, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        assert!(pruned.is_ok());
        if !readable {
            assert!(
                matches!(unpruned, Err(BucketError::AccessDenied { ref key, .. }) if key == "status/web-3/events/"),
                "{unpruned:?}"
            );
        }
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
