//! The bootstrap bundle: everything a newly enrolled host needs to start, written
//! once by `fleet-publish enroll` and installed by `fleet-agent init --bundle`.
//!
//! JSON, written with mode 0600 (it may hold the host's S3 secret key):
//!
//! ```json
//! {
//!   "version": 1,
//!   "host": "web-1",
//!   "identity_key": "web-1-identity:<base64>",
//!   "agent": {
//!     "bucket": "s3://fleet-prod?region=eu-west-1",
//!     "trusted-publisher-keys": ["publisher-1:<base64>"],
//!     "trusted-cache-keys": ["cache-1:<base64>"]
//!   },
//!   // or, for a fleet with a root of trust (`trust/`), instead of the two lists:
//!   // "agent": {"bucket": …, "trust-root-keys": ["root-1:<base64>"], "trust-root-version": 1}
//!   "credentials": {"access_key_id": "AKIA…", "secret_access_key": "…"}
//! }
//! ```
//!
//! `agent` holds the agent's own settings under their config-file names;
//! `credentials` is `null` when the host gets its credentials otherwise (an AWS
//! instance profile). `identity_key` binds the bundle to the one host whose identity
//! key it was made for: `init --bundle` refuses it on any other machine. The bundle
//! is not signed: it travels the way the admin chooses (user data, scp), and whoever
//! can read it holds the host's credentials, so it is deleted once installed.

use serde::{Deserialize, Serialize};

use crate::host::HostName;
use crate::keys::PublicKey;

/// Largest bundle accepted.
pub const MAX_BUNDLE_SIZE: u64 = 64 * 1024;

/// A bootstrap bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Format version; 1.
    pub version: u32,
    /// The host it is for.
    pub host: HostName,
    /// The identity key of that host, as enrolled.
    pub identity_key: PublicKey,
    /// The agent's settings.
    pub agent: BundleAgent,
    /// The host's S3 credentials, if the bundle carries them.
    pub credentials: Option<BundleCredentials>,
}

/// The agent settings a bundle carries (config-file names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BundleAgent {
    /// The bucket URL.
    pub bucket: String,
    /// Keys trusted to sign manifests.
    pub trusted_publisher_keys: Vec<PublicKey>,
    /// Keys trusted to sign narinfos.
    pub trusted_cache_keys: Vec<PublicKey>,
    /// Root keys of the bucket's root of trust (`trust/`), instead of the two
    /// lists above: the host then takes its publisher and cache keys from the root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_root_keys: Vec<PublicKey>,
    /// The root version those keys were taken from (with `trust-root-keys`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_root_version: Option<u64>,
}

/// A static S3 access key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleCredentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for BundleCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl Bundle {
    /// The stored bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("bundle serialises");
        v.push(b'\n');
        v
    }

    /// Parses a bundle, bounded and strict.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() as u64 > MAX_BUNDLE_SIZE {
            return Err(format!(
                "it is {} bytes, larger than {MAX_BUNDLE_SIZE}",
                bytes.len()
            ));
        }
        let b: Bundle = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if b.version != 1 {
            return Err(format!(
                "format version {} is not 1 (upgrade fleet)",
                b.version
            ));
        }
        let a = &b.agent;
        let static_keys = !a.trusted_publisher_keys.is_empty() || !a.trusted_cache_keys.is_empty();
        if a.trust_root_keys.is_empty() {
            if a.trusted_publisher_keys.is_empty() || a.trusted_cache_keys.is_empty() {
                return Err("it names no trusted publisher key or no trusted cache key".into());
            }
            if a.trust_root_version.is_some() {
                return Err("it names a trust-root-version but no trust-root-keys".into());
            }
        } else if static_keys {
            return Err(
                "it names both trust-root-keys and static publisher or cache keys; a host \
                 takes one or the other"
                    .into(),
            );
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    #[test]
    fn round_trips_and_never_prints_the_secret() {
        let k = |n: &str| SecretKey::generate(n).unwrap().public();
        let b = Bundle {
            version: 1,
            host: HostName::new("web-1").unwrap(),
            identity_key: k("web-1-identity"),
            agent: BundleAgent {
                bucket: "s3://b".into(),
                trusted_publisher_keys: vec![k("p-1")],
                trusted_cache_keys: vec![k("c-1")],
                trust_root_keys: Vec::new(),
                trust_root_version: None,
            },
            credentials: Some(BundleCredentials {
                access_key_id: "AKID".into(),
                secret_access_key: "s3cr3t".into(),
            }),
        };
        assert_eq!(Bundle::parse(&b.to_bytes()).unwrap(), b);
        assert!(!format!("{b:?}").contains("s3cr3t"));
        assert!(Bundle::parse(b"{}").is_err());

        // A root of trust instead of static keys; never both.
        let mut rooted = b.clone();
        rooted.agent.trusted_publisher_keys.clear();
        rooted.agent.trusted_cache_keys.clear();
        rooted.agent.trust_root_keys = vec![k("root-1")];
        rooted.agent.trust_root_version = Some(3);
        assert_eq!(Bundle::parse(&rooted.to_bytes()).unwrap(), rooted);
        let mut both = rooted.clone();
        both.agent.trusted_cache_keys = vec![k("c-1")];
        assert!(
            Bundle::parse(&both.to_bytes())
                .unwrap_err()
                .contains("one or the other")
        );
        let mut version_only = b.clone();
        version_only.agent.trust_root_version = Some(1);
        assert!(Bundle::parse(&version_only.to_bytes()).is_err());
    }
}
