//! Bucket URLs: where a fleet bucket lives.
//!
//! | form | meaning |
//! |---|---|
//! | `s3://BUCKET[/PREFIX][?endpoint=URL&region=R&addressing=path\|virtual]` | AWS S3, MinIO, SeaweedFS, any S3 API |
//! | `file:///ABS/PATH` | a local directory laid out like the bucket (the embedded default; no server) |
//! | `memory://[NAME]` | an in-process store, for tests |
//!
//! For `s3://`, `endpoint` selects a non-AWS server (`http://` endpoints are allowed,
//! for on-prem MinIO/SeaweedFS on a private network); without it the standard AWS
//! endpoint for the region is used. Addressing defaults to path-style, which every
//! S3-compatible server accepts. Credentials and unset options come from the standard
//! AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL`, web identity, ECS and EC2 instance metadata) or
//! from explicit [`crate::bucket::S3Credentials`].

use std::fmt;
use std::path::PathBuf;

use crate::iam::{normalize_prefix, validate_bucket};

/// A parsed bucket URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BucketUrl {
    /// An S3 bucket.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Root prefix, `""` or `"a/b/"`.
        prefix: String,
        /// Endpoint URL for non-AWS servers.
        endpoint: Option<String>,
        /// Region (default from the environment, else `us-east-1`).
        region: Option<String>,
        /// Use virtual-hosted-style addressing (`BUCKET.host`) instead of path-style.
        virtual_hosted: bool,
    },
    /// A local directory.
    File {
        /// Absolute path of the bucket root.
        root: PathBuf,
    },
    /// An in-memory store.
    Memory {
        /// A label for messages.
        name: String,
    },
}

/// Why a bucket URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bucket URL {url:?} is not valid: {why}. Use s3://BUCKET[/PREFIX][?endpoint=http://HOST:PORT&region=R], file:///ABSOLUTE/PATH or memory://"
)]
pub struct StoreUrlError {
    /// The input.
    pub url: String,
    /// What is wrong.
    pub why: String,
}

impl BucketUrl {
    /// Parses a bucket URL.
    pub fn parse(input: &str) -> Result<Self, StoreUrlError> {
        let err = |why: &str| StoreUrlError {
            url: input.to_owned(),
            why: why.to_owned(),
        };
        // The URL parser would silently resolve `a/../b` to `b`; refuse it instead, so
        // the prefix an admin wrote is the prefix used.
        let before_query = input.split('?').next().unwrap_or("");
        if before_query
            .split('/')
            .any(|seg| seg == ".." || seg == "." || seg.eq_ignore_ascii_case("%2e%2e"))
        {
            return Err(err("the path may not contain `.` or `..` segments"));
        }
        let url = url::Url::parse(input).map_err(|e| err(&e.to_string()))?;
        match url.scheme() {
            "s3" => {
                let bucket = url
                    .host_str()
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| err("the bucket name is missing"))?
                    .to_owned();
                validate_bucket(&bucket).map_err(|e| err(&e.to_string()))?;
                let prefix = normalize_prefix(url.path()).map_err(|e| err(&e.to_string()))?;
                let mut endpoint = None;
                let mut region = None;
                let mut virtual_hosted = false;
                for (k, v) in url.query_pairs() {
                    match &*k {
                        "endpoint" => {
                            let e = url::Url::parse(&v).map_err(|_| {
                                err(&format!(
                                    "endpoint {v:?} is not a URL like http://127.0.0.1:9000"
                                ))
                            })?;
                            if !matches!(e.scheme(), "http" | "https") {
                                return Err(err(&format!(
                                    "endpoint {v:?} must start with http:// or https://"
                                )));
                            }
                            endpoint = Some(v.trim_end_matches('/').to_owned());
                        }
                        "region" => region = Some(v.into_owned()),
                        "addressing" => match &*v {
                            "path" => virtual_hosted = false,
                            "virtual" => virtual_hosted = true,
                            _ => return Err(err("addressing must be `path` or `virtual`")),
                        },
                        other => {
                            return Err(err(&format!(
                                "unknown option {other:?} (known: endpoint, region, addressing)"
                            )));
                        }
                    }
                }
                Ok(BucketUrl::S3 {
                    bucket,
                    prefix,
                    endpoint,
                    region,
                    virtual_hosted,
                })
            }
            "file" => {
                if url.host_str().is_some_and(|h| !h.is_empty()) {
                    return Err(err(
                        "a file URL needs three slashes and an absolute path: file:///var/lib/fleet/bucket",
                    ));
                }
                if url.query().is_some() {
                    return Err(err("file URLs take no options"));
                }
                let root = url
                    .to_file_path()
                    .map_err(|_| err("the path is not absolute"))?;
                if root
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
                {
                    return Err(err("the path may not contain `..`"));
                }
                Ok(BucketUrl::File { root })
            }
            "memory" => Ok(BucketUrl::Memory {
                name: url.host_str().unwrap_or("").to_owned(),
            }),
            other => Err(err(&format!(
                "scheme {other:?} is not supported (use s3, file or memory)"
            ))),
        }
    }
}

impl fmt::Display for BucketUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BucketUrl::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                virtual_hosted,
            } => {
                write!(f, "s3://{bucket}/{}", prefix.trim_end_matches('/'))?;
                let mut sep = '?';
                let mut opt = |f: &mut fmt::Formatter<'_>, k: &str, v: &str| {
                    let r = write!(f, "{sep}{k}={v}");
                    sep = '&';
                    r
                };
                if let Some(e) = endpoint {
                    opt(f, "endpoint", e)?;
                }
                if let Some(r) = region {
                    opt(f, "region", r)?;
                }
                if *virtual_hosted {
                    opt(f, "addressing", "virtual")?;
                }
                Ok(())
            }
            BucketUrl::File { root } => write!(f, "file://{}", root.display()),
            BucketUrl::Memory { name } => write!(f, "memory://{name}"),
        }
    }
}

impl std::str::FromStr for BucketUrl {
    type Err = StoreUrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_with_options() {
        let u = BucketUrl::parse(
            "s3://fleet-prod/site-a/?endpoint=http://127.0.0.1:8333&region=eu-west-1",
        )
        .unwrap();
        assert_eq!(
            u,
            BucketUrl::S3 {
                bucket: "fleet-prod".into(),
                prefix: "site-a/".into(),
                endpoint: Some("http://127.0.0.1:8333".into()),
                region: Some("eu-west-1".into()),
                virtual_hosted: false,
            }
        );
        assert_eq!(
            u.to_string(),
            "s3://fleet-prod/site-a?endpoint=http://127.0.0.1:8333&region=eu-west-1"
        );
        assert_eq!(BucketUrl::parse(&u.to_string()).unwrap(), u);
    }

    #[test]
    fn parses_file_and_memory() {
        assert_eq!(
            BucketUrl::parse("file:///var/lib/fleet").unwrap(),
            BucketUrl::File {
                root: "/var/lib/fleet".into()
            }
        );
        assert!(matches!(
            BucketUrl::parse("memory://").unwrap(),
            BucketUrl::Memory { .. }
        ));
    }

    #[test]
    fn bad_urls_say_what_to_do() {
        for (bad, want) in [
            ("s3://", "bucket name is missing"),
            ("s3://Bad_Bucket", "not valid"),
            ("s3://b-1/a/../b", "`..`"),
            ("s3://b-1?endpoint=ftp://x", "http://"),
            ("s3://b-1?foo=1", "unknown option"),
            ("file://relative/path", "three slashes"),
            ("gs://b", "not supported"),
            ("/var/lib/fleet", "relative URL"),
        ] {
            let e = BucketUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("s3://BUCKET"), "{bad}: {e}");
        }
    }
}
