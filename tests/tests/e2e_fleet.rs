//! The whole chain in one place: `fleet-publish`, three `fleet-agent`s and
//! `fleet-reporter serve`, as real processes, against real SeaweedFS enforcing IAM
//! (a scoped user per host, a publisher user, a reporter user) and real Nix.
//!
//! - The story: generation 1 to three hosts, generation 2 to host-1, a generation
//!   whose activation fails to host-2 (rolled back). Every host ends where it should;
//!   the dashboard's JSON agrees with the status objects (read with admin
//!   credentials) and with the signed manifests; no host's keys read another host's
//!   manifest or write another host's status.
//! - The hostile bucket: someone who can write the bucket (the admin identity) but
//!   holds no signing key rewrites host-1's manifest (payload changed, publisher's
//!   signature kept) and the NAR of a path host-3 must download for its legitimate
//!   new generation (content changed, recompressed, and the narinfo's unsigned
//!   `FileHash`/`FileSize` fixed up to match). No host changes generation, nothing of
//!   the tampered closure enters host-3's store, and the dashboard shows both
//!   refusals.
//! - The cache key rotation of `docs/operations.md`, step by step, including the
//!   refusal a host reports when the re-signing step is skipped.
//! - The quickstart (`scripts/quickstart.sh`, the README's main-job command) runs in
//!   non-interactive mode on its `file://` bucket, tells the same story, exits 0 and
//!   leaves neither processes nor files behind.

mod e2e_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use e2e_support::{FleetWorld, Reporter};
use fleet_core::narinfo::{NarInfo, Sha256Hash};
use fleet_core::status::{AgentState, Generation};
use fleet_core::stream::{Encoder, decoder};
use fleet_core::{BucketError, Key, TrustedKeys};
use fleet_tests::nix::Closure;
use serde_json::json;
use sha2::{Digest, Sha256};

const HOSTS: [&str; 3] = ["host-1", "host-2", "host-3"];

fn generation(sequence: u64, closure: &Closure) -> Option<Generation> {
    Some(Generation {
        sequence: Some(sequence),
        closure: closure.top.clone(),
    })
}

/// Generation 1 of every host, published and activated; returns the closures.
fn bring_up(w: &FleetWorld) -> Vec<Closure> {
    let gen1: Vec<Closure> = HOSTS.iter().map(|h| w.system(h, "1", 0)).collect();
    let targets: Vec<(&str, &Closure)> = HOSTS.iter().copied().zip(&gen1).collect();
    let seqs = w.publish(&targets);
    assert_eq!(
        seqs,
        HOSTS
            .iter()
            .map(|h| (h.to_string(), 1))
            .collect::<BTreeMap<_, _>>()
    );
    for (h, c) in HOSTS.iter().zip(&gen1) {
        let r = w.once_expect(h, 0);
        assert_eq!(r.report.state, AgentState::Healthy, "{h}: {}", r.stderr);
        assert_eq!(r.report.current, generation(1, c), "{h}");
        assert_eq!(w.activated(h), vec![c.top.clone()], "{h}");
        assert_eq!(w.profile_target(h), Some(c.top.clone()), "{h}");
        for p in &c.paths {
            assert!(w.in_store(h, p), "{h}: {p} is not in its store");
        }
    }
    gen1
}

/// Every dashboard row says what the host's status object (read as the admin) says,
/// and a row with a verified manifest shows that manifest as desired.
fn assert_dashboard_agrees(w: &FleetWorld, rows: &BTreeMap<String, serde_json::Value>) {
    assert_eq!(
        rows.keys().map(String::as_str).collect::<Vec<_>>(),
        HOSTS,
        "{rows:#?}"
    );
    for h in HOSTS {
        let status = w.status(h);
        let row = &rows[h];
        assert_eq!(row["agent_state"], json!(status.state), "{h}: {row:#}");
        assert_eq!(row["current"], json!(status.current), "{h}: {row:#}");
        assert_eq!(row["last_error"], json!(status.last_error), "{h}: {row:#}");
        assert_eq!(row["reported_at"], json!(status.time), "{h}: {row:#}");
        assert_eq!(row["agent_version"], json!(status.agent_version), "{h}");
        if row["manifest"]["status"] == "verified" {
            let m = w.manifest(h);
            assert_eq!(
                row["desired"],
                json!({"sequence": m.sequence, "closure": m.closure}),
                "{h}: {row:#}"
            );
            assert_eq!(row["desired_source"], "manifest", "{h}");
            assert_eq!(row["manifest"]["sequence"], m.sequence, "{h}");
            assert_eq!(row["manifest"]["signed_by"], "e2e-publisher-1", "{h}");
        }
    }
}

fn dashboard_states(rows: &BTreeMap<String, serde_json::Value>) -> Vec<(String, String)> {
    rows.iter()
        .map(|(h, r)| (h.clone(), r["state"].as_str().unwrap_or("?").to_owned()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn the_fleet_story_on_seaweedfs_with_a_scoped_user_per_host() {
    let w = FleetWorld::new("e2e-story", &HOSTS);
    let gen1 = bring_up(&w);
    let gen2 = w.system("host-1", "2", 0);
    let failing = w.system("host-2", "2", 1);

    assert_eq!(w.publish(&[("host-1", &gen2)])["host-1"], 2);
    assert_eq!(w.publish(&[("host-2", &failing)])["host-2"], 2);

    let r = w.once_expect("host-1", 0);
    assert_eq!(r.report.state, AgentState::Healthy);
    assert_eq!(r.report.current, generation(2, &gen2));
    assert_eq!(
        w.activated("host-1"),
        vec![gen1[0].top.clone(), gen2.top.clone()]
    );
    assert_eq!(w.profile_target("host-1"), Some(gen2.top.clone()));

    let r = w.once_expect("host-2", 3);
    assert_eq!(r.report.state, AgentState::RolledBack, "{}", r.stderr);
    assert_eq!(r.kind(), "activation-failed");
    assert_eq!(r.report.current, generation(1, &gen1[1]));
    assert_eq!(r.report.desired, generation(2, &failing));
    assert_eq!(
        w.activated("host-2"),
        vec![
            gen1[1].top.clone(),
            failing.top.clone(),
            gen1[1].top.clone()
        ],
        "the failing generation ran once, then generation 1 again"
    );
    assert_eq!(w.profile_target("host-2"), Some(gen1[1].top.clone()));

    let r = w.once_expect("host-3", 0);
    assert_eq!(r.report.current, generation(1, &gen1[2]));
    assert_eq!(w.activated("host-3"), vec![gen1[2].top.clone()]);

    // The status objects say the same as the agents did.
    assert_eq!(w.status("host-1").current, generation(2, &gen2));
    assert_eq!(w.status("host-2").state, AgentState::RolledBack);
    assert_eq!(w.status("host-3").state, AgentState::Healthy);

    // The dashboard, run as the reporter user.
    let reporter: Reporter = w.reporter();
    let rows = reporter.hosts();
    assert_dashboard_agrees(&w, &rows);
    assert_eq!(
        dashboard_states(&rows),
        pairs(&[
            ("host-1", "up-to-date"),
            ("host-2", "rolled-back"),
            ("host-3", "up-to-date"),
        ])
    );
    let summary = reporter.get_json("/api/v1/summary");
    assert_eq!(summary["hosts"], 3, "{summary:#}");
    assert_eq!(summary["states"]["up-to-date"], 2, "{summary:#}");
    assert_eq!(summary["states"]["rolled-back"], 1, "{summary:#}");
    assert_eq!(summary["manifests"]["verified"], true, "{summary:#}");
    let detail = reporter.get_json("/api/v1/hosts/host-2");
    let events: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["report"]["state"].as_str())
        .collect();
    assert!(
        events.contains(&"rolled-back") && events.contains(&"activating"),
        "host-2's events: {events:?}"
    );

    // Each host's keys read its own manifest and no other, and write no other status.
    for a in HOSTS {
        let own = &w.host(a).name;
        assert!(
            !w.denied_read(a, &Key::manifest(own)),
            "{a} cannot read its own"
        );
        for b in HOSTS.iter().filter(|b| **b != a) {
            let other = &w.host(b).name;
            assert!(
                w.denied_read(a, &Key::manifest(other)),
                "{a}'s keys read {b}'s manifest"
            );
            let put = w.block_on(
                w.bucket_as(a)
                    .put(&Key::status(other), w.read(&Key::status(own))),
            );
            assert!(
                matches!(put, Err(BucketError::AccessDenied { .. })),
                "{a}'s keys wrote {b}'s status: {put:?}"
            );
        }
    }
}

/// Decompresses a NAR file, changes one byte of the file contents it holds, and
/// compresses it again the same way.
fn tamper_nar(ni: &NarInfo, file: &[u8], needle: &[u8]) -> Vec<u8> {
    let mut nar = Vec::new();
    decoder(ni.compression, file)
        .unwrap()
        .read_to_end(&mut nar)
        .unwrap();
    let at = nar
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} is not in the NAR", String::from_utf8_lossy(needle)));
    nar[at + needle.len() - 1] ^= 0x01;
    let mut enc = Encoder::new(ni.compression, Vec::new(), None).unwrap();
    enc.write_all(&nar).unwrap();
    enc.finish().unwrap()
}

#[test]
fn a_bucket_writer_without_signing_keys_changes_no_host() {
    let w = FleetWorld::new("e2e-hostile", &HOSTS);
    let gen1 = bring_up(&w);

    // The publisher legitimately rolls out generation 2 to host-3.
    let gen2 = w.system("host-3", "2", 0);
    assert_eq!(w.publish(&[("host-3", &gen2)])["host-3"], 2);
    let new_path = gen2.named("fleet-fixture-etc-2").unwrap().clone();
    assert!(
        !gen1[2].paths.contains(&new_path),
        "host-3 must download {new_path} for generation 2"
    );

    // The attacker, with the admin identity and no key:
    // 1. host-1's manifest, payload changed (a newer sequence, host-3's new closure),
    //    the publisher's signature kept.
    let mkey = Key::manifest(&w.host("host-1").name);
    let mut envelope: serde_json::Value = serde_json::from_slice(&w.read(&mkey)).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut payload: serde_json::Value =
        serde_json::from_slice(&b64.decode(envelope["payload"].as_str().unwrap()).unwrap())
            .unwrap();
    payload["sequence"] = json!(9);
    payload["closure"] = json!(gen2.top.to_string());
    envelope["payload"] = json!(b64.encode(serde_json::to_vec(&payload).unwrap()));
    w.write(&mkey, serde_json::to_vec(&envelope).unwrap());

    // 2. The NAR of host-3's new path, with the narinfo's unsigned file fields fixed
    //    up so that only the signed NarHash can tell.
    let ni_key = Key::narinfo(new_path.hash());
    let mut ni = NarInfo::parse(&w.read(&ni_key), ni_key.as_str()).unwrap();
    let nar_key = Key::nar(&ni.url).unwrap();
    let tampered = tamper_nar(&ni, &w.read(&nar_key), b"generation=2");
    ni.file_hash = Some(Sha256Hash(Sha256::digest(&tampered).into()));
    ni.file_size = Some(tampered.len() as u64);
    w.write(&nar_key, tampered);
    w.write(&ni_key, ni.to_text().into_bytes());
    ni.verify(&TrustedKeys::new([w.cache_public.clone()]), ni_key.as_str())
        .expect("the rewritten narinfo still carries a valid signature");

    let before: Vec<_> = HOSTS.iter().map(|h| w.activated(h)).collect();
    // Twice: a refusal is remembered, not retried into a different outcome.
    for round in 0..2 {
        let r = w.once_expect("host-1", 2);
        assert_eq!(r.report.state, AgentState::Refused, "round {round}");
        assert_eq!(r.kind(), "manifest-bad-signature", "round {round}");
        assert_eq!(r.report.current, generation(1, &gen1[0]));
        assert_eq!(r.report.desired, generation(1, &gen1[0]));

        let r = w.once_expect("host-2", 0);
        assert_eq!(r.report.current, generation(1, &gen1[1]));

        let r = w.once_expect("host-3", 2);
        assert_eq!(r.report.state, AgentState::Refused, "round {round}");
        assert_eq!(r.kind(), "nar-hash-mismatch", "round {round}: {}", r.stderr);
        assert!(
            r.report
                .last_error
                .as_ref()
                .unwrap()
                .message
                .contains(nar_key.as_str()),
            "the message names the NAR: {:?}",
            r.report.last_error
        );
        assert_eq!(r.report.current, generation(1, &gen1[2]));
    }
    let after: Vec<_> = HOSTS.iter().map(|h| w.activated(h)).collect();
    assert_eq!(after, before, "something was activated");
    for (h, c) in HOSTS.iter().zip(&gen1) {
        assert_eq!(w.profile_target(h), Some(c.top.clone()), "{h}");
        assert_eq!(w.status(h).current, generation(1, c), "{h}");
    }
    assert!(
        !w.in_store("host-3", &new_path),
        "the tampered path was imported"
    );
    assert!(!w.in_store("host-3", &gen2.top));
    assert!(!w.in_store("host-1", &gen2.top));

    let reporter = w.reporter();
    let rows = reporter.hosts();
    assert_dashboard_agrees(&w, &rows);
    // host-1's manifest no longer verifies for the dashboard either: flagged, with the
    // agent's refusal shown.
    assert_eq!(
        dashboard_states(&rows),
        pairs(&[
            ("host-1", "flagged"),
            ("host-2", "up-to-date"),
            ("host-3", "refused"),
        ])
    );
    let row1 = &rows["host-1"];
    assert_eq!(row1["agent_state"], "refused");
    assert_eq!(row1["last_error"]["kind"], "manifest-bad-signature");
    assert_eq!(row1["manifest"]["status"], "invalid", "{row1:#}");
    let row3 = &rows["host-3"];
    assert_eq!(row3["agent_state"], "refused");
    assert_eq!(row3["last_error"]["kind"], "nar-hash-mismatch");
    assert_eq!(row3["current"]["sequence"], 1);
    assert_eq!(row3["desired"]["sequence"], 2);
}

#[test]
fn the_cache_key_rotates_as_docs_operations_says() {
    let mut w = FleetWorld::new("e2e-rotate", &["host-1", "host-2"]);
    let h1g1 = w.system("host-1", "1", 0);
    assert_eq!(w.publish(&[("host-1", &h1g1)])["host-1"], 1);
    w.once_expect("host-1", 0);

    // Steps 1 and 2: a second cache key, trusted by the agents next to the first (on
    // real hosts: a published system whose agent configuration says so, and a restart).
    let (cache2_secret, cache2) = w.new_key("e2e-cache-2", "cache-2");
    w.agent_cache_keys = vec![w.cache_public.clone(), cache2.clone()];

    // Without step 3, CI switching to the new key breaks a host that must download a
    // path pushed before: host-2's first system shares its library, tool and kernel
    // with host-1's, whose narinfos carry only the first key, while the manifest now
    // lists only the second.
    w.cache_secret = cache2_secret.clone();
    let h2g1 = w.system("host-2", "1", 0);
    assert_eq!(w.publish(&[("host-2", &h2g1)])["host-2"], 1);
    let r = w.once_expect("host-2", 2);
    assert_eq!(r.kind(), "narinfo-untrusted", "{}", r.stderr);
    assert!(!w.in_store("host-2", &h2g1.top));

    // Step 3: every narinfo gets the new key's signature (real `nix store sign`).
    let resigned = w.resign_cache(&cache2_secret);
    assert_eq!(
        resigned,
        h1g1.paths.len() + 2,
        "host-1's 5 paths and host-2's 2 own"
    );

    // Step 4: deploys go on with the new key; a new sequence makes host-2 try again.
    assert_eq!(w.publish(&[("host-2", &h2g1)])["host-2"], 2);
    let r = w.once_expect("host-2", 0);
    assert_eq!(r.report.current, generation(2, &h2g1));
    for p in &h2g1.paths {
        assert!(w.in_store("host-2", p), "{p}");
    }

    // Step 5: agents trust only the new key; old and new paths still verify.
    w.agent_cache_keys = vec![cache2];
    let h1g2 = w.system("host-1", "2", 0);
    assert_eq!(w.publish(&[("host-1", &h1g2)])["host-1"], 2);
    let r = w.once_expect("host-1", 0);
    assert_eq!(r.report.current, generation(2, &h1g2));
    let h2g2 = w.system("host-2", "2", 0);
    assert_eq!(w.publish(&[("host-2", &h2g2)])["host-2"], 3);
    let r = w.once_expect("host-2", 0);
    assert_eq!(r.report.current, generation(3, &h2g2));
}

#[test]
fn a_rotation_can_keep_accepting_the_old_cache_key() {
    // The other way through a cache key rotation: instead of re-signing the cache,
    // deploys list the old key too (`--extra-cache-key`), so paths pushed before the
    // switch keep verifying with their old signature.
    let mut w = FleetWorld::new("e2e-rotate-extra", &["host-1", "host-2"]);
    let h1g1 = w.system("host-1", "1", 0);
    assert_eq!(w.publish(&[("host-1", &h1g1)])["host-1"], 1);
    w.once_expect("host-1", 0);

    let (cache2_secret, cache2) = w.new_key("e2e-cache-2", "cache-2");
    w.agent_cache_keys = vec![w.cache_public.clone(), cache2];
    let old_public = w.dir.path().join("keys/cache.public");
    w.cache_secret = cache2_secret;
    w.extra_cache_keys = vec![old_public];
    // host-2 shares library, tool and kernel with host-1: their narinfos carry only
    // the old key's signature, its own paths only the new key's.
    let h2g1 = w.system("host-2", "1", 0);
    assert_eq!(w.publish(&[("host-2", &h2g1)])["host-2"], 1);
    let r = w.once_expect("host-2", 0);
    assert_eq!(r.report.current, generation(1, &h2g1));
    for p in &h2g1.paths {
        assert!(w.in_store("host-2", p), "{p}");
    }
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) {
                found.push(format!("{}: {text}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[test]
fn quickstart_script_tells_the_story_and_cleans_up() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    // The script's TMPDIR, which must be empty again afterwards, and its output.
    let tmp = tempfile::Builder::new()
        .prefix("fleet-qs-tmp-")
        .tempdir()
        .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let bin_dir = fleet_tests::bin("fleet-agent").parent().unwrap().to_owned();
    let mut cmd = Command::new(repo.join("scripts/quickstart.sh"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("FLEET_") || k.starts_with("AWS_") {
            cmd.env_remove(&k);
        }
    }
    let started = Instant::now();
    let mut child = cmd
        .env("FLEET_BIN_DIR", &bin_dir)
        .env("FLEET_QUICKSTART_LISTEN", "127.0.0.1:0")
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(logs.path().join("out")).unwrap())
        .stderr(std::fs::File::create(logs.path().join("err")).unwrap())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("scripts/quickstart.sh did not finish in 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = started.elapsed();
    let out = std::fs::read_to_string(logs.path().join("out")).unwrap();
    let err = std::fs::read_to_string(logs.path().join("err")).unwrap();
    assert!(status.success(), "{status}\n{out}\n--- stderr\n{err}");
    println!("quickstart took {took:?}:\n{out}");

    for step in [
        "[4/7] publishing generation 1 to host-1 host-2 host-3",
        "[6/7] deploying generation 2 to host-1",
        "host-1 runs generation 2",
        "[7/7] deploying a generation whose activation fails to host-2",
        "host-2 rolled back to generation 1",
        "stdin is not a terminal: stopping",
    ] {
        assert!(out.contains(step), "{step:?} missing from:\n{out}");
    }
    assert!(out.contains("      dashboard: http://127.0.0.1:"), "{out}");
    // The last table printed: each host's final state, current and desired sequence.
    let mut last: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in out.lines() {
        let cells: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        if line.starts_with("      host-") && cells.len() >= 6 {
            last.insert(cells[0].clone(), cells[1..].to_vec());
        }
    }
    let row = |h: &str| last.get(h).map(|c| c[..3].join(" ")).unwrap_or_default();
    assert_eq!(row("host-1"), "up-to-date 2 2", "{out}");
    assert_eq!(row("host-2"), "rolled-back 1 2", "{out}");
    assert_eq!(row("host-3"), "up-to-date 1 1", "{out}");
    assert_eq!(last["host-2"].last().unwrap(), "activation-failed", "{out}");
    // What the sample systems' switch-to-configuration recorded.
    for line in [
        "  host-1: generation 1 (switch), generation 2 (switch)",
        "  host-2: generation 1 (switch), failing generation 2 (switch), generation 1 (switch)",
        "  host-3: generation 1 (switch)",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "{line:?} missing from:\n{out}"
        );
    }

    // Nothing left behind: no file in its TMPDIR, no process naming it.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let tmp_text = tmp.path().to_string_lossy().into_owned();
    let procs = processes_mentioning(&tmp_text);
    assert!(procs.is_empty(), "still running: {procs:?}");
}
