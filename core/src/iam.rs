//! IAM policies for fleet's roles, as AWS IAM policy JSON.
//!
//! This is the single source of the policy text: `fleet-publish policy` prints it,
//! the test harness attaches it to per-host users on SeaweedFS and moto to prove it,
//! and the Terraform modules deploy it from templates made by [`terraform_template`]
//! (committed under `terraform/modules/fleet-policies/policies/`; a test keeps them
//! equal to this code, and renders them back into [`policy`]'s exact text).
//!
//! | role | may |
//! |---|---|
//! | agent for host H | `s3:GetObject` on `hosts/H/*`, `cache/*` and `trust/*`; `s3:PutObject` on `status/H/*` and `changes/*/H` (its change-feed markers) |
//! | publisher | get/put on `cache/*`, `hosts/*`, `releases/*`, `audit/*`; get on `status/*`; list those prefixes; abort its multipart uploads in `cache/` |
//! | reporter | get on `status/*`, `hosts/*`, `releases/*`, `dashboard/*`, `registry/*`; put on `dashboard/*`; list those prefixes and `changes/` |
//! | admin | everything the publisher may; get/put on `trust/*`, `registry/*`; delete on `hosts/*`, `status/*`, `cache/*`, `releases/*`, `changes/*`; list those prefixes |
//! | viewer | get on `status/*`, `hosts/*`, `releases/*` (releases and their rollout states), `dashboard/*`, `registry/*`; list those prefixes; nothing written |
//!
//! Nothing else is allowed; only the admin may delete (`fleet-publish retire
//! --purge`, `fleet-publish gc --apply`), and never under `audit/`. On AWS the optional
//! bucket policy [`audit_create_only_policy`] also makes `audit/chain/*` create-only.
//! The agent cannot list: it only ever
//! reads keys it can name. On AWS that means a missing object reads as 403 (S3 hides
//! existence from principals that cannot list), which the agent reports as "missing
//! or not allowed".

use serde::Serialize;

use crate::host::HostName;
use crate::layout::{
    AUDIT_CHAIN_DIR, AUDIT_DIR, CACHE_DIR, CHANGES_DIR, DASHBOARD_DIR, HOSTS_DIR, REGISTRY_DIR,
    RELEASES_DIR, STATUS_DIR, TRUST_DIR,
};

/// A role that gets credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// The agent of one host.
    Agent(HostName),
    /// CI or an admin publishing closures and manifests.
    Publisher,
    /// The dashboard.
    Reporter,
    /// An operator who may change trust and delete: retire --purge, gc --apply.
    Admin,
    /// Read-only access to what the dashboard shows.
    Viewer,
}

/// Why no policy could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not a valid S3 bucket name.
    #[error(
        "bucket name {0:?} is not valid: use 3 to 63 characters of a-z 0-9 . - starting and ending with a letter or digit"
    )]
    BadBucket(String),
    /// Not a safe key prefix.
    #[error(
        "prefix {0:?} is not valid: use `/`-separated segments of A-Z a-z 0-9 . _ - (no `..`, no wildcards)"
    )]
    BadPrefix(String),
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Policy {
    version: &'static str,
    statement: Vec<Statement>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Statement {
    sid: &'static str,
    effect: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    principal: Option<&'static str>,
    action: Vec<&'static str>,
    resource: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    condition: Option<serde_json::Value>,
}

fn allow(sid: &'static str, action: &[&'static str], resource: Vec<String>) -> Statement {
    Statement {
        sid,
        effect: "Allow",
        principal: None,
        action: action.to_vec(),
        resource,
        condition: None,
    }
}

/// Checks an S3 bucket name (the DNS-compatible rules).
pub fn validate_bucket(bucket: &str) -> Result<(), PolicyError> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && bucket
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && !bucket.contains("..");
    if ok {
        Ok(())
    } else {
        Err(PolicyError::BadBucket(bucket.to_owned()))
    }
}

/// Normalises a root prefix to `""` or `"a/b/"`, refusing anything that could widen
/// an ARN (wildcards) or climb (`..`).
pub fn normalize_prefix(prefix: &str) -> Result<String, PolicyError> {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    for seg in trimmed.split('/') {
        let ok = !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(PolicyError::BadPrefix(prefix.to_owned()));
        }
    }
    Ok(format!("{trimmed}/"))
}

/// The policy document for `role` on `bucket` under root `prefix`, pretty-printed.
pub fn policy(role: &Role, bucket: &str, prefix: &str) -> Result<String, PolicyError> {
    validate_bucket(bucket)?;
    let p = normalize_prefix(prefix)?;
    let shape = match role {
        Role::Agent(host) => Shape::Agent(host.as_str()),
        Role::Publisher => Shape::Publisher,
        Role::Reporter => Shape::Reporter,
        Role::Admin => Shape::Admin,
        Role::Viewer => Shape::Viewer,
    };
    Ok(render(shape.statements(bucket, &p)))
}

/// What a policy is made of, with the names still text: either checked values
/// ([`policy`], [`public_cache_policy`]) or Terraform placeholders
/// ([`terraform_template`]). Both go through [`Shape::statements`], so a template
/// cannot say anything the real policy does not.
#[derive(Clone, Copy)]
enum Shape<'a> {
    Agent(&'a str),
    Publisher,
    Reporter,
    PublicCache,
    AuditCreateOnly,
    Admin,
    Viewer,
}

/// What the admin may write beyond the publisher's folders.
const ADMIN_WRITES: [&str; 2] = [TRUST_DIR, REGISTRY_DIR];
/// Where the admin may delete.
const ADMIN_DELETES: [&str; 5] = [HOSTS_DIR, STATUS_DIR, CACHE_DIR, RELEASES_DIR, CHANGES_DIR];
/// What the dashboard reads, and so what a viewer may read and list.
const VIEWER_READS: [&str; 5] = [
    STATUS_DIR,
    HOSTS_DIR,
    RELEASES_DIR,
    DASHBOARD_DIR,
    REGISTRY_DIR,
];

impl Shape<'_> {
    /// The statements for `bucket` and a normalised prefix `p` (`""` or `"a/b/"`).
    fn statements(self, bucket: &str, p: &str) -> Vec<Statement> {
        let obj = |dir: &str| format!("arn:aws:s3:::{bucket}/{p}{dir}/*");
        let bucket_arn = format!("arn:aws:s3:::{bucket}");
        let list = |sid: &'static str, dirs: &[&str]| Statement {
            condition: Some(serde_json::json!({
                "StringLike": {
                    "s3:prefix": dirs.iter().map(|d| format!("{p}{d}/*")).collect::<Vec<_>>()
                }
            })),
            ..allow(sid, &["s3:ListBucket"], vec![bucket_arn.clone()])
        };
        match self {
            Shape::Agent(host) => vec![
                allow(
                    "ReadOwnManifest",
                    &["s3:GetObject"],
                    vec![format!("arn:aws:s3:::{bucket}/{p}{HOSTS_DIR}/{host}/*")],
                ),
                allow("ReadCache", &["s3:GetObject"], vec![obj(CACHE_DIR)]),
                allow(
                    "WriteOwnStatus",
                    &["s3:PutObject"],
                    vec![format!("arn:aws:s3:::{bucket}/{p}{STATUS_DIR}/{host}/*")],
                ),
                allow("ReadTrustRoot", &["s3:GetObject"], vec![obj(TRUST_DIR)]),
                // The host name is the marker key's last segment, and a marker is
                // exactly four segments, so `*` spanning `/` names no other host's.
                allow(
                    "WriteOwnChangeMarkers",
                    &["s3:PutObject"],
                    vec![format!("arn:aws:s3:::{bucket}/{p}{CHANGES_DIR}/*/{host}")],
                ),
            ],
            Shape::Publisher => vec![
                allow(
                    "PublishCacheManifestsReleasesAudit",
                    &["s3:GetObject", "s3:PutObject"],
                    vec![
                        obj(CACHE_DIR),
                        obj(HOSTS_DIR),
                        obj(RELEASES_DIR),
                        obj(AUDIT_DIR),
                    ],
                ),
                allow(
                    "AbortOwnUploads",
                    &["s3:AbortMultipartUpload"],
                    vec![obj(CACHE_DIR)],
                ),
                allow("ReadStatus", &["s3:GetObject"], vec![obj(STATUS_DIR)]),
                list(
                    "ListFleetPrefixes",
                    &[CACHE_DIR, HOSTS_DIR, RELEASES_DIR, AUDIT_DIR, STATUS_DIR],
                ),
            ],
            Shape::Reporter => vec![
                allow(
                    "ReadFleetState",
                    &["s3:GetObject"],
                    vec![
                        obj(STATUS_DIR),
                        obj(HOSTS_DIR),
                        obj(RELEASES_DIR),
                        obj(DASHBOARD_DIR),
                        obj(REGISTRY_DIR),
                    ],
                ),
                allow("WriteSummary", &["s3:PutObject"], vec![obj(DASHBOARD_DIR)]),
                list(
                    "ListFleetState",
                    &[
                        STATUS_DIR,
                        HOSTS_DIR,
                        RELEASES_DIR,
                        DASHBOARD_DIR,
                        REGISTRY_DIR,
                        CHANGES_DIR,
                    ],
                ),
            ],
            Shape::Admin => {
                let mut statements = Shape::Publisher.statements(bucket, p);
                // The publisher's list statement is replaced by one over every folder.
                statements.retain(|s| s.sid != "ListFleetPrefixes");
                statements.push(allow(
                    "AdminTrustRegistryRollouts",
                    &["s3:GetObject", "s3:PutObject"],
                    ADMIN_WRITES.iter().map(|d| obj(d)).collect(),
                ));
                statements.push(allow(
                    "AdminDelete",
                    &["s3:DeleteObject"],
                    ADMIN_DELETES.iter().map(|d| obj(d)).collect(),
                ));
                statements.push(list(
                    "AdminListFleetPrefixes",
                    &[
                        CACHE_DIR,
                        HOSTS_DIR,
                        RELEASES_DIR,
                        AUDIT_DIR,
                        STATUS_DIR,
                        TRUST_DIR,
                        REGISTRY_DIR,
                        CHANGES_DIR,
                    ],
                ));
                statements
            }
            Shape::Viewer => vec![
                allow(
                    "ViewFleetState",
                    &["s3:GetObject"],
                    VIEWER_READS.iter().map(|d| obj(d)).collect(),
                ),
                list("ListFleetStateReadOnly", &VIEWER_READS),
            ],
            Shape::PublicCache => vec![Statement {
                principal: Some("*"),
                ..allow("PublicCacheRead", &["s3:GetObject"], vec![obj(CACHE_DIR)])
            }],
            Shape::AuditCreateOnly => {
                let chain = vec![format!(
                    "arn:aws:s3:::{bucket}/{p}{AUDIT_DIR}/{AUDIT_CHAIN_DIR}/*"
                )];
                vec![
                    Statement {
                        effect: "Deny",
                        principal: Some("*"),
                        condition: Some(serde_json::json!({
                            "Null": { "s3:if-none-match": "true" }
                        })),
                        ..allow("DenyAuditOverwrite", &["s3:PutObject"], chain.clone())
                    },
                    Statement {
                        effect: "Deny",
                        principal: Some("*"),
                        ..allow(
                            "DenyAuditDelete",
                            &["s3:DeleteObject", "s3:DeleteObjectVersion"],
                            chain,
                        )
                    },
                ]
            }
        }
    }
}

/// The policy document of `statement`, pretty-printed with a final newline.
fn render(statement: Vec<Statement>) -> String {
    let mut out = serde_json::to_string_pretty(&Policy {
        version: "2012-10-17",
        statement,
    })
    .expect("policy serialises");
    out.push('\n');
    out
}

/// An optional *bucket* policy that lets anyone read `cache/*` (and nothing else), so
/// plain `nix copy --from https://…/cache` works without credentials.
///
/// The cache holds only signed, content-addressed build outputs, so public read is
/// safe where the closures themselves are not secret; manifests, status and audit
/// stay private. Leave it off when closures contain anything confidential.
pub fn public_cache_policy(bucket: &str, prefix: &str) -> Result<String, PolicyError> {
    validate_bucket(bucket)?;
    let p = normalize_prefix(prefix)?;
    Ok(render(Shape::PublicCache.statements(bucket, &p)))
}

/// An optional *bucket* policy (AWS S3) that makes the signed audit chain
/// (`audit/chain/*`) create-only for everyone: a PUT without `If-None-Match` and
/// every delete are denied, whoever's credentials they carry.
///
/// S3 evaluates the `s3:if-none-match` condition key in bucket policies only; the
/// publisher role's own policy still grants `s3:PutObject` on `audit/*`, and this
/// statement narrows it. SeaweedFS does not put that key in its policy context
/// (so with this policy every write of an entry is refused there), and MinIO's
/// support is unverified: on those stores do not attach it, and rely on
/// `fleet-publish audit verify`, which finds an overwritten or deleted entry.
pub fn audit_create_only_policy(bucket: &str, prefix: &str) -> Result<String, PolicyError> {
    validate_bucket(bucket)?;
    let p = normalize_prefix(prefix)?;
    Ok(render(Shape::AuditCreateOnly.statements(bucket, &p)))
}

/// A policy as a Terraform template (`templatefile` syntax), for the Terraform
/// modules in `terraform/`.
///
/// The committed files `terraform/modules/fleet-policies/policies/<file_name>` are
/// exactly [`terraform_template`]'s output (a test compares them), and rendering one
/// with checked values gives exactly [`policy`] or [`public_cache_policy`] for those
/// values. The placeholders are:
///
/// | placeholder | value |
/// |---|---|
/// | `${bucket}` | the bucket name, as [`validate_bucket`] accepts it |
/// | `${prefix}` | the root prefix as [`normalize_prefix`] returns it: `""` or `"a/b/"` |
/// | `${host}` | the host name (agent only), as [`HostName`] accepts it |
///
/// The values are never escaped by Terraform, so the module must check them with the
/// same rules before rendering (`terraform/modules/fleet-policies` does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateKind {
    /// The agent of one host (`${host}`).
    Agent,
    /// The publisher.
    Publisher,
    /// The reporter.
    Reporter,
    /// The optional public-read bucket policy on `cache/*`.
    PublicCache,
    /// The optional create-only bucket policy on `audit/chain/*` (AWS).
    AuditCreateOnly,
    /// The admin.
    Admin,
    /// The read-only viewer.
    Viewer,
}

impl TemplateKind {
    /// Every template, in the order of the files.
    pub const ALL: [TemplateKind; 7] = [
        TemplateKind::Agent,
        TemplateKind::Publisher,
        TemplateKind::Reporter,
        TemplateKind::PublicCache,
        TemplateKind::AuditCreateOnly,
        TemplateKind::Admin,
        TemplateKind::Viewer,
    ];

    /// The template's file name under `policies/`.
    pub fn file_name(self) -> &'static str {
        match self {
            TemplateKind::Agent => "agent.json.tftpl",
            TemplateKind::Publisher => "publisher.json.tftpl",
            TemplateKind::Reporter => "reporter.json.tftpl",
            TemplateKind::PublicCache => "public-cache.json.tftpl",
            TemplateKind::AuditCreateOnly => "audit-create-only.json.tftpl",
            TemplateKind::Admin => "admin.json.tftpl",
            TemplateKind::Viewer => "viewer.json.tftpl",
        }
    }

    /// The placeholders the template uses (each must be given to `templatefile`).
    pub fn variables(self) -> &'static [&'static str] {
        match self {
            TemplateKind::Agent => &["bucket", "prefix", "host"],
            _ => &["bucket", "prefix"],
        }
    }
}

/// The Terraform template of `kind`: the same statements as [`policy`] and
/// [`public_cache_policy`], with `${bucket}`, `${prefix}` and `${host}` in place of
/// the values.
pub fn terraform_template(kind: TemplateKind) -> String {
    // The placeholders go through the same code as real values. They contain no
    // character JSON escapes, and nothing else in a policy contains `${` or `%{`
    // (a test checks), so the JSON text is also a valid template.
    let shape = match kind {
        TemplateKind::Agent => Shape::Agent("${host}"),
        TemplateKind::Publisher => Shape::Publisher,
        TemplateKind::Reporter => Shape::Reporter,
        TemplateKind::PublicCache => Shape::PublicCache,
        TemplateKind::AuditCreateOnly => Shape::AuditCreateOnly,
        TemplateKind::Admin => Shape::Admin,
        TemplateKind::Viewer => Shape::Viewer,
    };
    render(shape.statements("${bucket}", "${prefix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions_on(policy: &str, resource_part: &str) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(policy).unwrap();
        let mut out = vec![];
        for s in v["Statement"].as_array().unwrap() {
            let hit = s["Resource"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r.as_str().unwrap().contains(resource_part));
            if hit {
                for a in s["Action"].as_array().unwrap() {
                    out.push(a.as_str().unwrap().to_owned());
                }
            }
        }
        out
    }

    #[test]
    fn agent_gets_exactly_its_own_prefixes() {
        let h = HostName::new("host-a").unwrap();
        let p = policy(&Role::Agent(h), "fleet-bucket", "prod").unwrap();
        assert_eq!(
            actions_on(&p, ":::fleet-bucket/prod/hosts/host-a/*"),
            ["s3:GetObject"]
        );
        assert_eq!(
            actions_on(&p, ":::fleet-bucket/prod/cache/*"),
            ["s3:GetObject"]
        );
        assert_eq!(
            actions_on(&p, ":::fleet-bucket/prod/status/host-a/*"),
            ["s3:PutObject"]
        );
        assert_eq!(
            actions_on(&p, ":::fleet-bucket/prod/trust/*"),
            ["s3:GetObject"]
        );
        assert_eq!(
            actions_on(&p, ":::fleet-bucket/prod/changes/*/host-a"),
            ["s3:PutObject"]
        );
        assert!(!p.contains("ListBucket") && !p.contains("Delete"));
        // Exactly five statements: nothing else is allowed.
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["Statement"].as_array().unwrap().len(), 5);
    }

    #[test]
    fn public_cache_policy_covers_only_the_cache() {
        let p = public_cache_policy("b-1", "site").unwrap();
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["Statement"][0]["Principal"], "*");
        assert_eq!(
            v["Statement"][0]["Resource"],
            serde_json::json!(["arn:aws:s3:::b-1/site/cache/*"])
        );
        assert_eq!(v["Statement"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn audit_policy_denies_unconditional_puts_and_deletes_of_the_chain_only() {
        let p = audit_create_only_policy("b-1", "site").unwrap();
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        let st = v["Statement"].as_array().unwrap();
        assert_eq!(st.len(), 2);
        for s in st {
            assert_eq!(
                (s["Effect"].as_str(), s["Principal"].as_str()),
                (Some("Deny"), Some("*"))
            );
            assert_eq!(
                s["Resource"],
                serde_json::json!(["arn:aws:s3:::b-1/site/audit/chain/*"])
            );
        }
        assert_eq!(st[0]["Condition"]["Null"]["s3:if-none-match"], "true");
        assert_eq!(st[0]["Action"], serde_json::json!(["s3:PutObject"]));
    }

    #[test]
    fn empty_prefix_has_no_double_slash() {
        let p = policy(&Role::Publisher, "b-1", "").unwrap();
        assert!(p.contains("arn:aws:s3:::b-1/cache/*"));
        assert!(!p.contains("//"));
        assert_eq!(normalize_prefix("/a/b/").unwrap(), "a/b/");
    }

    #[test]
    fn reporter_writes_only_dashboard() {
        let p = policy(&Role::Reporter, "b-1", "").unwrap();
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        for s in v["Statement"].as_array().unwrap() {
            if s["Action"].to_string().contains("PutObject") {
                assert_eq!(
                    s["Resource"],
                    serde_json::json!(["arn:aws:s3:::b-1/dashboard/*"])
                );
            }
        }
    }

    #[test]
    fn only_the_admin_deletes_and_the_viewer_writes_nothing() {
        let roles = [
            Role::Agent(HostName::new("h").unwrap()),
            Role::Publisher,
            Role::Reporter,
            Role::Viewer,
        ];
        for r in &roles {
            let p = policy(r, "b-1", "").unwrap();
            assert!(!p.contains("s3:DeleteObject"), "{r:?}");
        }
        let v = policy(&Role::Viewer, "b-1", "").unwrap();
        assert!(!v.contains("s3:PutObject") && !v.contains("Abort"), "{v}");
        let a = policy(&Role::Admin, "b-1", "").unwrap();
        assert_eq!(
            actions_on(&a, ":::b-1/audit/*"),
            ["s3:GetObject", "s3:PutObject"],
            "the admin never deletes the audit trail"
        );
        for dir in ["hosts", "status", "cache", "releases"] {
            assert!(
                actions_on(&a, &format!(":::b-1/{dir}/*")).contains(&"s3:DeleteObject".into()),
                "{dir}"
            );
        }
        for dir in ["trust", "registry"] {
            assert!(
                actions_on(&a, &format!(":::b-1/{dir}/*")).contains(&"s3:PutObject".into()),
                "{dir}"
            );
        }
    }

    #[test]
    fn refuses_inputs_that_would_widen_the_policy() {
        for bad in ["*", "a/*", "..", "a/../b", "a b", "a?"] {
            assert!(normalize_prefix(bad).is_err(), "{bad}");
        }
        for bad in ["", "ab", "Bucket", "b*", "-ab", "a..b", &"a".repeat(64)] {
            assert!(validate_bucket(bad).is_err(), "{bad}");
        }
    }
}
