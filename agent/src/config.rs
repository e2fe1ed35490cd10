//! The agent's one configuration schema: flags, `FLEET_AGENT_*` environment variables
//! and a TOML file, layered with [`fleet_core::config::layer`]
//! (flag > environment > file > built-in default).
//!
//! ```toml
//! # /etc/fleet/agent.toml
//! bucket = "s3://fleet-prod?region=eu-west-1"
//! host = "web-1"
//! trusted-publisher-keys = ["publisher-1:1gNt8HOHaiR6hFh4EO+f8kqYbHrgsr3VqnaSTY/M3RI="]
//! trusted-cache-keys = ["cache-1:…"]
//! state-dir = "/var/lib/fleet-agent"          # default
//! staging-dir = "/var/lib/fleet-agent/staging" # default: <state-dir>/staging
//! poll-interval = "60s"                       # default
//! poll-jitter = "10s"                         # default: up to this much added to each wait
//! heartbeat-interval = "2m"                   # default: status.json rewritten this often when idle
//! backoff-max = "15m"                         # default: longest wait after failures
//! request-timeout = "30s"                     # default: bound on one bucket request
//! nix-store = "/var/tmp/chroot"               # default: Nix's default store
//! store-root = "/"                            # default: where <closure>/bin/… is found
//! profile = "/nix/var/nix/profiles/system"    # default
//! activation-timeout = "10m"                  # default: bound on switch-to-configuration
//! health-timeout = "60s"                      # default per check
//! connectivity-timeout = "5m"                 # default: after a switch, reach the bucket within this or roll back; "0s" = off
//! clock-skew = "5m"                           # default: a manifest is accepted this long past its expires_at; "0s" = none
//! health-checks = [
//!   { systemd-unit = "nginx.service", grace = "10s" },
//!   { system-running = true },
//!   { command = ["/run/current-system/sw/bin/true"], timeout = "10s" },
//!   { http = "http://127.0.0.1:8080/healthz" },
//! ]
//! reboot = "never"                            # default; or "when-idle", "window": may the agent reboot for a `boot` deploy
//! maintenance-windows = ["Mon-Fri 02:00-04:00"] # default none (always open): when new generations are activated
//! time-zone = "Europe/Berlin"                 # default: the system's; the windows' zone
//! reboot-command = ["systemctl", "reboot"]    # default (expert/test setting)
//! pass-environment = ["HTTPS_PROXY"]          # default none: more variables for switch and checks
//! metrics-file = "/var/lib/prometheus-node-exporter-text-files/fleet-agent.prom" # default: none
//! facts-root = "/"                            # default: root of /etc, /proc, /run for facts
//! max-queued-events = 100                     # default
//! max-nar-size = 17179869184                  # default 16 GiB: largest store path (NarSize)
//! max-closure-paths = 100000                  # default: most store paths walked per closure
//! max-download-size = 274877906944            # default 256 GiB: most NAR bytes staged per deploy
//! fetch-concurrency = 4                       # default: large NAR downloads at once
//! import-in-waves = false                     # staging only: import verified paths while others download
//! import-via = "unpack"                       # or "staging", "substituter": how verified NARs reach Nix
//! restart-after-switch = false                # `run` exits after a switch, for systemd to restart it
//! log-format = "human"                        # or "json"
//! ```
//!
//! With a root of trust in the bucket (docs/operations.md, "Rotate and revoke keys
//! with a root of trust") the host pins root keys instead of publisher and cache
//! keys, which then come from the root:
//!
//! ```toml
//! trust-root-keys = ["root-1:…", "root-2:…"]  # or trust-root-keys-file = [PATH, …]
//! trust-root-version = 1                      # the version the keys were taken from
//! labels = ["role=web"]                       # default none: for scoped publisher keys
//! ```
//!
//! On the command line a health check is `--health-checks KIND=VALUE` with KIND one of
//! `systemd-unit`, `system-running` (`=true`), `http`, `command` (the command split at
//! spaces), repeatable.
//! Durations are read by [`fleet_core::duration`] (`90s`, `5m`, `1h 30m`, `7d`, `PT5M`).
//! `store` / `--store` / `FLEET_AGENT_STORE` are the old spelling of `bucket` and still
//! work, with a warning.
//! S3 credentials come from `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`, see
//! [`crate::credentials`]) or else the standard AWS environment (`AWS_ACCESS_KEY_ID`,
//! …); `switch-to-configuration` and health checks get neither ([`crate::childenv`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use fleet_core::duration::{Zero, parse_duration};
pub use fleet_core::logging::LogFormat;
use fleet_core::nixcli::Nix;
use fleet_core::{BucketUrl, HostName, TrustedKeys};
use serde::{Deserialize, Serialize};

use crate::childenv::ChildEnv;
use crate::health::Check;
use crate::reboot::RebootPolicy;
use crate::window::Windows;

mod health_checks;
mod limits;
mod trust;
mod values;
pub use health_checks::HealthCheckSpec;
use health_checks::check;
use limits::{fetch_limits, schedule};
pub use trust::TrustSettings;
use values::{absolute, duration_or, keys, metrics_file};

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/fleet-agent";
/// Default system profile.
pub const DEFAULT_PROFILE: &str = "/nix/var/nix/profiles/system";
/// Default poll interval.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// Default most jitter added to a wait.
pub const DEFAULT_POLL_JITTER: Duration = Duration::from_secs(10);
/// Default heartbeat interval: under the reporter's default 3-minute staleness bound
/// even with jitter.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(120);
/// Default longest backoff after failures.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);
/// Default bound on one bucket request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on `switch-to-configuration`.
pub const DEFAULT_ACTIVATION_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Default bound on one health check.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
/// Default window after a switch in which the agent must reach the bucket again.
pub const DEFAULT_CONNECTIVITY_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Default `clock-skew`: a host clock up to this far ahead still accepts a manifest
/// that just expired by the publisher's clock.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// Default bound on queued, unsent events.
pub const DEFAULT_MAX_QUEUED_EVENTS: usize = 100;

/// Flags, environment and file keys (kebab-case, like the long flags).
#[derive(clap::Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// TOML configuration file; its keys are the long option names.
    #[arg(long, env = "FLEET_AGENT_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// The fleet bucket: s3://BUCKET[/PREFIX][?endpoint=…&region=…] or file:///PATH (required).
    #[arg(long, env = "FLEET_BUCKET", value_name = "URL")]
    #[serde(default)]
    pub bucket: Option<String>,

    /// Deprecated spelling of `bucket`.
    #[arg(long, env = "FLEET_AGENT_STORE", value_name = "URL", hide = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,

    /// This host's name, as in hosts/<host>/manifest.json (required).
    #[arg(long, env = "FLEET_AGENT_HOST", value_name = "NAME")]
    #[serde(default)]
    pub host: Option<String>,

    /// Publisher public keys (`name:base64`) trusted to sign manifests (required).
    #[arg(
        long,
        env = "FLEET_AGENT_TRUSTED_PUBLISHER_KEYS",
        value_delimiter = ',',
        value_name = "KEY"
    )]
    #[serde(default)]
    pub trusted_publisher_keys: Vec<String>,

    /// Cache public keys (`name:base64`) trusted to sign narinfos (required).
    #[arg(
        long,
        env = "FLEET_AGENT_TRUSTED_CACHE_KEYS",
        value_delimiter = ',',
        value_name = "KEY"
    )]
    #[serde(default)]
    pub trusted_cache_keys: Vec<String>,

    /// Directory of the agent's state [default: /var/lib/fleet-agent].
    #[arg(long, env = "FLEET_AGENT_STATE_DIR", value_name = "DIR")]
    #[serde(default)]
    pub state_dir: Option<PathBuf>,

    /// Directory downloads are staged in [default: <state-dir>/staging].
    #[arg(long, env = "FLEET_AGENT_STAGING_DIR", value_name = "DIR")]
    #[serde(default)]
    pub staging_dir: Option<PathBuf>,

    /// Time between polls of the manifest [default: 60s].
    #[arg(long, env = "FLEET_AGENT_POLL_INTERVAL", value_name = "DURATION")]
    #[serde(default)]
    pub poll_interval: Option<String>,

    /// Most random time added to each wait, so hosts do not poll in step [default: 10s].
    #[arg(long, env = "FLEET_AGENT_POLL_JITTER", value_name = "DURATION")]
    #[serde(default)]
    pub poll_jitter: Option<String>,

    /// Time between status.json heartbeats while nothing changes [default: 2m].
    #[arg(long, env = "FLEET_AGENT_HEARTBEAT_INTERVAL", value_name = "DURATION")]
    #[serde(default)]
    pub heartbeat_interval: Option<String>,

    /// Longest wait between retries while the bucket is unreachable or refuses access [default: 15m].
    #[arg(long, env = "FLEET_AGENT_BACKOFF_MAX", value_name = "DURATION")]
    #[serde(default)]
    pub backoff_max: Option<String>,

    /// Bound on one bucket request [default: 30s].
    #[arg(long, env = "FLEET_AGENT_REQUEST_TIMEOUT", value_name = "DURATION")]
    #[serde(default)]
    pub request_timeout: Option<String>,

    /// Nix store to import into and to set the profile in (`--store`) [default: Nix's default].
    #[arg(long, env = "FLEET_AGENT_NIX_STORE", value_name = "STORE")]
    #[serde(default)]
    pub nix_store: Option<String>,

    /// Directory holding the store's real files: the closure's switch-to-configuration
    /// is run from <store-root>/nix/store/… [default: /].
    #[arg(long, env = "FLEET_AGENT_STORE_ROOT", value_name = "DIR")]
    #[serde(default)]
    pub store_root: Option<PathBuf>,

    /// System profile to point at each new generation [default: /nix/var/nix/profiles/system].
    #[arg(long, env = "FLEET_AGENT_PROFILE", value_name = "PATH")]
    #[serde(default)]
    pub profile: Option<PathBuf>,

    /// Bound on `switch-to-configuration` [default: 10m].
    #[arg(long, env = "FLEET_AGENT_ACTIVATION_TIMEOUT", value_name = "DURATION")]
    #[serde(default)]
    pub activation_timeout: Option<String>,

    /// Health checks after activation: systemd-unit=UNIT, http=URL, command=PROGRAM ARGS…
    #[arg(long, env = "FLEET_AGENT_HEALTH_CHECKS", value_name = "KIND=VALUE")]
    #[serde(default)]
    pub health_checks: Vec<HealthCheckSpec>,

    /// Default bound on one health check; it is retried every second until then [default: 60s].
    #[arg(long, env = "FLEET_AGENT_HEALTH_TIMEOUT", value_name = "DURATION")]
    #[serde(default)]
    pub health_timeout: Option<String>,

    /// After a switch and its health checks, how long the agent tries to read its
    /// manifest and write its status before it rolls back as `connectivity-lost`;
    /// `0s` turns the check off [default: 5m].
    #[arg(
        long,
        env = "FLEET_AGENT_CONNECTIVITY_TIMEOUT",
        value_name = "DURATION"
    )]
    #[serde(default)]
    pub connectivity_timeout: Option<String>,

    /// May the agent reboot for a `boot` deploy: never, when-idle (no login session)
    /// or window (inside a maintenance window) [default: never].
    #[arg(long, env = "FLEET_AGENT_REBOOT", value_name = "POLICY")]
    #[serde(default)]
    pub reboot: Option<String>,

    /// Maintenance windows ("Mon-Fri 02:00-04:00", "daily 03:00-03:30"): new
    /// generations are fetched at once but activated only inside one [default: none,
    /// always open].
    #[arg(
        long,
        env = "FLEET_AGENT_MAINTENANCE_WINDOWS",
        value_delimiter = ';',
        value_name = "DAYS HH:MM-HH:MM"
    )]
    #[serde(default)]
    pub maintenance_windows: Vec<String>,

    /// IANA time zone of the maintenance windows [default: the system's].
    #[arg(long, env = "FLEET_AGENT_TIME_ZONE", value_name = "ZONE")]
    #[serde(default)]
    pub time_zone: Option<String>,

    /// Program and arguments that reboot the host (expert and test setting; on the
    /// command line split at spaces) [default: systemctl reboot].
    #[arg(
        long,
        env = "FLEET_AGENT_REBOOT_COMMAND",
        value_delimiter = ' ',
        value_name = "PROGRAM ARGS"
    )]
    #[serde(default)]
    pub reboot_command: Vec<String>,

    /// More of the agent's environment variables to give switch-to-configuration and
    /// health checks, beyond the built-in allow-list (PATH, locale, TZ, …); never
    /// AWS_* [default: none].
    #[arg(
        long,
        env = "FLEET_AGENT_PASS_ENVIRONMENT",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    #[serde(default)]
    pub pass_environment: Vec<String>,

    /// File the agent rewrites after every cycle with Prometheus metrics, for
    /// node-exporter's textfile collector; must end in `.prom` [default: none].
    #[arg(long, env = "FLEET_AGENT_METRICS_FILE", value_name = "FILE")]
    #[serde(default)]
    pub metrics_file: Option<PathBuf>,

    /// Root of /etc/os-release, /proc and /run read for facts [default: /].
    #[arg(long, env = "FLEET_AGENT_FACTS_ROOT", value_name = "DIR")]
    #[serde(default)]
    pub facts_root: Option<PathBuf>,

    /// Most status events kept while the bucket cannot be written [default: 100].
    #[arg(long, env = "FLEET_AGENT_MAX_QUEUED_EVENTS", value_name = "N")]
    #[serde(default)]
    pub max_queued_events: Option<usize>,

    /// Largest store path accepted, in uncompressed NAR bytes [default: 16 GiB].
    #[arg(long, env = "FLEET_AGENT_MAX_NAR_SIZE", value_name = "BYTES")]
    #[serde(default)]
    pub max_nar_size: Option<u64>,

    /// Most store paths the fetch walks in one closure [default: 100000].
    #[arg(long, env = "FLEET_AGENT_MAX_CLOSURE_PATHS", value_name = "N")]
    #[serde(default)]
    pub max_closure_paths: Option<usize>,

    /// Most NAR bytes staged for one deploy (disk use of the staging directory) [default: 256 GiB].
    #[arg(long, env = "FLEET_AGENT_MAX_DOWNLOAD_SIZE", value_name = "BYTES")]
    #[serde(default)]
    pub max_download_size: Option<u64>,

    /// NAR downloads running at once [default: 4].
    #[arg(long, env = "FLEET_AGENT_FETCH_CONCURRENCY", value_name = "N")]
    #[serde(default)]
    pub fetch_concurrency: Option<usize>,

    /// Import verified paths into the Nix store while later ones still download, in
    /// dependency order, instead of all at once at the end (`import-via = "staging"`
    /// only). Faster on large closures;
    /// a refusal of a later path then leaves earlier (verified) paths imported, for
    /// the garbage collector [default: false].
    #[arg(
        long,
        env = "FLEET_AGENT_IMPORT_IN_WAVES",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    #[serde(default)]
    pub import_in_waves: Option<bool>,

    /// How verified NARs reach Nix: `unpack` (each NAR unpacked into the store as it
    /// is checked, the closure then registered with `nix-store --load-db`; one pass,
    /// the fastest; needs the default store or a local chroot store, and root on a
    /// read-only store; decision 30), `staging` (each NAR verified into
    /// `staging-dir`, then imported with `nix copy`; a restart reuses what was
    /// staged) or `substituter` (a verifying binary cache on 127.0.0.1 that
    /// `nix copy` reads while each NAR is checked; decision 27) [default: unpack].
    #[arg(long, env = "FLEET_AGENT_IMPORT_VIA", value_name = "MODE")]
    #[serde(default)]
    pub import_via: Option<String>,

    /// After `run` switched the system (a new generation or a rollback), exit so the
    /// service manager restarts the agent with the new system's binary and settings
    /// (the agent's unit must not be restarted during the switch itself) [default: false].
    #[arg(
        long,
        env = "FLEET_AGENT_RESTART_AFTER_SWITCH",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    #[serde(default)]
    pub restart_after_switch: Option<bool>,

    /// Log format [default: human].
    #[arg(long, env = "FLEET_AGENT_LOG_FORMAT", value_enum)]
    #[serde(default)]
    pub log_format: Option<LogFormat>,

    /// Root public keys (`name:base64`) pinned for the bucket's root of trust; with
    /// them, publisher and cache keys come from `trust/root.json` instead of
    /// `trusted-publisher-keys` / `trusted-cache-keys` [default: none].
    #[arg(
        long,
        env = "FLEET_AGENT_TRUST_ROOT_KEYS",
        value_delimiter = ',',
        value_name = "KEY"
    )]
    #[serde(default)]
    pub trust_root_keys: Vec<String>,

    /// Files holding such root public keys.
    #[arg(
        long,
        env = "FLEET_AGENT_TRUST_ROOT_KEYS_FILE",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    #[serde(default)]
    pub trust_root_keys_file: Vec<PathBuf>,

    /// The root version the pinned keys were taken from: the first version this host
    /// trusts [default: 1].
    #[arg(long, env = "FLEET_AGENT_TRUST_ROOT_VERSION", value_name = "N")]
    #[serde(default)]
    pub trust_root_version: Option<u64>,

    /// This host's labels, matched by the scopes of publisher keys in the root of
    /// trust (`role=web`) [default: none].
    #[arg(
        long,
        env = "FLEET_AGENT_LABELS",
        value_delimiter = ',',
        value_name = "LABEL"
    )]
    #[serde(default)]
    pub labels: Vec<String>,

    /// How far this host's clock may run ahead of the publisher's: a manifest is
    /// still accepted this long after its `expires_at`; `0s` = none [default: 5m].
    #[arg(long, env = "FLEET_AGENT_CLOCK_SKEW", value_name = "DURATION")]
    #[serde(default)]
    pub clock_skew: Option<String>,
}

/// The configuration, checked and with defaults applied.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The bucket.
    pub bucket: BucketUrl,
    /// This host.
    pub host: HostName,
    /// Keys trusted to sign manifests.
    pub publisher_keys: TrustedKeys,
    /// Keys trusted to sign narinfos.
    pub cache_keys: TrustedKeys,
    /// State directory.
    pub state_dir: PathBuf,
    /// Staging directory for downloads.
    pub staging_dir: PathBuf,
    /// Time between polls.
    pub poll_interval: Duration,
    /// Most jitter added to a wait.
    pub poll_jitter: Duration,
    /// Time between heartbeats.
    pub heartbeat_interval: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
    /// Bound on one bucket request.
    pub request_timeout: Duration,
    /// The Nix store handle.
    pub nix: Nix,
    /// Where the store's files really are.
    pub store_root: PathBuf,
    /// The system profile.
    pub profile: PathBuf,
    /// Bound on `switch-to-configuration`.
    pub activation_timeout: Duration,
    /// Health checks.
    pub health_checks: Vec<Check>,
    /// Window after a switch to reach the bucket again; zero = no check.
    pub connectivity_timeout: Duration,
    /// When the agent may reboot for a `boot` deploy.
    pub reboot: RebootPolicy,
    /// When new generations may be activated.
    pub windows: Windows,
    /// What reboots the host.
    pub reboot_command: Vec<String>,
    /// The environment switch-to-configuration and health checks get.
    pub child_env: ChildEnv,
    /// Where metrics are written, if anywhere.
    pub metrics_file: Option<PathBuf>,
    /// Root for facts.
    pub facts_root: PathBuf,
    /// Bound on queued events.
    pub max_queued_events: usize,
    /// Bounds of the fetch (sizes, path count, concurrency, timeouts).
    pub fetch_limits: crate::fetch::FetchLimits,
    /// `run` exits after switching the system, to be restarted by systemd.
    pub restart_after_switch: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// The pinned root of trust, if the host uses one.
    pub trust: Option<TrustSettings>,
    /// This host's labels.
    pub labels: Vec<String>,
    /// Allowance on a manifest's `expires_at` for a clock that runs ahead.
    pub clock_skew: Duration,
}

impl Config {
    /// Fills unset fields from the TOML file named by `--config`, if any.
    pub fn layered(self) -> anyhow::Result<Config> {
        let file = self.config.clone();
        Ok(fleet_core::config::layer(self, file.as_deref())?)
    }

    /// Checks every field and applies defaults.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let bucket = fleet_core::config::renamed(
            self.bucket.as_ref(),
            "bucket",
            self.store.as_ref(),
            "store (--store, FLEET_AGENT_STORE)",
        );
        let Some(bucket) = bucket else {
            bail!("bucket is not set: give --bucket, FLEET_BUCKET or `bucket` in the config file");
        };
        let bucket = BucketUrl::parse(bucket).context("bucket")?;
        let Some(host) = &self.host else {
            bail!("host is not set: give --host, FLEET_AGENT_HOST or `host` in the config file");
        };
        let host = HostName::new(host).context("host")?;
        let trust = trust::settings(self)?;
        let labels = trust::labels(&self.labels)?;
        let (publisher_keys, cache_keys) = if trust.is_some() {
            (TrustedKeys::default(), TrustedKeys::default())
        } else {
            (
                keys("trusted-publisher-keys", &self.trusted_publisher_keys)?,
                keys("trusted-cache-keys", &self.trusted_cache_keys)?,
            )
        };
        let state_dir = absolute(
            "state-dir",
            self.state_dir
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_STATE_DIR)),
        )?;
        let staging_dir = match &self.staging_dir {
            Some(p) => absolute("staging-dir", p)?,
            None => state_dir.join("staging"),
        };
        let store_root = absolute(
            "store-root",
            self.store_root.as_deref().unwrap_or(Path::new("/")),
        )?;
        let profile = absolute(
            "profile",
            self.profile
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_PROFILE)),
        )?;
        let facts_root = absolute(
            "facts-root",
            self.facts_root.as_deref().unwrap_or(Path::new("/")),
        )?;
        let health_timeout = duration_or(
            "health-timeout",
            &self.health_timeout,
            DEFAULT_HEALTH_TIMEOUT,
        )?;
        let health_checks = self
            .health_checks
            .iter()
            .enumerate()
            .map(|(i, spec)| check(i, spec, health_timeout))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let max_queued_events = self.max_queued_events.unwrap_or(DEFAULT_MAX_QUEUED_EVENTS);
        ensure!(
            max_queued_events > 0,
            "max-queued-events must be at least 1"
        );
        let request_timeout = duration_or(
            "request-timeout",
            &self.request_timeout,
            DEFAULT_REQUEST_TIMEOUT,
        )?;
        let fetch_limits = fetch_limits(self, request_timeout)?;
        let (reboot, windows, reboot_command) = schedule(self)?;
        Ok(Settings {
            reboot,
            windows,
            reboot_command,
            bucket,
            host,
            publisher_keys,
            cache_keys,
            state_dir,
            staging_dir,
            poll_interval: duration_or(
                "poll-interval",
                &self.poll_interval,
                DEFAULT_POLL_INTERVAL,
            )?,
            // Zero jitter is allowed: a single host or a test may want exact timing.
            poll_jitter: match self.poll_jitter.as_deref() {
                Some(t) => parse_duration("poll-jitter", t, Zero::Allowed)?,
                None => DEFAULT_POLL_JITTER,
            },
            heartbeat_interval: duration_or(
                "heartbeat-interval",
                &self.heartbeat_interval,
                DEFAULT_HEARTBEAT_INTERVAL,
            )?,
            backoff_max: duration_or("backoff-max", &self.backoff_max, DEFAULT_BACKOFF_MAX)?,
            request_timeout,
            nix: Nix {
                store: self.nix_store.clone(),
            },
            store_root,
            profile,
            activation_timeout: duration_or(
                "activation-timeout",
                &self.activation_timeout,
                DEFAULT_ACTIVATION_TIMEOUT,
            )?,
            health_checks,
            connectivity_timeout: match self.connectivity_timeout.as_deref() {
                Some(t) => parse_duration("connectivity-timeout", t, Zero::Allowed)?,
                None => DEFAULT_CONNECTIVITY_TIMEOUT,
            },
            child_env: ChildEnv::new("pass-environment", &self.pass_environment)?,
            metrics_file: self.metrics_file.as_deref().map(metrics_file).transpose()?,
            facts_root,
            max_queued_events,
            fetch_limits,
            restart_after_switch: self.restart_after_switch.unwrap_or(false),
            log_format: self.log_format.unwrap_or_default(),
            trust,
            labels,
            clock_skew: match self.clock_skew.as_deref() {
                Some(t) => parse_duration("clock-skew", t, Zero::Allowed)?,
                None => DEFAULT_CLOCK_SKEW,
            },
        })
    }
}

#[cfg(test)]
mod tests;
