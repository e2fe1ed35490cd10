//! `bench-publish`: `fleet-publish push` against `nix copy`, on the same machine, in
//! one run (see bench/README.md).
//!
//! Cases, each run `--runs N` times (default 5) into fresh directories:
//!
//! 1. a ~200 MB closure of 20 store paths of incompressible data
//!    (`fleet_tests::nix::BULK_LARGE`): `fleet-publish push --bucket file://A` versus
//!    `nix copy --to 'file://B?compression=zstd&secret-key=K'`, both zstd level 3,
//!    both signing;
//! 2. the same size of compressible text (`fleet_bench::text_closure`, about 2.6x
//!    with zstd), closer to real closures: here compression dominates;
//! 3. the same for a 1,000-path closure of tiny paths (`BULK_MANY`): per-path cost;
//! 4. a no-op republish of the 1,000-path closure (everything already in the cache).
//!
//! Apples to apples: Nix 2.8's `compression=zstd` goes through libarchive's zstd
//! filter at its default level, 3 (Nix passes no level unless `compression-level` is
//! set), and `fleet-publish` uses level 3; both sign. The table shows each tool's NAR
//! file bytes, which agree when the levels do.
//!
//! Each run's CPU time (user + system of the tool and the processes it waited for,
//! split with `getrusage(RUSAGE_CHILDREN)`) is reported beside the wall time, with the
//! ratio to `nix copy`'s: on a shared machine it is the robust comparison.
//!
//! Targets: push at least 1.5x faster than `nix copy` on case 1, never more CPU time;
//! case 4 under 1 s. Prints a table and writes `bench/results/bench-publish.json`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, ensure};
use fleet_bench::{
    Report, Run, Stats, Table, children_cpu_seconds, load_average, median, run_once, runs_arg,
    sibling_binary, stats, sync_disks, text_closure, work_dir_note,
};
use fleet_tests::nix::{BULK_LARGE, BULK_MANY, Closure, Nix};

fn main() {
    if let Err(e) = real_main() {
        eprintln!("bench-publish: error: {e:#}");
        std::process::exit(1);
    }
}

/// One run and its CPU time split into user and system seconds.
struct Measured {
    run: Run,
    user_s: f64,
    sys_s: f64,
}

/// Runs `cmd` once ([`run_once`]), splitting its CPU time with
/// [`children_cpu_seconds`] (this benchmark runs one child at a time).
fn measured(cmd: &mut Command) -> anyhow::Result<Measured> {
    let (u0, s0) = children_cpu_seconds();
    let run = run_once(cmd)?;
    let (u1, s1) = children_cpu_seconds();
    Ok(Measured {
        run,
        user_s: u1 - u0,
        sys_s: s1 - s0,
    })
}

/// The runs of one tool on one case.
#[derive(Default)]
struct Runs {
    runs: Vec<Run>,
    cpu_s: Vec<f64>,
    user_s: Vec<f64>,
    sys_s: Vec<f64>,
}

impl Runs {
    fn push(&mut self, m: Measured) {
        self.cpu_s.push(m.run.cpu_seconds);
        self.user_s.push(m.user_s);
        self.sys_s.push(m.sys_s);
        self.runs.push(m.run);
    }
}

fn count_narinfos(cache: &Path) -> usize {
    std::fs::read_dir(cache)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".narinfo"))
                .count()
        })
        .unwrap_or(0)
}

/// Total size of the NAR files under `dir` (a cache's `nar/`).
fn nar_file_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn real_main() -> anyhow::Result<()> {
    let runs = runs_arg(
        "bench-publish",
        &std::env::args().skip(1).collect::<Vec<_>>(),
        5,
    )?;
    let publish = sibling_binary("fleet-publish")?;
    let nix = Nix::new()?;
    let work = tempfile::Builder::new()
        .prefix("bench-publish-")
        .tempdir()?;
    let sk = work.path().join("cache.secret");
    let pk = work.path().join("cache.public");
    let out = Command::new(&publish)
        .args(["keygen", "--name", "bench-cache-1", "--secret-out"])
        .arg(&sk)
        .arg("--public-out")
        .arg(&pk)
        .output()?;
    ensure!(
        out.status.success(),
        "keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    eprintln!("building the fixture closures (once per machine)…");
    let load_before = load_average();
    let large = nix.bulk_closure(BULK_LARGE, "bench")?;
    let text = text_closure(&nix, BULK_LARGE.n_paths, BULK_LARGE.total_bytes, "bench")?;
    let many = nix.bulk_closure(BULK_MANY, "bench")?;
    let bytes_of = |c: &Closure| -> anyhow::Result<u64> {
        let info = nix.path_info_json(None, &c.paths)?;
        Ok(info
            .as_array()
            .context("path-info output")?
            .iter()
            .filter_map(|i| i["narSize"].as_u64())
            .sum())
    };
    let large_bytes = bytes_of(&large)?;
    let text_bytes = bytes_of(&text)?;
    let many_bytes = bytes_of(&many)?;

    let fresh = |tag: &str, i: usize| work.path().join(format!("{tag}-{i}"));
    let push_cmd = |dir: &Path, top: &str| {
        let mut c = Command::new(&publish);
        c.env("NIX_CONFIG", fleet_tests::nix::NIX_CONFIG)
            .args(["push", "--bucket"])
            .arg(format!("file://{}", dir.display()))
            .arg("--cache-key")
            .arg(&sk)
            .arg(top);
        c
    };
    let nix_copy_cmd = |dir: &Path, top: &str| {
        let mut c = nix.command("nix");
        c.args(["copy", "--to"])
            .arg(format!(
                "file://{}?compression=zstd&secret-key={}",
                dir.display(),
                sk.display()
            ))
            .arg(top);
        c
    };

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
        "user s",
        "sys s",
        "peak RSS MiB",
        "vs nix copy",
        "nix copy CPU / CPU",
    ]);
    let mut report = Report::new("bench-publish");
    report.notes.push(nix.version()?);
    report.notes.push(work_dir_note(work.path()));
    report.notes.push(format!(
        "{runs} runs per case, the two tools interleaved, sync(2) before each run; file:// \
         targets on the same disk; page cache warm (the sources are read once before measuring)"
    ));

    // `base`: the nix copy measurement to compare with; `None` for a baseline row
    // (`baseline`) or a case nix copy has no counterpart for.
    let mut add = |case: &str,
                   tool: &str,
                   c: &Closure,
                   nar: u64,
                   file: Option<u64>,
                   s: &Stats,
                   cpu: &Runs,
                   base: Option<&Stats>,
                   baseline: bool| {
        let ratio = base.map(|b| b.median_s / s.median_s);
        // CPU time (user + system of the tool and the processes it waited for, from
        // wait4) is what a loaded machine inflates least: the robust comparison.
        let cpu_ratio = base.map(|b| b.median_cpu_s / s.median_cpu_s);
        table.row(vec![
            case.into(),
            tool.into(),
            c.paths.len().to_string(),
            format!("{:.1}", nar as f64 / 1048576.0),
            file.map_or("-".into(), |f| format!("{:.1}", f as f64 / 1048576.0)),
            format!("{:.3}", s.median_s),
            format!("{:.3}", s.min_s),
            format!("{:.3}", s.max_s),
            format!("{:.3}", s.median_cpu_s),
            format!("{:.3}", median(&cpu.user_s)),
            format!("{:.3}", median(&cpu.sys_s)),
            format!("{:.1}", s.peak_rss_mib),
            match (ratio, baseline) {
                (Some(r), _) => format!("{r:.2}x faster"),
                (None, true) => "baseline".into(),
                (None, false) => "-".into(),
            },
            match (cpu_ratio, baseline) {
                (Some(r), _) => format!("{r:.2}x"),
                (None, true) => "baseline".into(),
                (None, false) => "-".into(),
            },
        ]);
        report.rows.push(serde_json::json!({
            "case": case, "tool": tool, "paths": c.paths.len(), "nar_bytes": nar,
            "file_bytes": file,
            "median_s": s.median_s, "min_s": s.min_s, "max_s": s.max_s,
            "seconds": s.seconds, "median_cpu_s": s.median_cpu_s, "peak_rss_mib": s.peak_rss_mib,
            "speedup_vs_nix_copy": ratio,
            "cpu_seconds": cpu.cpu_s, "user_seconds": cpu.user_s, "sys_seconds": cpu.sys_s,
            "median_user_s": median(&cpu.user_s), "median_sys_s": median(&cpu.sys_s),
            "cpu_ratio_vs_nix_copy": cpu_ratio,
        }));
    };

    for (case, closure, nar) in [
        ("push ~200 MB random, 20 paths", &large, large_bytes),
        ("push ~200 MB text, 20 paths", &text, text_bytes),
        ("push 1,000 tiny paths", &many, many_bytes),
    ] {
        let top = closure.top.to_string();
        // Warm the page cache so neither tool pays for the first read.
        for p in &closure.paths {
            nix.dump(p)?;
        }
        eprintln!("{case}: nix copy and fleet-publish push, {runs} runs each, interleaved…");
        let id = closure.top.hash();
        let (nix_tag, fleet_tag) = (format!("nix-{id}"), format!("fleet-{id}"));
        let (mut nix_runs, mut fleet_runs) = (Runs::default(), Runs::default());
        for i in 0..runs {
            // Alternate which tool goes first, and flush the disk before each, so
            // neither pays for the other's writeback.
            let mut order = [true, false];
            if i % 2 == 1 {
                order.reverse();
            }
            for is_nix in order {
                sync_disks();
                if is_nix {
                    let mut c = nix_copy_cmd(&fresh(&nix_tag, i), &top);
                    nix_runs.push(measured(&mut c).with_context(|| format!("{case}: nix copy"))?);
                } else {
                    let mut c = push_cmd(&fresh(&fleet_tag, i), &top);
                    fleet_runs
                        .push(measured(&mut c).with_context(|| format!("{case}: fleet-publish"))?);
                }
            }
            ensure!(
                count_narinfos(&fresh(&nix_tag, i)) == closure.paths.len(),
                "nix copy run {i} wrote an incomplete cache"
            );
            ensure!(
                count_narinfos(&fresh(&fleet_tag, i).join("cache")) == closure.paths.len(),
                "fleet-publish run {i} wrote an incomplete cache"
            );
        }
        let base = stats(
            &format!("{case} nix copy"),
            std::mem::take(&mut nix_runs.runs),
        );
        let ours = stats(
            &format!("{case} fleet-publish"),
            std::mem::take(&mut fleet_runs.runs),
        );
        // Same codec and level on both sides: the NAR files come out the same size.
        let nix_files = nar_file_bytes(&fresh(&nix_tag, runs - 1).join("nar"));
        let fleet_files = nar_file_bytes(&fresh(&fleet_tag, runs - 1).join("cache/nar"));
        add(
            case,
            "nix copy (zstd)",
            closure,
            nar,
            Some(nix_files),
            &base,
            &nix_runs,
            None,
            true,
        );
        add(
            case,
            "fleet-publish push",
            closure,
            nar,
            Some(fleet_files),
            &ours,
            &fleet_runs,
            Some(&base),
            false,
        );
        if !std::ptr::eq(closure, &many) {
            // Keep the disk use down: only the 1,000-path caches are needed again.
            for i in 0..runs {
                let _ = std::fs::remove_dir_all(fresh(&nix_tag, i));
                let _ = std::fs::remove_dir_all(fresh(&fleet_tag, i));
            }
        }
    }

    // No-op republish: the cache from the last 1,000-path run already holds everything.
    let target = fresh(&format!("fleet-{}", many.top.hash()), runs - 1);
    let top = many.top.to_string();
    sync_disks();
    let mut noop_runs = Runs::default();
    for i in 0..runs {
        noop_runs.push(
            measured(&mut push_cmd(&target, &top))
                .with_context(|| format!("no-op republish, run {}", i + 1))?,
        );
    }
    let noop = stats("no-op republish", std::mem::take(&mut noop_runs.runs));
    let last = noop
        .last
        .as_ref()
        .map(|r| r.stdout.clone())
        .unwrap_or_default();
    ensure!(
        last.contains(" 0 uploaded"),
        "the no-op republish uploaded something: {last}"
    );
    add(
        "no-op republish, 1,000 paths",
        "fleet-publish push",
        &many,
        many_bytes,
        None,
        &noop,
        &noop_runs,
        None,
        false,
    );
    report.finish(&table, load_before)
}
