//! `fleet-publish enroll REQUEST`: an admin registers a new host from the request
//! `fleet-agent init` printed, makes its credentials and writes its bootstrap
//! bundle (the engine is [`mod@crate::enroll`]). Prints what it did:
//!
//! ```text
//! web-1: registered with identity key web-1-identity:… (registry/hosts/web-1.json)
//! web-1: IAM user fleet-agent-web-1 created, policy fleet-agent put, access key AKIA… made
//! web-1: bundle written to web-1.bundle.json (mode 0600): copy it to the host, run `fleet-agent init --bundle web-1.bundle.json`
//! ```
//!
//! Credentials, one of:
//! - default: over the IAM API (CreateUser, PutUserPolicy, CreateAccessKey) at
//!   `--iam-endpoint`, by default the bucket's `endpoint` (SeaweedFS, MinIO) or AWS
//!   IAM, with the admin's credentials from the AWS environment (`AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`);
//! - `--credentials-file FILE`: an access key made otherwise, as
//!   `{"access_key_id": …, "secret_access_key": …}`;
//! - `--no-credentials`: none in the bundle (AWS instance profile, through Terraform).

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use fleet_core::enrollment::EnrollmentRequest;
use fleet_core::fsutil::write_atomic;
use fleet_core::{BucketUrl, Key, S3Credentials};
use serde::{Deserialize, Serialize};

use crate::config::{self, ConfigFile, TrustedKeyOptions};
use crate::enroll::{Credentials, EnrollSettings, default_iam_user, enroll};
use crate::iam_api::AWS_IAM_ENDPOINT;

/// `enroll` options (also config-file keys).
#[derive(Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", default)]
pub struct EnrollOptions {
    /// The fleet bucket (required).
    #[arg(long, env = "FLEET_BUCKET", value_name = "URL")]
    pub bucket: Option<String>,
    /// Secret key file of the admin (publisher) key that signs the registry entry (required).
    #[arg(long, env = "FLEET_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
    /// Publisher keys the host is to trust (default: the signing key's public half);
    /// also trusted on existing registry entries.
    #[command(flatten)]
    #[serde(flatten)]
    pub trusted: TrustedKeyOptions,
    /// Cache public key (`name:base64`) the host is to trust; repeatable.
    #[arg(
        long,
        env = "FLEET_TRUSTED_CACHE_KEY",
        value_name = "KEY",
        value_delimiter = ','
    )]
    pub trusted_cache_key: Vec<String>,
    /// File holding such a key; repeatable.
    #[arg(
        long,
        env = "FLEET_TRUSTED_CACHE_KEY_FILE",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub trusted_cache_key_file: Vec<PathBuf>,
    /// Secret cache key file; its public half is trusted when no trusted-cache-key is given.
    #[arg(long, env = "FLEET_CACHE_KEY", value_name = "FILE")]
    pub cache_key: Option<PathBuf>,
    /// IAM API endpoint [default: the bucket's endpoint, else AWS IAM].
    #[arg(long, env = "FLEET_IAM_ENDPOINT", value_name = "URL")]
    pub iam_endpoint: Option<String>,
    /// Root key (`name:base64`) of the bucket's root of trust for the host to pin
    /// instead of static publisher and cache keys; repeatable.
    #[arg(
        long,
        env = "FLEET_AGENT_TRUST_ROOT_KEY",
        value_name = "KEY",
        value_delimiter = ','
    )]
    pub agent_trust_root_key: Vec<String>,
    /// File holding such a key; repeatable.
    #[arg(
        long,
        env = "FLEET_AGENT_TRUST_ROOT_KEY_FILE",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub agent_trust_root_key_file: Vec<PathBuf>,
    /// The root version those keys come from [default: 1].
    #[arg(long, env = "FLEET_AGENT_TRUST_ROOT_VERSION", value_name = "N")]
    pub agent_trust_root_version: Option<u64>,
}

/// `enroll` arguments.
#[derive(Args, Debug, Clone)]
pub struct EnrollArgs {
    /// Options (also config-file keys).
    #[command(flatten)]
    pub options: EnrollOptions,
    /// The enrollment request file from `fleet-agent init` (`-`: stdin).
    #[arg(value_name = "REQUEST")]
    pub request: PathBuf,
    /// Where to write the bootstrap bundle [default: <host>.bundle.json]; never overwritten.
    #[arg(long, value_name = "FILE")]
    pub bundle_out: Option<PathBuf>,
    /// IAM user to create for the host [default: fleet-agent-<host>].
    #[arg(long, value_name = "NAME", conflicts_with_all = ["credentials_file", "no_credentials"])]
    pub iam_user: Option<String>,
    /// Put this access key in the bundle instead of making one: a JSON file
    /// `{"access_key_id": …, "secret_access_key": …}`.
    #[arg(long, value_name = "FILE", conflicts_with = "no_credentials")]
    pub credentials_file: Option<PathBuf>,
    /// Put no credentials in the bundle: the host gets them from its instance profile.
    #[arg(long)]
    pub no_credentials: bool,
    /// Re-enroll a host already registered with another identity key.
    #[arg(long)]
    pub replace: bool,
}

fn read_request(path: &PathBuf) -> anyhow::Result<EnrollmentRequest> {
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes)?;
    } else {
        bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(EnrollmentRequest::open(&bytes)?)
}

/// The admin's credentials from the AWS environment, for the IAM API.
fn admin_credentials() -> anyhow::Result<S3Credentials> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(S3Credentials {
            access_key_id,
            secret_access_key,
            session_token: var("AWS_SESSION_TOKEN"),
        }),
        _ => bail!(
            "making the host's IAM user needs the admin's credentials in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; \
             or give --credentials-file FILE (a key made otherwise) or --no-credentials (an instance profile)"
        ),
    }
}

/// `fleet-publish enroll`.
pub async fn run(args: EnrollArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let o = config_file.layer(args.options.clone())?;
    let req = read_request(&args.request)?;
    let url = config::bucket(&o.bucket, &None)?;
    let parsed = BucketUrl::parse(url)?;
    let key_file = config::required(&o.signing_key, "signing-key", "FLEET_SIGNING_KEY")?;
    let signing_key = crate::load_secret_key(key_file, "signing key (--signing-key)")?;
    let trusted = o.trusted.keys()?;
    let agent_trust_root_keys = config::public_keys(
        "agent-trust-root-key",
        &o.agent_trust_root_key,
        &o.agent_trust_root_key_file,
    )?;
    let rooted = !agent_trust_root_keys.is_empty();
    if !rooted && o.agent_trust_root_version.is_some() {
        bail!(
            "agent-trust-root-version needs --agent-trust-root-key or --agent-trust-root-key-file"
        );
    }
    let agent_publisher_keys = if rooted {
        // The host takes its publisher and cache keys from the root.
        Vec::new()
    } else if trusted.is_empty() {
        vec![signing_key.public()]
    } else {
        trusted.clone()
    };
    let mut agent_cache_keys = config::public_keys(
        "trusted-cache-key",
        &o.trusted_cache_key,
        &o.trusted_cache_key_file,
    )?;
    if agent_cache_keys.is_empty()
        && let Some(f) = &o.cache_key
    {
        agent_cache_keys.push(crate::load_secret_key(f, "cache key (--cache-key)")?.public());
    }
    if rooted {
        agent_cache_keys.clear();
    } else if agent_cache_keys.is_empty() {
        bail!(
            "the host needs a cache key to trust: give --trusted-cache-key KEY, --trusted-cache-key-file FILE or --cache-key FILE"
        );
    }
    let credentials = if args.no_credentials {
        Credentials::None
    } else if let Some(f) = &args.credentials_file {
        let text = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        Credentials::Given(serde_json::from_slice(&text).with_context(|| {
            format!(
                "{} is not {{\"access_key_id\": …, \"secret_access_key\": …}}",
                f.display()
            )
        })?)
    } else {
        let (endpoint, region) = match &parsed {
            BucketUrl::S3 {
                endpoint, region, ..
            } => match (&o.iam_endpoint, endpoint) {
                (Some(e), _) => (e.clone(), region.clone()),
                (None, Some(e)) => (e.clone(), region.clone()),
                (None, None) => (AWS_IAM_ENDPOINT.to_owned(), None),
            },
            _ => bail!(
                "bucket {url} is not on S3, so there is no IAM API to make credentials with: give --no-credentials"
            ),
        };
        let user = match &args.iam_user {
            Some(u) => u.clone(),
            None => default_iam_user(&req.host)?,
        };
        Credentials::IamApi {
            endpoint,
            region: region.unwrap_or_else(|| "us-east-1".into()),
            admin: admin_credentials()?,
            user,
        }
    };
    let bundle_out = args
        .bundle_out
        .clone()
        .unwrap_or_else(|| format!("{}.bundle.json", req.host).into());
    if bundle_out.exists() {
        bail!(
            "{} exists already; a bundle is never overwritten (move it away, or give --bundle-out)",
            bundle_out.display()
        );
    }
    let settings = EnrollSettings {
        bucket: crate::open_bucket(url)?,
        bucket_url: url.to_owned(),
        signing_key,
        trusted,
        agent_publisher_keys,
        agent_cache_keys,
        agent_trust_root_keys,
        agent_trust_root_version: rooted.then(|| o.agent_trust_root_version.unwrap_or(1)),
        credentials,
        replace: args.replace,
    };
    let done = enroll(&req, &settings).await?;
    let host = &req.host;
    println!(
        "{host}: {} with identity key {} ({})",
        if done.registered {
            "registered"
        } else {
            "already registered"
        },
        done.entry.identity_key,
        Key::registry_host(host)
    );
    if let Some((user, created)) = &done.iam_user {
        println!(
            "{host}: IAM user {user} {}, policy {} put, access key {} made",
            if *created { "created" } else { "existed" },
            crate::enroll::POLICY_NAME,
            done.bundle
                .credentials
                .as_ref()
                .map(|c| c.access_key_id.as_str())
                .unwrap_or("")
        );
    }
    write_atomic(&bundle_out, &done.bundle.to_bytes(), 0o600, false)
        .with_context(|| format!("writing the bundle {}", bundle_out.display()))?;
    println!(
        "{host}: bundle written to {} (mode 0600): copy it to the host, run `fleet-agent init --bundle {}`",
        bundle_out.display(),
        bundle_out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use fleet_core::bundle::BundleCredentials;

    #[test]
    fn credentials_files_have_the_harness_shape() {
        let c: BundleCredentials =
            serde_json::from_str(r#"{"access_key_id": "A", "secret_access_key": "S"}"#).unwrap();
        assert_eq!(c.access_key_id, "A");
    }
}
