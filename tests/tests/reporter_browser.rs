//! The dashboard in a real browser: headless Chromium (Debian's `chromium`) loads the
//! page from `fleet-reporter serve` over a `file://` fixture bucket, runs its script,
//! and the resulting DOM must show every fixture host with its state, while a status
//! object full of `<script>` and HTML shows up as text and runs nothing; a held host
//! shows its hold and reason (as text), a retired host is shown apart from the count.
//! A screenshot
//! is saved to `tests/artifacts/reporter-dashboard.png` (gitignored).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use fleet_core::{Bucket, HostName, Key, Manifest, SecretKey, StatusReport};

/// What a hostile host writes into every string it controls.
const XSS: &str =
    "<script>document.title='pwned'</script><img src=x onerror=\"document.body.dataset.pwned=1\">";

const CLOSURE: &str = "/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-nixos-system";

fn h(s: &str) -> HostName {
    HostName::new(s).unwrap()
}

fn manifest(host: &str, seq: u64) -> Manifest {
    let activation = if host == "web-retired" {
        "retire"
    } else {
        "switch"
    };
    serde_json::from_value(serde_json::json!({
        "version": 1, "host": host, "sequence": seq,
        "closure": format!("{CLOSURE}-{seq}"),
        "issued_at": "2026-01-01T00:00:00Z", "expires_at": "2099-01-01T00:00:00Z",
        "cache_keys": [], "activation": activation,
    }))
    .unwrap()
}

fn status(host: &str, state: &str, current: u64, error: Option<&str>) -> StatusReport {
    serde_json::from_value(serde_json::json!({
        "version": 1, "host": host, "agent_version": "0.1.0", "state": state,
        "desired": {"sequence": 2, "closure": format!("{CLOSURE}-2")},
        "current": {"sequence": current, "closure": format!("{CLOSURE}-{current}")},
        "last_error": error.map(|m| serde_json::json!({
            "kind": "health-check-failed", "message": m, "at": "2026-11-26T21:25:00Z"})),
        "facts": {"nixos_version": "24.05", "kernel": "6.6.30", "uptime_seconds": 60,
                  "boot_id": "b", "reboot_needed": false},
        // Staleness uses the store's clock, not this claim.
        "time": "2026-11-26T21:25:00Z",
    }))
    .unwrap()
}

/// Hosts and the state label the page must show for each.
const HOSTS: &[(&str, &str)] = &[
    ("web-ok", "up to date"),
    ("web-pending", "pending"),
    ("web-failed", "failed"),
    ("web-never", "never seen"),
    ("web-xss", "failed"),
    ("evil-junk", "flagged"),
    ("evil-badsig", "flagged"),
    ("web-held", "up to date"),
    ("web-retired", "retired"),
];

/// The reason of web-held's hold: operator text, shown as text.
const HOLD_REASON: &str = "disk swap <i>until Friday</i>";

async fn fixture(root: &Path, publisher: &SecretKey) {
    let bucket = Bucket::open_url(&format!("file://{}", root.display())).unwrap();
    let mallory = SecretKey::generate("mallory-1").unwrap();
    for (host, _) in HOSTS {
        let signer = if *host == "evil-badsig" {
            &mallory
        } else {
            publisher
        };
        bucket
            .put(&Key::manifest(&h(host)), manifest(host, 2).sign(signer))
            .await
            .unwrap();
    }
    for (host, state, current, err) in [
        ("web-ok", "healthy", 2, None),
        ("web-pending", "fetching", 1, None),
        ("web-failed", "failed", 1, Some("unit nginx.service failed")),
        ("web-xss", "failed", 1, Some(XSS)),
        ("evil-badsig", "healthy", 2, None),
        ("web-held", "healthy", 2, None),
        ("web-retired", "retired", 2, None),
    ] {
        let mut r = status(host, state, current, err);
        if host == "web-xss" {
            r.facts.kernel = Some("<b>6.6</b>".into());
            r.agent_version = "</td></tr><tr><td>injected".into();
        }
        bucket
            .put(&Key::status(&h(host)), r.to_bytes())
            .await
            .unwrap();
    }
    let hold = fleet_core::hold::Hold {
        version: 1,
        host: h("web-held"),
        held: true,
        reason: HOLD_REASON.into(),
        time: "2026-11-26T21:25:00Z".parse().unwrap(),
    };
    bucket
        .put(&Key::hold(&h("web-held")), hold.sign(publisher))
        .await
        .unwrap();
    bucket
        .put(
            &Key::status(&h("evil-junk")),
            &b"<html><script>alert(1)</script>"[..],
        )
        .await
        .unwrap();
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(root: &Path, publisher: &SecretKey) -> (Server, String) {
    let mut child = Command::new(fleet_tests::bin("fleet-reporter"))
        .args(["serve", "--listen", "127.0.0.1:0", "--cache-ttl", "0s"])
        .arg("--bucket")
        .arg(format!("file://{}", root.display()))
        .arg("--trusted-key")
        .arg(publisher.public().to_nix_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start fleet-reporter serve");
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("fleet-reporter listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from serve: {line:?}"))
        .to_owned();
    (server, url)
}

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        if let Ok(out) = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            && out.status.success()
        {
            return PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        }
    }
    panic!("Chromium is not installed: run scripts/deps.sh (it installs Debian's `chromium`)");
}

/// Runs headless Chromium on `url` with `extra` arguments; returns standard output.
fn run_chromium(url: &str, extra: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Lets the page's fetches finish before the DOM is dumped.
            "--virtual-time-budget=15000",
            "--window-size=1400,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_fleet_and_runs_no_host_script() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bucket");
    let publisher = SecretKey::generate("publisher-1").unwrap();
    fixture(&root, &publisher).await;
    let (_server, url) = serve(&root, &publisher);

    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || run_chromium(&url, &["--dump-dom".into()])
    })
    .await
    .unwrap();

    // The script ran and filled the table: every host, with its state.
    let tbody = dom
        .split("<tbody id=\"rows\">")
        .nth(1)
        .and_then(|rest| rest.split("</tbody>").next())
        .unwrap_or_else(|| panic!("no host table in the page:\n{dom}"));
    let rows: Vec<&str> = tbody.split("<tr ").skip(1).collect();
    assert_eq!(rows.len(), HOSTS.len(), "{tbody}");
    for (host, label) in HOSTS {
        let row = rows
            .iter()
            .find(|r| r.contains(&format!(">{host}</button>")))
            .unwrap_or_else(|| panic!("{host} is not in the table:\n{tbody}"));
        assert!(
            row.contains(&format!("\">{label}</span>")),
            "{host} is not shown as {label}: {row}"
        );
    }
    // Failing first: the flagged rows come before the up-to-date one.
    let pos = |host: &str| tbody.find(&format!(">{host}</button>")).unwrap();
    assert!(pos("evil-junk") < pos("web-failed") && pos("web-failed") < pos("web-ok"));
    assert!(
        dom.contains("publisher-1"),
        "the trust banner names the key"
    );
    // The hold and its reason (as text); the retired host is not counted.
    let held = rows
        .iter()
        .find(|r| r.contains(">web-held</button>"))
        .unwrap();
    assert!(held.contains("st-held"), "{held}");
    assert!(
        held.contains("disk swap &lt;i&gt;until Friday&lt;/i&gt;"),
        "{held}"
    );
    assert!(dom.contains(" 8 hosts (+1 retired) · 1 held"), "{dom}");

    // The hostile status is text: escaped in the DOM, no element made, nothing run.
    assert!(
        dom.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;&lt;img src=x onerror="),
        "the hostile message is not shown as text:\n{tbody}"
    );
    assert!(dom.contains("&lt;b&gt;6.6&lt;/b&gt;"));
    assert!(
        !dom.contains("<script>document.title"),
        "host script reached the DOM"
    );
    assert!(!dom.contains("<img"), "host markup became an element");
    assert!(!dom.contains("<b>6.6</b>"));
    assert!(!dom.contains("data-pwned"), "an injected handler ran");
    assert!(
        dom.contains("<title>fleet</title>"),
        "document.title was changed"
    );

    // A screenshot for people, as a test artifact.
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("reporter-dashboard.png");
    let _ = std::fs::remove_file(&shot);
    tokio::task::spawn_blocking({
        let shot = shot.clone();
        move || run_chromium(&url, &[format!("--screenshot={}", shot.display())])
    })
    .await
    .unwrap();
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{}",
        shot.display()
    );
}

/// A signed release of the fixture's web hosts in two waves, and its rollout state:
/// halted in wave 2 with a halt reason full of markup (a publisher wrote it, but it
/// quotes host names and errors, so it is shown as text like everything else).
async fn rollout_fixture(root: &Path, publisher: &SecretKey) {
    use fleet_core::release::{Budget, Plan, Release, ReleaseHost, Selector, WaveSpec};
    use fleet_core::rollout::{HostOutcome, HostState, Phase, RolloutState};
    let bucket = Bucket::open_url(&format!("file://{}", root.display())).unwrap();
    let hosts: std::collections::BTreeMap<HostName, ReleaseHost> =
        ["web-ok", "web-failed", "web-pending"]
            .iter()
            .map(|n| {
                let closure = fleet_core::StorePath::new(&format!("{CLOSURE}-{n}-3")).unwrap();
                (
                    h(n),
                    ReleaseHost {
                        closure,
                        activation: fleet_core::Activation::Switch,
                    },
                )
            })
            .collect();
    let spec = |select| WaveSpec {
        select,
        soak_seconds: 0,
        budget: Budget::Hosts(0),
    };
    let waves = fleet_core::release::resolve_waves(
        &hosts.keys().cloned().collect(),
        &[
            spec(Selector::Hosts(vec!["web-ok".into()])),
            spec(Selector::Percent(100)),
        ],
    )
    .unwrap();
    let release = Release {
        version: 1,
        id: "rel-7".into(),
        created_at: "2026-11-26T21:00:00Z".parse().unwrap(),
        cache_keys: vec![SecretKey::generate("cache-1").unwrap().public()],
        hosts,
        plan: Plan {
            waves,
            budget: Budget::Hosts(0),
            report_deadline_seconds: 600,
        },
    };
    let id = fleet_core::ObjectName::new("rel-7").unwrap();
    bucket
        .put(&Key::release(&id), release.sign(publisher))
        .await
        .unwrap();
    let mut state = RolloutState::new("rel-7", "00", 2, false, "publisher-1");
    let host = |outcome| HostState {
        previous: None,
        sequence: Some(2),
        outcome,
        rolled_back_to: None,
    };
    let now = jiff::Timestamp::now();
    state.waves[0].started_at = Some(now);
    state.waves[0].completed_at = Some(now);
    state.waves[0]
        .hosts
        .insert(h("web-ok"), host(HostOutcome::Healthy));
    state.waves[1].started_at = Some(now);
    state.waves[1]
        .hosts
        .insert(h("web-failed"), host(HostOutcome::Failed));
    state.waves[1]
        .hosts
        .insert(h("web-pending"), host(HostOutcome::Pending));
    state.phase = Phase::Halted;
    state.halt_reason = Some(format!("wave 2: web-failed failed {XSS}"));
    bucket
        .put(&Key::rollout(&id), state.sign(publisher))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_rollouts_with_wave_progress_and_halt_reason() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bucket");
    let publisher = SecretKey::generate("publisher-1").unwrap();
    fixture(&root, &publisher).await;
    rollout_fixture(&root, &publisher).await;
    let (_server, url) = serve(&root, &publisher);
    let dom = tokio::task::spawn_blocking(move || run_chromium(&url, &["--dump-dom".into()]))
        .await
        .unwrap();
    let table = dom
        .split("<tbody id=\"rollout-rows\">")
        .nth(1)
        .and_then(|rest| rest.split("</tbody>").next())
        .unwrap_or_else(|| panic!("no rollout table in the page:\n{dom}"));
    let row = table
        .split("<tr ")
        .find(|r| r.contains("data-release=\"rel-7\""))
        .unwrap_or_else(|| panic!("rel-7 is not in the rollout table:\n{table}"));
    for cell in [">halted</td>", ">2 of 2</td>", ">1 / 3 healthy, 1 bad</td>"] {
        assert!(row.contains(cell), "no {cell} in {row}");
    }
    assert!(
        row.contains("wave 2: web-failed failed &lt;script&gt;"),
        "{row}"
    );
    assert!(
        !dom.contains("<script>document.title"),
        "markup reached the DOM"
    );
    assert!(!dom.contains("data-pwned"), "an injected handler ran");
    assert!(
        !dom.contains("<section id=\"rollouts\" hidden"),
        "the section is hidden"
    );
}
