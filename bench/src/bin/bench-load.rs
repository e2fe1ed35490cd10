//! `bench-load`: a fleet of N hosts (default 1,000) on one SeaweedFS server: the load
//! idle agents put on the server, their poll latency and memory, and the time one
//! deploy takes to reach every host (see bench/README.md, "bench-load").
//!
//! ```text
//! bench-load [--hosts 1000] [--duration 180] [--poll-interval 30] [--poll-jitter 10]
//!            [--processes 4] [--users 40] [--store per-host|shared]
//!            [--cycles-per-process 8] [--json FILE]
//! bench-load --worker SPEC        (internal: runs the agents of one process)
//! ```
//!
//! Set-up, all real: `weed mini` through `fleet_tests::s3` (IAM enforced); IAM users
//! for the agents with the agent policies of `fleet_core::iam` (made in batches by
//! `S3Server::agent_users`), a publisher and a reporter user with theirs. SeaweedFS
//! cannot hold an identity per host at this scale (each new user costs more than the
//! last: 1.4 s each at 60 users, over 120 s for 100 on the development machine), so
//! hosts share at most `--users` agent users: each user's policy is the union of its
//! hosts' agent policies (each host's own manifest and status prefixes), and every
//! request is still checked against a scoped policy; with `--users` ≥ `--hosts` every
//! host has its own user. A fixture
//! system closure built with real `nix` from plain derivations (generation 1 and 2,
//! the same closure for every host); keys made with `nix-store
//! --generate-binary-cache-key`. `fleet-publish deploy --hosts` pushes generation 1
//! and writes the N signed manifests.
//!
//! Agents: N agents in `--processes` worker processes (this binary with `--worker`),
//! each agent a task on the worker's tokio runtime driving `fleet_agent::Agent` as
//! `fleet-agent run` does (cycle, status write, poll interval plus jitter, backoff,
//! heartbeat; see [`drive`]), with its own state directory, profile and scoped
//! credentials. A real `fleet-agent` process per host would need about 10 MB each;
//! many agents per process keep 1,000 hosts affordable next to other work, and show
//! the cost of one agent as the process's memory divided by its agents. Their requests
//! go through a counting proxy (`fleet_tests::proxy`) in front of SeaweedFS. The Nix
//! store is one chroot store per host (`--store per-host`: each host downloads and
//! imports the closure itself, as real hosts do) or one chroot store shared by all,
//! with a profile per host (`--store shared`: the first host to fetch a path imports
//! it, the others find it valid).
//!
//! Phases: bring-up (every agent starts at a random point within one poll interval,
//! fetches and activates generation 1; done when `fleet-reporter summary --json` shows
//! all N up to date), idle (`--duration` seconds: requests per second at the proxy,
//! poll latency p50/p99 of the cycles that changed nothing), deploy (`fleet-publish
//! deploy --hosts` of generation 2; time until the dashboard shows all N up to date on
//! sequence 2). Errors: every cycle that did not end healthy, every failed status
//! write and every WARN or ERROR line an agent logged, over the whole run (goal 0).
//!
//! Where the time goes while hosts fetch, measured apart: the server (a GET of the
//! largest NAR file straight from SeaweedFS every second, [`ServerProbe`]), each
//! worker's runtime (how late a task that sleeps 100 ms wakes, [`LAG_TICK`]), and
//! which of the agent's timeouts the WARN lines name. Hundreds of hosts in one
//! process share its two runtime threads and the machine's cores, where each real
//! host has its own CPU; `--cycles-per-process N` lets at most N agents of a worker
//! be in a cycle at once (the others wait for a slot, and the waits are reported
//! apart from the cycles' latencies); 0 is no bound.
//!
//! Prints a table and writes `bench/results/bench-load.json` (or `--json FILE`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use fleet_agent::Agent;
use fleet_agent::schedule::{self, Jitter};
use fleet_bench::{Report, Table, load_average, sibling_binary};
use fleet_core::iam::Role;
use fleet_core::{Bucket, BucketOptions, HostName, S3Credentials};
use fleet_tests::nix::{Closure, FixtureOptions, Nix};
use fleet_tests::proxy::{Requests, counting_proxy};
use fleet_tests::s3::S3Server;
use serde::{Deserialize, Serialize};

const USAGE: &str = "usage: bench-load [--hosts N] [--duration SECONDS] [--poll-interval SECONDS] \
                     [--poll-jitter SECONDS] [--processes N] [--users N] [--store per-host|shared] [--cycles-per-process N] [--json FILE]   \
                     (see bench/README.md)";

/// Default of `--cycles-per-process`. With no bound, 300 agents in one process on
/// the 2-core development machine had their runtime threads wait for a CPU about 90%
/// of the time while dozens of hosts' `nix` imports ran (ticks up to 11 s late), and
/// 23 requests timed out though the server answered within 2.4 s; with 8, the ticks
/// stayed under 1.2 s and nothing timed out (docs/performance.md, "Fleet load").
const DEFAULT_CYCLES_PER_PROCESS: usize = 8;

/// IAM users made per `s3_admin.py create-users` call.
const USER_BATCH: usize = 20;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("--worker") => args
            .get(1)
            .context("--worker needs a spec file")
            .and_then(|spec| worker(Path::new(spec))),
        _ => parse_args(&args).and_then(|a| orchestrate(&a)),
    };
    if let Err(e) = result {
        eprintln!("bench-load: error: {e:#}");
        std::process::exit(1);
    }
}

/// The command line.
#[derive(Clone, Debug)]
struct Args {
    hosts: usize,
    duration: Duration,
    poll_interval: Duration,
    poll_jitter: Duration,
    processes: usize,
    users: usize,
    shared_store: bool,
    /// At most this many agents of one worker process in a cycle at once; 0: no bound.
    cycles_per_process: usize,
    json: Option<PathBuf>,
}

fn seconds(arg: &str, text: &str) -> anyhow::Result<Duration> {
    let n: f64 = text
        .trim_end_matches('s')
        .parse()
        .with_context(|| format!("{arg} needs a number of seconds, not {text:?}"))?;
    ensure!(
        n.is_finite() && n >= 0.0,
        "{arg} needs a number of seconds, not {text:?}"
    );
    Ok(Duration::from_secs_f64(n))
}

fn parse_args(args: &[String]) -> anyhow::Result<Args> {
    let mut a = Args {
        hosts: 1000,
        duration: Duration::from_secs(180),
        poll_interval: Duration::from_secs(30),
        poll_jitter: Duration::from_secs(10),
        processes: 4,
        users: 40,
        shared_store: false,
        cycles_per_process: DEFAULT_CYCLES_PER_PROCESS,
        json: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{arg} needs a value; {USAGE}"))
        };
        match arg.as_str() {
            "--hosts" => a.hosts = value()?.parse().context("--hosts needs a number")?,
            "--duration" => a.duration = seconds(arg, value()?)?,
            "--poll-interval" => a.poll_interval = seconds(arg, value()?)?,
            "--poll-jitter" => a.poll_jitter = seconds(arg, value()?)?,
            "--processes" => {
                a.processes = value()?.parse().context("--processes needs a number")?
            }
            "--users" => a.users = value()?.parse().context("--users needs a number")?,
            "--store" => {
                a.shared_store = match value()?.as_str() {
                    "per-host" => false,
                    "shared" => true,
                    other => bail!("--store is per-host or shared, not {other:?}"),
                }
            }
            "--cycles-per-process" => {
                a.cycles_per_process = value()?
                    .parse()
                    .context("--cycles-per-process needs a number (0: no bound)")?
            }
            "--json" => a.json = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    ensure!(a.hosts >= 1, "--hosts must be at least 1");
    ensure!(a.processes >= 1, "--processes must be at least 1");
    ensure!(a.users >= 1, "--users must be at least 1");
    ensure!(
        a.poll_interval >= Duration::from_secs(1),
        "--poll-interval must be at least 1 s"
    );
    a.processes = a.processes.min(a.hosts);
    Ok(a)
}

// ---------------------------------------------------------------------------------
// Worker: many agents in one process

/// What a worker runs: its agents.
#[derive(Serialize, Deserialize)]
struct WorkerSpec {
    agents: Vec<AgentSpec>,
    /// At most this many of the worker's agents run a cycle at once (0: no bound);
    /// see `--cycles-per-process`.
    #[serde(default)]
    cycles_at_once: usize,
}

/// One agent of a worker: its config file and its host's credentials.
#[derive(Serialize, Deserialize)]
struct AgentSpec {
    config: PathBuf,
    access_key_id: String,
    secret_access_key: String,
}

/// One cycle as the worker saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CycleRecord {
    /// Start, milliseconds since the Unix epoch (the orchestrator's clock too).
    start_ms: u64,
    /// How long `Agent::cycle` took, milliseconds (from when it got its slot).
    latency_ms: f64,
    /// How long the cycle waited for a slot (`--cycles-per-process`), milliseconds.
    #[serde(default)]
    wait_ms: f64,
    /// The outcome's name (`healthy`, `retry`, …).
    outcome: String,
    /// The running generation's sequence after the cycle.
    sequence: Option<u64>,
    /// Whether the cycle changed the running generation (a deploy applied).
    changed: bool,
}

/// What a worker prints when it stops.
#[derive(Debug, Default, Serialize, Deserialize)]
struct WorkerResult {
    agents: usize,
    cycles: Vec<CycleRecord>,
    /// Status writes (change or heartbeat) that failed.
    failed_writes: usize,
    /// The first few of those failures.
    write_errors: Vec<String>,
    vm_hwm_bytes: u64,
    vm_rss_bytes: u64,
    threads: u64,
    /// Ticks of the runtime-lag probe ([`LAG_TICK`]).
    #[serde(default)]
    lag_ticks: u64,
    /// The ticks that came more than [`LAG_NOTED`] late: (when, milliseconds late).
    #[serde(default)]
    lags: Vec<(u64, u64)>,
}

/// Period of the worker's runtime-lag probe: a task that asks to wake every tick
/// and records how late it woke. A late tick means the worker's runtime (its two
/// threads, shared by every agent of the process) could not run its tasks in time:
/// timers fire late and response bodies are not read.
const LAG_TICK: Duration = Duration::from_millis(100);
/// A tick later than this is recorded.
const LAG_NOTED: Duration = Duration::from_millis(250);

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs the agents of `spec` until standard input closes, then prints a
/// [`WorkerResult`] as JSON on standard output.
fn worker(spec: &Path) -> anyhow::Result<()> {
    let spec: WorkerSpec = serde_json::from_slice(
        &std::fs::read(spec).with_context(|| format!("reading {}", spec.display()))?,
    )
    .context("parsing the worker spec")?;
    fleet_core::logging::init_logging("warn", Default::default());
    let mut agents = Vec::with_capacity(spec.agents.len());
    for a in &spec.agents {
        let config = fleet_agent::config::Config {
            config: Some(a.config.clone()),
            ..Default::default()
        }
        .layered()?;
        let settings = config.settings()?;
        let opts = BucketOptions {
            credentials: Some(S3Credentials {
                access_key_id: a.access_key_id.clone(),
                secret_access_key: a.secret_access_key.clone(),
                session_token: None,
            }),
            // As `Agent::open` sets them.
            request_timeout: settings.request_timeout,
            connect_timeout: settings.request_timeout.min(Duration::from_secs(10)),
            max_retries: 2,
        };
        let bucket = Bucket::open(&settings.bucket, &opts)?;
        agents.push(Agent::with_bucket(settings, bucket)?);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = Arc::new(Mutex::new(WorkerResult {
        agents: agents.len(),
        ..Default::default()
    }));
    rt.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(lag_probe(result.clone(), stop_rx.clone()));
        let mut tasks = Vec::new();
        let slots = (spec.cycles_at_once > 0)
            .then(|| Arc::new(tokio::sync::Semaphore::new(spec.cycles_at_once)));
        for agent in agents {
            tasks.push(tokio::spawn(drive(
                agent,
                result.clone(),
                slots.clone(),
                stop_rx.clone(),
            )));
        }
        // The orchestrator closes our stdin to stop us.
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await?;
        let _ = stop_tx.send(true);
        for t in tasks {
            t.await?;
        }
        anyhow::Ok(())
    })?;
    let mut r = std::mem::take(&mut *result.lock().unwrap_or_else(|e| e.into_inner()));
    let proc = proc_status(std::process::id())?;
    r.vm_hwm_bytes = proc.vm_hwm;
    r.vm_rss_bytes = proc.vm_rss;
    r.threads = proc.threads;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &r)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// One agent's daemon loop, as `fleet-agent run` (`agent/src/cmd/run.rs`) does it —
/// cycle, write the status if it changed, wait the poll interval plus jitter (backoff
/// after failures), heartbeat on its own timer — without its signal handling and
/// systemd notifications, and recording each cycle. The first poll comes at a random
/// point within one poll interval, as a fleet's hosts boot at different times.
///
/// With `slots`, a cycle first waits for a slot: the cycles of one worker process
/// share its CPU and its runtime, where each real host has its own (see
/// `--cycles-per-process`). The wait is recorded apart from the cycle's latency.
async fn drive(
    mut agent: Agent,
    result: Arc<Mutex<WorkerResult>>,
    slots: Option<Arc<tokio::sync::Semaphore>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let s = agent.settings().clone();
    let mut rng = Jitter::new();
    let mut failures: u32 = 0;
    let mut wait = rng.upto(s.poll_interval);
    let mut next_heartbeat = tokio::time::Instant::now() + s.heartbeat_interval;
    loop {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tokio::time::sleep_until(next_heartbeat) => {
                    next_heartbeat = tokio::time::Instant::now() + s.heartbeat_interval;
                    if let Err(e) = agent.flush(true).await {
                        record_write_error(&result, format!("{}: heartbeat: {e}", s.host));
                    }
                }
                _ = stop.changed() => return,
            }
        }
        let waited = Instant::now();
        let _slot = match &slots {
            Some(s) => tokio::select! {
                p = s.clone().acquire_owned() => p.ok(),
                _ = stop.changed() => return,
            },
            None => None,
        };
        let wait_ms = waited.elapsed().as_secs_f64() * 1e3;
        let before = agent.state().current.clone();
        let start_ms = unix_ms();
        let t = Instant::now();
        let outcome = tokio::select! {
            o = agent.cycle() => o,
            _ = stop.changed() => return,
        };
        let latency_ms = t.elapsed().as_secs_f64() * 1e3;
        let now = agent.state().current.clone();
        if !agent.bucket_unreachable()
            && let Err(e) = agent.flush(false).await
        {
            record_write_error(&result, format!("{}: status: {e}", s.host));
        }
        result
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cycles
            .push(CycleRecord {
                start_ms,
                latency_ms,
                wait_ms,
                outcome: outcome.as_str().to_owned(),
                sequence: now.as_ref().and_then(|g| g.sequence),
                changed: before.map(|g| g.closure) != now.map(|g| g.closure),
            });
        wait = if outcome.backs_off() {
            failures = failures.saturating_add(1);
            schedule::backoff(failures, s.poll_interval, s.backoff_max, &mut rng)
        } else {
            failures = 0;
            schedule::next_poll(s.poll_interval, s.poll_jitter, &mut rng)
        };
    }
}

/// Records how late the worker's runtime wakes a task that sleeps [`LAG_TICK`]
/// (see [`LAG_TICK`]), until `stop`.
async fn lag_probe(result: Arc<Mutex<WorkerResult>>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut next = tokio::time::Instant::now() + LAG_TICK;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => return,
        }
        let late = tokio::time::Instant::now().saturating_duration_since(next);
        let mut r = result.lock().unwrap_or_else(|e| e.into_inner());
        r.lag_ticks += 1;
        if late > LAG_NOTED {
            r.lags.push((unix_ms(), late.as_millis() as u64));
        }
        drop(r);
        next = tokio::time::Instant::now() + LAG_TICK;
    }
}

fn record_write_error(result: &Mutex<WorkerResult>, msg: String) {
    let mut r = result.lock().unwrap_or_else(|e| e.into_inner());
    r.failed_writes += 1;
    if r.write_errors.len() < 10 {
        r.write_errors.push(msg);
    }
}

/// Memory and threads of a process, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug)]
struct ProcStatus {
    vm_rss: u64,
    vm_hwm: u64,
    threads: u64,
}

fn proc_status(pid: u32) -> anyhow::Result<ProcStatus> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let v = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .with_context(|| format!("no {name} in {path}"))?;
        let n: u64 = v
            .split_whitespace()
            .next()
            .unwrap_or("")
            .parse()
            .with_context(|| format!("{name} in {path}: {v:?}"))?;
        Ok(if v.contains("kB") { n * 1024 } else { n })
    };
    Ok(ProcStatus {
        vm_rss: field("VmRSS")?,
        vm_hwm: field("VmHWM")?,
        threads: field("Threads")?,
    })
}

// ---------------------------------------------------------------------------------
// Orchestrator

/// A running worker process; killed when dropped, so no error path leaves it behind.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    /// Closes its stdin (the stop signal) and reads its result.
    fn stop(mut self) -> anyhow::Result<WorkerResult> {
        drop(self.child.stdin.take());
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .context("worker stdout")?
            .read_to_string(&mut out)?;
        let status = self.child.wait()?;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        ensure!(
            status.success(),
            "a worker exited with {status}:\n{}",
            tail(&log)
        );
        serde_json::from_str(out.trim()).with_context(|| format!("worker printed {out:?}"))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// What `fleet-reporter summary --json` showed.
#[derive(Clone, Debug)]
struct Dashboard {
    hosts: usize,
    /// Hosts in state `up-to-date` whose running sequence is the one expected.
    up_to_date: usize,
    states: BTreeMap<String, u64>,
}

/// Everything the orchestrator needs to run the fleet's tools.
struct Fleet {
    work: PathBuf,
    publish: PathBuf,
    reporter: PathBuf,
    url: String,
    publisher_creds: S3Credentials,
    reporter_creds: S3Credentials,
    cache_secret: PathBuf,
    publisher_secret: PathBuf,
    publisher_public: String,
    hosts: Vec<HostName>,
}

impl Fleet {
    fn command(&self, program: &Path, creds: &S3Credentials) -> Command {
        let mut cmd = fleet_tests::agent::clean_command(program, &self.work.join("xdg-cache"));
        cmd.envs(S3Server::credentials_env(creds));
        cmd
    }

    /// `fleet-publish deploy --hosts` of `closure` to every host; returns its seconds.
    fn deploy(&self, closure: &Closure, label: &str) -> anyhow::Result<f64> {
        let map: serde_json::Map<String, serde_json::Value> = self
            .hosts
            .iter()
            .map(|h| (h.to_string(), closure.top.to_string().into()))
            .collect();
        let file = self.work.join(format!("hosts-{label}.json"));
        std::fs::write(&file, serde_json::Value::Object(map).to_string())?;
        let mut cmd = self.command(&self.publish, &self.publisher_creds);
        cmd.args(["deploy", "--bucket", &self.url, "--hosts"])
            .arg(&file)
            .arg("--cache-key")
            .arg(&self.cache_secret)
            .arg("--signing-key")
            .arg(&self.publisher_secret)
            .args(["--trusted-key", &self.publisher_public]);
        let t = Instant::now();
        let out = cmd.output().context("running fleet-publish deploy")?;
        ensure!(
            out.status.success(),
            "fleet-publish deploy of {label} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
        Ok(t.elapsed().as_secs_f64())
    }

    /// One `fleet-reporter summary --json`, counting the hosts up to date on
    /// `sequence`.
    fn dashboard(&self, sequence: u64) -> anyhow::Result<Dashboard> {
        let mut cmd = self.command(&self.reporter, &self.reporter_creds);
        cmd.args(["summary", "--json", "--bucket", &self.url])
            .args(["--trusted-key", &self.publisher_public]);
        let out = cmd.output().context("running fleet-reporter summary")?;
        // 3: some host fails the gate (stale, failed…): the JSON still tells.
        ensure!(
            matches!(out.status.code(), Some(0 | 3)),
            "fleet-reporter summary failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("fleet-reporter summary --json")?;
        let rows = v["rows"].as_array().context("summary has no rows")?;
        let up_to_date = rows
            .iter()
            .filter(|r| {
                r["state"] == "up-to-date" && r["current"]["sequence"].as_u64() == Some(sequence)
            })
            .count();
        let states = v["states"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Dashboard {
            hosts: v["hosts"].as_u64().unwrap_or(0) as usize,
            up_to_date,
            states,
        })
    }

    /// Polls the dashboard until all hosts are up to date on `sequence`; returns the
    /// seconds since `since` when it first showed that, and the last reading. Fails
    /// after `timeout`, or as soon as a worker exits.
    fn wait_all_up_to_date(
        &self,
        sequence: u64,
        since: Instant,
        timeout: Duration,
        workers: &mut [Worker],
    ) -> anyhow::Result<(f64, Dashboard, usize)> {
        let mut samples = 0;
        loop {
            for w in workers.iter_mut() {
                if let Some(status) = w.child.try_wait()? {
                    let log = std::fs::read_to_string(&w.log).unwrap_or_default();
                    bail!("a worker exited ({status}):\n{}", tail(&log));
                }
            }
            let d = self.dashboard(sequence)?;
            samples += 1;
            if d.up_to_date == self.hosts.len() {
                return Ok((since.elapsed().as_secs_f64(), d, samples));
            }
            if since.elapsed() > timeout {
                bail!(
                    "after {:.0} s the dashboard shows {} of {} hosts up to date on sequence {sequence}: {:?}",
                    since.elapsed().as_secs_f64(),
                    d.up_to_date,
                    self.hosts.len(),
                    d.states
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Raises this process's open-file limit to its hard limit: the counting proxy holds
/// two sockets per agent connection.
fn raise_nofile() {
    // SAFETY: rlimit is plain data; getrlimit/setrlimit only read and write it.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn orchestrate(a: &Args) -> anyhow::Result<()> {
    raise_nofile();
    let me = std::env::current_exe().context("locating bench-load")?;
    let publish = sibling_binary("fleet-publish")?;
    let reporter = sibling_binary("fleet-reporter")?;
    let nix = Nix::new()?;
    let load_before = load_average();
    let t_all = Instant::now();
    let work = tempfile::Builder::new().prefix("bench-load-").tempdir()?;
    let keep = std::env::var_os("FLEET_BENCH_KEEP").is_some();
    let work_path = if keep {
        let p = work.keep();
        eprintln!("keeping {}", p.display());
        p
    } else {
        work.path().to_path_buf()
    };
    let (cache_secret, cache_public) =
        nix.generate_binary_cache_key("bench-load-cache-1", &work_path)?;
    let (publisher_secret, publisher_public) =
        nix.generate_binary_cache_key("bench-load-publisher-1", &work_path)?;
    let cache_public = std::fs::read_to_string(&cache_public)?.trim().to_owned();
    let publisher_public = std::fs::read_to_string(&publisher_public)?
        .trim()
        .to_owned();
    eprintln!("building the fixture system closures (once per machine)…");
    let g1 = nix.fixture_system("load", "1", &FixtureOptions::salted("bench-load"))?;
    let g2 = nix.fixture_system("load", "2", &FixtureOptions::salted("bench-load"))?;

    let hosts: Vec<HostName> = (1..=a.hosts)
        .map(|i| HostName::new(&format!("load-{i:04}")))
        .collect::<Result<_, _>>()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let hosts_per_user = a.hosts.div_ceil(a.users);
    let agent_users = a.hosts.div_ceil(hosts_per_user);
    eprintln!(
        "starting SeaweedFS and making {} IAM users ({agent_users} for the agents, {hosts_per_user} hosts each)…",
        agent_users + 2
    );
    let t_users = Instant::now();
    let (server, bucket, publisher_creds, reporter_creds, agent_creds) = rt.block_on(async {
        let server = S3Server::seaweedfs().await?;
        let bucket = server.new_bucket("bench-load").await?;
        let publisher = server.user_for(&Role::Publisher, &bucket, "").await?;
        let reporter = server.user_for(&Role::Reporter, &bucket, "").await?;
        let groups: Vec<&[HostName]> = hosts.chunks(hosts_per_user).collect();
        let agents = server.agent_users(&groups, &bucket, "", USER_BATCH).await?;
        anyhow::Ok((server, bucket, publisher, reporter, agents))
    })?;
    let users_s = t_users.elapsed().as_secs_f64();
    let requests = Requests::default();
    let port = counting_proxy(
        server.endpoint().trim_start_matches("http://"),
        requests.clone(),
    )
    .context("starting the counting proxy")?;
    let fleet = Fleet {
        work: work_path.clone(),
        publish,
        reporter,
        url: server.store_url(&bucket, "")?.to_string(),
        publisher_creds,
        reporter_creds,
        cache_secret,
        publisher_secret,
        publisher_public: publisher_public.clone(),
        hosts: hosts.clone(),
    };
    eprintln!("deploying generation 1 to {} hosts…", a.hosts);
    let deploy1_s = fleet.deploy(&g1, "g1")?;
    let admin = server.bucket(&bucket, "", &server.admin_credentials())?;
    let probe = ServerProbe::start(&rt, admin)?;

    // Agent configs and worker specs.
    let agent_url = format!("s3://{bucket}?endpoint=http://127.0.0.1:{port}&region=us-east-1");
    let shared_chroot = work_path.join("shared-store");
    if a.shared_store {
        // Create the shared store's database before any agent opens it: the first
        // opens of a store not yet initialised trip over each other when they come
        // at once (agent/src/fetch/mod.rs), which failed an import now and then when
        // 16 hosts imported generation 1 together. Each real host has its own store.
        let out = nix
            .command("nix-store")
            .arg("--store")
            .arg(&shared_chroot)
            .arg("--verify")
            .output()
            .context("running nix-store --verify on the shared store")?;
        ensure!(
            out.status.success(),
            "initialising the shared store {}: {}",
            shared_chroot.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut specs: Vec<WorkerSpec> = (0..a.processes)
        .map(|_| WorkerSpec {
            agents: Vec::new(),
            cycles_at_once: a.cycles_per_process,
        })
        .collect();
    for (i, host) in hosts.iter().enumerate() {
        let creds = &agent_creds[i / hosts_per_user];
        let dir = work_path.join("hosts").join(host.as_str());
        std::fs::create_dir_all(&dir)?;
        let text = fleet_tests::agent::AgentConfig {
            bucket: agent_url.clone(),
            host: host.to_string(),
            publisher_keys: vec![publisher_public.clone()],
            cache_keys: vec![cache_public.clone()],
            state_dir: dir.join("state"),
            chroot: if a.shared_store {
                shared_chroot.clone()
            } else {
                dir.join("chroot")
            },
            profile: dir.join("profiles/system"),
            facts_root: None,
            request_timeout: "30s".into(),
            activation_timeout: "120s".into(),
            // A shared store takes the default import too: its agents unpack one
            // fetch at a time (`fleet-unpack.lock`), and the others find the paths
            // valid.
            extra: format!("poll-interval = \"{}ms\"\n", a.poll_interval.as_millis()),
        }
        .to_toml();
        // The test config turns jitter off; a fleet has it.
        let jitter_line = "poll-jitter = \"0s\"\n";
        ensure!(
            text.contains(jitter_line),
            "the agent config no longer sets {jitter_line:?}"
        );
        let text = text.replace(
            jitter_line,
            &format!("poll-jitter = \"{}ms\"\n", a.poll_jitter.as_millis()),
        );
        let config = dir.join("agent.toml");
        std::fs::write(&config, text)?;
        specs[i % a.processes].agents.push(AgentSpec {
            config,
            access_key_id: creds.access_key_id.clone(),
            secret_access_key: creds.secret_access_key.clone(),
        });
    }
    eprintln!(
        "starting {} agents in {} worker processes (poll {:?} + up to {:?} jitter)…",
        a.hosts, a.processes, a.poll_interval, a.poll_jitter
    );
    let t_bringup = Instant::now();
    let bringup_wall0 = unix_ms();
    let mut workers = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let file = work_path.join(format!("worker-{i}.json"));
        std::fs::write(&file, serde_json::to_vec(spec)?)?;
        let log = work_path.join(format!("worker-{i}.log"));
        let mut cmd = fleet_tests::agent::clean_command(&me, &work_path.join("xdg-cache"));
        cmd.arg("--worker")
            .arg(&file)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?);
        let child = cmd.spawn().context("starting a worker")?;
        workers.push(Worker { child, log });
    }
    // Every host fetches and activates at its first poll, spread over one interval.
    let bringup_timeout =
        a.poll_interval + a.poll_jitter + Duration::from_secs(60 + a.hosts as u64);
    let (bringup_s, _, _) =
        fleet.wait_all_up_to_date(1, t_bringup, bringup_timeout, &mut workers)?;
    eprintln!(
        "all {} hosts up to date on generation 1 after {bringup_s:.1} s; idle for {:?}…",
        a.hosts, a.duration
    );

    // Idle: requests and poll latency over the window.
    let r0 = requests.len();
    let w0 = unix_ms();
    let t0 = Instant::now();
    while t0.elapsed() < a.duration {
        for w in workers.iter_mut() {
            if let Some(status) = w.child.try_wait()? {
                let log = std::fs::read_to_string(&w.log).unwrap_or_default();
                bail!("a worker exited ({status}) while idle:\n{}", tail(&log));
            }
        }
        std::thread::sleep(Duration::from_millis(200).min(a.duration));
    }
    let idle_s = t0.elapsed().as_secs_f64();
    let w1 = unix_ms();
    let idle_requests: Vec<String> = requests.snapshot()[r0..].to_vec();

    eprintln!("deploying generation 2 to {} hosts…", a.hosts);
    let t_deploy = Instant::now();
    let deploy_wall0 = unix_ms();
    let deploy2_s = fleet.deploy(&g2, "g2")?;
    let deploy_timeout = a.poll_interval + a.poll_jitter + Duration::from_secs(60 + a.hosts as u64);
    let (converge_s, dash, samples) =
        fleet.wait_all_up_to_date(2, t_deploy, deploy_timeout, &mut workers)?;
    eprintln!(
        "all {} hosts up to date on generation 2 after {converge_s:.1} s",
        a.hosts
    );

    let deploy_wall1 = unix_ms();
    let probe_samples = probe.stop();
    let mut results = Vec::new();
    for w in workers {
        let log = w.log.clone();
        let r = w.stop()?;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        results.push((r, text));
    }

    // Figures.
    let mut idle_latency: Vec<f64> = Vec::new();
    let mut outcomes = BTreeMap::<String, usize>::new();
    let mut error_cycles = 0usize;
    let mut failed_writes = 0usize;
    let mut write_errors = Vec::new();
    let mut log_problems = Vec::new();
    let mut last_apply_ms = 0u64;
    let mut applied_g2 = 0usize;
    for (r, log) in &results {
        for c in &r.cycles {
            *outcomes.entry(c.outcome.clone()).or_default() += 1;
            if c.outcome != "healthy" {
                error_cycles += 1;
            }
            if !c.changed && c.outcome == "healthy" && c.start_ms >= w0 && c.start_ms < w1 {
                idle_latency.push(c.latency_ms);
            }
            if c.changed && c.sequence == Some(2) && c.start_ms >= deploy_wall0 {
                applied_g2 += 1;
                last_apply_ms = last_apply_ms.max(c.start_ms + c.latency_ms as u64);
            }
        }
        failed_writes += r.failed_writes;
        write_errors.extend(r.write_errors.iter().cloned());
        log_problems.extend(
            log.lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .map(str::to_owned),
        );
    }
    idle_latency.sort_by(f64::total_cmp);
    let errors = error_cycles + failed_writes + log_problems.len();
    // Where the time went while hosts fetched: the server's answers, the workers'
    // runtimes, and which of the agent's timeouts fired.
    let phases = [
        ("bring_up", bringup_wall0, w0),
        ("idle", w0, w1),
        ("deploy", deploy_wall0, deploy_wall1),
    ];
    let mut server_probe = serde_json::Map::new();
    let mut runtime_lag = serde_json::Map::new();
    for (name, from, to) in phases {
        server_probe.insert(name.into(), probe_summary(&probe_samples, from, to));
        let lags: Vec<Vec<(u64, u64)>> = results
            .iter()
            .map(|(r, _)| {
                r.lags
                    .iter()
                    .copied()
                    .filter(|(t, _)| (from..to).contains(t))
                    .collect()
            })
            .collect();
        runtime_lag.insert(name.into(), lag_summary(&lags));
    }
    let timeouts = timeout_kinds(&log_problems);
    // Waits for a cycle slot (`--cycles-per-process`), apart from the latencies.
    let mut waits: Vec<f64> = results
        .iter()
        .flat_map(|(r, _)| r.cycles.iter().map(|c| c.wait_ms))
        .collect();
    waits.sort_by(f64::total_cmp);
    let waited = waits.iter().filter(|w| **w >= 1.0).count();
    let idle_polls = idle_latency.len();
    let rps = idle_requests.len() as f64 / idle_s;
    let mut by_kind = BTreeMap::<String, usize>::new();
    for r in &idle_requests {
        // "GET /bucket/hosts/load-0001/manifest.json" -> "GET hosts/*/manifest.json"
        let mut parts = r.splitn(2, ' ');
        let method = parts.next().unwrap_or("");
        let path = parts.next().unwrap_or("");
        let key: Vec<&str> = path.trim_start_matches('/').splitn(2, '/').collect();
        let key = key.get(1).copied().unwrap_or("");
        let shape: Vec<&str> = key
            .split('/')
            .enumerate()
            .map(|(i, p)| {
                if i == 1 && (key.starts_with("hosts/") || key.starts_with("status/")) {
                    "*"
                } else {
                    p
                }
            })
            .collect();
        let shape = shape.join("/");
        let shape = if shape.starts_with("status/*/events/") {
            "status/*/events/*".to_owned()
        } else if shape.starts_with("changes/") {
            // Change-feed markers: changes/<day>/<time>/<host>.
            "changes/*/*/*".to_owned()
        } else {
            shape
        };
        *by_kind.entry(format!("{method} {shape}")).or_default() += 1;
    }
    let worker_hwm: Vec<u64> = results.iter().map(|(r, _)| r.vm_hwm_bytes).collect();
    let worker_rss: Vec<u64> = results.iter().map(|(r, _)| r.vm_rss_bytes).collect();
    let max_hwm = worker_hwm.iter().copied().max().unwrap_or(0);
    let agents_per_process = a.hosts.div_ceil(a.processes);
    let per_agent_mb = max_hwm as f64 / 1e6 / agents_per_process as f64;
    let last_apply_s = (last_apply_ms.saturating_sub(deploy_wall0)) as f64 / 1e3;
    let all_up = dash.up_to_date == a.hosts && dash.hosts == a.hosts;

    let mut table = Table::new(&["what", "value"]);
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    let rows: Vec<(&str, String)> = vec![
        (
            "hosts (agents / worker processes)",
            format!("{} / {}", a.hosts, a.processes),
        ),
        (
            "store",
            if a.shared_store {
                "one chroot store shared, a profile per host".into()
            } else {
                "a chroot store per host".into()
            },
        ),
        (
            "poll interval + jitter",
            format!("{:?} + up to {:?}", a.poll_interval, a.poll_jitter),
        ),
        (
            "IAM users made",
            format!(
                "{} in {users_s:.1} s ({hosts_per_user} hosts per agent user)",
                agent_users + 2
            ),
        ),
        (
            "deploy g1 (fleet-publish deploy --hosts)",
            format!("{deploy1_s:.1} s"),
        ),
        (
            "bring-up: all up to date on g1",
            format!("{bringup_s:.1} s"),
        ),
        ("idle window", format!("{idle_s:.0} s, {idle_polls} polls")),
        (
            "requests/s at the server (idle)",
            format!("{rps:.1} ({} requests)", idle_requests.len()),
        ),
        (
            "poll latency p50 / p99 (idle)",
            format!(
                "{:.1} / {:.1} ms",
                percentile(&idle_latency, 50.0),
                percentile(&idle_latency, 99.0)
            ),
        ),
        (
            "peak RSS per worker process (max)",
            format!("{} ({agents_per_process} agents)", mb(max_hwm)),
        ),
        (
            "peak RSS per agent (process / agents)",
            format!("{per_agent_mb:.2} MB"),
        ),
        (
            "deploy g2 (fleet-publish deploy --hosts)",
            format!("{deploy2_s:.1} s"),
        ),
        (
            "deploy g2: last host applied",
            format!("{last_apply_s:.1} s after the deploy started ({applied_g2} hosts)"),
        ),
        (
            "deploy g2: dashboard shows all up to date",
            format!("{converge_s:.1} s ({samples} summaries)"),
        ),
        (
            "cycles in flight per worker process (bound)",
            if a.cycles_per_process == 0 {
                "no bound".to_owned()
            } else {
                format!(
                    "{}; waits for a slot p99 / max: {:.0} / {:.0} ms ({waited} cycles waited)",
                    a.cycles_per_process,
                    percentile(&waits, 99.0),
                    waits.last().copied().unwrap_or(0.0)
                )
            },
        ),
        ("warn/error lines by kind", format!("{timeouts:?}")),
        (
            "errors (cycles not healthy + failed writes + WARN/ERROR lines)",
            format!(
                "{errors} ({error_cycles} + {failed_writes} + {})",
                log_problems.len()
            ),
        ),
    ];
    for (k, v) in &rows {
        table.row(vec![(*k).to_owned(), v.clone()]);
    }
    let mut report = Report::new("bench-load");
    report.rows.push(serde_json::json!({
        "hosts": a.hosts,
        "processes": a.processes,
        "agents_per_process": agents_per_process,
        "store": if a.shared_store { "shared" } else { "per-host" },
        "poll_interval_s": a.poll_interval.as_secs_f64(),
        "poll_jitter_s": a.poll_jitter.as_secs_f64(),
        "iam_users": agent_users + 2,
        "hosts_per_agent_user": hosts_per_user,
        "iam_users_s": users_s,
        "deploy_g1_s": deploy1_s,
        "bringup_s": bringup_s,
        "idle_s": idle_s,
        "idle_polls": idle_polls,
        "idle_requests": idle_requests.len(),
        "requests_per_s": rps,
        "requests_by_kind": by_kind,
        "poll_latency_p50_ms": percentile(&idle_latency, 50.0),
        "poll_latency_p99_ms": percentile(&idle_latency, 99.0),
        "poll_latency_max_ms": idle_latency.last().copied(),
        "worker_vm_hwm_bytes": worker_hwm,
        "worker_vm_rss_bytes": worker_rss,
        "peak_rss_per_agent_mb": per_agent_mb,
        "deploy_g2_s": deploy2_s,
        "last_host_applied_s": last_apply_s,
        "hosts_applied_g2": applied_g2,
        "all_up_to_date_s": converge_s,
        "dashboard_samples": samples,
        "dashboard_states": dash.states,
        "all_up_to_date": all_up,
        "up_to_date": dash.up_to_date,
        "outcomes": outcomes,
        "errors": errors,
        "error_cycles": error_cycles,
        "failed_writes": failed_writes,
        "write_errors": write_errors,
        "log_problems": log_problems.iter().take(20).collect::<Vec<_>>(),

        "total_s": t_all.elapsed().as_secs_f64(),
    }));
    // A second object: one `json!` of every field exceeds the macro's recursion limit.
    let where_time_went = serde_json::json!({
        "warn_lines_by_kind": timeouts,
        "cycles_per_process": a.cycles_per_process,
        "slot_wait_p50_ms": percentile(&waits, 50.0),
        "slot_wait_p99_ms": percentile(&waits, 99.0),
        "slot_wait_max_ms": waits.last().copied(),
        "cycles_that_waited_1ms_or_more": waited,
        "server_probe": server_probe,
        "worker_runtime_lag": runtime_lag,
        "worker_lag_ticks": results.iter().map(|(r, _)| r.lag_ticks).collect::<Vec<_>>(),
    });
    if let (Some(row), serde_json::Value::Object(more)) = (
        report.rows.last_mut().and_then(|r| r.as_object_mut()),
        where_time_went,
    ) {
        row.extend(more);
    }
    report.notes.push(format!(
        "{} agents as tasks in {} worker processes (fleet_agent::Agent driven as fleet-agent run drives it), each with its own state dir, profile and IAM user (agent policy of fleet_core::iam); SeaweedFS weed mini via fleet_tests::s3; requests counted by fleet_tests::proxy between the agents and the server",
        a.hosts, a.processes
    ));
    report.notes.push(
        "poll latency: Agent::cycle of the idle cycles (nothing changed, healthy) that started in the idle window; the dashboard is fleet-reporter summary --json, polled every 0.5 s after each summary returns".into(),
    );
    report.notes.push(common_note(&nix)?);
    let json_path = a.json.clone();
    report.notes.push(fleet_bench::load_note(load_before));
    println!("{}", table.render());
    println!("{}", report.notes.last().map_or("", String::as_str));
    let path = match json_path {
        Some(p) => {
            let mut text = serde_json::to_string_pretty(&report)?;
            text.push('\n');
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
            p
        }
        None => report.write()?,
    };
    eprintln!("results: {}", path.display());
    ensure!(all_up, "not every host ended up to date: {:?}", dash.states);
    Ok(())
}

/// A GET of the largest NAR file of the cache straight from SeaweedFS (with the
/// admin's credentials, not through the counting proxy, so the agents' request
/// counts do not include it) once a second from its own thread and runtime: how
/// long the server takes to answer what the agents ask while they work. Samples are
/// (start, milliseconds, whether it succeeded).
struct ServerProbe {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(u64, f64, bool)>>,
}

impl ServerProbe {
    fn start(rt: &tokio::runtime::Runtime, admin: Bucket) -> anyhow::Result<Self> {
        let listed = rt.block_on(admin.list(&fleet_core::KeyPrefix::cache()))?;
        let largest = listed
            .iter()
            .filter(|i| i.key.starts_with("cache/nar/"))
            .max_by_key(|i| i.size)
            .context("the cache holds no NAR file to probe the server with")?;
        let key = fleet_core::Key::nar(largest.key.trim_start_matches("cache/"))
            .with_context(|| format!("{} as a NAR key", largest.key))?;
        let limit = largest.size + 1;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return samples;
            };
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let (start, t) = (unix_ms(), Instant::now());
                let get = async {
                    tokio::time::timeout(Duration::from_secs(120), admin.get(&key, limit)).await
                };
                let ok = rt.block_on(get).is_ok_and(|r| r.is_ok());
                samples.push((start, t.elapsed().as_secs_f64() * 1e3, ok));
                std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
            }
            samples
        });
        Ok(Self { stop, thread })
    }

    fn stop(self) -> Vec<(u64, f64, bool)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The server probe's samples that started in `[from, to)`: count, p50, p99, max,
/// failures.
fn probe_summary(samples: &[(u64, f64, bool)], from: u64, to: u64) -> serde_json::Value {
    let inside: Vec<&(u64, f64, bool)> = samples
        .iter()
        .filter(|(t, _, _)| (from..to).contains(t))
        .collect();
    let mut ms: Vec<f64> = inside.iter().map(|s| s.1).collect();
    ms.sort_by(f64::total_cmp);
    serde_json::json!({
        "gets": ms.len(),
        "p50_ms": percentile(&ms, 50.0),
        "p99_ms": percentile(&ms, 99.0),
        "max_ms": ms.last().copied(),
        "failed": inside.iter().filter(|s| !s.2).count(),
        "over_5s": ms.iter().filter(|m| **m > 5000.0).count(),
    })
}

/// Each worker's late runtime ticks in one phase: the latest, how many were over
/// 1 s, and the seconds they add up to.
fn lag_summary(per_worker: &[Vec<(u64, u64)>]) -> serde_json::Value {
    let workers: Vec<serde_json::Value> = per_worker
        .iter()
        .map(|lags| {
            serde_json::json!({
                "max_ms": lags.iter().map(|l| l.1).max().unwrap_or(0),
                "over_1s": lags.iter().filter(|l| l.1 > 1000).count(),
                "late_s": lags.iter().map(|l| l.1).sum::<u64>() as f64 / 1e3,
            })
        })
        .collect();
    serde_json::Value::Array(workers)
}

/// The agents' WARN and ERROR lines by what they say: which timeout fired, or
/// `other`.
fn timeout_kinds(lines: &[String]) -> BTreeMap<&'static str, usize> {
    const KINDS: [(&str, &str); 5] = [
        ("the NAR request got no answer in time", "nar-no-answer"),
        ("the NAR body stalled", "nar-body-stalled"),
        ("did not arrive before its deadline", "nar-deadline"),
        ("not read before its deadline", "nar-deadline"),
        ("the narinfo did not arrive in time", "narinfo-no-answer"),
    ];
    let mut out = BTreeMap::new();
    for l in lines {
        let kind = KINDS
            .iter()
            .find(|(text, _)| l.contains(text))
            .map_or("other", |(_, k)| *k);
        *out.entry(kind).or_default() += 1;
    }
    out
}

fn common_note(nix: &Nix) -> anyhow::Result<String> {
    Ok(format!(
        "{}; bench-load built {}",
        nix.version()?,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_sorted_values() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 51.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn warn_lines_are_sorted_by_the_timeout_they_name() {
        let line = |what: &str| {
            format!(
                "2026-12-03T08:26:30Z  WARN fleet_agent::cycle::manifest: fetching closure /nix/store/x failed: reading cache/nar/y.nar.zst (for /nix/store/x) timed out: {what} (limit 30s)"
            )
        };
        let lines = vec![
            line("the NAR request got no answer in time"),
            line("the NAR request got no answer in time"),
            line("the narinfo did not arrive in time"),
            line("the NAR body stalled"),
            line(
                "the NAR file did not arrive before its deadline (request timeout plus size over the minimum transfer rate)",
            ),
            "2026-12-03T08:26:30Z  WARN fleet_agent: could not write the status".to_owned(),
        ];
        let kinds = timeout_kinds(&lines);
        let want: BTreeMap<&str, usize> = [
            ("nar-no-answer", 2),
            ("narinfo-no-answer", 1),
            ("nar-body-stalled", 1),
            ("nar-deadline", 1),
            ("other", 1),
        ]
        .into_iter()
        .collect();
        assert_eq!(kinds, want);
    }

    #[test]
    fn arguments() {
        let a = parse_args(&[
            "--hosts".into(),
            "3".into(),
            "--processes".into(),
            "8".into(),
            "--duration".into(),
            "2.5s".into(),
        ])
        .unwrap();
        assert_eq!((a.hosts, a.processes), (3, 3));
        assert_eq!(a.duration, Duration::from_millis(2500));
        assert!(parse_args(&["--store".into(), "x".into()]).is_err());
        assert_eq!(a.cycles_per_process, DEFAULT_CYCLES_PER_PROCESS);
        let a = parse_args(&["--cycles-per-process".into(), "0".into()]).unwrap();
        assert_eq!(a.cycles_per_process, 0);
        let e = parse_args(&["--cycles-per-process".into(), "many".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("--cycles-per-process"), "{e:#}");
    }
}
