//! Benchmark of the reporter's aggregation over synthetic fleets (a bench, not a
//! timed test).
//!
//! ```text
//! cargo bench -p fleet-reporter --bench reporter -- [--hosts 10000,100000] [--s3 ENDPOINT_URL_OF_BUCKET]
//! ```
//!
//! For each fleet size it writes a synthetic fleet (`fleet_reporter::synth`: signed
//! manifests, status objects, a few hosts in every state) into a fresh `file://`
//! bucket, then measures:
//!
//! - **cold**: a new reporter with no summary (LIST, every GET, every signature check,
//!   summary written);
//! - **warm, same process**: 1% of hosts report again; the next refresh of the same
//!   reporter (in-process cache as the previous summary);
//! - **warm, new process**: another 1% report; a new reporter (a fresh Lambda
//!   container) starts from `dashboard/summary.json`.
//!
//! Peak memory is the process's high-water RSS (`VmHWM`), reset before each phase
//! through `/proc/self/clear_refs`. With `--s3 s3://BUCKET?endpoint=…` the 10,000-host
//! run is repeated against that S3 server (credentials from the AWS environment).
//! Prints a table and writes JSON to `bench/results/bench-reporter.json`.

use std::time::{Duration, Instant};

use fleet_core::{Bucket, SecretKey, TrustedKeys};
use fleet_reporter::fleet::Fleet;
use fleet_reporter::{Reporter, ReporterOptions, synth};
use jiff::Timestamp;

fn peak_rss_reset() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

struct Row {
    store: String,
    hosts: usize,
    phase: &'static str,
    seconds: f64,
    fetched: usize,
    peak_rss_mib: f64,
    summary_write: String,
}

async fn phase(
    rows: &mut Vec<Row>,
    store: &str,
    hosts: usize,
    name: &'static str,
    reporter: &Reporter,
) -> Fleet {
    peak_rss_reset();
    let t = Instant::now();
    let f = reporter.refresh().await.expect("refresh");
    let seconds = t.elapsed().as_secs_f64();
    assert_eq!(f.hosts.len(), hosts, "every host is shown");
    eprintln!("{store} {hosts} {name}: {:?}", f.stats);
    rows.push(Row {
        store: store.to_owned(),
        hosts,
        phase: name,
        seconds,
        fetched: f.stats.fetched_status + f.stats.fetched_manifests,
        peak_rss_mib: peak_rss_mib(),
        summary_write: f.stats.summary_write.clone(),
    });
    (*f).clone()
}

async fn run(rows: &mut Vec<Row>, store: &str, bucket: Bucket, hosts: usize) {
    let publisher = SecretKey::generate("publisher-1").unwrap();
    let opts = ReporterOptions {
        trusted: TrustedKeys::new([publisher.public()]),
        cache_ttl: Duration::ZERO,
        ..Default::default()
    };
    let t = Instant::now();
    synth::populate(&bucket, &publisher, hosts, Timestamp::now(), 64)
        .await
        .expect("populate");
    eprintln!(
        "{store}: wrote {hosts} hosts in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let r = Reporter::new(bucket.clone(), opts.clone());
    let cold = phase(rows, store, hosts, "cold", &r).await;
    for (i, row) in cold.hosts.iter().enumerate() {
        assert_eq!(row.state, synth::planned_state(i), "{}", row.host);
    }
    let step = 100;
    synth::touch(&bucket, (0..hosts).step_by(step), Timestamp::now(), 64)
        .await
        .unwrap();
    phase(rows, store, hosts, "warm 1% (same process)", &r).await;
    synth::touch(&bucket, (1..hosts).step_by(step), Timestamp::now(), 64)
        .await
        .unwrap();
    let fresh = Reporter::new(bucket.clone(), opts);
    phase(rows, store, hosts, "warm 1% (new process)", &fresh).await;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let sizes: Vec<usize> = arg("--hosts")
        .unwrap_or_else(|| "10000,100000".into())
        .split(',')
        .map(|s| s.parse().expect("--hosts takes comma-separated numbers"))
        .collect();
    let mut rows = Vec::new();
    for &n in &sizes {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::open_url(&format!("file://{}", dir.path().display())).unwrap();
        run(&mut rows, "file://", bucket, n).await;
    }
    if let Some(url) = arg("--s3") {
        let bucket = Bucket::open_url(&url).expect("open --s3 store");
        run(&mut rows, "s3 (SeaweedFS)", bucket, 10_000).await;
    }

    println!(
        "\n| store | hosts | phase | seconds | objects read | peak RSS MiB | summary |\n|---|---:|---|---:|---:|---:|---|"
    );
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.3} | {} | {:.0} | {} |",
            r.store, r.hosts, r.phase, r.seconds, r.fetched, r.peak_rss_mib, r.summary_write
        );
    }
    let mut verdicts = vec![];
    for r in rows.iter().filter(|r| r.phase == "cold") {
        let target = match (r.store.as_str(), r.hosts) {
            ("file://", 10_000) => Some(1.0),
            ("file://", 100_000) => Some(5.0),
            _ => None,
        };
        if let Some(t) = target {
            verdicts.push(format!(
                "{} {} hosts cold {:.2} s (target < {t} s): {}",
                r.store,
                r.hosts,
                r.seconds,
                if r.seconds < t { "met" } else { "MISSED" }
            ));
        }
        for w in rows
            .iter()
            .filter(|w| w.store == r.store && w.hosts == r.hosts && w.phase != "cold")
        {
            let ratio = w.seconds / r.seconds;
            verdicts.push(format!(
                "{} {} hosts {}: {:.1}% of cold (target < 10%): {}",
                w.store,
                w.hosts,
                w.phase,
                ratio * 100.0,
                if ratio < 0.10 { "met" } else { "MISSED" }
            ));
        }
    }
    println!();
    for v in &verdicts {
        println!("{v}");
    }
    let json = serde_json::json!({
        "bench": "reporter",
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "rows": rows.iter().map(|r| serde_json::json!({
            "store": r.store, "hosts": r.hosts, "phase": r.phase, "seconds": r.seconds,
            "objects_read": r.fetched, "peak_rss_mib": r.peak_rss_mib, "summary_write": r.summary_write,
        })).collect::<Vec<_>>(),
        "verdicts": verdicts,
    });
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/results");
    std::fs::create_dir_all(&out).unwrap();
    let path = out.join("bench-reporter.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("\nJSON: {}", path.display());
}
