//! The host's side of the root of trust: which root version it trusts, kept in
//! `<state-dir>/trust-root.json`, and the walk to each newer version in the bucket.
//!
//! ```json
//! {"version": 3, "etag": "\"9c1…\"", "root": "<the root's DSSE envelope, as stored>"}
//! ```
//!
//! The file is rewritten whole with [`fleet_core::fsutil::write_atomic`] after every
//! version verified, so the host never trusts a version lower than one it saw. Each
//! poll is one conditional GET of `trust/root.json` (304 while unchanged); when it
//! changed, every version from the trusted one up to the one it names is read from
//! `trust/<version>.root.json` and checked by TUF's rule
//! ([`fleet_core::trust::chain`]). Without a trusted version yet, the walk starts at
//! `trust-root-version`, verified against the pinned `trust-root-keys`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use fleet_core::bucket::Fetched;
use fleet_core::trust::chain::claimed_version;
use fleet_core::trust::{MAX_ROOT_SIZE, TrustError, TrustedRoot};
use fleet_core::{Bucket, BucketError, ErrorKind, Key};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::TrustSettings;

/// Name of the trusted root's file in the state directory.
pub const TRUST_FILE: &str = "trust-root.json";

/// Largest trust file read back.
const MAX_TRUST_FILE: u64 = 2 * MAX_ROOT_SIZE;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    version: u64,
    etag: Option<String>,
    root: String,
}

/// What the host trusts, and where it keeps it.
#[derive(Debug)]
pub struct TrustState {
    path: PathBuf,
    trusted: Option<TrustedRoot>,
    etag: Option<String>,
}

/// How a refresh ended when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum Refresh {
    /// Still the version trusted before.
    Unchanged,
    /// A newer version (or the first) is now trusted.
    Advanced {
        /// The version trusted before, if any.
        from: Option<u64>,
        /// The version trusted now.
        to: u64,
    },
}

/// Why no root is trusted for this cycle.
#[derive(Debug)]
pub enum TrustFailure {
    /// A root was refused, or one the walk needs is missing.
    Refused {
        /// The `last_error.kind`.
        kind: ErrorKind,
        /// What happened, naming the object.
        message: String,
    },
    /// The bucket could not be read.
    Bucket(BucketError),
}

fn refused(e: TrustError) -> TrustFailure {
    let kind = match e {
        TrustError::Rollback { .. } => ErrorKind::TrustRootRollback,
        TrustError::Expired { .. } => ErrorKind::TrustRootExpired,
        _ => ErrorKind::TrustRootInvalid,
    };
    TrustFailure::Refused {
        kind,
        message: e.to_string(),
    }
}

/// Reads `key`; a missing object is the `trust-root-missing` refusal.
async fn read(bucket: &Bucket, key: &Key) -> Result<Vec<u8>, TrustFailure> {
    match bucket.get(key, MAX_ROOT_SIZE).await {
        Ok(o) => Ok(o.bytes.to_vec()),
        Err(BucketError::NotFound { .. }) => Err(TrustFailure::Refused {
            kind: ErrorKind::TrustRootMissing,
            message: format!(
                "{key} does not exist: the root of trust this host walks needs it (fleet-publish trust init writes the first version)"
            ),
        }),
        Err(e) => Err(TrustFailure::Bucket(e)),
    }
}

fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_TRUST_FILE)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

impl TrustState {
    /// Loads the trusted root from `state_dir`, if one was stored and it is not
    /// older than the pinned version (re-pinning a newer version starts over there).
    pub fn load(state_dir: &Path, settings: Option<&TrustSettings>) -> anyhow::Result<Self> {
        let path = state_dir.join(TRUST_FILE);
        let mut me = Self {
            path,
            trusted: None,
            etag: None,
        };
        let Some(settings) = settings else {
            return Ok(me);
        };
        let bytes = match read_bounded(&me.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(me),
            Err(e) => return Err(e).with_context(|| format!("reading {}", me.path.display())),
        };
        let what = me.path.display().to_string();
        let stored: Stored =
            serde_json::from_slice(&bytes).with_context(|| format!("parsing {what}"))?;
        let root = TrustedRoot::reload(stored.root.as_bytes(), &what)
            .with_context(|| format!("the root of trust stored in {what} (delete it to walk again from trust-root-version)"))?;
        anyhow::ensure!(
            root.version() == stored.version,
            "{what} says version {} but holds root version {}",
            stored.version,
            root.version()
        );
        if root.version() >= settings.initial_version {
            me.trusted = Some(root);
            me.etag = stored.etag;
        }
        Ok(me)
    }

    /// The trusted root, once one is.
    pub fn root(&self) -> Option<&TrustedRoot> {
        self.trusted.as_ref()
    }

    fn save(&self) -> anyhow::Result<()> {
        let Some(root) = &self.trusted else {
            return Ok(());
        };
        let stored = Stored {
            version: root.version(),
            etag: self.etag.clone(),
            root: String::from_utf8_lossy(root.bytes()).into_owned(),
        };
        let mut text = serde_json::to_vec(&stored).expect("serialises");
        text.push(b'\n');
        fleet_core::fsutil::write_atomic(&self.path, &text, 0o644, true)
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// Moves to the newest root version in the bucket, checking each step, then
    /// checks that the newest trusted version has not expired. A failed step keeps
    /// what was trusted before.
    pub async fn refresh(
        &mut self,
        bucket: &Bucket,
        settings: &TrustSettings,
        now: Timestamp,
    ) -> anyhow::Result<Result<Refresh, TrustFailure>> {
        let from = self.trusted.as_ref().map(TrustedRoot::version);
        let pointer = Key::trust_root();
        let etag = self.trusted.as_ref().and(self.etag.as_deref());
        let newest = match bucket.get_if_changed(&pointer, etag, MAX_ROOT_SIZE).await {
            Ok(Fetched::NotModified) => None,
            Ok(Fetched::Object(o)) => Some((o.bytes.to_vec(), o.etag)),
            Err(BucketError::NotFound { .. }) => {
                return Ok(Err(TrustFailure::Refused {
                    kind: ErrorKind::TrustRootMissing,
                    message: format!(
                        "{pointer} does not exist, but this host pins a root of trust (trust-root-keys): write one with fleet-publish trust init"
                    ),
                }));
            }
            Err(e) => return Ok(Err(TrustFailure::Bucket(e))),
        };
        if let Some((bytes, etag)) = newest {
            // The ETag stands for a pointer the walk reached; until this one is
            // reached, the next poll reads the pointer again whatever it holds (an
            // older pointer put back would otherwise answer 304).
            self.etag = None;
            if let Err(f) = self.walk(bucket, settings, &bytes).await? {
                self.save()?;
                return Ok(Err(f));
            }
            self.etag = etag.filter(|e| e.len() <= 1024);
            self.save()?;
        }
        let Some(root) = &self.trusted else {
            anyhow::bail!("the store answered 304 Not Modified to an unconditional GET");
        };
        if let Err(e) = root.check_fresh(now) {
            return Ok(Err(refused(e)));
        }
        Ok(Ok(match from {
            Some(v) if v == root.version() => Refresh::Unchanged,
            _ => Refresh::Advanced {
                from,
                to: root.version(),
            },
        }))
    }

    /// Walks from the trusted version (or the pinned one) to the version `newest`
    /// (the bytes of `trust/root.json`) names, saving after each step.
    async fn walk(
        &mut self,
        bucket: &Bucket,
        settings: &TrustSettings,
        newest: &[u8],
    ) -> anyhow::Result<Result<(), TrustFailure>> {
        let pointer = Key::trust_root();
        let Some(claimed) = claimed_version(newest) else {
            return Ok(Err(TrustFailure::Refused {
                kind: ErrorKind::TrustRootInvalid,
                message: format!("{pointer} is not a root of trust envelope"),
            }));
        };
        let bytes_of = |v: u64| async move {
            if v == claimed {
                Ok(newest.to_vec())
            } else {
                read(bucket, &Key::trust_root_version(v)).await
            }
        };
        let mut current = match &self.trusted {
            Some(t) => t.clone(),
            None => {
                let v = settings.initial_version;
                if claimed < v {
                    return Ok(Err(refused(TrustError::Rollback {
                        what: pointer.to_string(),
                        found: claimed,
                        trusted: v,
                    })));
                }
                let bytes = match bytes_of(v).await {
                    Ok(b) => b,
                    Err(f) => return Ok(Err(f)),
                };
                let what = Key::trust_root_version(v).to_string();
                match TrustedRoot::bootstrap(&bytes, &what, &settings.root_keys, v) {
                    Ok(t) => t,
                    Err(e) => return Ok(Err(refused(e))),
                }
            }
        };
        if self.trusted.is_none() {
            tracing::info!(
                version = current.version(),
                "trusting the pinned root of trust"
            );
            self.trusted = Some(current.clone());
            self.save()?;
        }
        if claimed < current.version() {
            return Ok(Err(refused(TrustError::Rollback {
                what: pointer.to_string(),
                found: claimed,
                trusted: current.version(),
            })));
        }
        while current.version() < claimed {
            let v = current.version() + 1;
            let bytes = match bytes_of(v).await {
                Ok(b) => b,
                Err(f) => return Ok(Err(f)),
            };
            current = match current.next(&bytes, Key::trust_root_version(v).as_str()) {
                Ok(t) => t,
                Err(e) => return Ok(Err(refused(e))),
            };
            tracing::info!(version = v, "trusting the next root of trust version");
            self.trusted = Some(current.clone());
            self.save()?;
        }
        Ok(Ok(()))
    }
}
