//! `fleet-core`: the formats, signing and bucket access every fleet binary shares.
//!
//! One definition of each thing lives here, and the binaries (`fleet-publish`,
//! `fleet-agent`, `fleet-reporter`) only call it:
//!
//! - [`bucket`]: the [`Bucket`] type over S3 / MinIO / SeaweedFS / `file://` / memory;
//! - [`url`]: bucket URLs ([`BucketUrl`]);
//! - [`layout`]: every key of the bucket layout ([`Key`]);
//! - [`host`]: validated host names ([`HostName`]);
//! - [`keys`]: ed25519 keys and signatures in Nix's `name:base64` format;
//! - [`envelope`]: DSSE signed envelopes;
//! - [`manifest`]: the signed per-host [`Manifest`] and its verification;
//! - [`audit`]: the publisher's older, unsigned audit entries;
//! - [`audit_chain`], [`audit_replay`]: the signed, hash-chained audit and its replay;
//! - [`hold`]: signed holds that keep publishers off a host;
//! - [`release`]: signed releases (per-host closures and a rollout plan);
//!   [`rollout`]: a rollout's state, replaced by compare-and-swap;
//! - [`status`]: the [`StatusReport`] agents write; [`status_sig`]: its signature
//!   by the host's identity key;
//! - [`enrollment`]: the request a new host prints; [`registry`]: the signed host
//!   registry; [`bundle`]: the bootstrap bundle a newly enrolled host installs;
//! - [`iam`]: the IAM policy text for each role;
//! - [`cache_walk`]: a closure's signed narinfos read from the bucket (deploying
//!   without the local store);
//! - [`nar`], [`narinfo`], [`stream`]: the Nix binary-cache formats (NAR, narinfo,
//!   fingerprints, compression);
//! - [`nixcli`]: calls to the local `nix` tools (closures, path info, import, profiles);
//! - [`store_path`], [`nixbase32`]: Nix store paths and base-32;
//! - [`config`]: flags, environment and TOML file in one schema; [`duration`]: the
//!   one duration syntax of every setting; [`logging`]: the one logging set-up;
//! - [`error_kind`]: the stable `last_error.kind` values ([`ErrorKind`]);
//! - [`fsutil`]: crash-safe local writes;
//! - [`trust`]: the root of trust (threshold-signed, versioned keys of the fleet).
//!
//! `docs/formats.md` describes every format with a real example.

#![warn(missing_docs)]

pub mod audit;
pub mod audit_chain;
pub mod audit_replay;
pub mod audit_trust;
pub mod bucket;
pub mod bundle;
pub mod cache_walk;
pub mod config;
pub mod duration;
pub mod enrollment;
pub mod envelope;
pub mod error_kind;
pub mod fsutil;
pub mod hold;
pub mod host;
pub mod iam;
pub mod keys;
pub mod layout;
pub mod logging;
pub mod manifest;
pub mod nar;
pub mod narinfo;
pub mod nixbase32;
pub mod nixcli;
pub mod registry;
pub mod release;
pub mod rollout;
pub mod serde_str;
pub mod status;
pub mod status_sig;
pub mod store_path;
pub mod stream;
pub mod trust;
pub mod url;

pub use bucket::{Bucket, BucketError, BucketOptions, S3Credentials};
pub use error_kind::ErrorKind;
pub use host::HostName;
pub use keys::{PublicKey, SecretKey, Signature, TrustedKeys};
pub use layout::{Key, KeyPrefix, ObjectName};
pub use manifest::{Activation, Manifest, ManifestError, VerifiedManifest};
pub use narinfo::{Compression, NarInfo};
pub use status::StatusReport;
pub use store_path::StorePath;
pub use url::BucketUrl;

/// Version of the fleet crates, reported by agents.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
