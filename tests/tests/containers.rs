//! The same basic S3 round trip through `fleet_core::Bucket` (put, get, conditional
//! GET, create-only put, compare-and-swap, list, delete) against S3 servers run in
//! Docker by `testcontainers`: MinIO and LocalStack.
//!
//! These prove S3 compatibility only: LocalStack community does not enforce IAM (a
//! wrong secret is accepted), and MinIO runs with its root user. IAM is proved by
//! `iam_matrix.rs` on SeaweedFS and moto.
//!
//! Where no Docker engine answers (`$DOCKER_HOST`, else
//! `unix:///var/run/docker.sock`), or the image can be neither found locally nor
//! pulled, a test passes after printing `skipped: <reason>`; any failure after the
//! container started fails it. The images are pinned (MinIO
//! `RELEASE.2025-09-07T16-13-09Z`, LocalStack `4.9.2`); `FLEET_MINIO_IMAGE` and
//! `FLEET_LOCALSTACK_IMAGE` (`name:tag`) choose others.
//!
//! The round trip also runs on the harness's SeaweedFS and moto servers, so the code
//! shared with the Docker path is exercised on every machine.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use fleet_core::bucket::{BucketError, Fetched};
use fleet_core::{Bucket, HostName, Key, KeyPrefix, S3Credentials};
use fleet_tests::s3::{self, S3Server};
use testcontainers::core::client::ClientError;
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt, TestcontainersError};

const MINIO_IMAGE: &str = "minio/minio:RELEASE.2025-09-07T16-13-09Z";
const LOCALSTACK_IMAGE: &str = "localstack/localstack:4.9.2";
const BUCKET: &str = "fleet-round-trip";
const LIMIT: u64 = 1 << 20;

fn host(name: &str) -> HostName {
    HostName::new(name).expect("valid host name")
}

/// put / get / conditional GET / create-only / CAS / list / delete on `b`.
async fn round_trip(b: &Bucket) -> Result<()> {
    let k = Key::manifest(&host("web-1"));
    match b.get(&k, LIMIT).await {
        Err(BucketError::NotFound { .. }) => {}
        other => bail!("reading {k} before any write: expected NotFound, got {other:?}"),
    }
    ensure!(b.head(&k).await?.is_none(), "head of a missing key is None");

    b.put_if_absent(&k, &b"one"[..])
        .await
        .context("create-only put")?;
    match b.put_if_absent(&k, &b"two"[..]).await {
        Err(BucketError::AlreadyExists { .. }) => {}
        other => bail!("second create-only put: expected AlreadyExists, got {other:?}"),
    }
    let got = b.get(&k, LIMIT).await?;
    ensure!(&got.bytes[..] == b"one", "read back {:?}", got.bytes);
    let etag = got.etag.context("the server gave no ETag")?;

    match b.get_if_changed(&k, Some(&etag), LIMIT).await? {
        Fetched::NotModified => {}
        Fetched::Object(_) => bail!("conditional GET with the current ETag returned the body"),
    }

    b.put_if_match(&k, &b"two"[..], &etag)
        .await
        .context("compare-and-swap")?;
    match b.put_if_match(&k, &b"three"[..], &etag).await {
        Err(BucketError::Conflict { .. }) => {}
        other => bail!("compare-and-swap with a stale ETag: expected Conflict, got {other:?}"),
    }
    ensure!(&b.get(&k, LIMIT).await?.bytes[..] == b"two", "CAS result");
    match b.get_if_changed(&k, Some(&etag), LIMIT).await? {
        Fetched::Object(o) => ensure!(&o.bytes[..] == b"two", "changed body {:?}", o.bytes),
        Fetched::NotModified => bail!("conditional GET with a stale ETag said NotModified"),
    }

    for h in ["web-1", "web-2"] {
        b.put(&Key::status(&host(h)), &b"{}"[..]).await?;
    }
    let mut keys: Vec<String> = b
        .list(&KeyPrefix::status())
        .await?
        .into_iter()
        .map(|i| i.key)
        .collect();
    keys.sort();
    ensure!(
        keys == ["status/web-1/status.json", "status/web-2/status.json"],
        "listing status/: {keys:?}"
    );
    ensure!(
        b.list(&KeyPrefix::audit()).await?.is_empty(),
        "audit/ is empty"
    );

    b.delete(&k).await?;
    match b.get(&k, LIMIT).await {
        Err(BucketError::NotFound { .. }) => {}
        other => bail!("reading {k} after delete: expected NotFound, got {other:?}"),
    }
    match b.put_if_match(&k, &b"x"[..], &etag).await {
        Err(BucketError::Conflict { .. }) => {}
        other => bail!("compare-and-swap on a deleted key: expected Conflict, got {other:?}"),
    }
    Ok(())
}

fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned())
}

/// Why Docker-based tests cannot run here, if they cannot.
async fn no_docker_reason() -> Option<String> {
    let reason = |e: &dyn std::fmt::Display| format!("no Docker engine at {}: {e}", docker_host());
    match testcontainers::core::client::docker_client_instance().await {
        Err(e) => Some(reason(&e)),
        Ok(docker) => docker.ping().await.err().map(|e| reason(&e)),
    }
}

/// Prints the skip reason (nextest shows this binary's output even on success; see
/// `.config/nextest.toml`).
fn skip(test: &str, why: &str) {
    println!("skipped: {test}: {why}");
}

fn image(env: &str, default: &str) -> (String, String) {
    let full = std::env::var(env).unwrap_or_else(|_| default.to_owned());
    match full.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_owned(), tag.to_owned()),
        _ => (full, "latest".to_owned()),
    }
}

/// Starts `req`; `Ok(None)` (after printing why) when the image is not available.
async fn start_or_skip(
    test: &str,
    req: testcontainers::ContainerRequest<GenericImage>,
) -> Result<Option<ContainerAsync<GenericImage>>> {
    if let Some(why) = no_docker_reason().await {
        skip(test, &why);
        return Ok(None);
    }
    match req.start().await {
        Ok(c) => Ok(Some(c)),
        Err(TestcontainersError::Client(e @ ClientError::PullImage { .. })) => {
            skip(
                test,
                &format!("image not available locally and not pullable: {e}"),
            );
            Ok(None)
        }
        Err(e) => Err(e).context("starting the container"),
    }
}

async fn endpoint(c: &ContainerAsync<GenericImage>, port: u16) -> Result<String> {
    let host = c.get_host().await?;
    let port = c.get_host_port_ipv4(port.tcp()).await?;
    Ok(format!("http://{host}:{port}"))
}

async fn round_trip_at(endpoint: &str, creds: &S3Credentials) -> Result<()> {
    s3::create_bucket_at(endpoint, creds, BUCKET).await?;
    let b = s3::open_bucket_at(endpoint, BUCKET, "rt", creds)?;
    round_trip(&b).await
}

#[tokio::test]
async fn round_trip_on_minio() -> Result<()> {
    let creds = S3Credentials {
        access_key_id: "fleetminio".into(),
        secret_access_key: "fleetminio-secret".into(),
        session_token: None,
    };
    let (name, tag) = image("FLEET_MINIO_IMAGE", MINIO_IMAGE);
    let req = GenericImage::new(name, tag)
        .with_exposed_port(9000.tcp())
        .with_wait_for(WaitFor::message_on_either_std("API:"))
        .with_env_var("MINIO_ROOT_USER", &creds.access_key_id)
        .with_env_var("MINIO_ROOT_PASSWORD", &creds.secret_access_key)
        .with_cmd(["server", "/data"])
        .with_startup_timeout(Duration::from_secs(120));
    let Some(c) = start_or_skip("round_trip_on_minio", req).await? else {
        return Ok(());
    };
    round_trip_at(&endpoint(&c, 9000).await?, &creds).await
}

#[tokio::test]
async fn round_trip_on_localstack() -> Result<()> {
    // LocalStack accepts any key pair; these are its documented defaults.
    let creds = S3Credentials {
        access_key_id: "test".into(),
        secret_access_key: "test".into(),
        session_token: None,
    };
    let (name, tag) = image("FLEET_LOCALSTACK_IMAGE", LOCALSTACK_IMAGE);
    let req = GenericImage::new(name, tag)
        .with_exposed_port(4566.tcp())
        .with_wait_for(WaitFor::message_on_stdout("Ready."))
        .with_env_var("SERVICES", "s3")
        .with_startup_timeout(Duration::from_secs(180));
    let Some(c) = start_or_skip("round_trip_on_localstack", req).await? else {
        return Ok(());
    };
    round_trip_at(&endpoint(&c, 4566).await?, &creds).await
}

#[tokio::test]
async fn round_trip_on_seaweedfs() -> Result<()> {
    let server = S3Server::seaweedfs().await?;
    let name = server.new_bucket("round-trip").await?;
    round_trip(&server.bucket(&name, "rt", &server.admin_credentials())?).await
}

#[tokio::test]
async fn round_trip_on_moto() -> Result<()> {
    let server = S3Server::moto().await?;
    let name = server.new_bucket("round-trip").await?;
    round_trip(&server.bucket(&name, "rt", &server.admin_credentials())?).await
}
