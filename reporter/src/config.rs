//! The reporter's one configuration schema: flags, `FLEET_REPORTER_*` environment
//! variables and a TOML file, layered with [`fleet_core::config::layer`]
//! (flag > environment > file > built-in default).
//!
//! ```toml
//! # /etc/fleet/reporter.toml
//! bucket = "s3://fleet-prod?region=eu-west-1"
//! trusted-key = ["publisher-1:1gNt8HOHaiR6hFh4EO+f8kqYbHrgsr3VqnaSTY/M3RI="]
//! stale-after = "3m"          # default: 3 poll intervals of 60 s
//! concurrency = 64            # GETs in flight during a refresh
//! events = 20                 # events shown per host
//! cache-ttl = "5s"            # how long one aggregation answers repeated requests
//! write-snapshot = true       # keep dashboard/snapshot.json up to date
//! max-host-series = 10000     # per-host Prometheus series up to this many hosts
//! listen = "127.0.0.1:8080"   # serve only
//! header-timeout = "10s"      # serve only: a client must send its request headers within this
//! token-file = "/run/secrets/fleet-reporter-token"
//! trust-root-keys = ["root-1:…"]  # or trust-root-keys-file = [PATH, …]: read trust/
//! trust-root-version = 1          # the version the root keys signed
//! ```
//!
//! Lambda reads the same schema from its environment (`FLEET_BUCKET`,
//! `FLEET_REPORTER_TRUSTED_KEYS` comma-separated, …) or from a file named by
//! `FLEET_REPORTER_CONFIG`. Durations are read by [`fleet_core::duration`]. The old
//! spellings `store` / `--store` / `FLEET_REPORTER_STORE` (now `bucket`) and
//! `write-summary` (now `write-snapshot`) still work, with a warning.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use fleet_core::audit_trust::RootPin;
use fleet_core::duration::{Zero, duration_or};
use fleet_core::{BucketUrl, PublicKey, TrustedKeys};
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

/// Default staleness bound: three poll intervals of the agent's default 60 s.
pub const DEFAULT_STALE_AFTER: SignedDuration = SignedDuration::from_secs(180);
/// Default number of GETs in flight.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// Default number of events shown per host.
pub const DEFAULT_EVENTS: usize = 20;
/// Most events shown per host.
pub const MAX_EVENTS: usize = 500;
/// Default lifetime of one aggregation in the process.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(5);
/// Default bound on per-host Prometheus series.
pub const DEFAULT_MAX_HOST_SERIES: usize = 10_000;
/// Default listen address of `serve`: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default time a `serve` client has to send a request's headers.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Flags, environment and file keys (kebab-case, like the long flags).
#[derive(clap::Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// TOML configuration file; its keys are the long flag names.
    #[arg(long, env = "FLEET_REPORTER_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// The fleet bucket: `s3://BUCKET[/PREFIX][?endpoint=…&region=…]` or `file:///PATH`.
    #[arg(long, env = "FLEET_BUCKET", value_name = "URL")]
    #[serde(default)]
    pub bucket: Option<String>,

    /// Deprecated spelling of `bucket`: still honoured, with a warning.
    #[arg(long, env = "FLEET_REPORTER_STORE", value_name = "URL", hide = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,

    /// Publisher public key (`name:base64`) trusted to sign manifests; repeatable.
    /// Without any, manifests are shown as not verified.
    #[arg(
        long = "trusted-key",
        env = "FLEET_REPORTER_TRUSTED_KEYS",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub trusted_key: Vec<String>,

    /// File holding a publisher public key; repeatable.
    #[arg(
        long = "trusted-key-file",
        env = "FLEET_REPORTER_TRUSTED_KEY_FILES",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub trusted_key_file: Vec<PathBuf>,

    /// A host whose status is older than this is stale ("180s", "3m", "PT3M").
    /// Default 3m.
    #[arg(long, env = "FLEET_REPORTER_STALE_AFTER")]
    #[serde(default)]
    pub stale_after: Option<String>,

    /// Most object reads in flight during a refresh. Default 64.
    #[arg(long, env = "FLEET_REPORTER_CONCURRENCY")]
    #[serde(default)]
    pub concurrency: Option<usize>,

    /// Events shown per host on /api/v1/hosts/<host>. Default 20, at most 500.
    #[arg(long, env = "FLEET_REPORTER_EVENTS")]
    #[serde(default)]
    pub events: Option<usize>,

    /// How long one aggregation answers repeated requests ("5s"; "0s" for every
    /// request). Default 5s.
    #[arg(long, env = "FLEET_REPORTER_CACHE_TTL")]
    #[serde(default)]
    pub cache_ttl: Option<String>,

    /// Whether to write dashboard/snapshot.json, the cache that keeps refreshes warm
    /// (true/false). Default true.
    #[arg(long, env = "FLEET_REPORTER_WRITE_SNAPSHOT")]
    #[serde(default)]
    pub write_snapshot: Option<bool>,

    /// Deprecated spelling of `write-snapshot` (flag, environment and file key):
    /// still honoured, with a warning.
    #[arg(long, env = "FLEET_REPORTER_WRITE_SUMMARY", hide = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_summary: Option<bool>,

    /// Per-host Prometheus series are emitted up to this many hosts. Default 10000.
    #[arg(long, env = "FLEET_REPORTER_MAX_HOST_SERIES")]
    #[serde(default)]
    pub max_host_series: Option<usize>,

    /// `serve`: address to listen on. Default 127.0.0.1:8080 (loopback only).
    #[arg(long, env = "FLEET_REPORTER_LISTEN")]
    #[serde(default)]
    pub listen: Option<SocketAddr>,

    /// `serve`: time a client has to send a request's headers before its connection
    /// is closed (a client trickling bytes cannot hold a connection) [default: 10s].
    #[arg(long, env = "FLEET_REPORTER_HEADER_TIMEOUT")]
    #[serde(default)]
    pub header_timeout: Option<String>,

    /// Bearer token required on every request (also accepted as the password of
    /// HTTP Basic auth, so browsers can log in). Prefer --token-file.
    #[arg(long, env = "FLEET_REPORTER_TOKEN", hide_env_values = true)]
    #[serde(default)]
    pub token: Option<String>,

    /// File holding the bearer token.
    #[arg(long, env = "FLEET_REPORTER_TOKEN_FILE")]
    #[serde(default)]
    pub token_file: Option<PathBuf>,

    /// `serve`: allow a non-loopback listen address without a token.
    #[arg(
        long,
        env = "FLEET_REPORTER_INSECURE_NO_AUTH",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    #[serde(default)]
    pub insecure_no_auth: Option<bool>,

    /// A root key (`name:base64`) the root of trust's pinned version was signed
    /// with; repeatable. With it, manifests, registry entries and rollouts are also
    /// verified with the publisher and admin keys of the newest root version in
    /// the bucket (`trust/`), walked from the pinned one.
    #[arg(
        long = "trust-root-key",
        env = "FLEET_REPORTER_TRUST_ROOT_KEYS",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub trust_root_keys: Vec<String>,

    /// File holding such a root key; repeatable.
    #[arg(
        long = "trust-root-key-file",
        env = "FLEET_REPORTER_TRUST_ROOT_KEY_FILES",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub trust_root_keys_file: Vec<PathBuf>,

    /// The root version the root keys pin. Default 1.
    #[arg(long, env = "FLEET_REPORTER_TRUST_ROOT_VERSION")]
    #[serde(default)]
    pub trust_root_version: Option<u64>,
}

/// What the reporter needs besides its bucket.
#[derive(Clone, Debug)]
pub struct ReporterOptions {
    /// Publisher keys that sign manifests; empty: manifests are shown as not verified.
    pub trusted: TrustedKeys,
    /// A host whose status is older than this is stale.
    pub stale_after: SignedDuration,
    /// Most GETs in flight during a refresh.
    pub concurrency: usize,
    /// Events shown per host.
    pub events: usize,
    /// How long one aggregation answers repeated requests.
    pub cache_ttl: Duration,
    /// Whether to write `dashboard/snapshot.json`.
    pub write_snapshot: bool,
    /// Per-host Prometheus series up to this many hosts.
    pub max_host_series: usize,
    /// Token required on every request but `/healthz`.
    pub token: Option<String>,
    /// The pinned root of trust, if configured: its newest version's publisher and
    /// admin keys are trusted besides `trusted`.
    pub root: Option<RootPin>,
    /// Longest time between full listings; in between, refreshes read the change
    /// feed (zero: every refresh lists the whole fleet).
    pub full_listing_every: SignedDuration,
}

impl Default for ReporterOptions {
    fn default() -> Self {
        Self {
            trusted: TrustedKeys::default(),
            stale_after: DEFAULT_STALE_AFTER,
            concurrency: DEFAULT_CONCURRENCY,
            events: DEFAULT_EVENTS,
            cache_ttl: DEFAULT_CACHE_TTL,
            write_snapshot: true,
            max_host_series: DEFAULT_MAX_HOST_SERIES,
            token: None,
            root: None,
            full_listing_every: crate::fleet::DEFAULT_FULL_LISTING_EVERY,
        }
    }
}

/// The configuration with defaults applied and every value checked.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The bucket.
    pub bucket: BucketUrl,
    /// What the reporter library needs.
    pub options: ReporterOptions,
    /// `serve`'s listen address.
    pub listen: SocketAddr,
    /// Whether a non-loopback listen address without a token is allowed.
    pub insecure_no_auth: bool,
    /// `serve`'s bound on reading a request's headers.
    pub header_timeout: Duration,
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

impl Config {
    /// Moves a value given under a deprecated name to its current one, warning that
    /// the old name was used. A value under the current name wins. Called on the
    /// flags and environment before the file is layered under them, and again on the
    /// layered result for the file's keys, so each source keeps its precedence.
    pub fn take_deprecated(&mut self) {
        use fleet_core::config::renamed;
        self.bucket = renamed(
            self.bucket.take(),
            "bucket (--bucket, FLEET_BUCKET)",
            self.store.take(),
            "store (--store, FLEET_REPORTER_STORE)",
        );
        self.write_snapshot = renamed(
            self.write_snapshot.take(),
            "write-snapshot (--write-snapshot, FLEET_REPORTER_WRITE_SNAPSHOT)",
            self.write_summary.take(),
            "write-summary (--write-summary, FLEET_REPORTER_WRITE_SUMMARY)",
        );
    }

    /// Layers the file under flags and environment, applies defaults and checks
    /// every value. Errors name the setting.
    pub fn resolve(mut self) -> anyhow::Result<Settings> {
        self.take_deprecated();
        let file = self.config.clone();
        let mut c = fleet_core::config::layer(self, file.as_deref())?;
        c.take_deprecated();
        let Some(bucket) = &c.bucket else {
            bail!(
                "no bucket given: pass --bucket URL, set FLEET_BUCKET or put `bucket = \"…\"` in the config file"
            );
        };
        let bucket = BucketUrl::parse(bucket).context("setting bucket")?;
        let mut keys = Vec::new();
        for (i, k) in c.trusted_key.iter().enumerate() {
            keys.push(PublicKey::parse(k, &format!("trusted-key #{}", i + 1))?);
        }
        for f in &c.trusted_key_file {
            keys.push(PublicKey::load(f)?);
        }
        let root = RootPin::from_settings(
            &c.trust_root_keys,
            &c.trust_root_keys_file,
            c.trust_root_version,
        )
        .map_err(anyhow::Error::msg)?;
        let stale_after = signed(duration_or(
            "stale-after",
            c.stale_after.as_deref(),
            Zero::Allowed,
            DEFAULT_STALE_AFTER.unsigned_abs(),
        )?);
        let cache_ttl = duration_or(
            "cache-ttl",
            c.cache_ttl.as_deref(),
            Zero::Allowed,
            DEFAULT_CACHE_TTL,
        )?;
        let header_timeout = duration_or(
            "header-timeout",
            c.header_timeout.as_deref(),
            Zero::Allowed,
            DEFAULT_HEADER_TIMEOUT,
        )?;
        if header_timeout.is_zero() {
            bail!("header-timeout = 0 would close every connection; give at least 1s");
        }
        let concurrency = c.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if !(1..=4096).contains(&concurrency) {
            bail!("concurrency = {concurrency} is out of range; give 1 to 4096");
        }
        let events = c.events.unwrap_or(DEFAULT_EVENTS);
        if events > MAX_EVENTS {
            bail!("events = {events} is out of range; give 0 to {MAX_EVENTS}");
        }
        let token = match (&c.token, &c.token_file) {
            (Some(_), Some(_)) => bail!("give either token or token-file, not both"),
            (Some(t), None) => Some(t.clone()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("reading token-file {}", f.display()))?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        if token.as_deref().is_some_and(|t| t.len() < 16) {
            bail!(
                "the token is shorter than 16 characters; use a long random one (openssl rand -hex 32)"
            );
        }
        Ok(Settings {
            bucket,
            options: ReporterOptions {
                trusted: TrustedKeys::new(keys),
                stale_after,
                concurrency,
                events,
                cache_ttl,
                write_snapshot: c.write_snapshot.unwrap_or(true),
                max_host_series: c.max_host_series.unwrap_or(DEFAULT_MAX_HOST_SERIES),
                token,
                root,
                full_listing_every: crate::fleet::DEFAULT_FULL_LISTING_EVERY,
            },
            listen: c
                .listen
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default")),
            insecure_no_auth: c.insecure_no_auth.unwrap_or(false),
            header_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        Config {
            bucket: Some("memory://".into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults() {
        let s = base().resolve().unwrap();
        assert_eq!(s.options.stale_after, DEFAULT_STALE_AFTER);
        assert_eq!(s.options.concurrency, DEFAULT_CONCURRENCY);
        assert!(s.options.trusted.is_empty() && s.options.token.is_none());
        assert!(s.listen.ip().is_loopback());
    }

    #[test]
    fn file_fills_what_flags_left_unset() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("r.toml");
        let pk = fleet_core::SecretKey::generate("publisher-1")
            .unwrap()
            .public()
            .to_nix_string();
        std::fs::write(
            &f,
            format!(
                "store = \"file:///srv/b\"\ntrusted-key = [\"{pk}\"]\nstale-after = \"10m\"\nconcurrency = 8\n"
            ),
        )
        .unwrap();
        let s = Config {
            config: Some(f),
            concurrency: Some(3),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(s.bucket.to_string(), "file:///srv/b");
        assert_eq!(s.options.trusted.keys().len(), 1);
        assert_eq!(s.options.stale_after, SignedDuration::from_secs(600));
        assert_eq!(s.options.concurrency, 3);
    }

    #[test]
    fn write_summary_is_an_alias_of_write_snapshot() {
        assert!(base().resolve().unwrap().options.write_snapshot);
        // The old flag or environment variable.
        let s = Config {
            write_summary: Some(false),
            ..base()
        };
        assert!(!s.resolve().unwrap().options.write_snapshot);
        // The old file key, under a new flag, and alone.
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("r.toml");
        std::fs::write(&f, "store = \"memory://\"\nwrite-summary = false\n").unwrap();
        let from_file = |write_snapshot| Config {
            config: Some(f.clone()),
            write_snapshot,
            ..Default::default()
        };
        assert!(!from_file(None).resolve().unwrap().options.write_snapshot);
        assert!(
            from_file(Some(true))
                .resolve()
                .unwrap()
                .options
                .write_snapshot
        );
        // The new key wins over the old one in the same source.
        std::fs::write(
            &f,
            "store = \"memory://\"\nwrite-summary = false\nwrite-snapshot = true\n",
        )
        .unwrap();
        assert!(from_file(None).resolve().unwrap().options.write_snapshot);
    }

    #[test]
    fn store_is_an_alias_of_bucket() {
        let old = Config {
            store: Some("file:///old".into()),
            ..Default::default()
        };
        assert_eq!(old.resolve().unwrap().bucket.to_string(), "file:///old");
        let both = Config {
            bucket: Some("file:///new".into()),
            store: Some("file:///old".into()),
            ..Default::default()
        };
        assert_eq!(both.resolve().unwrap().bucket.to_string(), "file:///new");
    }

    #[test]
    fn bad_values_name_the_setting() {
        for (c, want) in [
            (Config::default(), "no bucket given"),
            (
                Config {
                    stale_after: Some("soon".into()),
                    ..base()
                },
                "stale-after",
            ),
            (
                Config {
                    concurrency: Some(0),
                    ..base()
                },
                "concurrency",
            ),
            (
                Config {
                    trusted_key: vec!["nope".into()],
                    ..base()
                },
                "trusted-key #1",
            ),
            (
                Config {
                    token: Some("short".into()),
                    ..base()
                },
                "16 characters",
            ),
        ] {
            let e = format!("{:#}", c.resolve().unwrap_err());
            assert!(e.contains(want), "{want}: {e}");
        }
    }
}
