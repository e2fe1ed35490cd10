//! Fleet under a flaky S3: real agents (`fleet-agent once`) and real publishers
//! (`fleet-publish deploy`) talk to SeaweedFS through the harness's seeded fault
//! injector ([`fleet_tests::fault_proxy`]: 503 bursts, 500s, resets before and in the
//! middle of a body, stalls, drip-fed and truncated bodies, writes applied and then
//! dropped), and the invariants are checked after every run:
//!
//! - an agent activates only a closure whose every path is valid in its store (fully
//!   fetched and verified); a failed cycle leaves the host on its generation; once
//!   the faults stop, the next cycle brings it to the deployed generation;
//! - the cache is consistent: every narinfo verifies, and its NAR and the narinfos
//!   of its references exist;
//! - compare-and-swap never gives one sequence to two deploys (two publishers race
//!   through the faults), no successful deploy is lost, and a deploy after the
//!   faults stop gets the next sequence;
//! - SeaweedFS killed with SIGKILL and restarted on the same data directory keeps
//!   every acknowledged manifest, and the agents converge after it;
//! - `fleet-reporter summary` through the faults fails with a clear error or shows
//!   every host in a state its objects support;
//! - releases and rollouts (`release`, two racing `rollout advance`, agents cycling)
//!   deploy each wave once, audit each step once and finish calmly
//!   ([`faults_rollout`]).
//!
//! Iterations: `FLEET_FAULT_ITERATIONS` (default 2 per test, for CI); seeds:
//! `FLEET_FAULT_SEED` (default fixed, `random` for a fresh one); iteration `i` runs
//! seed `FLEET_FAULT_SEED + i`. A failing iteration prints the line that replays it.

mod agent_common;
mod e2e_support;
mod faults_rollout;
mod publish_support;

use std::collections::{BTreeMap, BTreeSet};

use agent_common::World;
use fleet_core::narinfo::NarInfo;
use fleet_core::status::AgentState;
use fleet_core::{Bucket, HostName, Key, KeyPrefix, TrustedKeys};
use fleet_tests::fault_proxy::{FaultPlan, FaultProxy, FaultStats};
use fleet_tests::nix::{Closure, FixtureOptions};
use fleet_tests::s3::{S3Server, ServerKind, store_url_at};

/// Default base seed, so CI runs one known schedule.
const DEFAULT_SEED: u64 = 0x5eed_f1ee;

/// The base seed and the number of iterations, from the environment.
fn seeds() -> Vec<u64> {
    let base = match std::env::var("FLEET_FAULT_SEED").ok().as_deref() {
        None | Some("") => DEFAULT_SEED,
        Some("random") => {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).unwrap();
            u64::from_le_bytes(b) >> 16
        }
        Some(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("FLEET_FAULT_SEED={s:?} is not a number or `random`")),
    };
    let n: u64 = std::env::var("FLEET_FAULT_ITERATIONS")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("FLEET_FAULT_ITERATIONS is a number"))
        .unwrap_or(2);
    eprintln!("fault runs: FLEET_FAULT_SEED={base} FLEET_FAULT_ITERATIONS={n}");
    (0..n).map(|i| base.wrapping_add(i)).collect()
}

/// Prints how to replay a seed when the iteration it guards panics.
struct Replay(u64, &'static str);

impl Drop for Replay {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "FAULT RUN FAILED: replay with FLEET_FAULT_SEED={} FLEET_FAULT_ITERATIONS=1 \
                 cargo nextest run -p fleet-tests --test faults {}",
                self.0, self.1
            );
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn print_stats(what: &str, stats: &FaultStats) {
    let total: u64 = stats.values().sum();
    eprintln!("{what}: {total} requests, faults {stats:?}");
}

/// Checks that every narinfo in `cache/` verifies with `trusted` and that its NAR
/// and the narinfos of its references exist. Returns how many narinfos it checked.
async fn check_cache_consistent(bucket: &Bucket, trusted: &TrustedKeys) -> usize {
    let listed = bucket.list(&KeyPrefix::cache()).await.unwrap();
    let keys: BTreeSet<String> = listed.iter().map(|o| o.key.clone()).collect();
    let mut narinfos = 0;
    for key in keys.iter().filter(|k| k.ends_with(".narinfo")) {
        let hash = key
            .rsplit('/')
            .next()
            .and_then(|n| n.strip_suffix(".narinfo"))
            .unwrap();
        let k = Key::narinfo(&fleet_core::store_path::StorePathHash::new(hash).unwrap());
        let text = bucket.get(&k, 1 << 20).await.unwrap().bytes;
        let ni = NarInfo::parse(&text, key).unwrap_or_else(|e| panic!("{key}: {e}"));
        ni.verify(trusted, key)
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        let nar = Key::nar(&ni.url).unwrap();
        let head = bucket.head(&nar).await.unwrap();
        let head = head.unwrap_or_else(|| panic!("{key} names {nar}, which is missing"));
        if let Some(size) = ni.file_size {
            assert_eq!(head.size, size, "{nar} is not the size {key} says");
        }
        for r in &ni.references {
            let rk = format!("cache/{}.narinfo", r.hash());
            assert!(
                keys.contains(&rk),
                "{key} refers to {r}, whose narinfo is missing"
            );
        }
        narinfos += 1;
    }
    narinfos
}

/// The agent's invariants after a cycle that ran under faults, from `from` towards
/// `to`: it activated only closures it holds whole, and it is on one of the two.
fn check_agent_after_faults(w: &World, from: &Closure, to: &Closure) {
    let activated = w.activated();
    for top in &activated {
        assert!(
            *top == from.top || *top == to.top,
            "activated {top}, which was never deployed"
        );
    }
    let profile = w.profile_target();
    if activated.contains(&to.top) || profile.as_ref() == Some(&to.top) {
        for p in &to.paths {
            assert!(
                w.nix.is_valid_in(&w.chroot, p).unwrap(),
                "{} was activated but {p} is not valid in the host's store",
                to.top
            );
        }
        let trusted = w.cache_public.to_nix_string();
        w.nix
            .verify_store(w.chroot.to_str().unwrap(), &to.paths, &trusted, 0)
            .unwrap_or_else(|e| panic!("the activated closure does not verify: {e}"));
    } else {
        assert_eq!(
            profile.as_ref(),
            Some(&from.top),
            "a failed cycle moved the host off its generation"
        );
    }
}

/// What the summaries run under faults gave.
#[derive(Default)]
struct ReporterCount {
    /// Summaries that failed (exit 1, naming the bucket).
    failed: usize,
    /// Rows checked against the objects.
    rows: usize,
    /// Rows flagged because an object could not be read.
    unread: usize,
}

/// What [`check_events_exactly_once`] counted for one host.
#[derive(Default)]
struct EventCount {
    produced: u64,
    delivered: usize,
    dropped: u64,
}

/// The status events invariant: every event the agent produced (its state file's
/// `event_counter`, names fixed when queued) is in the bucket at most once, under
/// the name it was queued with, in the order it was produced; once `settled` (a calm
/// cycle ran), every one is there exactly once or counted as dropped by the bounded
/// queue, and none is left queued.
fn check_events_exactly_once(w: &World, settled: bool) -> EventCount {
    let state = w.state();
    let listed = w
        .block_on(w.bucket.list(&KeyPrefix::status_events(&w.host)))
        .unwrap();
    let mut names: Vec<String> = listed
        .iter()
        .map(|o| {
            let n = o.key.rsplit('/').next().unwrap();
            n.strip_suffix(".json").unwrap().to_owned()
        })
        .collect();
    names.sort();
    let counter = |n: &str| -> u64 { n.rsplit('-').next().unwrap().parse().unwrap() };
    let counters: Vec<u64> = names.iter().map(|n| counter(n)).collect();
    let unique: BTreeSet<u64> = counters.iter().copied().collect();
    assert_eq!(
        unique.len(),
        counters.len(),
        "an event reached the bucket twice: {names:?}"
    );
    assert!(
        counters.windows(2).all(|p| p[0] < p[1]),
        "the events' names do not sort in the order they were produced: {names:?}"
    );
    assert!(
        counters.iter().all(|c| *c <= state.event_counter),
        "an event the agent never counted is in the bucket: {names:?}, counter {}",
        state.event_counter
    );
    let times: Vec<jiff::Timestamp> = w.events().iter().map(|e| e.time).collect();
    assert!(
        times.windows(2).all(|p| p[0] <= p[1]),
        "events out of order in time"
    );
    if settled {
        assert!(
            state.pending_events.is_empty(),
            "events still queued after a calm cycle: {:?}",
            state
                .pending_events
                .iter()
                .map(|e| &e.name)
                .collect::<Vec<_>>()
        );
        let missing: Vec<u64> = (1..=state.event_counter)
            .filter(|c| !unique.contains(c))
            .collect();
        assert_eq!(
            missing.len() as u64,
            state.dropped_events,
            "events {missing:?} never reached the bucket, {} counted as dropped",
            state.dropped_events
        );
    }
    EventCount {
        produced: state.event_counter,
        delivered: names.len(),
        dropped: state.dropped_events,
    }
}

/// The state the reporter must show for `host`, computed from its objects alone
/// (as `reporter/src/fleet/classify.rs` orders them, for fresh statuses): flagged
/// when its manifest does not verify with `trusted` or its status does not parse;
/// never-seen without a status; the agent's failed, rolled-back, refused or retired;
/// else up-to-date when its status's current closure is the manifest's, pending
/// otherwise.
async fn expected_reporter_state(
    bucket: &Bucket,
    host: &HostName,
    trusted: &TrustedKeys,
) -> &'static str {
    use fleet_core::manifest::{Manifest, VerifyPolicy};
    let read = |k: Key| async move { bucket.get(&k, 1 << 20).await.ok().map(|o| o.bytes) };
    let policy = VerifyPolicy {
        trusted,
        host,
        highest_seen: None,
        now: Some(jiff::Timestamp::now()),
    };
    let desired = match read(Key::manifest(host)).await {
        Some(b) => match Manifest::verify(&b, &policy) {
            Ok(v) if v.manifest.activation == fleet_core::Activation::Retire => {
                return "retired";
            }
            Ok(v) => Some(v.manifest.closure),
            Err(_) => return "flagged",
        },
        None => None,
    };
    let Some(status) = read(Key::status(host)).await else {
        return "never-seen";
    };
    let Ok(r) = fleet_core::StatusReport::parse(&status, "status.json", host) else {
        return "flagged";
    };
    let desired = desired.or_else(|| r.desired.as_ref().map(|d| d.closure.clone()));
    match r.state {
        AgentState::Retired => "retired",
        AgentState::Failed => "failed",
        AgentState::RolledBack => "rolled-back",
        AgentState::Refused => "refused",
        _ if r.current.as_ref().map(|c| &c.closure) == desired.as_ref() && desired.is_some() => {
            "up-to-date"
        }
        _ => "pending",
    }
}

/// Runs `fleet-reporter summary --json` on `url` with `env` (credentials) trusting
/// `key_file`. `Err` with what it printed when it could not aggregate (under faults
/// it may not); then it must have failed the documented way: exit code 1 and an
/// error naming the bucket it could not read.
fn reporter_summary(
    url: &str,
    env: &[(&'static str, String)],
    key_file: &std::path::Path,
) -> Result<serde_json::Value, String> {
    let o = std::process::Command::new(fleet_tests::bin("fleet-reporter"))
        .args(["summary", "--json", "--bucket", url, "--trusted-key-file"])
        .arg(key_file)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("FLEET_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    // 0: every host passes the gate; 3: some host fails it. Both aggregated.
    match o.status.code() {
        Some(0 | 3) => Ok(serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "summary --json printed no JSON ({e}): {}",
                String::from_utf8_lossy(&o.stdout)
            )
        })),
        code => {
            assert_eq!(code, Some(1), "summary failed oddly: {stderr}");
            assert!(
                o.stdout.is_empty(),
                "a failed summary printed rows: {}",
                String::from_utf8_lossy(&o.stdout)
            );
            assert!(
                stderr.contains(&format!("reading the fleet from {url}")),
                "the error does not name the bucket: {stderr}"
            );
            Err(stderr)
        }
    }
}

/// The reporter invariant: every host the summary shows is in the state its
/// objects support ([`expected_reporter_state`], read directly with `admin`), and
/// every host with a manifest or a status has a row. `faulted`: the summary ran
/// through faults, so a host whose object it could not read may instead be
/// flagged, with a flag saying so (never shown in a state its objects do not
/// support). Returns how many rows were checked and how many were flagged so.
async fn check_reporter_against_objects(
    summary: &serde_json::Value,
    admin: &Bucket,
    trusted: &TrustedKeys,
    faulted: bool,
) -> (usize, usize) {
    let rows = summary["rows"].as_array().expect("summary rows");
    let mut unread = 0;
    for row in rows {
        let host = HostName::new(row["host"].as_str().unwrap()).unwrap();
        let expected = expected_reporter_state(admin, &host, trusted).await;
        let cannot_read = row["flags"].as_array().is_some_and(|f| {
            f.iter()
                .any(|f| f.as_str().is_some_and(|f| f.contains("cannot read")))
        });
        if faulted && row["state"] == "flagged" && cannot_read && expected != "flagged" {
            unread += 1;
            continue;
        }
        assert_eq!(
            row["state"].as_str(),
            Some(expected),
            "the reporter shows {host} as {} but its objects say {expected}: {row:#}",
            row["state"]
        );
    }
    let shown: BTreeSet<&str> = rows.iter().filter_map(|r| r["host"].as_str()).collect();
    let mut in_bucket = BTreeSet::new();
    for prefix in [KeyPrefix::hosts(), KeyPrefix::status()] {
        for o in admin.list(&prefix).await.unwrap() {
            if let Some(h) = Key::manifest_host(&o.key).or_else(|| Key::status_host(&o.key)) {
                in_bucket.insert(h.to_string());
            }
        }
    }
    for h in &in_bucket {
        assert!(
            shown.contains(h.as_str()),
            "{h} has objects in the bucket but no row in the summary: {shown:?}"
        );
    }
    (rows.len(), unread)
}

#[test]
fn agents_under_faults_activate_only_verified_closures_and_recover() {
    let seeds = seeds();
    let rt = runtime();
    let (server, bucket) = rt.block_on(async {
        let server = S3Server::seaweedfs()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let bucket = server.new_bucket("faults-agent").await.unwrap();
        (server, bucket)
    });
    let proxy = calm_proxy(server);
    let url = store_url_at(&proxy.endpoint(), &bucket, "")
        .unwrap()
        .to_string();
    let admin = server
        .bucket(&bucket, "", &server.admin_credentials())
        .unwrap();
    let nix = agent_common::nix();
    let salt = FixtureOptions::salted("faults-agent");
    let a = nix.fixture_system("fault", "1", &salt).unwrap();
    let b = nix.fixture_system("fault", "2", &salt).unwrap();
    let mut failed_cycles = 0;
    let admin_env = S3Server::credentials_env(&server.admin_credentials());
    let mut rows_checked = 0;
    let mut events = EventCount::default();
    let mut reporter = ReporterCount::default();
    for (i, seed) in seeds.iter().copied().enumerate() {
        let _replay = Replay(seed, "agents_under_faults");
        let w = World::s3(
            &format!("fault-{i}"),
            &url,
            admin.clone(),
            &server.admin_credentials(),
        );
        w.bring_up(1, &a);
        w.deploy(2, &b);
        let key_file = w.dir.path().join("publisher.public");
        w.publisher.public().write(&key_file).unwrap();
        let trusted = TrustedKeys::new([w.publisher.public()]);

        // Harsher than the mixed plan: retries inside a cycle absorb most single
        // faults, and the point is cycles that fail.
        let harsh = |seed| FaultPlan {
            slow_down: 10,
            truncate: 8,
            reset_mid_body: 8,
            ..FaultPlan::mixed(seed)
        };
        proxy.calm(false);
        // A few cycles under faults, as a daemon would run them.
        for cycle in 0..3u64 {
            proxy.replan(harsh(seed ^ (cycle << 40)));
            let r = w.once();
            if r.code != 0 {
                failed_cycles += 1;
                eprintln!("seed {seed}: cycle failed: {} {}", r.kind(), r.message());
            }
            check_agent_after_faults(&w, &a, &b);
            check_events_exactly_once(&w, false);
            // The reporter through faults: a clear failure, or rows the objects
            // (read directly) support. Milder than the agents' plan, under which
            // nearly every summary fails on a listing, so that rows get checked
            // with some of their own reads failing.
            proxy.replan(FaultPlan {
                internal_error: 5,
                truncate: 3,
                reset_mid_body: 2,
                drip: 3,
                stall: 3,
                max_stall: std::time::Duration::from_millis(300),
                ..FaultPlan::none(seed ^ (cycle << 40) ^ 0x5eed)
            });
            match reporter_summary(&url, &admin_env, &key_file) {
                Ok(v) => {
                    // On the world's runtime: the admin client's pooled connections
                    // belong to the runtime that opened them, and one taken up by
                    // another (idle) runtime hangs until its timeout.
                    let (rows, unread) =
                        w.block_on(check_reporter_against_objects(&v, &admin, &trusted, true));
                    reporter.rows += rows;
                    reporter.unread += unread;
                }
                Err(e) => {
                    reporter.failed += 1;
                    eprintln!("seed {seed}: summary failed under faults: {}", e.trim());
                }
            }
            if r.code == 0 && r.report.state == AgentState::Healthy {
                assert_eq!(w.profile_target().as_ref(), Some(&b.top));
            }
        }
        proxy.calm(true);

        // Faults over: the next cycle converges.
        let r = w.once_expect(0);
        assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
        assert_eq!(w.profile_target().as_ref(), Some(&b.top));
        assert_eq!(w.activated().last(), Some(&b.top));
        let status = w.status();
        assert_eq!(status.state, AgentState::Healthy);
        // Every event produced arrived once, in order (or was counted as dropped).
        let c = check_events_exactly_once(&w, true);
        events.produced += c.produced;
        events.delivered += c.delivered;
        events.dropped += c.dropped;
        let v = reporter_summary(&url, &admin_env, &key_file).expect("a calm summary");
        rows_checked += w
            .block_on(check_reporter_against_objects(&v, &admin, &trusted, false))
            .0;
        let row = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["host"] == w.host.as_str())
            .expect("the host's row");
        assert_eq!(row["state"], "up-to-date", "{row:#}");
    }
    print_stats("agent fault runs", &proxy.stats());
    eprintln!(
        "{} agent seeds passed, {failed_cycles} cycles failed under faults and recovered; \
         {rows_checked} reporter rows agreed with the objects; \
         {} events produced, {} delivered once each, {} dropped; under faults, \
         {} summaries failed cleanly, {} rows checked ({} flagged as unreadable)",
        seeds.len(),
        events.produced,
        events.delivered,
        events.dropped,
        reporter.failed,
        reporter.rows,
        reporter.unread
    );
}

/// Runs `n` `fleet-publish deploy` processes of `top` to `host` at once; returns
/// for each whether it succeeded and the sequence it printed.
fn race_deploys(
    url: &str,
    env: &[(&'static str, String)],
    keys: (&publish_support::KeyFiles, &publish_support::KeyFiles),
    host: &str,
    top: &str,
    n: usize,
) -> Vec<(bool, Option<u64>, String)> {
    let (cache, signer) = keys;
    let children: Vec<_> = (0..n)
        .map(|_| {
            let mut cmd = publish_support::publish_cmd();
            cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .args(["deploy", "--bucket", url, "--host", host, "--closure", top])
                .arg("--cache-key")
                .arg(&cache.secret)
                .arg("--signing-key")
                .arg(&signer.secret)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let seq = stdout
                .split("sequence ")
                .nth(1)
                .and_then(|s| s.split(' ').next())
                .and_then(|s| s.parse().ok());
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            (out.status.success(), seq, stdout + &stderr)
        })
        .collect()
}

/// A bucket on this process's SeaweedFS, a publisher user for it, a calm fault proxy
/// in front of it, and cache and signing keys.
struct Publishing {
    proxy: FaultProxy,
    /// The bucket URL through the proxy.
    url: String,
    /// The bucket without the proxy, with the publisher's credentials.
    direct: Bucket,
    env: Vec<(&'static str, String)>,
    cache: publish_support::KeyFiles,
    signer: publish_support::KeyFiles,
    _dir: tempfile::TempDir,
}

fn publishing(rt: &tokio::runtime::Runtime, label: &str) -> Publishing {
    let (server, bucket, creds) = rt.block_on(async {
        let server = S3Server::seaweedfs()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let bucket = server.new_bucket(label).await.unwrap();
        let creds = server
            .user_for(&fleet_core::iam::Role::Publisher, &bucket, "")
            .await
            .unwrap();
        (server, bucket, creds)
    });
    let proxy = calm_proxy(server);
    let dir = tempfile::tempdir().unwrap();
    Publishing {
        url: store_url_at(&proxy.endpoint(), &bucket, "")
            .unwrap()
            .to_string(),
        proxy,
        direct: server.bucket(&bucket, "", &creds).unwrap(),
        env: S3Server::credentials_env(&creds),
        cache: publish_support::KeyFiles::new(dir.path(), &format!("cache-{label}-1")),
        signer: publish_support::KeyFiles::new(dir.path(), &format!("publisher-{label}-1")),
        _dir: dir,
    }
}

/// A fault proxy in front of `server`, injecting nothing until replanned.
fn calm_proxy(server: &S3Server) -> FaultProxy {
    FaultProxy::start(
        server.endpoint().trim_start_matches("http://"),
        FaultPlan::none(0),
    )
    .unwrap()
}

#[test]
fn publishers_under_faults_keep_the_cache_consistent_and_sequences_unique() {
    let seeds = seeds();
    let rt = runtime();
    let p = publishing(&rt, "faults-publish");
    let (proxy, url, direct, env) = (&p.proxy, &p.url, &p.direct, &p.env);
    let (cache, signer) = (&p.cache, &p.signer);
    let trusted_cache = TrustedKeys::new([cache.public_key()]);
    let trusted = TrustedKeys::new([signer.public_key()]);
    let host = HostName::new("pf-1").unwrap();
    let nix = publish_support::nix();
    let mut given: BTreeMap<u64, String> = BTreeMap::new();
    let (mut ok_runs, mut failed_runs) = (0, 0);
    // Sequences a failed deploy reported as written without an audit entry, and how
    // many failed deploys could not say whether their manifest landed.
    let mut unaudited: BTreeSet<u64> = BTreeSet::new();
    let mut unconfirmed = 0usize;
    for seed in seeds.iter().copied() {
        let _replay = Replay(seed, "publishers_under_faults");
        let salt = FixtureOptions::salted(&format!("faults-pub-{seed}"));
        let closure = nix.fixture_system("pf", "1", &salt).unwrap();
        let top = closure.top.to_string();
        let before = rt
            .block_on(fleet_publish::show(direct, &host, &trusted))
            .map(|s| s.manifest.sequence)
            .unwrap_or(0);

        // Writes applied and then dropped are what compare-and-swap has to survive.
        proxy.replan(FaultPlan {
            drop_after_apply: 15,
            ..FaultPlan::mixed(seed)
        });
        proxy.calm(false);
        let runs = race_deploys(url, env, (cache, signer), "pf-1", &top, 2);
        proxy.calm(true);

        for (ok, seq, out) in &runs {
            if !ok {
                failed_runs += 1;
                eprintln!("seed {seed}: a deploy failed under faults:\n{out}");
                assert!(
                    !out.contains("already exists"),
                    "a deploy called its own retried write a failure:\n{out}"
                );
                // A deploy that says its manifest is live but unaudited, or that it
                // could not confirm the manifest write, may leave a gap in the chain.
                if let Some(n) = out
                    .split("(sequence ")
                    .nth(1)
                    .filter(|_| out.contains("IS written and live"))
                    .and_then(|s| s.split(')').next())
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    unaudited.insert(n);
                } else if out.contains("writing the new manifest") {
                    unconfirmed += 1;
                }
                continue;
            }
            ok_runs += 1;
            let seq = seq.unwrap_or_else(|| panic!("no sequence printed:\n{out}"));
            assert!(
                given.insert(seq, top.clone()).is_none(),
                "sequence {seq} was given to two deploys:\n{runs:#?}"
            );
        }
        rt.block_on(async {
            check_cache_consistent(direct, &trusted_cache).await;
            let shown = fleet_publish::show(direct, &host, &trusted).await;
            let current = shown.as_ref().map(|s| s.manifest.sequence).unwrap_or(0);
            let max_given = given.keys().max().copied().unwrap_or(0);
            assert!(
                current >= max_given && current >= before,
                "the manifest is at {current} but deploy(s) reported {max_given}: a deploy was lost"
            );
            // No two audit entries of a host share a sequence, and the chain breaks
            // only where a deploy said so.
            let audit = publish_support::audit_entries(direct).await;
            let mut audit_seqs = BTreeSet::new();
            for e in &audit {
                assert!(
                    audit_seqs.insert(e.sequence),
                    "two audit entries for sequence {}",
                    e.sequence
                );
            }
            for seq in given.keys() {
                assert!(
                    audit_seqs.contains(seq),
                    "deploy of sequence {seq} succeeded without its audit entry"
                );
            }
            for e in &audit {
                if let Some(p) = e.previous_sequence.filter(|p| !audit_seqs.contains(p)) {
                    assert!(
                        unaudited.remove(&p) || unconfirmed > 0,
                        "sequence {p} was written with no audit entry and no deploy reported it \
                         (sequence {} follows it):\n{runs:#?}",
                        e.sequence
                    );
                    if !audit_seqs.contains(&p) && unconfirmed > 0 {
                        unconfirmed -= 1;
                    }
                    audit_seqs.insert(p);
                }
            }
        });

        // Faults over: a deploy succeeds with the next sequence.
        let runs = race_deploys(url, env, (cache, signer), "pf-1", &top, 1);
        let (ok, seq, out) = &runs[0];
        assert!(ok, "a deploy after the faults stopped failed:\n{out}");
        let now = rt
            .block_on(fleet_publish::show(direct, &host, &trusted))
            .unwrap();
        assert_eq!(Some(now.manifest.sequence), *seq, "{out}");
        assert_eq!(now.manifest.closure, closure.top);
        given.insert(seq.unwrap(), top);
        rt.block_on(check_cache_consistent(direct, &trusted_cache));
    }
    print_stats("publisher fault runs", &proxy.stats());
    eprintln!(
        "{} publisher seeds passed: {ok_runs} deploys succeeded and {failed_runs} failed cleanly under faults",
        seeds.len()
    );
}

#[test]
fn seaweedfs_killed_and_restarted_mid_cycle_keeps_acknowledged_writes() {
    let seeds = seeds();
    let rt = runtime();
    let server = rt
        .block_on(S3Server::start(ServerKind::SeaweedFs))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let bucket = rt.block_on(server.new_bucket("faults-restart")).unwrap();
    // No injected faults: the proxy only keeps one endpoint while the server behind
    // it goes away and comes back.
    let proxy = calm_proxy(&server);
    let url = store_url_at(&proxy.endpoint(), &bucket, "")
        .unwrap()
        .to_string();
    // A client that used the server before the kill saw its first LIST after the
    // restart hang for its whole request timeout (observed, see docs/reliability.md):
    // each phase opens its own client, as each `fleet-agent once` does.
    let admin = || {
        server
            .bucket(&bucket, "", &server.admin_credentials())
            .unwrap()
    };
    let nix = agent_common::nix();
    let salt = FixtureOptions::salted("faults-restart");
    let a = nix.fixture_system("restart", "1", &salt).unwrap();
    let b = nix.fixture_system("restart", "2", &salt).unwrap();
    for (i, seed) in seeds.iter().copied().enumerate() {
        let _replay = Replay(seed, "seaweedfs_killed_and_restarted");
        let mut rng = fleet_tests::rng::Rng::new(seed);
        let w = World::s3(
            &format!("restart-{i}"),
            &url,
            admin(),
            &server.admin_credentials(),
        );
        w.bring_up(1, &a);
        w.deploy(2, &b);
        let manifest = w.read(&Key::manifest(&w.host)).unwrap();

        let mut agent = w.spawn_once(&[]);
        std::thread::sleep(std::time::Duration::from_millis(rng.below(400)));
        let t = std::time::Instant::now();
        rt.block_on(server.kill_and_restart())
            .unwrap_or_else(|e| panic!("{e:#}"));
        let restart = t.elapsed();
        let code = agent.0.wait().unwrap();
        eprintln!(
            "seed {seed}: SeaweedFS back after {restart:.1?}; the agent cycle across the restart exited {code}"
        );
        check_agent_after_faults(&w, &a, &b);

        // Every write acknowledged before the kill is still there. SeaweedFS answers
        // ListBuckets before its volumes are back: reads are 500 InternalError for a
        // moment after a restart (as an agent sees them: bucket-unreachable, retried).
        let after = admin();
        let t = std::time::Instant::now();
        let read = loop {
            match rt.block_on(after.get(&Key::manifest(&w.host), 1 << 20)) {
                Ok(o) => break o,
                Err(e) if t.elapsed().as_secs() < 30 => {
                    eprintln!("seed {seed}: after the restart: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Err(e) => panic!("the manifest is unreadable 30 s after the restart: {e}"),
            }
        };
        eprintln!(
            "seed {seed}: objects readable {:.1?} after the restart",
            t.elapsed()
        );
        assert_eq!(read.bytes, manifest);
        let trusted_cache = TrustedKeys::new([w.cache_public.clone()]);
        assert!(rt.block_on(check_cache_consistent(&after, &trusted_cache)) >= b.paths.len());

        let r = w.once_expect(0);
        assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
        assert_eq!(w.profile_target().as_ref(), Some(&b.top));
    }
    eprintln!("{} restart seeds passed", seeds.len());
}

#[test]
fn a_deploy_whose_write_answers_are_all_lost_succeeds_once() {
    let rt = runtime();
    let p = publishing(&rt, "faults-lost");
    let (proxy, url, direct, env) = (&p.proxy, &p.url, &p.direct, &p.env);
    let (cache, signer) = (&p.cache, &p.signer);
    let trusted = TrustedKeys::new([signer.public_key()]);
    let nix = publish_support::nix();
    let closure = nix
        .fixture_system("lost", "1", &FixtureOptions::salted("faults-lost"))
        .unwrap();
    let top = closure.top.to_string();
    // The closure goes up calmly; then every write lands and loses its answer.
    let mut push = publish_support::publish_cmd();
    push.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["push", "--bucket", url, "--cache-key"])
        .arg(&cache.secret)
        .arg(&top);
    let (ok, _, stderr) = publish_support::run(push);
    assert!(ok, "{stderr}");
    proxy.replan(FaultPlan {
        drop_after_apply: 100,
        ..FaultPlan::none(0)
    });
    for expected in 1..=2u64 {
        let runs = race_deploys(url, env, (cache, signer), "lost-1", &top, 1);
        let (ok, seq, out) = &runs[0];
        assert!(
            ok,
            "a deploy whose writes landed was reported failed:\n{out}"
        );
        assert_eq!(*seq, Some(expected), "{out}");
        let shown = rt
            .block_on(fleet_publish::show(
                direct,
                &HostName::new("lost-1").unwrap(),
                &trusted,
            ))
            .unwrap();
        assert_eq!(shown.manifest.sequence, expected);
        let audit = rt.block_on(publish_support::audit_entries(direct));
        let seqs: Vec<u64> = audit.iter().map(|e| e.sequence).collect();
        assert_eq!(seqs, (1..=expected).collect::<Vec<_>>());
        assert_eq!(audit.last().unwrap().new_manifest_sha256, shown.sha256);
    }
    assert!(proxy.stats()[&fleet_tests::fault_proxy::Fault::DropAfterApply] >= 4);
}
