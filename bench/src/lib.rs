//! `fleet-bench`: the measuring kit shared by fleet's benchmark binaries
//! (`bench-publish`, `bench-agent-fetch`, `bench-agent-idle`, `bench-reporter`).
//!
//! - [`run_once`] runs one command and measures its wall time and the peak resident
//!   memory of the child process itself (from `wait4`'s `rusage`, so each run is
//!   measured on its own, unlike `RUSAGE_CHILDREN`, which keeps the maximum of all);
//! - [`measure`] runs a command `n` times (a fresh command per run, built by a
//!   closure that may prepare a clean directory) and keeps the median, minimum and
//!   maximum wall time and the highest peak RSS ([`Stats`]);
//! - [`Table`] prints rows as an aligned text table;
//! - [`Report`] is written as JSON to `bench/results/<name>.json` (the latest run,
//!   git-ignored; runs the docs cite are committed under `bench/results/<date>/`):
//!   `{"bench": name, "cpus": n, "rows": [{…}, …], "notes": […]}`, one object per
//!   table row with the same keys as the columns.
//!
//! - [`load_average`] reads the machine's load, to report next to numbers measured on
//!   a shared machine; [`reset_peak_rss`], [`own_peak_rss_bytes`] and
//!   [`own_cpu_seconds`] measure the peak memory and CPU time of one phase inside a
//!   process (a child that times its own work).
//!
//! Benchmarks are not tests: they print numbers and write JSON; they assert only
//! that the measured commands succeeded.

#![warn(missing_docs)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use serde::Serialize;

/// One measured run.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// Wall time from spawn to exit.
    pub seconds: f64,
    /// Peak resident set size of the child process, in bytes.
    pub peak_rss_bytes: u64,
    /// CPU time of the child (user + system), seconds.
    pub cpu_seconds: f64,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// How it exited.
    #[serde(skip)]
    pub status: Option<ExitStatus>,
}

/// Runs `cmd` once; standard output and error are captured. Fails if the command
/// cannot start or exits unsuccessfully (with its stderr in the message).
pub fn run_once(cmd: &mut Command) -> anyhow::Result<Run> {
    use std::os::unix::process::ExitStatusExt;
    let describe = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {describe}"))?;
    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let mut out = child.stdout.take().context("stdout pipe")?;
    let mut err = child.stderr.take().context("stderr pipe")?;
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let pid = child.id() as libc::pid_t;
    let mut raw_status: libc::c_int = 0;
    // SAFETY: rusage is plain data, zero is a valid value; wait4 writes both out
    // parameters for the child we spawned and have not reaped.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = loop {
        let r = unsafe { libc::wait4(pid, &mut raw_status, 0, &mut usage) };
        if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    let seconds = start.elapsed().as_secs_f64();
    if r != pid {
        bail!(
            "waiting for {describe}: {}",
            std::io::Error::last_os_error()
        );
    }
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    let status = ExitStatus::from_raw(raw_status);
    if !status.success() {
        bail!("{describe} failed ({status}):\n{}", stderr.trim_end());
    }
    Ok(Run {
        seconds,
        // Linux reports ru_maxrss in KiB.
        peak_rss_bytes: (usage.ru_maxrss.max(0) as u64) * 1024,
        cpu_seconds: tv(usage.ru_utime) + tv(usage.ru_stime),
        stdout,
        stderr,
        status: Some(status),
    })
}

fn tv(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// Wall-time and memory statistics of `n` runs.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    /// What was run.
    pub label: String,
    /// Each run's wall time, in run order.
    pub seconds: Vec<f64>,
    /// Median wall time.
    pub median_s: f64,
    /// Fastest run.
    pub min_s: f64,
    /// Slowest run.
    pub max_s: f64,
    /// Highest peak RSS over the runs, MiB.
    pub peak_rss_mib: f64,
    /// Median CPU time (user + system), seconds.
    pub median_cpu_s: f64,
    /// The last run (for checking its output).
    #[serde(skip)]
    pub last: Option<Run>,
}

/// Runs the command `make(i)` builds for run `i`, `n` times, and summarises.
pub fn measure(
    label: &str,
    n: usize,
    mut make: impl FnMut(usize) -> anyhow::Result<Command>,
) -> anyhow::Result<Stats> {
    if n == 0 {
        bail!("{label}: at least one run is needed");
    }
    let mut runs = Vec::with_capacity(n);
    for i in 0..n {
        let mut cmd = make(i)?;
        runs.push(run_once(&mut cmd).with_context(|| format!("{label}, run {}", i + 1))?);
    }
    Ok(stats(label, runs))
}

/// Builds the command of one run of an [`interleaved`] measurement (its index given).
pub type MakeCommand<'a> = dyn FnMut(usize) -> anyhow::Result<Command> + 'a;

/// Runs each command of `tools` `runs` times, interleaved (run `i` starts with tool
/// `i % n`, so none always goes first), with `sync(2)` before each run so none pays
/// for another's writeback. One [`Stats`] per tool, in `tools` order.
pub fn interleaved(
    runs: usize,
    tools: &mut [(&str, &mut MakeCommand<'_>)],
) -> anyhow::Result<Vec<Stats>> {
    let n = tools.len();
    let mut all: Vec<Vec<Run>> = (0..n).map(|_| Vec::new()).collect();
    for i in 0..runs {
        for k in 0..n {
            let t = (i + k) % n;
            let (label, make) = &mut tools[t];
            let mut cmd = make(i)?;
            sync_disks();
            all[t].push(run_once(&mut cmd).with_context(|| format!("{label}, run {}", i + 1))?);
        }
    }
    Ok(all
        .into_iter()
        .zip(tools.iter())
        .map(|(r, (label, _))| stats(label, r))
        .collect())
}

/// The JSON line a `bench-agent-fetch --worker` run printed, from its stdout.
pub fn worker_output(s: &Stats) -> anyhow::Result<serde_json::Value> {
    let run = s.last.as_ref().context("no run")?;
    serde_json::from_str(run.stdout.trim())
        .with_context(|| format!("worker output {:?}", run.stdout))
}

/// Summarises runs measured elsewhere.
pub fn stats(label: &str, mut runs: Vec<Run>) -> Stats {
    let seconds: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
    let mut sorted = seconds.clone();
    sorted.sort_by(f64::total_cmp);
    let median_cpu_s = median(&runs.iter().map(|r| r.cpu_seconds).collect::<Vec<_>>());
    let median_s = median(&seconds);
    Stats {
        label: label.to_owned(),
        median_s,
        min_s: sorted.first().copied().unwrap_or(0.0),
        max_s: sorted.last().copied().unwrap_or(0.0),
        peak_rss_mib: runs.iter().map(|r| r.peak_rss_bytes).max().unwrap_or(0) as f64
            / (1024.0 * 1024.0),
        median_cpu_s,
        seconds,
        last: runs.pop(),
    }
}

/// The median of `values` (0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Flushes dirty pages to disk (`sync(2)`), so a run does not pay for the writeback
/// of the one before it.
pub fn sync_disks() {
    // SAFETY: sync has no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`), if readable.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// A note naming the file system `dir` is on (`/proc/mounts`, longest mount point
/// that contains it): file creation costs differ by tens of times between file
/// systems and states (see bench/README.md, "Where the work directory lives"), so a
/// result says where its files went.
pub fn work_dir_note(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let found = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, fstype) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(point)
                .then(|| (point.len(), fstype.to_owned()))
        })
        .max_by_key(|(len, _)| *len);
    match found {
        Some((_, fstype)) => format!("work directory (TMPDIR) on {fstype}"),
        None => "work directory (TMPDIR) on an unknown file system".into(),
    }
}

/// The `--runs N` of a benchmark whose only option it is (`default` without it);
/// `--help` prints the usage of `name` and exits.
pub fn runs_arg(name: &str, args: &[String], default: usize) -> anyhow::Result<usize> {
    let usage = format!("usage: {name} [--runs N]   (see bench/README.md)");
    let mut it = args.iter();
    let mut runs = default;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => {
                runs = it
                    .next()
                    .context("--runs needs a number")?
                    .parse()
                    .context("--runs needs a number")?;
            }
            "-h" | "--help" => {
                println!("{usage}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {usage}"),
        }
    }
    ensure!(runs >= 1, "--runs must be at least 1");
    Ok(runs)
}

/// A report note with the load average before the run (`before`) and now.
pub fn load_note(before: Option<[f64; 3]>) -> String {
    let load = |l: Option<[f64; 3]>| {
        l.map_or("unknown".into(), |[a, b, c]| {
            format!("{a:.2} {b:.2} {c:.2}")
        })
    };
    format!(
        "load average (1, 5, 15 min) before: {}, after: {}",
        load(before),
        load(load_average())
    )
}

/// Resets this process's peak resident set size (`VmHWM`) to its current size, so
/// [`own_peak_rss_bytes`] measures from here (Linux `clear_refs`, value 5). Returns
/// whether the kernel accepted it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// This process's peak resident set size in bytes (`VmHWM` of `/proc/self/status`).
pub fn own_peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The Nix expression of [`text_closure`]: like `tests/fixtures/bulk.nix`, one
/// derivation with one output per data path, but each data path holds 1 MiB files of
/// text that zstd level 3 shrinks about 2.6x (a decimal dump, `od -An -tu1`, of the
/// same deterministic AES-CTR keystream), closer to real closures than random bytes.
const TEXT_NIX: &str = r#"{ paths, bytesPerPath, salt }:
let n = builtins.fromJSON paths;
in derivation {
  name = "fleet-bench-text-${paths}x${bytesPerPath}-${salt}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  PATH = "/bin:/usr/bin";
  outputs = [ "out" ] ++ builtins.genList (i: "p${toString (i + 1)}") (n - 1);
  inherit bytesPerPath salt;
  args = [ "-eu" "-c" ''
    key=$(printf 'fleet-bench-text %s' "$salt" | sha256sum | cut -c1-32)
    gen() {
      openssl enc -aes-128-ctr -nosalt -K "$key" -iv 00000000000000000000000000000000         -in /dev/zero 2>/dev/null | od -An -v -tu1 -w16
    }
    mkdir -p $out
    dirs=
    for o in $outputs; do
      [ "$o" = out ] && continue
      eval "p=\$$o"
      dirs="$dirs $p"
    done
    mkdir $dirs
    gen | for p in $dirs; do
      head -c "$bytesPerPath" | split -b 1048576 -d -a 3 - "$p/part-"
      printf '%s
' "$p" >> $out/index
    done
  '' ];
}
"#;

/// Builds (once per machine; later calls find it in the store) a closure of
/// `n_paths` store paths: a top holding `index` and `n_paths - 1` paths sharing
/// `total_bytes` of compressible text (see [`TEXT_NIX`]). Needs `openssl` on the
/// machine, as the bulk fixtures do.
pub fn text_closure(
    nix: &fleet_tests::nix::Nix,
    n_paths: usize,
    total_bytes: u64,
    salt: &str,
) -> anyhow::Result<fleet_tests::nix::Closure> {
    if n_paths < 2 {
        bail!("a text closure needs at least 2 paths, not {n_paths}");
    }
    if which("openssl").is_none() {
        bail!("openssl is not on PATH; the text fixture generates its data with it");
    }
    let dir = tempfile::tempdir().context("creating a directory for the text fixture")?;
    let file = dir.path().join("text.nix");
    std::fs::write(&file, TEXT_NIX).with_context(|| format!("writing {}", file.display()))?;
    let mut cmd = nix.command("nix-build");
    cmd.arg("--no-out-link")
        .arg(&file)
        .args(["-A", "out", "--argstr", "paths"])
        .arg(n_paths.to_string())
        .args(["--argstr", "bytesPerPath"])
        .arg((total_bytes / (n_paths as u64 - 1)).to_string())
        .args(["--argstr", "salt", salt]);
    let out = nix.output(cmd).map_err(anyhow::Error::msg)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let top = text
        .lines()
        .rfind(|l| !l.is_empty())
        .context("nix-build of the text fixture printed no path")?;
    let top = fleet_core::StorePath::new(top.trim())
        .with_context(|| format!("nix-build printed {top:?}"))?;
    let paths = nix.closure(&top)?;
    if paths.len() != n_paths {
        bail!(
            "text closure {top} has {} paths, expected {n_paths}",
            paths.len()
        );
    }
    Ok(fleet_tests::nix::Closure { top, paths })
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// CPU time (user + system) this process has used so far, in seconds: the work a
/// phase did, whatever else the machine was running.
pub fn own_cpu_seconds() -> f64 {
    // SAFETY: rusage is plain data, zero is a valid value; getrusage fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time (user + system) process `pid` has used so far, in seconds, from
/// `/proc/<pid>/stat`; `None` when it cannot be read (no such process, no `/proc`).
/// For a server on the same machine: what it spent answering a measured phase.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after its `)` are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line (1-based), in clock ticks.
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks / hz as f64)
}

/// A text table with named columns.
#[derive(Clone, Debug, Default)]
pub struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(columns: &[&str]) -> Self {
        Self {
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are empty, extra ones dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.columns.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as aligned text, a header line and a rule first.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([self.columns[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join(" | ")
                .trim_end()
                .to_owned()
        };
        let mut out = line(&self.columns);
        out.push('\n');
        out.push_str(
            &widths
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("-|-"),
        );
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        out
    }
}

/// A benchmark's results as written to `bench/results/<bench>.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The benchmark's name (the file name).
    pub bench: String,
    /// CPUs of the machine.
    pub cpus: usize,
    /// One object per measured case.
    pub rows: Vec<serde_json::Value>,
    /// Free-form remarks (versions, caveats).
    pub notes: Vec<String>,
}

impl Report {
    /// An empty report for `bench`.
    pub fn new(bench: &str) -> Self {
        Self {
            bench: bench.to_owned(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Ends a benchmark run: notes the load average since `load_before`, prints the
    /// table and that note, and writes the report (see [`Report::write`]).
    pub fn finish(mut self, table: &Table, load_before: Option<[f64; 3]>) -> anyhow::Result<()> {
        self.notes.push(load_note(load_before));
        println!("{}", table.render());
        println!("{}", self.notes.last().map_or("", String::as_str));
        let path = self.write()?;
        eprintln!("results: {}", path.display());
        Ok(())
    }

    /// Writes the report to `bench/results/<bench>.json`; returns the path.
    pub fn write(&self) -> anyhow::Result<PathBuf> {
        let dir = results_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{}.json", self.bench));
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// `bench/results/` of this checkout.
pub fn results_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results")
}

/// A workspace binary next to the running benchmark binary (`target/release/NAME`
/// for `target/release/bench-…`), or an error naming the build command.
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the benchmark binary")?;
    let dir = exe
        .parent()
        .context("the benchmark binary has no directory")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is not built; run `cargo build --release -p {name}` first (see bench/README.md)",
            path.display()
        );
    }
    Ok(path)
}

/// User and system CPU seconds of this process's children that have been waited for
/// (`getrusage(RUSAGE_CHILDREN)`), so far. The difference across one [`run_once`]
/// splits that run's [`Run::cpu_seconds`] into user and system time, when no other
/// child is reaped meanwhile.
pub fn children_cpu_seconds() -> (f64, f64) {
    // SAFETY: rusage is plain data, zero is a valid value; getrusage fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return (f64::NAN, f64::NAN);
    }
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_time_and_memory_of_the_child() {
        let s = measure("sleep", 3, |_| {
            let mut c = Command::new("sh");
            c.args(["-c", "sleep 0.05; echo done"]);
            Ok(c)
        })
        .unwrap();
        assert_eq!(s.seconds.len(), 3);
        assert!(s.min_s >= 0.05 && s.median_s >= s.min_s && s.max_s >= s.median_s);
        assert!(s.peak_rss_mib > 0.1, "{}", s.peak_rss_mib);
        assert_eq!(s.last.unwrap().stdout, "done\n");
        let e = run_once(&mut Command::new("false"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("false"), "{e}");
    }

    #[test]
    fn load_and_own_peak_memory() {
        let l = load_average().unwrap();
        assert!(l.iter().all(|v| *v >= 0.0));
        let before = own_peak_rss_bytes().unwrap();
        // Touch 64 MiB, then reset: the peak drops back once it is freed.
        let big = std::hint::black_box(vec![1u8; 64 << 20]);
        assert!(own_peak_rss_bytes().unwrap() >= before + (60 << 20));
        drop(big);
        let cpu = own_cpu_seconds();
        let t = Instant::now();
        while t.elapsed().as_millis() < 50 {
            std::hint::black_box(t.elapsed());
        }
        assert!(own_cpu_seconds() - cpu >= 0.02, "{cpu}");
        if reset_peak_rss() {
            assert!(own_peak_rss_bytes().unwrap() < before + (32 << 20));
        }
    }

    #[test]
    fn cpu_of_another_process() {
        // A shell that spins for about 0.3 s of CPU, then sleeps so it can be read.
        let mut c = Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5",
            ])
            .spawn()
            .unwrap();
        let t = Instant::now();
        let mut cpu = 0.0;
        while t.elapsed().as_secs() < 4 {
            cpu = process_cpu_seconds(c.id()).unwrap();
            if cpu >= 0.05 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        c.kill().unwrap();
        c.wait().unwrap();
        assert!(cpu >= 0.05, "{cpu} s of CPU read for a spinning shell");
        assert_eq!(process_cpu_seconds(u32::MAX), None);
    }

    #[test]
    fn text_closures_are_deterministic_and_compress_like_text() {
        let nix = fleet_tests::nix::Nix::new().unwrap();
        let c = text_closure(&nix, 3, 2 << 20, "lib-test").unwrap();
        assert_eq!(c.paths.len(), 3);
        // Building again finds the same paths.
        assert_eq!(text_closure(&nix, 3, 2 << 20, "lib-test").unwrap(), c);
        let data = c.paths.iter().find(|p| **p != c.top).unwrap();
        let nar = nix.dump(data).unwrap();
        assert!(nar.len() > 1 << 20, "{} bytes", nar.len());
        let mut enc =
            fleet_core::stream::Encoder::new(fleet_core::Compression::Zstd, Vec::new(), Some(3))
                .unwrap();
        std::io::Write::write_all(&mut enc, &nar).unwrap();
        let packed = enc.finish().unwrap();
        let ratio = nar.len() as f64 / packed.len() as f64;
        assert!((2.0..4.0).contains(&ratio), "zstd ratio {ratio:.2}");
    }

    #[test]
    fn median_of_even_counts_and_table_alignment() {
        let runs = [4.0, 1.0, 3.0, 2.0]
            .into_iter()
            .map(|s| Run {
                seconds: s,
                peak_rss_bytes: 0,
                cpu_seconds: 0.0,
                stdout: String::new(),
                stderr: String::new(),
                status: None,
            })
            .collect();
        assert_eq!(stats("x", runs).median_s, 2.5);
        let mut t = Table::new(&["a", "long header"]);
        t.row(vec!["wide cell".into(), "1".into()]);
        assert_eq!(
            t.render(),
            "a         | long header\n----------|------------\nwide cell | 1\n"
        );
    }

    #[test]
    fn children_cpu_splits_a_run() {
        let (u0, s0) = children_cpu_seconds();
        let r = run_once(
            Command::new("sh").args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"]),
        )
        .unwrap();
        let (u1, s1) = children_cpu_seconds();
        // Other tests of this binary run children in parallel: only a lower bound holds.
        assert!((u1 - u0) + (s1 - s0) >= r.cpu_seconds - 0.005, "{r:?}");
        assert!(r.cpu_seconds > 0.0, "{r:?}");
    }
}
