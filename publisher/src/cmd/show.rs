//! `fleet-publish show`: reads `hosts/<host>/manifest.json` and prints it as JSON
//! after `fleet_core::Manifest::verify` accepted it with the given publisher keys:
//!
//! ```json
//! {"host": "web-1", "signed_by": "publisher-1", "sha256": "…", "expired": false,
//!  "manifest": {"version": 1, "host": "web-1", "sequence": 7, …}}
//! ```
//!
//! A host held by `fleet-publish hold` has `"hold": {"hold": {…, "reason": "…"},
//! "signed_by": "…"}` (else `null`).
//!
//! An expired manifest is still shown (with `"expired": true`): it is what the host
//! refuses, which is worth seeing. Anything else that fails verification is an error.

use anyhow::{Context, bail};
use clap::Args;
use fleet_core::manifest::{MAX_MANIFEST_SIZE, VerifyPolicy};
use fleet_core::{Bucket, BucketError, HostName, Key, Manifest, TrustedKeys, VerifiedManifest};
use serde::{Deserialize, Serialize};

use crate::config::{self, ConfigFile, TrustedKeyOptions};

/// `show` options.
#[derive(Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", default)]
pub struct ShowOptions {
    /// The fleet bucket (required).
    #[arg(long, env = "FLEET_BUCKET", value_name = "URL")]
    pub bucket: Option<String>,
    /// Deprecated spelling of `bucket`.
    #[arg(long, env = "FLEET_STORE", value_name = "URL", hide = true)]
    pub store: Option<String>,
    /// The host whose manifest to show (required).
    #[arg(long, env = "FLEET_HOST", value_name = "HOST")]
    pub host: Option<String>,
    /// Trusted publisher keys.
    #[command(flatten)]
    #[serde(flatten)]
    pub trusted: TrustedKeyOptions,
}

/// A verified manifest, as shown.
#[derive(Clone, Debug, Serialize)]
pub struct Shown {
    /// The host.
    pub host: HostName,
    /// The publisher key that signed it.
    pub signed_by: String,
    /// SHA-256 (hex) of the stored object.
    pub sha256: String,
    /// Whether it is past its expiry now.
    pub expired: bool,
    /// The payload.
    pub manifest: Manifest,
    /// The host's hold, if one is in force (`fleet-publish hold`).
    pub hold: Option<fleet_core::hold::VerifiedHold>,
}

/// Reads and verifies the manifest of `host`.
pub async fn show(
    bucket: &Bucket,
    host: &HostName,
    trusted: &TrustedKeys,
) -> anyhow::Result<Shown> {
    let key = Key::manifest(host);
    let obj = match bucket.get(&key, MAX_MANIFEST_SIZE).await {
        Ok(o) => o,
        Err(BucketError::NotFound { .. }) => bail!(
            "host {host} has no manifest in {} ({key} does not exist); deploy it first",
            bucket.url()
        ),
        Err(e) => return Err(e.into()),
    };
    let policy = VerifyPolicy {
        trusted,
        host,
        highest_seen: None,
        now: None,
    };
    let VerifiedManifest {
        manifest,
        signed_by,
        digest,
    } = Manifest::verify(&obj.bytes, &policy)
        .with_context(|| format!("verifying {key} in {}", bucket.url()))?;
    let hold = crate::hold::held(bucket, std::slice::from_ref(host), trusted)
        .await?
        .remove(host);
    Ok(Shown {
        host: host.clone(),
        signed_by,
        sha256: digest,
        expired: jiff::Timestamp::now() >= manifest.expires_at,
        manifest,
        hold,
    })
}

/// `fleet-publish show`.
pub async fn run(o: ShowOptions, config_file: &ConfigFile) -> anyhow::Result<()> {
    let o = config_file.layer(o)?;
    let store = config::bucket(&o.bucket, &o.store)?;
    let host = HostName::new(config::required(&o.host, "host", "FLEET_HOST")?).context("--host")?;
    if o.trusted.is_empty() {
        bail!(
            "no trusted publisher key given: pass --trusted-key-file FILE (the publisher's public \
             key) or --trusted-key name:base64, set FLEET_TRUSTED_KEY_FILE, or put \
             `trusted-key-file = [\"…\"]` in the config file"
        );
    }
    let keys = o.trusted.keys()?;
    let bucket = crate::open_bucket(store)?;
    let shown = show(&bucket, &host, &TrustedKeys::new(keys)).await?;
    println!("{}", serde_json::to_string_pretty(&shown)?);
    Ok(())
}
