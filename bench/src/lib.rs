//! `fleet-bench`: the measuring kit shared by fleet's benchmark binaries
//! (`bench-publish` here; `bench-agent`, `bench-reporter` to come).
//!
//! - [`run_once`] runs one command and measures its wall time and the peak resident
//!   memory of the child process itself (from `wait4`'s `rusage`, so each run is
//!   measured on its own, unlike `RUSAGE_CHILDREN`, which keeps the maximum of all);
//! - [`measure`] runs a command `n` times (a fresh command per run, built by a
//!   closure that may prepare a clean directory) and keeps the median, minimum and
//!   maximum wall time and the highest peak RSS ([`Stats`]);
//! - [`Table`] prints rows as an aligned text table;
//! - [`Report`] is written as JSON to `bench/results/<name>.json` (gitignored):
//!   `{"bench": name, "cpus": n, "rows": [{…}, …], "notes": […]}`, one object per
//!   table row with the same keys as the columns.
//!
//! Benchmarks are not tests: they print numbers and write JSON; they assert only
//! that the measured commands succeeded.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
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
}
