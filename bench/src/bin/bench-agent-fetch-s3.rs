//! `bench-agent-fetch-s3`: the agent's fetch from an S3 bucket against what a user
//! would pick instead, `nix copy --from http://…` reading the same bucket's cache as
//! a public-read HTTP binary cache, both through a proxy that shapes the link (see
//! bench/README.md).
//!
//! Setup, once: a private SeaweedFS (`weed mini`, the test harness's
//! [`S3Server`]), one bucket; the three closures of `bench-agent-fetch` (20 paths of
//! incompressible data, the same size of text, 1,000 tiny paths) pushed to its
//! `cache/` by `fleet_publish::push` (zstd, signed), as `fleet-publish` does; the
//! bucket policy `fleet_core::iam::public_cache_policy` (anonymous `GET` of
//! `cache/*` only), so Nix reads `http://…/<bucket>/cache`; and an IAM user with the
//! agent policy of one host, whose keys the fetch uses, as an agent would.
//!
//! Then per link profile ([`Link::WAN`]: 20 ms RTT, 100 Mbit/s; [`Link::LAN`]: 1 ms,
//! 1 Gbit/s) a [`ShapedProxy`] in front of SeaweedFS, and per case `--runs N` runs of
//! each tool, interleaved (run `i` starts with a different tool), `sync(2)` before
//! each, each into a fresh chroot store:
//!
//! - `nix copy --from http://PROXY/BUCKET/cache` with `require-sigs` and the cache's
//!   public key only (and a fresh `XDG_CACHE_HOME`, so Nix's narinfo disk cache
//!   never answers for the network);
//! - the agent's fetch (`fleet_agent::fetch::fetch_closure`, in a child process:
//!   `bench-agent-fetch --worker`) over `s3://BUCKET?endpoint=http://PROXY`:
//!   unpacked into the store (the default), staged, staged with import in waves, and
//!   through the verifying substituter (skipped for the 1,000-path case unless `--all-modes`: it takes
//!   about a minute a run there even without a shaped link, see performance.md).
//!
//! The fleet worker reports its own peak RSS (`VmHWM`, its `nix` children excluded);
//! a child's `wait4` peak RSS is not shown, as on Linux it starts from this process's
//! own size at `fork` (SeaweedFS's harness and the runtime), not the child's.
//!
//! Prints a table (ratios are `nix copy` seconds / fleet seconds: above 1 fleet is
//! faster) and writes `bench/results/bench-agent-fetch-s3.json`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use fleet_bench::{
    Report, Stats, Table, interleaved, load_average, sibling_binary, text_closure, worker_output,
};
use fleet_core::iam::Role;
use fleet_core::keys::{PublicKey, SecretKey};
use fleet_core::{HostName, StorePath};
use fleet_tests::nix::{BULK_MANY, BulkOptions, Closure, Nix};
use fleet_tests::s3::{S3Server, ServerKind, store_url_at};
use fleet_tests::shaped_proxy::{Link, ShapedProxy};

const USAGE: &str = "usage: bench-agent-fetch-s3 [--runs N] [--size MB] [--link wan|lan|both] [--all-modes] [--baseline-worker PATH]   (see bench/README.md)";

/// Command-line options.
struct Options {
    /// Runs per case and tool.
    runs: usize,
    /// Size of the two bulk closures, in bytes.
    size: u64,
    /// Link profiles to measure, in order.
    links: Vec<(&'static str, Link)>,
    /// Also run the substituter on the 1,000-path case.
    all_modes: bool,
    /// Another build's `bench-agent-fetch`, run staged beside this build's, for a
    /// before/after of a change to the fetch in the same run.
    baseline_worker: Option<PathBuf>,
}

fn parse_args(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        runs: 2,
        size: 200_000_000,
        links: vec![("WAN", Link::WAN), ("LAN", Link::LAN)],
        all_modes: false,
        baseline_worker: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .with_context(|| format!("{a} needs {what}\n{USAGE}"))
                .cloned()
        };
        match a.as_str() {
            "--runs" => {
                let v = value("a number of runs")?;
                o.runs = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .with_context(|| format!("--runs {v:?}: give a whole number above 0"))?;
            }
            "--size" => {
                let v = value("a size in MB")?;
                let mb: u64 = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .with_context(|| format!("--size {v:?}: give whole MB from 1 to 10000"))?;
                o.size = mb * 1_000_000;
            }
            "--link" => {
                o.links = match value("wan, lan or both")?.as_str() {
                    "wan" => vec![("WAN", Link::WAN)],
                    "lan" => vec![("LAN", Link::LAN)],
                    "both" => vec![("WAN", Link::WAN), ("LAN", Link::LAN)],
                    other => bail!("--link {other:?}: give wan, lan or both\n{USAGE}"),
                }
            }
            "--all-modes" => o.all_modes = true,
            "--baseline-worker" => {
                let p = PathBuf::from(value("the path of another build's bench-agent-fetch")?);
                ensure!(
                    p.is_file(),
                    "--baseline-worker {}: no such file",
                    p.display()
                );
                o.baseline_worker = Some(p);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(o)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = real_main(&args) {
        eprintln!("bench-agent-fetch-s3: error: {e:#}");
        std::process::exit(1);
    }
}

/// One fleet import mode: its label and the worker's flag.
const FLEET_MODES: [(&str, Option<&str>); 4] = [
    ("fleet fetch, unpack (default)", Some("--unpack")),
    ("fleet fetch, staged", Some("--staged")),
    ("fleet fetch, staged, waves", Some("--waves")),
    ("fleet fetch, substituter", Some("--substituter")),
];

fn real_main(args: &[String]) -> anyhow::Result<()> {
    let o = parse_args(args)?;
    let worker = sibling_binary("bench-agent-fetch")?;
    // (label, worker flag, worker binary) of each fleet tool.
    let mut fleet_tools: Vec<(String, Option<&str>, &Path)> = FLEET_MODES
        .iter()
        .map(|(label, flag)| ((*label).to_owned(), *flag, worker.as_path()))
        .collect();
    if let Some(b) = &o.baseline_worker {
        fleet_tools.push((
            "fleet fetch, staged, baseline build".to_owned(),
            Some("--staged"),
            b.as_path(),
        ));
    }
    let nix = Nix::new()?;
    let work = tempfile::Builder::new()
        .prefix("bench-agent-fetch-s3-")
        .tempdir()?;
    let (sk_file, pk_file) = nix.generate_binary_cache_key("bench-s3-cache-1", work.path())?;
    let sk = SecretKey::parse(
        &std::fs::read_to_string(&sk_file)
            .with_context(|| format!("reading {}", sk_file.display()))?,
        &sk_file.display().to_string(),
    )?;
    let trusted = PublicKey::load(&pk_file)?.to_nix_string();
    let load_before = load_average();

    eprintln!("building the fixture closures (once per machine and size)…");
    let bulk = BulkOptions {
        n_paths: 20,
        total_bytes: o.size,
    };
    let large = nix.bulk_closure(bulk, "bench")?;
    let text = text_closure(&nix, bulk.n_paths, bulk.total_bytes, "bench")?;
    let many = nix.bulk_closure(BULK_MANY, "bench")?;
    let mb = o.size / 1_000_000;
    let cases: Vec<(String, &Closure, &str)> = vec![
        (format!("~{mb} MB random, 20 paths"), &large, "large"),
        (format!("~{mb} MB text, 20 paths"), &text, "text"),
        ("1,000 tiny paths".to_owned(), &many, "many"),
    ];

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    eprintln!("starting SeaweedFS and publishing the closures to its bucket…");
    let server = rt.block_on(S3Server::start(ServerKind::SeaweedFs))?;
    let (bucket, agent_creds) = rt.block_on(async {
        let bucket = server.new_bucket("fetch-s3").await?;
        let admin = server.bucket(&bucket, "", &server.admin_credentials())?;
        for (case, c, _) in &cases {
            fleet_publish::push(
                &admin,
                &fleet_core::nixcli::Nix::default_store(),
                &sk,
                std::slice::from_ref(&c.top),
                &fleet_publish::PushSettings::default(),
            )
            .await
            .with_context(|| format!("publishing the closure of case {case}"))?;
        }
        // Anonymous GET of cache/* only: what a public HTTP binary cache needs.
        let policy = fleet_core::iam::public_cache_policy(&bucket, "")?;
        server.put_bucket_policy(&bucket, &policy).await?;
        let host = HostName::new("bench-1")?;
        let creds = server.user_for(&Role::Agent(host), &bucket, "").await?;
        anyhow::Ok((bucket, creds))
    })?;

    let mut table = Table::new(&[
        "link",
        "case",
        "tool",
        "paths",
        "median s",
        "min s",
        "max s",
        "CPU s",
        "fetch RSS MiB",
        "nix s / fleet s",
    ]);
    let mut report = Report::new("bench-agent-fetch-s3");
    report.notes.push(nix.version()?);
    report.notes.push(format!(
        "{} runs per case and tool, interleaved, sync(2) before each run, fresh chroot stores; SeaweedFS (weed mini) on loopback behind a link-shaping proxy (fleet_tests::shaped_proxy: RTT per segment, one bandwidth cap per direction shared by all connections, no loss or slow start); cache written by fleet_publish::push (zstd level 3, signed)",
        o.runs
    ));
    report.notes.push(
        "nix: `nix copy --from http://PROXY/BUCKET/cache` (anonymous, the bucket's public_cache_policy), require-sigs with the cache key only, a fresh XDG_CACHE_HOME each run, Nix's default http-connections (25) and substitution settings; fleet: fetch_closure (bench-agent-fetch --worker) over s3:// with the agent policy's IAM keys; ratio = nix median / fleet median (above 1: fleet is faster); CPU s is the child's user + system time, its nix children included".into(),
    );
    if !o.all_modes {
        report.notes.push(
            "the substituter mode is not run on the 1,000-path case (--all-modes runs it)".into(),
        );
    }

    let fresh = |tag: &str, i: usize| -> PathBuf { work.path().join(format!("{tag}-{i}")) };
    for (link_name, link) in &o.links {
        let proxy = ShapedProxy::start(server.endpoint().trim_start_matches("http://"), *link)?;
        let link_label = format!("{link_name} ({})", link.describe());
        let cache_url = format!("{}/{bucket}/cache", proxy.endpoint());
        let store_url = store_url_at(&proxy.endpoint(), &bucket, "")?.to_string();
        for (case, closure, tag) in &cases {
            let modes: Vec<_> = fleet_tools
                .iter()
                .filter(|(_, flag, _)| {
                    *flag != Some("--substituter") || *tag != "many" || o.all_modes
                })
                .collect();
            eprintln!(
                "{link_label}, {case}: nix copy and {} fleet modes, {} runs each, interleaved…",
                modes.len(),
                o.runs
            );
            let nix_tag = format!("{link_name}-nix-{tag}");
            let mut nix_cmd = |i: usize| {
                let store = fresh(&nix_tag, i);
                let xdg = store.with_extension("xdg-cache");
                std::fs::create_dir_all(&xdg)?;
                let mut c = nix.command("nix");
                c.env("XDG_CACHE_HOME", &xdg)
                    .args(["copy", "--from", &cache_url, "--to"])
                    .arg(&store)
                    .args(["--option", "trusted-public-keys", &trusted])
                    .args(["--option", "require-sigs", "true"])
                    .arg(closure.top.to_string());
                Ok(c)
            };
            let fleet_tags: Vec<String> = (0..modes.len())
                .map(|m| format!("{link_name}-fleet{m}-{tag}"))
                .collect();
            let mut fleet_cmds: Vec<Box<fleet_bench::MakeCommand<'_>>> = modes
                .iter()
                .zip(&fleet_tags)
                .map(|((_, flag, worker), t)| {
                    let (store_url, pk, creds) = (&store_url, &pk_file, &agent_creds);
                    let top = &closure.top;
                    let f = move |i: usize| {
                        let store = fresh(t, i);
                        Ok(fleet_cmd(
                            worker,
                            store_url,
                            top,
                            pk,
                            &store,
                            &S3Server::credentials_env(creds),
                            *flag,
                        ))
                    };
                    Box::new(f) as Box<fleet_bench::MakeCommand<'_>>
                })
                .collect();
            let mut tools: Vec<(&str, &mut fleet_bench::MakeCommand<'_>)> =
                vec![("nix copy --from http://", &mut nix_cmd)];
            for ((label, _, _), cmd) in modes.iter().zip(fleet_cmds.iter_mut()) {
                tools.push((label, cmd.as_mut()));
            }
            let measured =
                interleaved(o.runs, &mut tools).with_context(|| format!("{link_label}, {case}"))?;
            drop(tools);
            for i in 0..o.runs {
                for t in std::iter::once(&nix_tag).chain(&fleet_tags) {
                    ensure!(
                        nix.is_valid_in(&fresh(t, i), &closure.top)?,
                        "{case}: run {i} into {t} did not import the closure"
                    );
                }
            }
            let base = &measured[0];
            add_row(
                &mut table,
                &mut report,
                (&link_label, case, closure),
                base,
                None,
                None,
            );
            for ((label, _, _), s) in modes.iter().zip(&measured[1..]) {
                let out = worker_output(s)?;
                ensure!(
                    out["fetched"].as_u64() == Some(closure.paths.len() as u64),
                    "{label} did not download every path: {out}"
                );
                let ratio = Some(base.median_s / s.median_s);
                let rss = out["self_peak_rss_bytes"].as_u64();
                add_row(
                    &mut table,
                    &mut report,
                    (&link_label, case, closure),
                    s,
                    rss,
                    ratio,
                );
            }
            // Each run wrote a store: free the disk before the next case.
            for i in 0..o.runs {
                for t in std::iter::once(&nix_tag).chain(&fleet_tags) {
                    let store = fresh(t, i);
                    let _ = std::fs::remove_dir_all(&store);
                    let _ = std::fs::remove_dir_all(store.with_extension("staging"));
                    let _ = std::fs::remove_dir_all(store.with_extension("xdg-cache"));
                }
            }
        }
    }
    drop(server);
    report.finish(&table, load_before)
}

/// `bench-agent-fetch --worker` fetching `top` from `store_url` into `store` with the
/// agent's credentials, in import mode `flag`.
fn fleet_cmd(
    worker: &Path,
    store_url: &str,
    top: &StorePath,
    pk: &Path,
    store: &Path,
    creds: &[(&str, String)],
    flag: Option<&str>,
) -> Command {
    let mut c = Command::new(worker);
    c.env("NIX_CONFIG", fleet_tests::nix::NIX_CONFIG)
        .env("NIX_USER_CONF_FILES", "")
        .envs(creds.iter().map(|(k, v)| (k, v)))
        .arg("--worker")
        .arg(store_url)
        .arg(top.to_string())
        .arg(pk)
        .arg(store)
        .arg(store.with_extension("staging"));
    c.args(flag);
    c
}

/// Adds the row of one tool (`s`) of one case (`link`, `case`, closure `c`).
fn add_row(
    table: &mut Table,
    report: &mut Report,
    (link, case, c): (&str, &str, &Closure),
    s: &Stats,
    fetch_rss: Option<u64>,
    ratio: Option<f64>,
) {
    table.row(vec![
        link.into(),
        case.into(),
        s.label.clone(),
        c.paths.len().to_string(),
        format!("{:.3}", s.median_s),
        format!("{:.3}", s.min_s),
        format!("{:.3}", s.max_s),
        format!("{:.3}", s.median_cpu_s),
        fetch_rss.map_or("-".into(), |b| format!("{:.1}", b as f64 / 1048576.0)),
        ratio.map_or("baseline".into(), |r| format!("{r:.2}x")),
    ]);
    report.rows.push(serde_json::json!({
        "link": link, "case": case, "tool": s.label, "paths": c.paths.len(),
        "median_s": s.median_s, "min_s": s.min_s, "max_s": s.max_s,
        "seconds": s.seconds, "median_cpu_s": s.median_cpu_s,
        "fetch_peak_rss_bytes": fetch_rss, "nix_over_fleet": ratio,
    }));
}
