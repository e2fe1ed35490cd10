//! The `enroll` engine: registers a host from its enrollment request and makes what
//! it needs to start.
//!
//! In order, each step safe to repeat (running `enroll` again with the same request
//! finishes what a failed run left):
//!
//! 1. the registry entry `registry/hosts/<host>.json` ([`fleet_core::registry`]),
//!    signed with the admin's key, created with `put_if_absent` (or replaced by
//!    compare-and-swap when re-enrolling a host whose identity changed, which needs
//!    `replace`); the same identity key again is left as it is; a written entry is
//!    recorded in the signed audit chain (`enroll`, [`crate::audit_log::append`]);
//! 2. the host's credentials ([`Credentials`]): a new IAM user with the agent policy
//!    of [`fleet_core::iam`] and an access key, over the IAM API
//!    ([`crate::iam_api`]); or a key the admin made elsewhere; or none (an AWS
//!    instance profile made by Terraform);
//! 3. the bootstrap [`Bundle`] for `fleet-agent init --bundle`, returned to the
//!    caller to write.

use anyhow::{Context, bail};
use fleet_core::audit_chain::{ActionKind, AuditAction, ObjectChange};
use fleet_core::bucket::BucketError;
use fleet_core::bundle::{Bundle, BundleAgent, BundleCredentials};
use fleet_core::enrollment::EnrollmentRequest;
use fleet_core::iam::Role;
use fleet_core::registry::HostEntry;
use fleet_core::{Bucket, BucketUrl, Key, PublicKey, S3Credentials, SecretKey, TrustedKeys};

use crate::iam_api::IamApi;

/// Name of the inline policy put on an enrolled host's IAM user.
pub const POLICY_NAME: &str = "fleet-agent";
/// Longest IAM user name AWS accepts.
const MAX_IAM_USER_LEN: usize = 64;

/// Where the host's S3 credentials come from.
pub enum Credentials {
    /// Made now over the IAM API at `endpoint`, signed for `region` with `admin`.
    IamApi {
        /// IAM endpoint URL.
        endpoint: String,
        /// Signing region.
        region: String,
        /// Credentials allowed to manage IAM users.
        admin: S3Credentials,
        /// The user to create.
        user: String,
    },
    /// An access key the admin made otherwise.
    Given(BundleCredentials),
    /// None in the bundle: the host has an instance profile.
    None,
}

/// Everything `enroll` needs.
pub struct EnrollSettings {
    /// The bucket, opened.
    pub bucket: Bucket,
    /// Its URL, for the agent's config.
    pub bucket_url: String,
    /// The admin key that signs the registry entry.
    pub signing_key: SecretKey,
    /// Keys the admin trusts on existing registry entries (besides its own).
    pub trusted: Vec<PublicKey>,
    /// Publisher keys the agent is to trust.
    pub agent_publisher_keys: Vec<PublicKey>,
    /// Cache keys the agent is to trust.
    pub agent_cache_keys: Vec<PublicKey>,
    /// Root keys for the host to pin instead (then both lists above are empty).
    pub agent_trust_root_keys: Vec<PublicKey>,
    /// The root version they come from (with root keys).
    pub agent_trust_root_version: Option<u64>,
    /// Where the host's credentials come from.
    pub credentials: Credentials,
    /// Replace a registry entry with another identity key.
    pub replace: bool,
}

/// What `enroll` did.
pub struct Enrolled {
    /// The registry entry in force.
    pub entry: HostEntry,
    /// Whether the registry entry was written now (false: it was there already).
    pub registered: bool,
    /// The IAM user, and whether it was created now, when the IAM API was used.
    pub iam_user: Option<(String, bool)>,
    /// The bundle to hand to the host.
    pub bundle: Bundle,
}

/// The default IAM user name of `host`'s agent, `fleet-agent-<host>`.
pub fn default_iam_user(host: &fleet_core::HostName) -> anyhow::Result<String> {
    let name = format!("fleet-agent-{host}");
    if name.len() > MAX_IAM_USER_LEN {
        bail!(
            "the IAM user name {name} is longer than {MAX_IAM_USER_LEN} characters: give --iam-user"
        );
    }
    Ok(name)
}

/// Bucket name and root prefix of an S3 bucket URL, for the agent's IAM policy.
pub fn s3_bucket(url: &BucketUrl) -> Option<(&str, &str)> {
    match url {
        BucketUrl::S3 { bucket, prefix, .. } => Some((bucket, prefix)),
        _ => None,
    }
}

/// Registers the host of `req` and makes its credentials and bundle.
pub async fn enroll(req: &EnrollmentRequest, s: &EnrollSettings) -> anyhow::Result<Enrolled> {
    let (entry, registered) = register(req, s).await?;
    if let Some(bytes) = &registered {
        let key = Key::registry_host(&req.host);
        let action = AuditAction::objects(
            ActionKind::Enroll,
            vec![req.host.clone()],
            vec![ObjectChange::written(&key, bytes)],
            [],
        );
        crate::audit_log::append(&s.bucket, &s.signing_key, action)
            .await
            .with_context(|| {
                format!(
                    "{key} IS written, but its audit entry could not be written; \
                     record it by hand"
                )
            })?;
    }
    let registered = registered.is_some();
    let (credentials, iam_user) = match &s.credentials {
        Credentials::IamApi {
            endpoint,
            region,
            admin,
            user,
        } => {
            let (bucket, prefix) = s3_bucket(s.bucket.url())
                .context("the IAM API route needs an s3:// bucket; use --credentials-file or --no-credentials")?;
            let policy = fleet_core::iam::policy(&Role::Agent(req.host.clone()), bucket, prefix)?;
            let iam = IamApi::new(endpoint, region, admin)?;
            let created = iam.create_user(user).await?;
            iam.put_user_policy(user, POLICY_NAME, &policy).await?;
            let key = iam.create_access_key(user).await?;
            (
                Some(BundleCredentials {
                    access_key_id: key.id,
                    secret_access_key: key.secret,
                }),
                Some((user.clone(), created)),
            )
        }
        Credentials::Given(c) => (Some(c.clone()), None),
        Credentials::None => (None, None),
    };
    let bundle = Bundle {
        version: 1,
        host: req.host.clone(),
        identity_key: req.identity_key.clone(),
        agent: BundleAgent {
            bucket: s.bucket_url.clone(),
            trusted_publisher_keys: s.agent_publisher_keys.clone(),
            trusted_cache_keys: s.agent_cache_keys.clone(),
            trust_root_keys: s.agent_trust_root_keys.clone(),
            trust_root_version: s.agent_trust_root_version,
        },
        credentials,
    };
    Ok(Enrolled {
        entry,
        registered,
        iam_user,
        bundle,
    })
}

/// Step 1: the registry entry, and the bytes written when it was written (not
/// when the same identity was enrolled already).
async fn register(
    req: &EnrollmentRequest,
    s: &EnrollSettings,
) -> anyhow::Result<(HostEntry, Option<Vec<u8>>)> {
    let key = Key::registry_host(&req.host);
    let entry = HostEntry {
        version: 1,
        host: req.host.clone(),
        identity_key: req.identity_key.clone(),
        labels: req.labels.clone(),
        enrolled_at: jiff::Timestamp::now(),
    };
    let trusted =
        TrustedKeys::new(std::iter::once(s.signing_key.public()).chain(s.trusted.iter().cloned()));
    let existing = match s
        .bucket
        .get(&key, fleet_core::registry::MAX_HOST_ENTRY_SIZE)
        .await
    {
        Ok(obj) => Some(obj),
        Err(BucketError::NotFound { .. }) => None,
        Err(e) => return Err(e).context("reading the host's registry entry"),
    };
    let signed = entry.sign(&s.signing_key);
    let Some(obj) = existing else {
        s.bucket
            .put_if_absent(&key, signed.clone())
            .await
            .with_context(|| format!("writing {key}"))?;
        return Ok((entry, Some(signed)));
    };
    let why = match HostEntry::verify(&obj.bytes, &req.host, &trusted) {
        Ok(v) if v.entry.identity_key == req.identity_key => return Ok((v.entry, None)),
        Ok(v) => format!(
            "is enrolled with another identity key ({})",
            v.entry.identity_key
        ),
        Err(e) => format!("has a registry entry that does not verify here ({e})"),
    };
    if !s.replace {
        bail!(
            "host {} {why}; pass --replace to re-enroll it with the key of this request (a rebuilt machine)",
            req.host
        );
    }
    let etag = obj
        .etag
        .context("the store gave no ETag for the registry entry")?;
    s.bucket
        .put_if_match(&key, signed.clone(), &etag)
        .await
        .with_context(|| format!("replacing {key}"))?;
    Ok((entry, Some(signed)))
}

#[cfg(test)]
mod tests {
    use fleet_core::status::Facts;
    use fleet_core::{HostName, TrustedKeys};

    use super::*;

    fn request(key: &SecretKey) -> EnrollmentRequest {
        EnrollmentRequest {
            version: 1,
            host: HostName::new("web-1").unwrap(),
            identity_key: key.public(),
            labels: Default::default(),
            facts: Facts::default(),
            time: jiff::Timestamp::now(),
        }
    }

    #[tokio::test]
    async fn enrolling_again_is_idempotent_and_a_new_identity_needs_replace() {
        let d = tempfile::tempdir().unwrap();
        let url = format!("file://{}", d.path().display());
        let admin = SecretKey::generate("publisher-1").unwrap();
        let cache = SecretKey::generate("cache-1").unwrap();
        let mut s = EnrollSettings {
            bucket: Bucket::open_url(&url).unwrap(),
            bucket_url: url,
            signing_key: admin.clone(),
            trusted: vec![],
            agent_publisher_keys: vec![admin.public()],
            agent_cache_keys: vec![cache.public()],
            agent_trust_root_keys: Vec::new(),
            agent_trust_root_version: None,
            credentials: Credentials::None,
            replace: false,
        };
        let first = SecretKey::generate("web-1-identity").unwrap();
        let done = enroll(&request(&first), &s).await.unwrap();
        assert!(done.registered);
        assert!(done.bundle.credentials.is_none());
        assert_eq!(done.bundle.identity_key, first.public());
        let again = enroll(&request(&first), &s).await.unwrap();
        assert!(!again.registered);

        let rebuilt = SecretKey::generate("web-1-identity").unwrap();
        let e = enroll(&request(&rebuilt), &s).await.err().unwrap();
        assert!(format!("{e:#}").contains("--replace"), "{e:#}");
        s.replace = true;
        assert!(enroll(&request(&rebuilt), &s).await.unwrap().registered);
        let host = HostName::new("web-1").unwrap();
        let stored = s
            .bucket
            .get(&Key::registry_host(&host), 1 << 16)
            .await
            .unwrap();
        let v =
            HostEntry::verify(&stored.bytes, &host, &TrustedKeys::new([admin.public()])).unwrap();
        assert_eq!(v.entry.identity_key, rebuilt.public());
    }
}
