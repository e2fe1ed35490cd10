//! `bench-reporter`: the reporter's aggregation over synthetic fleets (see
//! bench/README.md).
//!
//! ```text
//! bench-reporter [--hosts 10000,100000] [--seaweedfs-hosts 10000] [--events 5] [--runs 3]
//! ```
//!
//! Each fleet (`fleet_reporter::synth`: real signed manifests and status objects, a
//! few hosts in every state, plus `--events` event objects per host under
//! `status/<host>/events/`, which share the `status/` prefix as a real fleet's do) is
//! written once into a fresh `file://` bucket, and the 10,000-host one also into a
//! SeaweedFS bucket (`weed mini`, started by `fleet_tests::s3`, as the tests start it;
//! the reporter uses credentials of the reporter IAM policy). Then, `--runs` times and
//! interleaved (cold, warm, warm in a new process, cold, …), one child process of this
//! binary per measurement:
//!
//! - **cold**: no `dashboard/snapshot.json`; a new reporter lists, reads and verifies
//!   everything and writes the snapshot;
//! - **warm 1% (same process)**: the child refreshes once (not timed), 1% of the hosts
//!   report again, and the timed refresh starts from the in-memory snapshot;
//! - **warm 1% (new process)**: 1% of the hosts report again; a new process (a fresh
//!   Lambda container) starts from `dashboard/snapshot.json`.
//!
//! The child times its own refresh and measures its peak RSS over it (`VmHWM`, reset
//! just before); the 1-minute load average is recorded before each run. On SeaweedFS
//! the server's CPU time over each child (`/proc/<pid>/stat`) is recorded too: both
//! share the machine's cores, so reporter plus server CPU over the cores bounds how
//! fast a refresh can be here. Every child
//! checks the fleet it got (every host present, cold: each in its planned state,
//! warm: the hosts that reported again up to date) and fails otherwise.
//! Prints a table and writes `bench/results/bench-reporter.json`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use fleet_bench::{
    Report, Table, load_average, median, own_cpu_seconds, own_peak_rss_bytes, reset_peak_rss,
};
use fleet_core::iam::Role;
use fleet_core::{Bucket, BucketOptions, BucketUrl, Key, S3Credentials, SecretKey, TrustedKeys};
use fleet_reporter::config::ReporterOptions;
use fleet_reporter::outcome::HostState;
use fleet_reporter::{Reporter, synth};
use jiff::{SignedDuration, Timestamp};

const USAGE: &str = "usage: bench-reporter [--hosts 10000,100000] [--seaweedfs-hosts N (0: skip)] \
                     [--events N] [--runs N]   (see bench/README.md)";

/// Environment of a child: the credentials the child's reporter uses are the standard
/// AWS ones; these are the fleet writer's (to make hosts report again).
const WRITER_KEY_ENV: &str = "FLEET_BENCH_WRITER_KEY_ID";
const WRITER_SECRET_ENV: &str = "FLEET_BENCH_WRITER_SECRET";
/// The publisher key the fleet was signed with (the child trusts its public half).
const PUBLIC_KEY_ENV: &str = "FLEET_BENCH_PUBLISHER_PUBLIC";

const PHASES: [&str; 3] = ["cold", "warm 1% (same process)", "warm 1% (new process)"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("--child") {
        child(&args[1..])
    } else {
        parent(&args)
    };
    if let Err(e) = result {
        eprintln!("bench-reporter: error: {e:#}");
        std::process::exit(1);
    }
}

struct Args {
    hosts: Vec<usize>,
    seaweedfs_hosts: usize,
    events: usize,
    runs: usize,
}

fn parse_args(args: &[String]) -> anyhow::Result<Args> {
    let mut a = Args {
        hosts: vec![10_000, 100_000],
        seaweedfs_hosts: 10_000,
        events: 5,
        runs: 3,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value; {USAGE}"))
        };
        let number = |v: &String| -> anyhow::Result<usize> {
            v.parse()
                .with_context(|| format!("{flag} {v:?}: not a number; {USAGE}"))
        };
        match flag.as_str() {
            "--hosts" => {
                a.hosts = value()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| number(&s.to_owned()))
                    .collect::<anyhow::Result<_>>()?;
            }
            "--seaweedfs-hosts" => a.seaweedfs_hosts = number(value()?)?,
            "--events" => a.events = number(value()?)?,
            "--runs" => a.runs = number(value()?)?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    ensure!(
        (1..=30).contains(&a.runs),
        "--runs must be 1 to 30 (each warm run makes another 1% report)"
    );
    Ok(a)
}

/// A fleet under test: where it is and with which credentials.
struct Fleet {
    store: &'static str,
    url: BucketUrl,
    hosts: usize,
    /// The writer (populates, makes hosts report, deletes the snapshot).
    writer: Bucket,
    writer_creds: Option<S3Credentials>,
    /// What the reporter child uses (`None`: the store needs none).
    reporter_creds: Option<S3Credentials>,
    /// The server's process, whose CPU time per refresh is recorded beside the
    /// reporter's (`None` for `file://`).
    server_pid: Option<u32>,
}

fn parent(args: &[String]) -> anyhow::Result<()> {
    let a = parse_args(args)?;
    let rt = tokio::runtime::Runtime::new()?;
    let publisher = SecretKey::generate("bench-publisher-1")?;
    let work = tempfile::Builder::new()
        .prefix("bench-reporter-")
        .tempdir()?;
    // For profiling one phase by hand (`--child …` under perf): keep the fleets.
    if std::env::var_os("FLEET_BENCH_KEEP").is_some() {
        let dir = work.path().to_owned();
        std::mem::forget(work);
        eprintln!(
            "keeping {} (FLEET_BENCH_KEEP); children run with {PUBLIC_KEY_ENV}={}",
            dir.display(),
            publisher.public().to_nix_string()
        );
        return run(&a, &rt, &publisher, &dir);
    }
    run(&a, &rt, &publisher, work.path())
}

fn run(
    a: &Args,
    rt: &tokio::runtime::Runtime,
    publisher: &SecretKey,
    work: &Path,
) -> anyhow::Result<()> {
    let mut report = Report::new("bench-reporter");
    report.notes.push(format!(
        "{} runs per phase, phases interleaved; one child process per measured refresh; \
         {} event objects per host; reporter concurrency {}",
        a.runs,
        a.events,
        fleet_reporter::config::DEFAULT_CONCURRENCY
    ));
    let mut table = Table::new(&[
        "store",
        "hosts",
        "phase",
        "median s",
        "min s",
        "max s",
        "% of cold",
        "CPU s",
        "server CPU s",
        "peak RSS MiB",
        "objects read",
        "listed",
        "list ms",
        "fetch ms",
        "snapshot r/w ms",
        "load (1 min)",
    ]);
    let mut verdicts = Vec::new();

    let mut fleets = Vec::new();
    for &n in &a.hosts {
        let dir = work.join(format!("file-{n}"));
        let url = BucketUrl::parse(&format!("file://{}", dir.display()))?;
        let writer = Bucket::open(&url, &BucketOptions::default())?;
        fleets.push(Fleet {
            store: "file://",
            url,
            hosts: n,
            writer,
            writer_creds: None,
            reporter_creds: None,
            server_pid: None,
        });
    }
    // Started here, shared by all children; stopped when this process exits.
    if a.seaweedfs_hosts > 0 {
        let server = rt
            .block_on(fleet_tests::s3::S3Server::seaweedfs())
            .context("starting SeaweedFS (weed mini) as the tests do; see tests/src/s3.rs")?;
        let name = rt.block_on(server.new_bucket("bench-reporter"))?;
        let admin = server.admin_credentials();
        let reporter = rt.block_on(server.user_for(&Role::Reporter, &name, ""))?;
        fleets.push(Fleet {
            store: "SeaweedFS",
            url: server.store_url(&name, "")?,
            hosts: a.seaweedfs_hosts,
            writer: server.bucket(&name, "", &admin)?,
            writer_creds: Some(admin),
            reporter_creds: Some(reporter),
            server_pid: server.pid(),
        });
        report.notes.push(format!(
            "SeaweedFS: weed mini on loopback, started by fleet_tests::s3 ({})",
            weed_version()
        ));
    }

    for f in &fleets {
        let t = Instant::now();
        rt.block_on(populate(&f.writer, publisher, f.hosts, a.events))?;
        eprintln!(
            "{} {}: wrote {} hosts ({} objects) in {:.1} s",
            f.store,
            f.hosts,
            f.hosts,
            f.hosts * (2 + a.events),
            t.elapsed().as_secs_f64()
        );
        // 700,000 new files are minutes of writeback: flushed here, not while the
        // refreshes are timed (it pushed the load average to 15 in earlier runs).
        let synced = Command::new("sync").status().is_ok_and(|s| s.success());
        if !synced {
            eprintln!("sync failed; writeback may overlap the measured refreshes");
        }
        let mut runs: Vec<Vec<ChildResult>> = vec![vec![]; PHASES.len()];
        for r in 0..a.runs {
            for (p, phase) in PHASES.iter().enumerate() {
                // Each warm run makes another 1% report: hosts offset, offset + 100, …
                // (so after it, hosts whose number ends in 1..=offset are up to date).
                let offset = match p {
                    0 => 2 * r,
                    1 => 1 + 2 * r,
                    _ => 2 + 2 * r,
                };
                match p {
                    0 => rt.block_on(f.writer.delete(&Key::dashboard_snapshot()))?,
                    2 => rt.block_on(touch(&f.writer, f.hosts, offset))?,
                    _ => {}
                }
                fleet_bench::sync_disks();
                let load = load_average().map_or(f64::NAN, |l| l[0]);
                let server_cpu = || f.server_pid.and_then(fleet_bench::process_cpu_seconds);
                let server_before = server_cpu();
                let res = run_child(f, publisher, p, offset)
                    .with_context(|| format!("{} {} {phase}, run {}", f.store, f.hosts, r + 1))?;
                // The child measures its CPU over the timed refresh only; the
                // server's covers the whole child, which in phase 1 also holds the
                // untimed first refresh and the writes that make hosts report.
                let server_cpu_seconds = match (server_before, server_cpu()) {
                    (Some(a), Some(b)) => b - a,
                    _ => f64::NAN,
                };
                eprintln!(
                    "{} {} {phase} run {}: {:.3} s ({:.3} s CPU), peak {:.0} MiB, load {load:.2}",
                    f.store,
                    f.hosts,
                    r + 1,
                    res.seconds,
                    res.cpu_seconds,
                    res.peak_rss_mib
                );
                runs[p].push(ChildResult {
                    load,
                    server_cpu_seconds,
                    ..res
                });
            }
        }
        let snapshot_bytes = rt
            .block_on(f.writer.head(&Key::dashboard_snapshot()))?
            .map_or(0, |i| i.size);
        let cold_median = median(&runs[0].iter().map(|r| r.seconds).collect::<Vec<_>>());
        for (p, phase) in PHASES.iter().enumerate() {
            let rs = &runs[p];
            let col = |g: fn(&ChildResult) -> f64| median(&rs.iter().map(g).collect::<Vec<_>>());
            let secs: Vec<f64> = rs.iter().map(|r| r.seconds).collect();
            let (med, min, max) = (
                median(&secs),
                secs.iter().copied().fold(f64::INFINITY, f64::min),
                secs.iter().copied().fold(0.0, f64::max),
            );
            let peak = rs.iter().map(|r| r.peak_rss_mib).fold(0.0, f64::max);
            let loads: Vec<f64> = rs.iter().map(|r| r.load).collect();
            let pct = med / cold_median * 100.0;
            table.row(vec![
                f.store.into(),
                f.hosts.to_string(),
                (*phase).into(),
                format!("{med:.3}"),
                format!("{min:.3}"),
                format!("{max:.3}"),
                if p == 0 {
                    "-".into()
                } else {
                    format!("{pct:.1}%")
                },
                format!("{:.3}", col(|r| r.cpu_seconds)),
                if f.server_pid.is_some() {
                    format!("{:.3}", col(|r| r.server_cpu_seconds))
                } else {
                    "-".into()
                },
                format!("{peak:.0}"),
                format!("{:.0}", col(|r| r.objects_read as f64)),
                format!("{:.0}", col(|r| r.listed as f64)),
                format!("{:.0}", col(|r| r.list_ms as f64)),
                format!("{:.0}", col(|r| r.fetch_ms as f64)),
                format!(
                    "{:.0}/{:.0}",
                    col(|r| r.snapshot_read_ms as f64),
                    col(|r| r.snapshot_write_ms as f64)
                ),
                format!(
                    "{:.2} (max {:.2})",
                    median(&loads),
                    loads.iter().copied().fold(0.0, f64::max)
                ),
            ]);
            report.rows.push(serde_json::json!({
                "store": f.store, "hosts": f.hosts, "events_per_host": a.events, "phase": phase,
                "median_s": med, "min_s": min, "max_s": max, "seconds": secs,
                "percent_of_cold": if p == 0 { None } else { Some(pct) },
                "median_cpu_s": col(|r| r.cpu_seconds),
                "median_server_cpu_s": f.server_pid.map(|_| col(|r| r.server_cpu_seconds)),
                "peak_rss_mib": peak,
                "objects_read": col(|r| r.objects_read as f64),
                "listed": col(|r| r.listed as f64),
                "list_ms": col(|r| r.list_ms as f64),
                "fetch_ms": col(|r| r.fetch_ms as f64),
                "snapshot_read_ms": col(|r| r.snapshot_read_ms as f64),
                "snapshot_write_ms": col(|r| r.snapshot_write_ms as f64),
                "snapshot_bytes": snapshot_bytes,
                "load_1min": loads,
            }));
            let targets: &[(f64, f64, &str)] = match (f.store, f.hosts, p) {
                ("file://", 10_000, 0) => &[(med, 1.0, "s")],
                ("file://", 100_000, 0) => &[(med, 3.0, "s"), (peak, 256.0, "MiB peak RSS")],
                ("SeaweedFS", 10_000, 0) => &[(med, 2.0, "s")],
                (_, _, 1 | 2) => &[(pct, 10.0, "% of cold")],
                _ => &[],
            };
            for &(v, t, unit) in targets {
                verdicts.push(format!(
                    "{} {} hosts {phase}: {v:.2} {unit} (target < {t} {unit}): {}",
                    f.store,
                    f.hosts,
                    if v < t { "met" } else { "MISSED" }
                ));
            }
        }
        report.notes.push(format!(
            "{} {} hosts: snapshot object {snapshot_bytes} bytes",
            f.store, f.hosts
        ));
    }

    println!("\n{}", table.render());
    for v in &verdicts {
        println!("{v}");
    }
    report.notes.extend(verdicts);
    let path = report.write()?;
    println!("\nresults written to {}", path.display());
    Ok(())
}

fn weed_version() -> String {
    let weed = std::env::var_os("FLEET_WEED")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/weed");
            if venv.is_file() { venv } else { "weed".into() }
        });
    Command::new(weed)
        .arg("version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "version unknown".into())
}

/// Writes the synthetic fleet: manifests and status objects, then `events` event
/// objects per host.
async fn populate(
    bucket: &Bucket,
    publisher: &SecretKey,
    hosts: usize,
    events: usize,
) -> anyhow::Result<()> {
    let now = Timestamp::now();
    synth::populate(bucket, publisher, hosts, now, 64).await?;
    synth::write_events(bucket, 0..hosts, events, now, 64).await?;
    Ok(())
}

/// Makes hosts `offset, offset + 100, …` report again (1% of the fleet).
async fn touch(bucket: &Bucket, hosts: usize, offset: usize) -> anyhow::Result<()> {
    synth::touch(bucket, (offset..hosts).step_by(100), Timestamp::now(), 64).await?;
    Ok(())
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct ChildResult {
    seconds: f64,
    cpu_seconds: f64,
    peak_rss_mib: f64,
    objects_read: usize,
    listed: usize,
    list_ms: u64,
    fetch_ms: u64,
    snapshot_read_ms: u64,
    snapshot_write_ms: u64,
    snapshot_write: String,
    previous: String,
    #[serde(default)]
    load: f64,
    /// CPU seconds the S3 server spent while the child ran (NaN for `file://`).
    #[serde(default)]
    server_cpu_seconds: f64,
}

fn run_child(
    f: &Fleet,
    publisher: &SecretKey,
    phase: usize,
    offset: usize,
) -> anyhow::Result<ChildResult> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        "--child",
        &phase.to_string(),
        &f.url.to_string(),
        &f.hosts.to_string(),
        &offset.to_string(),
    ])
    .env(PUBLIC_KEY_ENV, publisher.public().to_nix_string())
    .env_remove("AWS_SESSION_TOKEN")
    .env_remove("AWS_PROFILE");
    if let Some(c) = &f.reporter_creds {
        cmd.envs(fleet_tests::s3::S3Server::credentials_env(c));
    }
    if let Some(c) = &f.writer_creds {
        cmd.env(WRITER_KEY_ENV, &c.access_key_id)
            .env(WRITER_SECRET_ENV, &c.secret_access_key);
    }
    let run = fleet_bench::run_once(&mut cmd)?;
    let line = run.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("child printed {:?}", run.stdout))
}

/// One measured refresh: `--child PHASE URL HOSTS OFFSET` (the same-process warm
/// phase makes hosts `OFFSET + 100k` report before it; in every phase, hosts whose
/// number ends in `1..=OFFSET` have reported again by then).
fn child(args: &[String]) -> anyhow::Result<()> {
    let [phase, url, hosts, offset] = args else {
        bail!("--child takes PHASE URL HOSTS OFFSET");
    };
    let (phase, hosts, offset): (usize, usize, usize) =
        (phase.parse()?, hosts.parse()?, offset.parse()?);
    let url = BucketUrl::parse(url)?;
    let public = std::env::var(PUBLIC_KEY_ENV).context(PUBLIC_KEY_ENV)?;
    let trusted = TrustedKeys::new([fleet_core::PublicKey::parse(&public, PUBLIC_KEY_ENV)?]);
    let rt = tokio::runtime::Runtime::new()?;
    // The reporter's own credentials come from the standard AWS environment.
    let bucket = Bucket::open(&url, &BucketOptions::default())?;
    let writer = match std::env::var(WRITER_KEY_ENV) {
        Ok(id) => Bucket::open(
            &url,
            &BucketOptions {
                credentials: Some(S3Credentials {
                    access_key_id: id,
                    secret_access_key: std::env::var(WRITER_SECRET_ENV)?,
                    session_token: None,
                }),
                ..Default::default()
            },
        )?,
        Err(_) => bucket.clone(),
    };
    let reporter = Reporter::new(
        bucket,
        ReporterOptions {
            trusted,
            cache_ttl: Duration::ZERO,
            // Writing a large fleet takes minutes; its hosts must not turn stale.
            stale_after: SignedDuration::from_hours(24),
            ..Default::default()
        },
    );
    if phase == 1 {
        rt.block_on(reporter.refresh())?;
        rt.block_on(touch(&writer, hosts, offset))?;
    }
    reset_peak_rss();
    let (t, cpu) = (Instant::now(), own_cpu_seconds());
    let f = rt.block_on(reporter.refresh())?;
    let seconds = t.elapsed().as_secs_f64();
    let cpu_seconds = own_cpu_seconds() - cpu;
    let peak = own_peak_rss_bytes().unwrap_or(0) as f64 / 1048576.0;

    ensure!(
        f.hosts.len() == hosts,
        "{} hosts shown, not {hosts}",
        f.hosts.len()
    );
    for (i, row) in f.hosts.iter().enumerate() {
        // Hosts made to report again (by this run or an earlier one) are up to date.
        let want = if (1..=offset).contains(&(i % 100)) {
            HostState::UpToDate
        } else {
            synth::planned_state(i)
        };
        ensure!(
            row.state == want,
            "{}: {} where {} was planned",
            row.host,
            row.state,
            want
        );
        ensure!(
            row.flags.is_empty(),
            "{}: flagged: {:?}",
            row.host,
            row.flags
        );
    }
    let s = &f.stats;
    // Warm refreshes follow the change feed (the touched hosts wrote markers).
    ensure!(
        phase == 0 || s.listing == "feed",
        "a warm refresh listed the fleet ({}) instead of reading the change feed",
        s.listing
    );
    let r = ChildResult {
        seconds,
        cpu_seconds,
        peak_rss_mib: peak,
        objects_read: s.fetched_status + s.fetched_manifests,
        listed: s.listed,
        list_ms: s.list_ms,
        fetch_ms: s.fetch_ms,
        snapshot_read_ms: s.snapshot_read_ms,
        snapshot_write_ms: s.snapshot_write_ms,
        snapshot_write: s.snapshot_write.clone(),
        previous: s.previous.to_owned(),
        // Both filled in by the parent.
        load: 0.0,
        server_cpu_seconds: 0.0,
    };
    ensure!(
        r.snapshot_write == "written" || r.snapshot_write == "delta",
        "the snapshot was not written ({}): the next phase would not start from it",
        r.snapshot_write
    );
    let want_prev = ["none", "memory", "bucket"][phase.min(2)];
    ensure!(
        r.previous == want_prev,
        "the refresh started from {:?}, not {want_prev:?}",
        r.previous
    );
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}
