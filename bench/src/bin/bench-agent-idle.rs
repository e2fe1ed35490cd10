//! `bench-agent-idle`: the agent daemon (`fleet-agent run`) once it is idle, its
//! manifest applied and nothing changing (see bench/README.md).
//!
//! ```text
//! bench-agent-idle [--polls 30] [--poll-ms 200]
//! ```
//!
//! For each store, a `file://` bucket and a SeaweedFS bucket (`weed mini`, started by
//! `fleet_tests::s3` as the tests start it, IAM enforced; the agent holds its host's
//! scoped credentials from `fleet_core::iam`): the harness's fixture system closure is
//! published with `nix copy --to file://…` (signed), a signed manifest points at it,
//! and the release `fleet-agent` built next to this binary runs `once` (fetch,
//! activate into a chroot store, report healthy) and then `run` with a short poll
//! interval, no jitter and a 1 h heartbeat. Once the daemon has made a few warm-up
//! polls, the benchmark waits for `--polls` more and measures:
//!
//! - idle memory, from `/proc/<pid>/status` after those polls: `VmRSS` (target at
//!   most 15 MB), `VmHWM` (the peak since start, first cycle included), `RssAnon`,
//!   `Threads`, and the growth of `VmRSS` over the idle polls;
//! - requests per idle poll on SeaweedFS (target exactly 1, the conditional GET
//!   answered 304): the requests are counted by `fleet_tests::proxy`, a counting HTTP
//!   proxy between agent and server (the one `tests/tests/agent_s3.rs` uses), the
//!   polls from the daemon's own log (`polling the manifest`, and `manifest
//!   unchanged` for each 304), as the test counts them.
//!
//! Both counts are read at moments when the daemon is between polls (its last poll
//! answered, log and proxy quiet for a while), so neither is off by a request in
//! flight. The benchmark fails if the agent's `once` is not healthy, if the daemon
//! exits, fails a cycle, fetches or activates anything, or does not make its polls in
//! time, or if a measurement is missing; a target missed is reported, not fatal.
//! Prints a table and writes `bench/results/bench-agent-idle.json`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use fleet_bench::{Report, Table, load_average, sibling_binary};
use fleet_core::iam::Role;
use fleet_core::keys::{PublicKey, SecretKey};
use fleet_core::manifest::Manifest;
use fleet_core::narinfo::Compression;
use fleet_core::status::{AgentState, StatusReport};
use fleet_core::store_path::StorePathHash;
use fleet_core::{Activation, Bucket, HostName, Key};
use fleet_tests::nix::{Closure, FixtureOptions, Nix};
use fleet_tests::proxy::{Requests, counting_proxy};
use fleet_tests::s3::S3Server;

const USAGE: &str = "usage: bench-agent-idle [--polls N] [--poll-ms MS]   (see bench/README.md)";

/// Idle RSS target, bytes (15 MB).
const RSS_TARGET_BYTES: u64 = 15_000_000;
/// Polls left out of the measurement: the daemon's first cycle announces itself with
/// a status write, and the allocator settles over the next.
const WARMUP_POLLS: usize = 3;
/// How long log and proxy must stay unchanged for the daemon to count as between
/// polls; far above a loopback request, well under the poll interval.
const QUIET: Duration = Duration::from_millis(40);

const HOST: &str = "idle-1";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = real_main(&args) {
        eprintln!("bench-agent-idle: error: {e:#}");
        std::process::exit(1);
    }
}

struct Args {
    polls: usize,
    poll_ms: u64,
}

fn parse_args(args: &[String]) -> anyhow::Result<Args> {
    let mut a = Args {
        polls: 30,
        poll_ms: 200,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{arg} needs a value; {USAGE}"))
        };
        match arg.as_str() {
            "--polls" => a.polls = value()?.parse().context("--polls needs a number")?,
            "--poll-ms" => a.poll_ms = value()?.parse().context("--poll-ms needs a number")?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    ensure!(a.polls >= 1, "--polls must be at least 1");
    // Below this the quiet window no longer fits between two polls.
    ensure!(a.poll_ms >= 100, "--poll-ms must be at least 100");
    Ok(a)
}

/// What both worlds share: keys, the closure and the agent binary.
struct Common {
    nix: Nix,
    agent: PathBuf,
    closure: Closure,
    cache_secret_file: PathBuf,
    cache_public: PublicKey,
    publisher: SecretKey,
    poll_ms: u64,
}

/// One host's world: a bucket holding the published closure and a signed manifest,
/// and the agent's config, state, chroot store and profile in `dir`.
struct World<'a> {
    common: &'a Common,
    dir: PathBuf,
    host: HostName,
    store_url: String,
    /// Extra environment of the agent (its S3 credentials).
    env: Vec<(String, String)>,
}

impl World<'_> {
    fn profile(&self) -> PathBuf {
        self.dir.join("profiles/system")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// Publishes the closure into `cache_dir` with real `nix copy`, signed by the
    /// trusted cache key.
    fn publish_closure(&self, cache_dir: &Path) -> anyhow::Result<()> {
        let c = self.common;
        c.nix.copy_to_file_cache(
            std::slice::from_ref(&c.closure.top),
            cache_dir,
            Some(&c.cache_secret_file),
            Compression::Zstd,
        )?;
        Ok(())
    }

    /// The signed manifest for the closure, as the publisher writes it.
    fn signed_manifest(&self) -> Vec<u8> {
        let now = jiff::Timestamp::now();
        Manifest {
            version: 1,
            host: self.host.clone(),
            sequence: 1,
            closure: self.common.closure.top.clone(),
            issued_at: now - jiff::SignedDuration::from_mins(1),
            expires_at: now + jiff::SignedDuration::from_hours(24),
            cache_keys: vec![self.common.cache_public.clone()],
            activation: Activation::Switch,
            activate_after: None,
            maintenance_windows: None,
        }
        .sign(&self.common.publisher)
    }

    fn config_file(&self) -> anyhow::Result<PathBuf> {
        let path = self.dir.join("agent.toml");
        let facts = self.dir.join("root");
        std::fs::create_dir_all(facts.join("etc"))?;
        std::fs::write(
            facts.join("etc/os-release"),
            "NAME=NixOS\nVERSION_ID=\"24.05\"\n",
        )?;
        fleet_tests::agent::AgentConfig {
            bucket: self.store_url.clone(),
            host: self.host.to_string(),
            publisher_keys: vec![self.common.publisher.public().to_nix_string()],
            cache_keys: vec![self.common.cache_public.to_nix_string()],
            state_dir: self.dir.join("state"),
            chroot: self.dir.join("chroot"),
            profile: self.profile(),
            facts_root: Some(facts),
            request_timeout: "5s".into(),
            activation_timeout: "60s".into(),
            extra: format!(
                "poll-interval = \"{}ms\"\nheartbeat-interval = \"1h\"\n",
                self.common.poll_ms
            ),
        }
        .write(&path)
        .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// `fleet-agent SUB` with this world's config and Nix's environment, and no
    /// FLEET_, AWS_ or systemd variables from the caller.
    fn agent_cmd(&self, sub: &str) -> anyhow::Result<Command> {
        let mut cmd =
            fleet_tests::agent::clean_command(&self.common.agent, &self.dir.join("xdg-cache"));
        cmd.arg(sub)
            .arg("--config")
            .arg(self.config_file()?)
            // The poll lines are debug events; the counts are read from them.
            .env("RUST_LOG", "info,fleet_agent=debug")
            .stdin(Stdio::null());
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        Ok(cmd)
    }

    /// Runs `fleet-agent once` and checks that it applied the manifest.
    fn bring_up(&self) -> anyhow::Result<()> {
        let out = self
            .agent_cmd("once")?
            .output()
            .context("running fleet-agent once")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success(),
            "fleet-agent once failed ({}):\n{}",
            out.status,
            stderr.trim_end()
        );
        let report: StatusReport = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("fleet-agent once printed no status report:\n{stderr}"))?;
        ensure!(
            report.state == AgentState::Healthy,
            "fleet-agent once ended {} instead of healthy:\n{}",
            report.state,
            stderr.trim_end()
        );
        let running = fleet_agent::activate::profile_target(&self.profile());
        ensure!(
            running.as_ref() == Some(&self.common.closure.top),
            "after fleet-agent once the profile points at {running:?}, not {}",
            self.common.closure.top
        );
        Ok(())
    }

    fn spawn_daemon(&self) -> anyhow::Result<Daemon> {
        let log = std::fs::File::create(self.log())?;
        let child = self
            .agent_cmd("run")?
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting fleet-agent run")?;
        Ok(Daemon(child))
    }
}

/// The running daemon; killed when dropped, so no error path leaves it behind.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the daemon's log says so far.
#[derive(Clone, Copy, Debug, PartialEq)]
struct LogCounts {
    /// `polling the manifest` lines: polls started.
    polls: usize,
    /// `manifest unchanged` lines: polls answered 304.
    unchanged: usize,
    /// Whether the last poll started has been answered 304.
    answered: bool,
    /// Bytes of log, to see that nothing at all was logged meanwhile.
    len: usize,
}

/// What no idle daemon logs: a manifest accepted (so a fetch or an activation), an
/// activation, a backoff, or anything at WARN or ERROR level (a failed cycle, a
/// status write refused).
const NOT_IDLE: [&str; 5] = [
    "accepted manifest",
    "activating",
    "backing off",
    " WARN ",
    " ERROR ",
];

fn log_counts(log: &str) -> anyhow::Result<LogCounts> {
    if let Some(line) = log.lines().find(|l| NOT_IDLE.iter().any(|w| l.contains(w))) {
        bail!("the daemon did not stay idle: {line}\n{}", tail(log));
    }
    let last_poll = log.rfind("polling the manifest");
    let last_unchanged = log.rfind("manifest unchanged");
    Ok(LogCounts {
        polls: log.matches("polling the manifest").count(),
        unchanged: log.matches("manifest unchanged").count(),
        answered: matches!((last_poll, last_unchanged), (Some(p), Some(u)) if u > p),
        len: log.len(),
    })
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let from = lines.len().saturating_sub(30);
    format!("--- daemon log (end)\n{}", lines[from..].join("\n"))
}

/// One reading taken between two polls.
#[derive(Clone, Debug)]
struct Snapshot {
    log: LogCounts,
    /// Requests the proxy has seen (S3 only).
    requests: Option<Vec<String>>,
    proc: ProcStatus,
}

/// Memory and threads of a process, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug)]
struct ProcStatus {
    vm_rss: u64,
    vm_hwm: u64,
    rss_anon: u64,
    rss_file: u64,
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
        let n = v.split_whitespace().next().unwrap_or("");
        let n: u64 = n
            .parse()
            .with_context(|| format!("{name} in {path}: {v:?}"))?;
        // Memory fields are in kB (KiB); Threads is a count.
        Ok(if v.contains("kB") { n * 1024 } else { n })
    };
    Ok(ProcStatus {
        vm_rss: field("VmRSS")?,
        vm_hwm: field("VmHWM")?,
        rss_anon: field("RssAnon")?,
        rss_file: field("RssFile")?,
        threads: field("Threads")?,
    })
}

/// Waits until the daemon has started at least `polls` polls and is between two
/// polls (the last one answered 304, log and proxy quiet for [`QUIET`]), then reads
/// its memory, log counts and requests. Fails if the daemon exits, stops being idle
/// or does not get there by `deadline`.
fn snapshot_after(
    daemon: &mut Daemon,
    log_path: &Path,
    requests: Option<&Requests>,
    polls: usize,
    deadline: Instant,
) -> anyhow::Result<Snapshot> {
    let read = |log_path: &Path| -> anyhow::Result<(String, LogCounts)> {
        let log = std::fs::read_to_string(log_path)
            .with_context(|| format!("reading {}", log_path.display()))?;
        let counts = log_counts(&log)?;
        Ok((log, counts))
    };
    loop {
        if let Some(status) = daemon.0.try_wait()? {
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            bail!(
                "fleet-agent run exited ({status}) while idle\n{}",
                tail(&log)
            );
        }
        let (log, before) = read(log_path)?;
        if Instant::now() > deadline {
            bail!(
                "the daemon did not make {polls} idle polls in time: {} polls started, {} answered 304\n{}",
                before.polls,
                before.unchanged,
                tail(&log)
            );
        }
        if before.polls >= polls && before.answered {
            let seen = requests.map(Requests::snapshot);
            let proc = proc_status(daemon.0.id())?;
            std::thread::sleep(QUIET);
            let (_, after) = read(log_path)?;
            let seen_after = requests.map(Requests::len);
            if after == before && seen_after == seen.as_ref().map(Vec::len) {
                return Ok(Snapshot {
                    log: before,
                    requests: seen,
                    proc,
                });
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The measurement of one store.
struct Measured {
    store: &'static str,
    start: Snapshot,
    end: Snapshot,
}

fn measure_idle(
    store: &'static str,
    world: &World<'_>,
    requests: Option<&Requests>,
    polls: usize,
) -> anyhow::Result<Measured> {
    world.bring_up()?;
    if let Some(r) = requests {
        r.take();
    }
    let mut daemon = world.spawn_daemon()?;
    let started = Instant::now();
    // Generous: a loaded machine stretches each cycle, but not tenfold.
    let budget = |n: usize| {
        Duration::from_millis(world.common.poll_ms * 10) * n as u32 + Duration::from_secs(30)
    };
    let start = snapshot_after(
        &mut daemon,
        &world.log(),
        requests,
        WARMUP_POLLS,
        started + budget(WARMUP_POLLS),
    )
    .with_context(|| format!("{store}: warming up"))?;
    let end = snapshot_after(
        &mut daemon,
        &world.log(),
        requests,
        start.log.polls + polls,
        Instant::now() + budget(polls),
    )
    .with_context(|| format!("{store}: idle polls"))?;
    drop(daemon);
    let idle_polls = end.log.polls - start.log.polls;
    let idle_unchanged = end.log.unchanged - start.log.unchanged;
    ensure!(
        idle_unchanged == idle_polls,
        "{store}: only {idle_unchanged} of {idle_polls} idle polls were answered 304 (manifest unchanged)"
    );
    Ok(Measured { store, start, end })
}

fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

fn real_main(args: &[String]) -> anyhow::Result<()> {
    let a = parse_args(args)?;
    let agent = sibling_binary("fleet-agent")?;
    let nix = Nix::new()?;
    let load_before = load_average();
    let work = tempfile::Builder::new()
        .prefix("bench-agent-idle-")
        .tempdir()?;
    let (cache_secret_file, pk) = nix.generate_binary_cache_key("bench-cache-1", work.path())?;
    eprintln!("building the fixture system closure (once per machine)…");
    let closure = nix.fixture_system(HOST, "1", &FixtureOptions::salted("bench-agent-idle"))?;
    let common = Common {
        agent,
        closure,
        cache_secret_file,
        cache_public: PublicKey::load(&pk)?,
        publisher: SecretKey::generate("bench-publisher-1")?,
        poll_ms: a.poll_ms,
        nix,
    };
    let host = HostName::new(HOST)?;
    let mut results = Vec::new();

    // file:// bucket: the cache is written straight into the bucket's cache/.
    {
        let dir = work.path().join("file");
        let bucket_root = dir.join("bucket");
        let world = World {
            common: &common,
            dir,
            host: host.clone(),
            store_url: format!("file://{}", bucket_root.display()),
            env: Vec::new(),
        };
        eprintln!(
            "file://: publishing, fleet-agent once, then {} idle polls…",
            a.polls
        );
        world.publish_closure(&bucket_root.join("cache"))?;
        let bucket = Bucket::open_url(&world.store_url)?;
        let rt = runtime()?;
        rt.block_on(bucket.put(&Key::manifest(&host), world.signed_manifest()))?;
        results.push(measure_idle("file://", &world, None, a.polls)?);
    }

    // SeaweedFS: the admin writes the bucket; the agent holds its host's scoped keys
    // and talks to the server through the counting proxy.
    let bucket_name;
    {
        let rt = runtime()?;
        let (server, name, admin, creds) = rt.block_on(async {
            let server = S3Server::seaweedfs().await?;
            let name = server.new_bucket("bench-agent-idle").await?;
            let admin = server.bucket(&name, "", &server.admin_credentials())?;
            let creds = server
                .user_for(&Role::Agent(host.clone()), &name, "")
                .await?;
            anyhow::Ok((server, name, admin, creds))
        })?;
        let requests = Requests::default();
        let port = counting_proxy(
            server.endpoint().trim_start_matches("http://"),
            requests.clone(),
        )
        .context("starting the counting proxy")?;
        let dir = work.path().join("seaweedfs");
        let world = World {
            common: &common,
            store_url: format!("s3://{name}?endpoint=http://127.0.0.1:{port}&region=us-east-1"),
            env: S3Server::credentials_env(&creds)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            dir,
            host: host.clone(),
        };
        eprintln!(
            "SeaweedFS: publishing, fleet-agent once, then {} idle polls…",
            a.polls
        );
        let local_cache = world.dir.join("cache");
        world.publish_closure(&local_cache)?;
        for (key, path) in cache_objects(&local_cache)? {
            let bytes = std::fs::read(&path)?;
            rt.block_on(admin.put(&key, bytes))
                .with_context(|| format!("uploading {key}"))?;
        }
        rt.block_on(admin.put(&Key::manifest(&host), world.signed_manifest()))?;
        results.push(measure_idle("SeaweedFS", &world, Some(&requests), a.polls)?);
        bucket_name = name;
    }

    let manifest_get = format!("GET /{bucket_name}/hosts/{HOST}/manifest.json");
    let mut table = Table::new(&[
        "store",
        "idle polls",
        "requests",
        "requests/poll",
        "VmRSS MB",
        "VmHWM MB",
        "RssAnon MB",
        "RSS growth MB",
        "threads",
        "targets",
    ]);
    let mut report = Report::new("bench-agent-idle");
    report.notes.push(format!(
        "fleet-agent run (release), poll-interval {} ms, poll-jitter 0s, heartbeat-interval 1h; {WARMUP_POLLS} warm-up polls, then {} idle polls measured",
        a.poll_ms, a.polls
    ));
    report.notes.push(
        "memory from /proc/<pid>/status after the idle polls (MB = 10^6 bytes): VmRSS, VmHWM (peak since start, first cycle included), RssAnon; RSS growth is VmRSS after minus VmRSS after warm-up".into(),
    );
    report.notes.push(
        "polls counted from the daemon log (`polling the manifest`, each answered `manifest unchanged`), requests by fleet_tests::proxy between agent and SeaweedFS; both read while the daemon is between polls".into(),
    );
    report.notes.push(common.nix.version()?);
    for m in &results {
        let idle_polls = m.end.log.polls - m.start.log.polls;
        let idle_requests: Option<Vec<String>> = match (&m.start.requests, &m.end.requests) {
            (Some(s), Some(e)) => {
                ensure!(
                    e.len() >= s.len() && e[..s.len()] == s[..],
                    "{}: the proxy's request list changed under the benchmark",
                    m.store
                );
                Some(e[s.len()..].to_vec())
            }
            (None, None) => None,
            _ => bail!("{}: a request count is missing", m.store),
        };
        ensure!(idle_polls >= 1, "{}: no idle poll was measured", m.store);
        let ratio = idle_requests
            .as_ref()
            .map(|r| r.len() as f64 / idle_polls as f64);
        let mut by_kind = std::collections::BTreeMap::<&str, usize>::new();
        for r in idle_requests.iter().flatten() {
            *by_kind.entry(r.as_str()).or_default() += 1;
        }
        let only_manifest_gets = idle_requests
            .as_ref()
            .map(|r| r.iter().all(|x| *x == manifest_get));
        let rss_met = m.end.proc.vm_rss <= RSS_TARGET_BYTES;
        let requests_met = idle_requests.as_ref().map(|r| r.len() == idle_polls);
        let growth = m.end.proc.vm_rss as i64 - m.start.proc.vm_rss as i64;
        let verdict = |met: bool| if met { "met" } else { "MISSED" };
        table.row(vec![
            m.store.into(),
            idle_polls.to_string(),
            idle_requests
                .as_ref()
                .map_or("-".into(), |r| r.len().to_string()),
            ratio.map_or("-".into(), |r| format!("{r:.2}")),
            mb(m.end.proc.vm_rss),
            mb(m.end.proc.vm_hwm),
            mb(m.end.proc.rss_anon),
            format!("{:+.2}", growth as f64 / 1e6),
            m.end.proc.threads.to_string(),
            format!(
                "RSS ≤ 15 MB {}; 1 request/poll {}",
                verdict(rss_met),
                requests_met.map_or("n/a", verdict)
            ),
        ]);
        report.rows.push(serde_json::json!({
            "store": m.store,
            "idle_polls": idle_polls,
            "idle_polls_answered_304": m.end.log.unchanged - m.start.log.unchanged,
            "warmup_polls": m.start.log.polls,
            "requests": idle_requests.as_ref().map(Vec::len),
            "requests_per_poll": ratio,
            "requests_by_kind": idle_requests.as_ref().map(|_| &by_kind),
            "only_conditional_manifest_gets": only_manifest_gets,
            "startup_requests": m.start.requests,
            "vm_rss_bytes": m.end.proc.vm_rss,
            "vm_hwm_bytes": m.end.proc.vm_hwm,
            "rss_anon_bytes": m.end.proc.rss_anon,
            "rss_file_bytes": m.end.proc.rss_file,
            "vm_rss_after_warmup_bytes": m.start.proc.vm_rss,
            "rss_growth_bytes": growth,
            "threads": m.end.proc.threads,
            "poll_interval_ms": a.poll_ms,
            "rss_target_bytes": RSS_TARGET_BYTES,
            "rss_target_met": rss_met,
            "requests_target_met": requests_met,
        }));
    }
    report.finish(&table, load_before)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The objects of a `file://` binary cache in `dir`, with their bucket keys.
fn cache_objects(dir: &Path) -> anyhow::Result<Vec<(Key, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() {
            if name != "nar" {
                // `nix copy` also makes an empty `log/` (build logs), which has no
                // place in the bucket's layout.
                ensure!(
                    std::fs::read_dir(entry.path())?.next().is_none(),
                    "unexpected non-empty directory {name} in the cache"
                );
                continue;
            }
            for nar in std::fs::read_dir(entry.path())? {
                let nar = nar?;
                let file = nar.file_name().to_string_lossy().into_owned();
                out.push((Key::nar(&format!("nar/{file}"))?, nar.path()));
            }
        } else if name == "nix-cache-info" {
            out.push((Key::cache_info(), entry.path()));
        } else {
            let hash = name
                .strip_suffix(".narinfo")
                .with_context(|| format!("unexpected file {name} in the cache"))?;
            let hash = StorePathHash::new(hash)
                .with_context(|| format!("unexpected file {name} in the cache"))?;
            out.push((Key::narinfo(&hash), entry.path()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLL: &str = "2025-01-01T00:00:00.000000Z DEBUG fleet_agent::cycle: polling the manifest key=hosts/idle-1/manifest.json etag=Some(\"x\")\n";
    const UNCHANGED: &str =
        "2025-01-01T00:00:00.001000Z DEBUG fleet_agent::cycle: manifest unchanged\n";

    #[test]
    fn a_daemon_is_between_polls_once_its_last_poll_is_answered() {
        let mid = format!("{POLL}{UNCHANGED}{POLL}");
        let c = log_counts(&mid).unwrap();
        assert_eq!((c.polls, c.unchanged, c.answered), (2, 1, false));
        let c = log_counts(&format!("{mid}{UNCHANGED}")).unwrap();
        assert_eq!((c.polls, c.unchanged, c.answered), (2, 2, true));
        assert!(!log_counts("").unwrap().answered);
        let e = log_counts(&format!(
            "{mid}2025-01-01T00:00:00.002000Z  WARN fleet_agent::cmd::run: heartbeat: could not write status: x\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("did not stay idle"), "{e}");
    }

    #[test]
    fn reads_memory_and_threads_of_a_process() {
        let s = proc_status(std::process::id()).unwrap();
        assert!(s.vm_rss > 1 << 20 && s.vm_hwm >= s.vm_rss, "{s:?}");
        assert!(s.rss_anon > 0 && s.rss_file > 0 && s.threads >= 1, "{s:?}");
    }
}
