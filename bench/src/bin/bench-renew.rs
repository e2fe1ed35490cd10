//! `bench-renew`: `fleet-publish renew` of 1,000 hosts (see bench/README.md).
//!
//! ```text
//! bench-renew [--runs 3]
//! ```
//!
//! For a `file://` bucket and a SeaweedFS bucket (`weed mini` from `fleet_tests::s3`,
//! IAM enforced, the publisher's scoped credentials): before each run, 1,000 hosts
//! get a signed manifest (sequence 1) that expires in an hour; then the release
//! `fleet-publish renew --within 2d` built next to this binary re-signs them all
//! (32 at once, its default). Measured: wall time, CPU, peak RSS. The benchmark
//! fails if a run does not renew every host. Target: under 10 s on SeaweedFS.
//! Prints a table and writes `bench/results/bench-renew.json`.

use std::process::Command;

use anyhow::{Context, ensure};
use fleet_bench::{Report, Table, load_average, measure, runs_arg, sibling_binary};
use fleet_core::iam::Role;
use fleet_core::keys::SecretKey;
use fleet_core::manifest::Manifest;
use fleet_core::{Activation, Bucket, HostName, Key, StorePath};
use fleet_tests::s3::S3Server;
use futures::StreamExt;

/// Hosts renewed per run.
const HOSTS: usize = 1000;

/// One bucket measured: label, URL, the bucket for seeding, the credentials'
/// environment.
type Case<'a> = (&'a str, &'a str, &'a Bucket, Vec<(&'static str, String)>);

fn main() {
    if let Err(e) = real_main() {
        eprintln!("bench-renew: error: {e:#}");
        std::process::exit(1);
    }
}

/// Gives every host a fresh manifest of sequence 1 that expires in an hour.
async fn seed(bucket: &Bucket, key: &SecretKey, cache: &SecretKey) -> anyhow::Result<()> {
    let closure = StorePath::new("/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-nixos-system")?;
    let now = jiff::Timestamp::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..HOSTS)
        .map(|i| {
            let closure = closure.clone();
            async move {
                let host = HostName::new(&format!("host-{i:04}"))?;
                let m = Manifest {
                    version: 1,
                    host: host.clone(),
                    sequence: 1,
                    closure,
                    issued_at: now,
                    expires_at: now + jiff::SignedDuration::from_hours(1),
                    cache_keys: vec![cache.public()],
                    activation: Activation::Switch,
                    activate_after: None,
                    maintenance_windows: None,
                };
                bucket.put(&Key::manifest(&host), m.sign(key)).await?;
                Ok(())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    results.into_iter().collect()
}

fn real_main() -> anyhow::Result<()> {
    let runs = runs_arg(
        "bench-renew",
        &std::env::args().skip(1).collect::<Vec<_>>(),
        3,
    )?;
    let publish = sibling_binary("fleet-publish")?;
    let rt = tokio::runtime::Runtime::new()?;
    let work = tempfile::Builder::new().prefix("bench-renew-").tempdir()?;
    let key_file = work.path().join("publisher.secret");
    let signer = SecretKey::generate("bench-publisher-1")?;
    std::fs::write(&key_file, signer.to_nix_string())?;
    let cache = SecretKey::generate("bench-cache-1")?;
    let load_before = load_average();

    let server = rt.block_on(S3Server::seaweedfs())?;
    let name = rt.block_on(server.new_bucket("bench-renew"))?;
    let creds = rt.block_on(server.user_for(&Role::Publisher, &name, ""))?;
    let s3_url = server.store_url(&name, "")?.to_string();
    let s3_bucket = server.bucket(&name, "", &creds)?;
    let file_url = format!("file://{}", work.path().join("bucket").display());
    let file_bucket = Bucket::open_url(&file_url)?;
    let cases: [Case<'_>; 2] = [
        ("file://", &file_url, &file_bucket, Vec::new()),
        (
            "SeaweedFS",
            &s3_url,
            &s3_bucket,
            S3Server::credentials_env(&creds),
        ),
    ];

    let mut table = Table::new(&[
        "bucket",
        "hosts",
        "median s",
        "min s",
        "max s",
        "CPU s",
        "peak RSS MiB",
    ]);
    let mut report = Report::new("bench-renew");
    for (label, url, bucket, env) in &cases {
        let stats = measure(label, runs, |_| {
            rt.block_on(seed(bucket, &signer, &cache))
                .context("seeding the manifests")?;
            let mut cmd = Command::new(&publish);
            cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .args(["renew", "--within", "2d", "--bucket", url, "--signing-key"])
                .arg(&key_file);
            Ok(cmd)
        })?;
        let last = stats.last.as_ref().context("a run")?;
        let renewed = last
            .stdout
            .lines()
            .filter(|l| l.contains(": renewed"))
            .count();
        ensure!(
            renewed == HOSTS,
            "{label}: {renewed} of {HOSTS} renewed: {}",
            last.stderr
        );
        table.row(vec![
            (*label).to_owned(),
            HOSTS.to_string(),
            format!("{:.2}", stats.median_s),
            format!("{:.2}", stats.min_s),
            format!("{:.2}", stats.max_s),
            format!("{:.2}", stats.median_cpu_s),
            format!("{:.1}", stats.peak_rss_mib),
        ]);
        report.rows.push(serde_json::to_value(&stats)?);
    }
    report.finish(&table, load_before)
}
