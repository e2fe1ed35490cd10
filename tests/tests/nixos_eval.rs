//! The NixOS modules (`nixos/module.nix`, `nixos/reporter.nix`) evaluated with the
//! real nixpkgs lib's module system (`nixos/tests/eval.nix`, which declares the
//! NixOS options they set as nixpkgs types them and renders the units as nixpkgs
//! does), for a minimal host, every setting, and bad values; the configuration
//! files the modules write are fed to the real `fleet-agent` and `fleet-reporter`.
//!
//! The nixpkgs lib comes from `$NIXPKGS_LIB` (a `lib/` directory or its parent),
//! else `shared/vendor/nixpkgs-lib` beside the checkout; without either every test
//! skips, saying why. Nix is Debian's nix-bin 2.8, offline (`NIX_CONFIG` as the
//! other tests); `--read-write-mode` lets `builtins.toFile` (the modules'
//! `pkgs.writeText`) put the files in the real store, where the binaries read them.

mod infra_support;

use fleet_tests::output_text as text;
use infra_support::{copy_tree, repo, vendored};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fleet_tests::nix::NIX_CONFIG;
use serde_json::Value;

/// The nixpkgs `lib/` directory, or None (with the reason printed).
fn nixpkgs_lib() -> Option<PathBuf> {
    let with_lib = |d: PathBuf| {
        if d.join("default.nix").is_file() && d.join("modules.nix").is_file() {
            Some(d)
        } else if d.join("lib/modules.nix").is_file() {
            Some(d.join("lib"))
        } else {
            None
        }
    };
    if let Some(d) = std::env::var_os("NIXPKGS_LIB") {
        let found = with_lib(PathBuf::from(&d));
        assert!(
            found.is_some(),
            "NIXPKGS_LIB={} holds no nixpkgs lib/ (lib/modules.nix)",
            PathBuf::from(d).display()
        );
        return found;
    }
    let found = vendored("nixpkgs-lib").and_then(with_lib);
    if found.is_none() {
        eprintln!(
            "SKIPPED: no nixpkgs lib (set NIXPKGS_LIB, or put shared/vendor/nixpkgs-lib beside the checkout)"
        );
    }
    found
}

/// Evaluates nixos/tests/eval.nix for `configuration` (a Nix module expression):
/// Ok(its JSON result), or Err(Nix's error output) when the evaluation fails.
fn eval(lib: &Path, configuration: &str) -> Result<Value, String> {
    eval_in(&repo().join("nixos"), lib, configuration)
}

/// [`eval`] of the modules in `nixos` (a copy of the repository's `nixos/`).
fn eval_in(nixos: &Path, lib: &Path, configuration: &str) -> Result<Value, String> {
    let o = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "--read-write-mode"])
        .arg(nixos.join("tests/eval.nix"))
        .args(["--arg", "lib"])
        .arg(format!("import {}", lib.display()))
        .args(["--arg", "configuration", configuration])
        .env("NIX_CONFIG", NIX_CONFIG)
        .env("NIX_USER_CONF_FILES", "")
        .output()
        .expect("nix-instantiate runs (Debian's nix-bin; scripts/deps.sh installs it)");
    if o.status.success() {
        Ok(serde_json::from_slice(&o.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

fn key(name: &str) -> String {
    fleet_core::SecretKey::generate(name)
        .unwrap()
        .public()
        .to_nix_string()
}

/// The lines of a rendered unit, for exact `Key=value` checks.
fn unit(v: &Value, name: &str) -> Vec<String> {
    v["units"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no unit {name} in {v}"))
        .lines()
        .map(str::to_owned)
        .collect()
}

fn has(lines: &[String], want: &str) -> bool {
    lines.iter().any(|l| l == want)
}

/// The content of the store file a module wrote at `path`.
fn file(v: &Value, path: &str) -> String {
    v["files"][path]
        .as_str()
        .unwrap_or_else(|| panic!("no file {path} in {v}"))
        .to_owned()
}

/// The store path after `--config ` in a unit's ExecStart.
fn exec_config(lines: &[String]) -> String {
    let exec = lines
        .iter()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    exec.split_once("--config ").unwrap().1.to_owned()
}

/// `fleet-agent once` with the module's file: 4 means the configuration was accepted
/// and the cycle found no manifest in the empty bucket.
fn agent_once(config: &str, state: &Path) -> Output {
    Command::new(fleet_tests::bin("fleet-agent"))
        .args(["once", "--config", config, "--state-dir"])
        .arg(state)
        .env_remove("FLEET_HOST")
        .output()
        .unwrap()
}

fn reporter_summary(config: &str) -> Output {
    Command::new(fleet_tests::bin("fleet-reporter"))
        .args(["summary", "--config", config])
        .output()
        .unwrap()
}

#[test]
fn a_minimal_host_gets_a_notify_unit_and_a_config_the_agent_accepts() {
    let Some(lib) = nixpkgs_lib() else { return };
    let d = tempfile::tempdir().unwrap();
    let bucket = d.path().join("bucket");
    std::fs::create_dir(&bucket).unwrap();
    // An upper-case host name, as networking.hostName allows.
    let v = eval(
        &lib,
        &format!(
            r#"{{
              networking.hostName = "Web-1";
              services.fleet-agent = {{
                enable = true;
                store = "file://{}";
                trustedPublisherKeys = [ "{}" ];
                trustedCacheKeys = [ "{}" ];
              }};
            }}"#,
            bucket.display(),
            key("publisher-1"),
            key("cache-1")
        ),
    )
    .unwrap();
    assert_eq!(v["assertions"], serde_json::json!([]), "{v}");
    // `store` is the option's old name: it still works, with a warning naming the new one.
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains("services.fleet-agent.store")
            && warnings.contains("services.fleet-agent.bucket"),
        "{warnings}"
    );
    let u = unit(&v, "fleet-agent");
    for want in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=150",
        "Restart=always",
        "StartLimitIntervalSec=0",
        "X-RestartIfChanged=false",
        "X-StopOnRemoval=false",
        "KillMode=mixed",
        "TimeoutStopSec=300",
        "StateDirectory=fleet-agent",
        "StateDirectoryMode=0700",
        "Wants=network-online.target",
        "ExecStart=/nix/store/00000000000000000000000000000000-fleet-agent-0.1.0/bin/fleet-agent run --config /etc/fleet/agent.toml",
    ] {
        assert!(has(&u, want), "{want} missing from:\n{}", u.join("\n"));
    }
    // No credentials file unless given (EC2 instance profiles need none).
    assert!(
        !u.iter()
            .any(|l| l.starts_with("EnvironmentFile=") || l.starts_with("LoadCredential=")),
        "{u:?}"
    );
    assert_eq!(v["wantedBy"]["fleet-agent"][0], "multi-user.target");
    assert_eq!(v["systemPackages"][0], "fleet-agent-0.1.0");
    // The reporter is off unless enabled.
    assert!(v["units"].get("fleet-reporter").is_none(), "{v}");

    let config = v["etc"]["fleet/agent.toml"].as_str().unwrap().to_owned();
    assert!(file(&v, &config).contains("host = \"web-1\""));
    let o = agent_once(&config, &d.path().join("state"));
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let status: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(status["host"], "web-1");
}

#[test]
fn enrollment_creates_the_identity_before_the_agent_starts() {
    let Some(lib) = nixpkgs_lib() else { return };
    let conf = |labels: &str| {
        format!(
            r#"{{
              networking.hostName = "web-1";
              services.fleet-agent = {{
                enable = true;
                bucket = "file:///srv/fleet";
                trustedPublisherKeys = [ "{}" ];
                trustedCacheKeys = [ "{}" ];
                enrollment = {{ createIdentity = true; labels = {labels}; }};
              }};
            }}"#,
            key("publisher-1"),
            key("cache-1")
        )
    };
    let v = eval(&lib, &conf(r#"{ role = "web"; }"#)).unwrap();
    assert_eq!(v["assertions"], serde_json::json!([]), "{v}");
    let u = unit(&v, "fleet-agent");
    let want = "ExecStartPre=/nix/store/00000000000000000000000000000000-fleet-agent-0.1.0/bin/fleet-agent \
                init --state-dir /var/lib/fleet-agent \
                --request-file /var/lib/fleet-agent/enrollment-request.json '--label=role=web'";
    assert!(has(&u, want), "{want} missing from:\n{}", u.join("\n"));
    assert!(
        has(&u, "Environment=\"FLEET_AGENT_HOST=web-1\""),
        "{}",
        u.join("\n")
    );

    // The same arguments, against the real binary in a scratch state directory.
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let request = d.path().join("request.json");
    let o = Command::new(fleet_tests::bin("fleet-agent"))
        .args(["init", "--state-dir"])
        .arg(&state)
        .arg("--request-file")
        .arg(&request)
        .arg("--label=role=web")
        .env("FLEET_AGENT_HOST", "web-1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let req =
        fleet_core::enrollment::EnrollmentRequest::open(&std::fs::read(&request).unwrap()).unwrap();
    assert_eq!(req.labels["role"], "web");
    assert!(state.join("identity.key").exists());

    let e = eval(&lib, &conf(r#"{ "bad label" = "x"; }"#)).unwrap();
    assert!(
        e["assertions"].to_string().contains("enrollment.labels"),
        "{e}"
    );
}

#[test]
fn every_setting_reaches_the_units_and_the_real_binaries() {
    let Some(lib) = nixpkgs_lib() else { return };
    let d = tempfile::tempdir().unwrap();
    let bucket = d.path().join("bucket");
    std::fs::create_dir(&bucket).unwrap();
    let publisher = key("publisher-1");
    let metrics = d.path().join("fleet-agent.prom");
    let configuration = |reporter_token: &str| {
        format!(
            r#"{{
              networking.hostName = "ignored";
              services.fleet-agent = {{
                enable = true;
                bucket = "file://{bucket}";
                host = "db-0042";
                trustedPublisherKeys = [ "{publisher}" ];
                trustedCacheKeys = [ "{cache}" "{cache2}" ];
                environmentFile = "/run/secrets/fleet-agent.env";
                credentialFiles = {{
                  accessKeyId = "/run/secrets/fleet-key-id";
                  secretAccessKey = "/run/secrets/fleet-secret";
                  sessionToken = "/run/secrets/fleet-token";
                }};
                pollInterval = 30; pollJitter = 0; heartbeatInterval = 90; backoffMax = 600;
                requestTimeout = 20; activationTimeout = 300; healthTimeout = 15;
                connectivityTimeout = 120;
                reboot = "window"; maintenanceWindows = [ "Mon-Fri 02:00-04:00" ]; timeZone = "UTC";
                healthChecks = [
                  {{ systemdUnit = "nginx.service"; grace = 5; }}
                  {{ systemRunning = true; }}
                  {{ command = [ "/bin/sh" "-c" "echo \"ok\"\nexit 0" ]; timeout = 5; }}
                  {{ http = "http://127.0.0.1:8080/healthz"; }}
                ];
                maxQueuedEvents = 50;
                importVia = "staging";
                metricsFile = "{metrics}";
                logFormat = "json";
                extraSettings = {{ "facts-root" = "/"; }};
                watchdogSec = 200;
                stopTimeout = 120;
              }};
              services.fleet-reporter = {{
                enable = true;
                bucket = "file://{bucket}";
                listen = "127.0.0.1:0";
                trustedPublisherKeys = [ "{publisher}" ];
                environmentFile = "/run/secrets/fleet-reporter.env";
                extraSettings = {{ stale-after = "5m"; }};
                {reporter_token}
              }};
            }}"#,
            bucket = bucket.display(),
            metrics = metrics.display(),
            cache = key("cache-1"),
            cache2 = key("cache-2"),
        )
    };
    let v = eval(
        &lib,
        &configuration(r#"tokenFile = "/run/secrets/fleet-reporter-token";"#),
    )
    .unwrap();
    assert_eq!(v["assertions"], serde_json::json!([]), "{v}");

    let agent = unit(&v, "fleet-agent");
    for want in [
        "EnvironmentFile=/run/secrets/fleet-agent.env",
        // The names the agent reads in $CREDENTIALS_DIRECTORY (agent/src/credentials.rs).
        "LoadCredential=aws-access-key-id:/run/secrets/fleet-key-id",
        "LoadCredential=aws-secret-access-key:/run/secrets/fleet-secret",
        "LoadCredential=aws-session-token:/run/secrets/fleet-token",
        "WatchdogSec=200",
        "TimeoutStopSec=120",
        "RestrictAddressFamilies=AF_NETLINK",
    ] {
        assert!(
            has(&agent, want),
            "{want} missing from:\n{}",
            agent.join("\n")
        );
    }
    let config = v["etc"]["fleet/agent.toml"].as_str().unwrap().to_owned();
    let toml = file(&v, &config);
    for want in [
        "host = \"db-0042\"",
        "poll-interval = \"30s\"",
        "log-format = \"json\"",
        "facts-root = \"/\"",
        "restart-after-switch = true",
        "grace = \"5s\"",
        "system-running = true",
        "connectivity-timeout = \"120s\"",
        "reboot = \"window\"",
        "maintenance-windows = [\"Mon-Fri 02:00-04:00\"]",
        "time-zone = \"UTC\"",
        "import-via = \"staging\"",
    ] {
        assert!(toml.contains(want), "{want} missing from:\n{toml}");
    }
    let o = agent_once(&config, &d.path().join("state"));
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let status: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(status["host"], "db-0042");
    // metricsFile reached the agent: its cycle (no manifest: failed) is counted there.
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.lines()
            .any(|l| l == "fleet_agent_cycles_total{outcome=\"failed\"} 1"),
        "{prom}"
    );

    // The reporter: sandboxed, the token passed as a credential, its file at the
    // path systemd gives credentials.
    let reporter = unit(&v, "fleet-reporter");
    for want in [
        "DynamicUser=true",
        "CapabilityBoundingSet=",
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "ProtectHome=true",
        "PrivateTmp=true",
        "PrivateDevices=true",
        "PrivateUsers=true",
        "ProtectKernelTunables=true",
        "RestrictNamespaces=true",
        "MemoryDenyWriteExecute=true",
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged",
        "UMask=0077",
        "Restart=on-failure",
        "LoadCredential=token:/run/secrets/fleet-reporter-token",
        "EnvironmentFile=/run/secrets/fleet-reporter.env",
    ] {
        assert!(
            has(&reporter, want),
            "{want} missing from:\n{}",
            reporter.join("\n")
        );
    }
    let rconfig = exec_config(&reporter);
    assert!(
        has(&reporter, &format!("X-Restart-Triggers={rconfig}")),
        "{reporter:?}"
    );
    let rtoml = file(&v, &rconfig);
    assert!(
        rtoml.contains("token-file = \"/run/credentials/fleet-reporter.service/token\""),
        "{rtoml}"
    );
    // Accepted up to the token, which only systemd provides.
    let o = reporter_summary(&rconfig);
    assert!(
        !o.status.success()
            && text(&o)
                .contains("reading token-file /run/credentials/fleet-reporter.service/token"),
        "{}",
        text(&o)
    );
    // Without a token the same file works as it is: the fleet is printed (its one
    // host, without a manifest, is failed: exit code 3, the CI gate).
    let v = eval(&lib, &configuration("")).unwrap();
    let o = reporter_summary(&exec_config(&unit(&v, "fleet-reporter")));
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("1 host: 1 failed"), "{}", text(&o));
}

#[test]
fn bad_settings_fail_with_messages_that_say_what_to_do() {
    let Some(lib) = nixpkgs_lib() else { return };
    let with = |hostname: &str, agent: &str| {
        format!(
            r#"{{
              networking.hostName = "{hostname}";
              services.fleet-agent = {{
                enable = true;
                bucket = "file:///var/empty/bucket";
                trustedPublisherKeys = [ "p-1:x" ];
                trustedCacheKeys = [ "c-1:y" ];
                {agent}
              }};
            }}"#
        )
    };
    let assertions = |config: String| -> Vec<String> {
        let v = eval(&lib, &config).unwrap();
        serde_json::from_value(v["assertions"].clone()).unwrap()
    };
    for (hostname, agent, want) in [
        (
            "",
            "",
            "networking.hostName is empty (cloud images take the name from DHCP): set services.fleet-agent.host",
        ),
        (
            "web-1",
            r#"host = "web_1";"#,
            "services.fleet-agent.host is \"web_1\", not a fleet host name",
        ),
        (
            "web-1",
            r#"trustRootKeys = [ "r-1:z" ];"#,
            "with trustRootKeys the publisher and cache keys come from the root of trust",
        ),
        (
            "web-1",
            "watchdogSec = 60;",
            "services.fleet-agent.watchdogSec (60) must exceed 3 × requestTimeout (90).",
        ),
        (
            "web-1",
            r#"healthChecks = [ { systemdUnit = "a.service"; http = "http://127.0.0.1/"; } ];"#,
            "services.fleet-agent.healthChecks.0 must set exactly one of systemdUnit, systemRunning, command, http.",
        ),
        (
            "web-1",
            r#"environmentFile = "secrets/fleet.env";"#,
            "services.fleet-agent.environmentFile must be an absolute path",
        ),
        (
            "web-1",
            r#"credentialFiles.accessKeyId = "/run/secrets/id";"#,
            "services.fleet-agent.credentialFiles: set accessKeyId and secretAccessKey together",
        ),
        (
            "web-1",
            r#"credentialFiles = { accessKeyId = "id"; secretAccessKey = "/run/secrets/s"; };"#,
            "services.fleet-agent.credentialFiles must be absolute paths",
        ),
    ] {
        let got = assertions(with(hostname, agent));
        assert!(
            got.iter().any(|m| m.contains(want)),
            "{want:?} not among {got:?}"
        );
    }
    // No cache key at all.
    let got = assertions(with("web-1", "").replace(
        r#"trustedCacheKeys = [ "c-1:y" ];"#,
        "trustedCacheKeys = [ ];",
    ));
    assert!(
        got.iter()
            .any(|m| m
                .contains("trustedPublisherKeys and trustedCacheKeys need at least one key each")),
        "{got:?}"
    );
    // A good configuration fails no assertion.
    assert!(assertions(with("web-1", "")).is_empty());

    // Type errors name the option.
    let e = eval(&lib, &with("web-1", r#"logFormat = "xml";"#)).unwrap_err();
    assert!(
        e.contains("services.fleet-agent.logFormat") && e.contains("\"xml\""),
        "{e}"
    );
    let e = eval(&lib, &with("web-1", "pollIntervall = 5;")).unwrap_err();
    assert!(
        e.contains("services.fleet-agent.pollIntervall") && e.contains("does not exist"),
        "{e}"
    );
    let e = eval(&lib, &with("Web.1", "")).unwrap_err();
    assert!(e.contains("networking.hostName"), "{e}");
}

#[test]
fn broken_copies_of_the_modules_fail_the_evaluation() {
    let Some(lib) = nixpkgs_lib() else { return };
    let config = r#"{
      networking.hostName = "web-1";
      services.fleet-agent = { enable = true; bucket = "file:///var/empty/b"; trustedPublisherKeys = [ "p:x" ]; trustedCacheKeys = [ "c:y" ]; };
      services.fleet-reporter = { enable = true; bucket = "file:///var/empty/b"; };
    }"#;
    for (file, from, to, want) in [
        // A NixOS option that does not exist (nixpkgs has no such service option).
        (
            "module.nix",
            "restartIfChanged = false;",
            "restartIfChanges = false;",
            "restartIfChanges",
        ),
        // A value of the wrong type for a systemd setting.
        (
            "reporter.nix",
            "DynamicUser = true;",
            "DynamicUser = { yes = true; };",
            "DynamicUser",
        ),
    ] {
        let d = tempfile::tempdir().unwrap();
        let nixos = d.path().join("nixos");
        copy_tree(&repo().join("nixos"), &nixos);
        eval_in(&nixos, &lib, config).unwrap();
        let path = nixos.join(file);
        let src = std::fs::read_to_string(&path).unwrap();
        assert!(src.contains(from), "{file} lacks {from}");
        std::fs::write(&path, src.replacen(from, to, 1)).unwrap();
        let e = eval_in(&nixos, &lib, config).unwrap_err();
        assert!(e.contains(want), "{want:?} not in {e}");
    }
    // A unit setting defined again with another value (by a host's own
    // configuration): refused as nixpkgs' unitOption refuses it, not merged.
    let e = eval(
        &lib,
        &config.replacen(
            "networking.hostName",
            "systemd.services.fleet-agent.serviceConfig.Type = \"simple\";\n      networking.hostName",
            1,
        ),
    )
    .unwrap_err();
    assert!(e.contains("conflicting definition values"), "{e}");
}

#[test]
fn the_example_host_configurations_evaluate() {
    let Some(lib) = nixpkgs_lib() else { return };
    let example = |name: &str| {
        let path = repo().join("nixos/examples").join(name);
        eval(&lib, &format!("{{ imports = [ {} ]; }}", path.display())).unwrap()
    };

    let onprem = example("on-prem.nix");
    assert_eq!(onprem["assertions"], serde_json::json!([]), "{onprem}");
    let toml = file(&onprem, onprem["etc"]["fleet/agent.toml"].as_str().unwrap());
    assert!(toml.contains("host = \"kiosk-17\""), "{toml}");
    assert!(has(
        &unit(&onprem, "fleet-agent"),
        "EnvironmentFile=/var/lib/fleet-agent-credentials.env"
    ));

    // The cloud image: a placeholder host, replaced at boot from the user data.
    let cloud = example("cloud-image.nix");
    assert_eq!(cloud["assertions"], serde_json::json!([]), "{cloud}");
    let agent = unit(&cloud, "fleet-agent");
    for want in [
        "EnvironmentFile=/run/fleet-agent/identity.env",
        "Requires=fleet-agent-identity.service",
    ] {
        assert!(
            has(&agent, want),
            "{want} missing from:\n{}",
            agent.join("\n")
        );
    }
    assert!(
        agent.iter().any(|l| l.starts_with("After=")
            && l.contains("network-online.target")
            && l.contains("fleet-agent-identity.service")),
        "{agent:?}"
    );
    assert!(has(&unit(&cloud, "fleet-agent-identity"), "Type=oneshot"));
    assert_eq!(
        cloud["wantedBy"]["fleet-agent-identity"][0],
        "fleet-agent.service"
    );

    // The real agent takes the host from the environment file over the TOML's
    // placeholder (with the example's bucket swapped for an empty local one).
    let d = tempfile::tempdir().unwrap();
    let bucket = d.path().join("bucket");
    std::fs::create_dir(&bucket).unwrap();
    let toml = file(&cloud, cloud["etc"]["fleet/agent.toml"].as_str().unwrap());
    assert!(toml.contains("host = \"unassigned\""), "{toml}");
    let local = d.path().join("agent.toml");
    let bucket_line = toml.lines().find(|l| l.starts_with("bucket = ")).unwrap();
    std::fs::write(
        &local,
        toml.replace(
            bucket_line,
            &format!("bucket = \"file://{}\"", bucket.display()),
        ),
    )
    .unwrap();
    let o = Command::new(fleet_tests::bin("fleet-agent"))
        .args(["once", "--config", local.to_str().unwrap(), "--state-dir"])
        .arg(d.path().join("state"))
        .env("FLEET_AGENT_HOST", "web-7")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let status: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(status["host"], "web-7");
}

#[test]
fn the_flake_outputs_evaluate() {
    let Some(lib) = nixpkgs_lib() else { return };
    let o = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "--read-write-mode"])
        .arg(repo().join("nixos/tests/flake-eval.nix"))
        .args(["--arg", "lib"])
        .arg(format!("import {}", lib.display()))
        .env("NIX_CONFIG", NIX_CONFIG)
        .env("NIX_USER_CONF_FILES", "")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let crates = ["fleet-agent", "fleet-publish", "fleet-reporter"];
    for system in ["x86_64-linux", "aarch64-linux"] {
        let mut packages = vec!["default", "fleet-reporter-lambda"];
        packages.extend(crates);
        packages.sort();
        assert_eq!(v["packages"][system], serde_json::json!(packages), "{v}");
        assert_eq!(v["devShells"][system], serde_json::json!(["default"]));
    }
    assert_eq!(
        v["checks"]["x86_64-linux"],
        serde_json::json!(["fleet-agent", "fleet-publish", "fleet-reporter", "vm-test"])
    );
    assert_eq!(v["overlay"], serde_json::json!(crates));
    // One crate per package, its sandbox-only test skips passed on.
    assert_eq!(
        v["agent"]["cargoBuildFlags"],
        serde_json::json!(["-p", "fleet-agent"])
    );
    assert_eq!(v["agent"]["mainProgram"], "fleet-agent");
    assert_eq!(
        v["agent"]["nativeBuildInputs"],
        serde_json::json!(["cmake", "perl"])
    );
    // The Lambda zip: the static reporter, packed by scripts/lambda_zip.py into
    // result/fleet-reporter-lambda.zip (where terraform/examples/aws looks).
    let script = v["lambda"]["script"].as_str().unwrap();
    assert!(
        script.contains("-lambda_zip.py /nix/store/11111111111111111111111111111111-fleet-reporter-0.1.0-static/bin/fleet-reporter \"$out/fleet-reporter-lambda.zip\""),
        "{script}"
    );
    let example = std::fs::read_to_string(repo().join("terraform/examples/aws/main.tf")).unwrap();
    assert!(example.contains("/result/fleet-reporter-lambda.zip\""));
    // The VM test's definition, and the modules with the flake's own packages.
    assert_eq!(
        v["vmTest"]["nodes"],
        serde_json::json!(["agent", "publisher"])
    );
    assert_eq!(
        v["moduleUnits"]["fleet-agent"],
        "ExecStart=/nix/store/11111111111111111111111111111111-fleet-agent-0.1.0/bin/fleet-agent run --config /etc/fleet/agent.toml"
    );
    assert!(
        v["moduleUnits"]["fleet-reporter"]
            .as_str()
            .unwrap()
            .starts_with("ExecStart=/nix/store/11111111111111111111111111111111-fleet-reporter-0.1.0/bin/fleet-reporter serve --config /nix/store/")
    );
}

#[test]
fn a_host_pinning_a_root_of_trust_gets_a_config_the_agent_accepts() {
    let Some(lib) = nixpkgs_lib() else { return };
    let d = tempfile::tempdir().unwrap();
    let bucket = d.path().join("bucket");
    std::fs::create_dir(&bucket).unwrap();
    let v = eval(
        &lib,
        &format!(
            r#"{{
              networking.hostName = "web-1";
              services.fleet-agent = {{
                enable = true;
                bucket = "file://{}";
                trustRootKeys = [ "{}" "{}" ];
                trustRootVersion = 3;
                labels = [ "role=web" ];
              }};
            }}"#,
            bucket.display(),
            key("root-1"),
            key("root-2"),
        ),
    )
    .unwrap();
    assert_eq!(v["assertions"], serde_json::json!([]), "{v}");
    let config = v["etc"]["fleet/agent.toml"].as_str().unwrap().to_owned();
    let toml = file(&v, &config);
    for want in [
        "trust-root-keys = [",
        "trust-root-version = 3",
        "labels = [\"role=web\"]",
    ] {
        assert!(toml.contains(want), "{want} missing from:\n{toml}");
    }
    assert!(!toml.contains("trusted-publisher-keys"), "{toml}");
    // The real agent takes it: no root in the bucket yet is `trust-root-missing`.
    let o = agent_once(&config, &d.path().join("state"));
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let status: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        status["last_error"]["kind"], "trust-root-missing",
        "{status}"
    );
}

#[test]
fn a_publisher_host_gets_a_renew_timer_whose_config_fleet_publish_accepts() {
    let Some(lib) = nixpkgs_lib() else { return };
    let d = tempfile::tempdir().unwrap();
    let bucket = d.path().join("bucket");
    std::fs::create_dir(&bucket).unwrap();
    let v = eval(
        &lib,
        &format!(
            r#"{{
                services.fleet-renew = {{
                    enable = true;
                    bucket = "file://{}";
                    signingKeyFile = "/run/secrets/fleet-publisher.secret";
                    within = "3d";
                    schedule = "daily";
                    trustedPublisherKeys = [ "{}" ];
                    environmentFile = "/run/secrets/fleet-publisher.env";
                }};
            }}"#,
            bucket.display(),
            key("publisher-old-1")
        ),
    )
    .unwrap();
    let service = unit(&v, "fleet-renew");
    for want in [
        "Type=oneshot",
        "LoadCredential=signing-key:/run/secrets/fleet-publisher.secret",
        "EnvironmentFile=/run/secrets/fleet-publisher.env",
        "DynamicUser=true",
    ] {
        assert!(has(&service, want), "{want} not in {service:?}");
    }
    let exec = service
        .iter()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    assert!(
        exec.starts_with(
            "/nix/store/00000000000000000000000000000000-fleet-publish-0.1.0/bin/fleet-publish renew --all --config "
        ),
        "{exec}"
    );
    let timer: Vec<&str> = v["timers"]["fleet-renew"]
        .as_str()
        .unwrap_or_else(|| panic!("no timer in {v}"))
        .lines()
        .collect();
    for want in [
        "[Timer]",
        "OnCalendar=daily",
        "Persistent=true",
        "RandomizedDelaySec=15m",
    ] {
        assert!(timer.contains(&want), "{want} not in {timer:?}");
    }
    assert_eq!(
        v["wantedBy"]["fleet-renew.timer"],
        serde_json::json!(["timers.target"])
    );
    assert_eq!(
        v["wantedBy"]["fleet-renew"],
        serde_json::json!([]),
        "only the timer starts it"
    );

    // The real fleet-publish reads the file (unknown keys would be refused) up to the
    // signing key, which only systemd provides.
    let config = exec_config(&service);
    let toml = file(&v, &config);
    assert!(toml.contains("within = \"3d\""), "{toml}");
    let o = Command::new(fleet_tests::bin("fleet-publish"))
        .args(["renew", "--all", "--config", &config])
        .env_remove("FLEET_BUCKET")
        .output()
        .unwrap();
    let out = text(&o);
    assert!(
        !o.status.success() && out.contains("/run/credentials/fleet-renew.service/signing-key"),
        "{out}"
    );
}
