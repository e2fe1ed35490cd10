//! Tests of the configuration schema: layering, defaults, and refusals that name
//! the setting.

use super::*;
use crate::health::CheckKind;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    config: Config,
}

fn key() -> String {
    fleet_core::SecretKey::generate("p-1")
        .unwrap()
        .public()
        .to_nix_string()
}

#[test]
fn file_flags_and_defaults_layer() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("agent.toml");
    std::fs::write(
        &f,
        format!(
            r#"
bucket = "file:///srv/bucket"
host = "web-1"
trusted-publisher-keys = ["{k}"]
trusted-cache-keys = ["{k}"]
poll-interval = "5s"
health-checks = [
  {{ systemd-unit = "nginx.service" }},
  {{ command = ["/bin/true", "x"], timeout = "3s" }},
  {{ http = "http://127.0.0.1:1/healthz" }},
]
"#,
            k = key()
        ),
    )
    .unwrap();
    let cli = Cli::parse_from([
        "x",
        "--config",
        f.to_str().unwrap(),
        "--host",
        "web-2",
        "--poll-jitter",
        "0s",
    ]);
    let s = cli.config.layered().unwrap().settings().unwrap();
    assert_eq!(s.host.as_str(), "web-2");
    assert_eq!(s.poll_interval, Duration::from_secs(5));
    assert_eq!(s.poll_jitter, Duration::ZERO);
    assert_eq!(s.connectivity_timeout, DEFAULT_CONNECTIVITY_TIMEOUT);
    assert_eq!(s.state_dir, Path::new(DEFAULT_STATE_DIR));
    assert_eq!(s.staging_dir, Path::new(DEFAULT_STATE_DIR).join("staging"));
    assert_eq!(s.profile, Path::new(DEFAULT_PROFILE));
    assert_eq!(s.health_checks.len(), 3);
    assert_eq!(s.health_checks[0].timeout, DEFAULT_HEALTH_TIMEOUT);
    assert_eq!(s.health_checks[1].timeout, Duration::from_secs(3));
    assert_eq!(
        s.health_checks[1].kind,
        CheckKind::Command(vec!["/bin/true".into(), "x".into()])
    );
}

#[test]
fn flag_health_checks_parse() {
    let cli = Cli::parse_from([
        "x",
        "--health-checks",
        "command=/bin/sh -c true",
        "--health-checks",
        "http=http://localhost:8/x",
    ]);
    assert_eq!(cli.config.health_checks.len(), 2);
    assert!("bogus=1".parse::<HealthCheckSpec>().is_err());
    assert!("nothing".parse::<HealthCheckSpec>().is_err());
}

#[test]
fn bad_values_name_the_field() {
    let base = || Config {
        bucket: Some("file:///b".into()),
        host: Some("web-1".into()),
        trusted_publisher_keys: vec![key()],
        trusted_cache_keys: vec![key()],
        ..Default::default()
    };
    let cases: Vec<(Config, &str)> = vec![
        (
            Config {
                host: None,
                ..base()
            },
            "host is not set",
        ),
        (
            Config {
                host: Some("Web_1".into()),
                ..base()
            },
            "Web_1",
        ),
        (
            Config {
                trusted_publisher_keys: vec![],
                ..base()
            },
            "trusted-publisher-keys is empty",
        ),
        (
            Config {
                trusted_cache_keys: vec!["junk".into()],
                ..base()
            },
            "trusted-cache-keys[0]",
        ),
        (
            Config {
                poll_interval: Some("soon".into()),
                ..base()
            },
            "poll-interval",
        ),
        (
            Config {
                state_dir: Some("relative".into()),
                ..base()
            },
            "state-dir",
        ),
        (
            Config {
                health_checks: vec![HealthCheckSpec {
                    http: Some("ftp://x".into()),
                    ..Default::default()
                }],
                ..base()
            },
            "health-checks[0].http",
        ),
        (
            Config {
                health_checks: vec![HealthCheckSpec::default()],
                ..base()
            },
            "exactly one",
        ),
    ];
    for (c, want) in cases {
        let e = format!("{:#}", c.settings().unwrap_err());
        assert!(e.contains(want), "{want}: {e}");
    }
    base().settings().unwrap();
}

#[test]
fn unknown_file_keys_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("agent.toml");
    std::fs::write(&f, "pol-interval = \"5s\"\n").unwrap();
    let c = Config {
        config: Some(f),
        ..Default::default()
    };
    let e = c.layered().unwrap_err().to_string();
    assert!(e.contains("pol-interval"), "{e}");
}

/// Configs written before `store` was renamed `bucket` still load.
#[test]
fn the_old_store_spelling_still_loads() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("agent.toml");
    std::fs::write(
        &f,
        format!(
            "store = \"file:///old\"\nhost = \"web-1\"\ntrusted-publisher-keys = [\"{k}\"]\ntrusted-cache-keys = [\"{k}\"]\n",
            k = key()
        ),
    )
    .unwrap();
    let from_file = Cli::parse_from(["x", "--config", f.to_str().unwrap()]);
    let s = from_file.config.layered().unwrap().settings().unwrap();
    assert_eq!(s.bucket.to_string(), "file:///old");
    let both = Cli::parse_from([
        "x",
        "--config",
        f.to_str().unwrap(),
        "--bucket",
        "file:///new",
    ]);
    let s = both.config.layered().unwrap().settings().unwrap();
    assert_eq!(s.bucket.to_string(), "file:///new");
    let flag = Cli::parse_from(["x", "--store", "file:///flag", "--host", "web-1"]);
    assert_eq!(flag.config.store.as_deref(), Some("file:///flag"));
}

#[test]
fn a_root_of_trust_replaces_the_static_keys() {
    let d = tempfile::tempdir().unwrap();
    let root_file = d.path().join("root-2.public");
    std::fs::write(&root_file, key()).unwrap();
    let base = || Config {
        bucket: Some("file:///b".into()),
        host: Some("web-1".into()),
        trust_root_keys: vec![key()],
        trust_root_keys_file: vec![root_file.clone()],
        labels: vec!["role=web".into()],
        ..Default::default()
    };
    let s = base().settings().unwrap();
    let trust = s.trust.expect("a root is pinned");
    assert_eq!(trust.root_keys.keys().len(), 2);
    assert_eq!(trust.initial_version, 1);
    assert_eq!(s.labels, ["role=web"]);
    assert!(s.publisher_keys.is_empty() && s.cache_keys.is_empty());
    for (c, want) in [
        (
            Config {
                trusted_publisher_keys: vec![key()],
                ..base()
            },
            "remove the static keys",
        ),
        (
            Config {
                labels: vec!["Role Web".into()],
                ..base()
            },
            "labels[0]",
        ),
        (
            Config {
                trust_root_keys: vec![],
                trust_root_keys_file: vec![],
                trust_root_version: Some(3),
                trusted_publisher_keys: vec![key()],
                trusted_cache_keys: vec![key()],
                ..base()
            },
            "trust-root-version is set but no trust-root-keys",
        ),
    ] {
        let err = format!("{:#}", c.settings().unwrap_err());
        assert!(err.contains(want), "{want:?} not in {err}");
    }
}

#[test]
fn clock_skew_has_a_default_may_be_zero_and_is_checked() {
    let base = || Config {
        bucket: Some("file:///b".into()),
        host: Some("web-1".into()),
        trusted_publisher_keys: vec![key()],
        trusted_cache_keys: vec![key()],
        ..Default::default()
    };
    assert_eq!(base().settings().unwrap().clock_skew, DEFAULT_CLOCK_SKEW);
    let zero = Config {
        clock_skew: Some("0s".into()),
        ..base()
    };
    assert_eq!(zero.settings().unwrap().clock_skew, Duration::ZERO);
    let bad = Config {
        clock_skew: Some("soon".into()),
        ..base()
    };
    let err = format!("{:#}", bad.settings().unwrap_err());
    assert!(err.contains("clock-skew"), "{err}");
}
