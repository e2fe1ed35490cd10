//! `bench-agent-fetch`: the agent's fetch pipeline (`fleet_agent::fetch::fetch_closure`:
//! download, verify, import) against a plain
//! `nix copy --from file://…` of the same signed cache into the same kind of store
//! (see bench/README.md).
//!
//! Cases, each run `--runs N` times (default 3) into fresh chroot stores, the tools
//! interleaved (run `i` starts with a different tool) with `sync(2)` before each run:
//!
//! 1. a ~200 MB closure of 20 store paths of incompressible data
//!    (`fleet_tests::nix::BULK_LARGE`), published with
//!    `nix copy --to 'file://…?compression=zstd&secret-key=…'`;
//! 2. the same size of compressible text (`fleet_bench::text_closure`, about 2.6x
//!    with zstd), closer to real closures;
//! 3. 1,000 tiny paths (`BULK_MANY`): per-path cost;
//! 4. a no-op fetch of the 1,000-path closure (already valid: one validity query).
//!
//! Tools per case: `nix copy --from` the bucket's cache (the baseline); `nix copy
//! --no-recursive --from` a signed uncompressed copy of it, which is the staged
//! fetch's import step alone (Nix's share of the staged fetch's time); and the
//! agent's fetch in each of [`FLEET_MODES`]: unpacked into the store in one pass
//! (`ImportVia::Unpack`, the default), staged (`ImportVia::Staging`: verify into a
//! staging cache, then `nix copy` it at the end, or in waves), and through the
//! verifying local substituter (`ImportVia::Substituter`), all in the same run.
//!
//! The fetch runs in a child process (this binary with `--worker`), so wall time and
//! peak RSS are measured the same way for both tools: `wait4` of the child, whose
//! peak RSS covers its own `nix` children (the largest process of the tree). The
//! worker also reports its own peak RSS (`VmHWM`, excluding `nix`): the memory of
//! download + verification, which must stay flat whatever the closure size.
//!
//! `--case large|text|many` (repeatable) runs only those cases.
//!
//! Prints a table and writes `bench/results/bench-agent-fetch.json`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use fleet_agent::fetch::{FetchLimits, FetchRequest, ImportVia, fetch_closure};
use fleet_bench::{
    MakeCommand, Report, Stats, Table, interleaved, load_average, measure, runs_arg, text_closure,
    work_dir_note, worker_output,
};
use fleet_core::keys::PublicKey;
use fleet_core::narinfo::Compression;
use fleet_core::{Bucket, StorePath, TrustedKeys, nixcli};
use fleet_tests::nix::{BULK_LARGE, BULK_MANY, Closure, Nix};

/// The fleet fetches measured, in table order: label, the worker's mode flag, and
/// what it is.
const FLEET_MODES: [(&str, Option<&str>, &str); 4] = [
    (
        "fleet-agent fetch, unpack (default)",
        Some("--unpack"),
        "verify and unpack into the store in one pass, then nix-store --load-db",
    ),
    (
        "fleet-agent fetch, staged",
        Some("--staged"),
        "verify into a staging cache, then nix copy from it",
    ),
    (
        "fleet-agent fetch, staged, import in waves",
        Some("--waves"),
        "the same, nix copy in waves while later paths download",
    ),
    (
        "fleet-agent fetch, substituter",
        Some("--substituter"),
        "NARs streamed through the checks to nix copy over 127.0.0.1",
    ),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("--worker") {
        worker(&args[1..])
    } else {
        real_main(&args)
    };
    if let Err(e) = result {
        eprintln!("bench-agent-fetch: error: {e:#}");
        std::process::exit(1);
    }
}

/// This process's own peak RSS (`VmHWM`), in bytes.
fn self_peak_rss() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("no VmHWM in /proc/self/status")?;
    Ok(kib * 1024)
}

/// `--worker BUCKET_URL TOP PUBLIC_KEY_FILE STORE_DIR STAGING_DIR MODE`: one fetch in
/// one of [`FLEET_MODES`]; prints the report and the peak RSS as JSON.
fn worker(args: &[String]) -> anyhow::Result<()> {
    let (args, via, waves) = match args {
        [rest @ .., last] if last == "--waves" => (rest, ImportVia::Staging, true),
        [rest @ .., last] if last == "--staged" => (rest, ImportVia::Staging, false),
        [rest @ .., last] if last == "--unpack" => (rest, ImportVia::Unpack, false),
        [rest @ .., last] if last == "--substituter" => (rest, ImportVia::Substituter, false),
        _ => bail!(
            "the worker's last argument is its mode: --staged, --waves, --unpack or --substituter"
        ),
    };
    let [bucket, top, pk, store, staging] = args else {
        bail!("--worker needs BUCKET_URL TOP PUBLIC_KEY_FILE STORE_DIR STAGING_DIR MODE");
    };
    let bucket = Bucket::open_url(bucket)?;
    let top = StorePath::new(top)?;
    let trusted = TrustedKeys::new([PublicKey::load(Path::new(pk))?]);
    let nix = nixcli::Nix::with_store(store.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(fetch_closure(FetchRequest {
        bucket: &bucket,
        closure: &top,
        trusted_cache_keys: &trusted,
        nix: &nix,
        staging_dir: Path::new(staging),
        limits: FetchLimits {
            import_in_waves: waves,
            import_via: via,
            ..FetchLimits::default()
        },
    }))?;
    let out = serde_json::json!({
        "fetched": report.fetched.len(),
        "reused": report.reused.len(),
        "already_valid": report.already_valid,
        "narinfos": report.narinfos,
        "bytes_downloaded": report.bytes_downloaded,
        "nar_bytes": report.nar_bytes,
        "self_peak_rss_bytes": self_peak_rss()?,
    });
    println!("{out}");
    Ok(())
}

/// Splits `--case TAG` (repeatable: `large`, `text`, `many`) off the arguments; no
/// `--case` means every case.
fn cases_arg(args: &[String]) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    const TAGS: [&str; 3] = ["large", "text", "many"];
    let (mut cases, mut rest) = (Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--case" {
            let tag = it.next().context("--case needs one of large, text, many")?;
            ensure!(
                TAGS.contains(&tag.as_str()),
                "unknown case {tag:?}: --case takes one of large, text, many"
            );
            cases.push(tag.clone());
        } else {
            rest.push(a.clone());
        }
    }
    Ok((cases, rest))
}

fn real_main(args: &[String]) -> anyhow::Result<()> {
    let (cases, args) = cases_arg(args)?;
    let runs = runs_arg("bench-agent-fetch", &args, 3)?;
    let me = std::env::current_exe().context("locating this binary")?;
    let nix = Nix::new()?;
    let work = tempfile::Builder::new()
        .prefix("bench-agent-fetch-")
        .tempdir()?;
    // For profiling one fetch by hand (a printed `--worker …` command under perf):
    // keep the bucket and the stores, and print each fleet worker's command.
    let keep = std::env::var_os("FLEET_BENCH_KEEP").is_some();
    if keep {
        eprintln!("keeping {} (FLEET_BENCH_KEEP)", work.path().display());
    }
    let (sk, pk) = nix.generate_binary_cache_key("bench-cache-1", work.path())?;
    let trusted = PublicKey::load(&pk)?.to_nix_string();
    let load_before = load_average();

    eprintln!("building the fixture closures (once per machine)…");
    let large = nix.bulk_closure(BULK_LARGE, "bench")?;
    let text = text_closure(&nix, BULK_LARGE.n_paths, BULK_LARGE.total_bytes, "bench")?;
    let many = nix.bulk_closure(BULK_MANY, "bench")?;
    let wanted = |tag: &str| cases.is_empty() || cases.iter().any(|c| c == tag);

    let fresh = |tag: &str, i: usize| -> PathBuf { work.path().join(format!("{tag}-{i}")) };
    let mut table = Table::new(&[
        "case",
        "tool",
        "paths",
        "NAR MiB",
        "file MiB",
        "median s",
        "min s",
        "max s",
        "CPU s",
        "peak RSS MiB (tree)",
        "fetch RSS MiB",
        "vs nix copy",
    ]);
    let mut report = Report::new("bench-agent-fetch");
    report.notes.push(nix.version()?);
    report.notes.push(work_dir_note(work.path()));
    report.notes.push(format!(
        "{runs} runs per case, the tools interleaved, sync(2) before each run; file:// bucket and chroot stores on the same disk; cache written by nix copy (zstd level 3, signed)"
    ));
    report.notes.push(
        "peak RSS (tree) is wait4's ru_maxrss of the measured child: the largest process of its tree, nix included; fetch RSS is the fleet worker's own VmHWM; CPU s is the child's user + system time (its nix children included)".into(),
    );
    for (label, _, what) in FLEET_MODES {
        report.notes.push(format!("{label}: {what}"));
    }
    report.notes.push(
        "`nix copy, import alone` imports a signed uncompressed copy of the cache with --no-recursive, as the staged fetch imports its staging cache: the part of the fleet fetch that is Nix's own work, with nothing verified or downloaded by fleet".into(),
    );

    let fleet_cmd =
        |cache_root: &Path, top: &StorePath, store: &Path, staging: &Path, mode: Option<&str>| {
            let mut c = Command::new(&me);
            c.env("NIX_CONFIG", fleet_tests::nix::NIX_CONFIG)
                .env("NIX_USER_CONF_FILES", "")
                .arg("--worker")
                .arg(format!("file://{}", cache_root.display()))
                .arg(top.to_string())
                .arg(&pk)
                .arg(store)
                .arg(staging);
            c.args(mode);
            if keep {
                eprintln!("worker: {c:?}");
            }
            c
        };

    let mut add = |case: &str,
                   tool: &str,
                   c: &Closure,
                   nar: u64,
                   file: u64,
                   s: &Stats,
                   fetch_rss: Option<u64>,
                   base: Option<&Stats>| {
        let ratio = base.map(|b| b.median_s / s.median_s);
        table.row(vec![
            case.into(),
            tool.into(),
            c.paths.len().to_string(),
            format!("{:.1}", nar as f64 / 1048576.0),
            format!("{:.1}", file as f64 / 1048576.0),
            format!("{:.3}", s.median_s),
            format!("{:.3}", s.min_s),
            format!("{:.3}", s.max_s),
            format!("{:.3}", s.median_cpu_s),
            format!("{:.1}", s.peak_rss_mib),
            fetch_rss.map_or("-".into(), |b| format!("{:.1}", b as f64 / 1048576.0)),
            match ratio {
                Some(r) => format!("{r:.2}x the speed"),
                None => "baseline".into(),
            },
        ]);
        report.rows.push(serde_json::json!({
            "case": case, "tool": tool, "paths": c.paths.len(), "nar_bytes": nar,
            "file_bytes": file,
            "median_s": s.median_s, "min_s": s.min_s, "max_s": s.max_s,
            "seconds": s.seconds, "median_cpu_s": s.median_cpu_s, "peak_rss_mib": s.peak_rss_mib,
            "fetch_peak_rss_bytes": fetch_rss,
            "speed_vs_nix_copy": ratio,
        }));
    };

    for (case, closure, tag) in [
        ("fetch ~200 MB random, 20 paths", &large, "large"),
        ("fetch ~200 MB text, 20 paths", &text, "text"),
        ("fetch 1,000 tiny paths", &many, "many"),
    ] {
        if !wanted(tag) {
            continue;
        }
        // The bucket: <root>/cache, written by nix copy, as the publisher would.
        let bucket_root = work.path().join(format!("bucket-{tag}"));
        let cache = bucket_root.join("cache");
        nix.copy_to_file_cache(
            std::slice::from_ref(&closure.top),
            &cache,
            Some(&sk),
            Compression::Zstd,
        )?;
        // What the agent stages: the same narinfos and signatures, NARs uncompressed.
        let plain = work.path().join(format!("plain-{tag}"));
        nix.copy_to_file_cache(
            std::slice::from_ref(&closure.top),
            &plain,
            Some(&sk),
            Compression::None,
        )?;
        let nar: u64 = {
            let info = nix.path_info_json(None, &closure.paths)?;
            info.as_array()
                .context("path-info output")?
                .iter()
                .filter_map(|i| i["narSize"].as_u64())
                .sum()
        };
        let files = walk(&cache)?;
        let file_bytes: u64 = files
            .iter()
            .filter(|f| f.parent().is_some_and(|d| d.ends_with("nar")))
            .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
            .sum();
        // Warm the page cache so no tool pays for the first read.
        for e in files.iter().chain(walk(&plain)?.iter()) {
            std::fs::read(e)?;
        }
        let cache_url = format!("file://{}", cache.display());
        let plain_url = format!("file://{}", plain.display());

        eprintln!(
            "{case}: nix copy, nix copy of the import alone and fleet-agent fetch, {runs} runs each, interleaved…"
        );
        let (base_tag, floor_tag) = (format!("nix-{tag}"), format!("floor-{tag}"));
        let fleet_tags: Vec<String> = FLEET_MODES
            .iter()
            .map(|(_, mode, _)| format!("fleet{}-{tag}", mode.unwrap_or("")))
            .collect();
        let mut base_cmd = |i: usize| {
            let mut c = nix.command("nix");
            c.args(["copy", "--from", &cache_url, "--to"])
                .arg(fresh(&base_tag, i))
                .args(["--option", "trusted-public-keys", &trusted])
                .args(["--option", "require-sigs", "true"])
                .arg(closure.top.to_string());
            Ok(c)
        };
        let mut floor_cmd = |i: usize| {
            let mut c = nix.command("nix");
            c.args(["copy", "--no-recursive", "--from", &plain_url, "--to"])
                .arg(fresh(&floor_tag, i))
                .args(["--option", "trusted-public-keys", &trusted])
                .args(["--option", "require-sigs", "true"])
                .args(closure.paths.iter().map(|p| p.to_string()));
            Ok(c)
        };
        let mut fleet_runs: Vec<Box<MakeCommand<'_>>> = FLEET_MODES
            .iter()
            .zip(&fleet_tags)
            .map(|((_, mode, _), t)| -> Box<MakeCommand<'_>> {
                let (fleet_cmd, bucket_root, top, fresh) =
                    (&fleet_cmd, &bucket_root, &closure.top, &fresh);
                Box::new(move |i: usize| {
                    let store = fresh(t, i);
                    Ok(fleet_cmd(
                        bucket_root,
                        top,
                        &store,
                        &store.with_extension("staging"),
                        *mode,
                    ))
                })
            })
            .collect();
        let mut tools: Vec<(&str, &mut MakeCommand<'_>)> = vec![
            ("nix copy", &mut base_cmd),
            ("nix copy, import alone", &mut floor_cmd),
        ];
        for ((label, _, _), run) in FLEET_MODES.iter().zip(fleet_runs.iter_mut()) {
            tools.push((label, &mut **run));
        }
        let measured = interleaved(runs, &mut tools).with_context(|| case.to_owned())?;
        drop(tools);
        let [base, floor, fleet @ ..] = &measured[..] else {
            bail!("{case}: expected {} measurements", 2 + FLEET_MODES.len());
        };
        for i in 0..runs {
            for t in [&base_tag, &floor_tag].into_iter().chain(&fleet_tags) {
                ensure!(
                    nix.is_valid_in(&fresh(t, i), &closure.top)?,
                    "{case}: run {i} into {t} did not import the closure"
                );
            }
        }
        add(
            case,
            "nix copy --from file://",
            closure,
            nar,
            file_bytes,
            base,
            None,
            None,
        );
        add(
            case,
            "nix copy, import alone",
            closure,
            nar,
            nar,
            floor,
            None,
            Some(base),
        );
        for ((label, _, _), stats) in FLEET_MODES.iter().zip(fleet) {
            let out = worker_output(stats)?;
            ensure!(
                out["fetched"].as_u64() == Some(closure.paths.len() as u64),
                "{label} did not download every path: {out}"
            );
            add(
                case,
                label,
                closure,
                nar,
                file_bytes,
                stats,
                out["self_peak_rss_bytes"].as_u64(),
                Some(base),
            );
        }

        if tag == "many" {
            // No-op: the closure is valid in the last run's store.
            let store = fresh(&fleet_tags[0], runs - 1);
            let noop = measure("no-op fetch", runs, |_| {
                Ok(fleet_cmd(
                    &bucket_root,
                    &closure.top,
                    &store,
                    &store.with_extension("staging"),
                    FLEET_MODES[0].1,
                ))
            })?;
            let out = worker_output(&noop)?;
            ensure!(
                out["fetched"].as_u64() == Some(0) && out["narinfos"].as_u64() == Some(0),
                "the no-op fetch downloaded something: {out}"
            );
            add(
                "no-op fetch, 1,000 paths",
                "fleet-agent fetch",
                closure,
                0,
                0,
                &noop,
                out["self_peak_rss_bytes"].as_u64(),
                None,
            );
        }
        // Each run wrote a store and a cache copy: free the disk before the next case.
        for i in 0..runs {
            for t in [&base_tag, &floor_tag].into_iter().chain(&fleet_tags) {
                let _ = std::fs::remove_dir_all(fresh(t, i));
                let _ = std::fs::remove_dir_all(fresh(t, i).with_extension("staging"));
            }
        }
    }
    if keep {
        std::mem::forget(work);
    }
    report.finish(&table, load_before)
}

fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}
