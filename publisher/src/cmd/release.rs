//! `fleet-publish release`: makes a signed release (`releases/<id>.json`,
//! [`fleet_core::release`]) from a hosts file and a plan, pushes its closures, and
//! writes its rollout state; `rollout advance` then rolls it out
//! ([`mod@crate::rollout`]). Nothing is deployed here.
//!
//! ```text
//! fleet-publish release --id 2026-12-02-a --hosts hosts.json \
//!     --wave 'web-1,web-2' --wave 50% --wave 100% \
//!     --soak 10m --wave-budget 0 --wave-budget 10% --wave-budget 10% \
//!     --budget 10% --report-deadline 30m
//! ```
//!
//! `--wave`, `--soak` and `--wave-budget` are repeatable: one `--soak` (or
//! `--wave-budget`) applies to every wave, else give one per wave. `--dry-run`
//! checks everything, prints what each wave would change (`--json` for JSON) and
//! writes nothing.

use anyhow::{Context, bail};
use clap::Args;
use fleet_core::duration::{Zero, parse_duration};
use fleet_core::nixcli::Nix;
use fleet_core::release::{Budget, Selector, WaveSpec};
use fleet_core::{Activation, HostName, TrustedKeys};

use crate::cmd::deploy::{DeployOptions, read_hosts_file};
use crate::config::{self, ConfigFile};
use crate::deploy::{DEFAULT_MAX_ATTEMPTS, DeploySettings, cache_keys};
use crate::rollout::create::{ReleaseSpec, build, check_hosts_exist, create};
use crate::rollout::preview::{describe, preview};
use crate::rollout::store::release_id;

/// Default report deadline.
pub const DEFAULT_REPORT_DEADLINE: &str = "30m";

/// `release` arguments.
#[derive(Args, Debug, Clone)]
pub struct ReleaseArgs {
    /// Bucket, cache key, publisher key, `--hosts FILE` (host -> closure JSON),
    /// activation (also config-file keys).
    #[command(flatten)]
    pub options: DeployOptions,
    /// The release id (1 to 200 of A-Z a-z 0-9 . _ -) (required).
    #[arg(long, value_name = "ID")]
    pub id: String,
    /// A wave, in order: "25%" (cumulative share in the stable order) or host names
    /// and globs, "web-1,db-*"; repeatable (required).
    #[arg(long = "wave", value_name = "HOSTS|N%", required = true)]
    pub waves: Vec<String>,
    /// Soak time of a wave ("10m", "0s"); once for all waves or once per wave [default: 0s].
    #[arg(long = "soak", value_name = "DURATION")]
    pub soak: Vec<String>,
    /// Bad hosts allowed per wave ("0", "2", "10%"); once for all or once per wave [default: 0].
    #[arg(long = "wave-budget", value_name = "N|N%")]
    pub wave_budget: Vec<String>,
    /// Bad hosts allowed over the whole release ("1", "10%") [default: 0].
    #[arg(long, value_name = "N|N%")]
    pub budget: Option<String>,
    /// A host that has not reported its new closure this long after its wave
    /// started counts as silent (bad) [default: 30m].
    #[arg(long, value_name = "DURATION")]
    pub report_deadline: Option<String>,
    /// Roll the touched hosts back automatically if the rollout halts.
    #[arg(long)]
    pub auto_rollback: bool,
    /// Check and print what each wave would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: print JSON.
    #[arg(long, requires = "dry_run")]
    pub json: bool,
}

/// `n` values from a repeatable flag given once (for all) or `n` times.
fn per_wave<T: Clone>(
    flag: &str,
    given: &[String],
    n: usize,
    default: T,
    parse: impl Fn(&str) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<T>> {
    match given.len() {
        0 => Ok(vec![default; n]),
        1 => Ok(vec![parse(&given[0])?; n]),
        m if m == n => given.iter().map(|g| parse(g)).collect(),
        m => bail!(
            "--{flag} is given {m} times for {n} waves: give it once (for all) or once per wave"
        ),
    }
}

/// Whole seconds of a duration setting.
fn seconds(flag: &str, text: &str, zero: Zero) -> anyhow::Result<u64> {
    Ok(parse_duration(flag, text, zero)?.as_secs())
}

/// The wave specs of the command line.
pub fn wave_specs(args: &ReleaseArgs) -> anyhow::Result<Vec<WaveSpec>> {
    let n = args.waves.len();
    let soaks = per_wave("soak", &args.soak, n, 0, |t| {
        seconds("soak", t, Zero::Allowed)
    })?;
    let budgets = per_wave("wave-budget", &args.wave_budget, n, Budget::Hosts(0), |t| {
        Budget::parse(t, "--wave-budget").map_err(anyhow::Error::msg)
    })?;
    args.waves
        .iter()
        .zip(soaks)
        .zip(budgets)
        .map(|((w, soak_seconds), budget)| {
            Ok(WaveSpec {
                select: Selector::parse(w).map_err(anyhow::Error::msg)?,
                soak_seconds,
                budget,
            })
        })
        .collect()
}

/// `fleet-publish release`.
pub async fn run(args: ReleaseArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let o = config_file.layer(args.options.clone())?;
    let store = config::bucket(&o.push.bucket, &o.push.store)?;
    let hosts_file = o.hosts.as_ref().context(
        "no hosts given: pass --hosts FILE, a JSON object mapping host names to closures",
    )?;
    let spec = ReleaseSpec {
        id: release_id(&args.id)?,
        targets: read_hosts_file(hosts_file)?,
        activation: o.activation.map_or(Activation::Switch, Into::into),
        waves: wave_specs(&args)?,
        budget: match &args.budget {
            Some(b) => Budget::parse(b, "--budget").map_err(anyhow::Error::msg)?,
            None => Budget::Hosts(0),
        },
        report_deadline_seconds: seconds(
            "report-deadline",
            args.report_deadline
                .as_deref()
                .unwrap_or(DEFAULT_REPORT_DEADLINE),
            Zero::Refused,
        )?,
        auto_rollback: args.auto_rollback,
    };
    let cache_key_file = config::required(&o.push.cache_key, "cache-key", "FLEET_CACHE_KEY")?;
    let signing_key_file = config::required(&o.signing_key, "signing-key", "FLEET_SIGNING_KEY")?;
    let cache_key = crate::load_secret_key(cache_key_file, "cache key (--cache-key)")?;
    let signing_key = crate::load_secret_key(signing_key_file, "signing key (--signing-key)")?;
    let settings = DeploySettings {
        push: o.push.settings()?,
        trusted: o.trusted.keys()?,
        extra_cache_keys: o.extra_cache_keys.keys()?,
        max_attempts: DEFAULT_MAX_ATTEMPTS,
        ..DeploySettings::default()
    };
    let bucket = crate::open_bucket(store)?;
    let nix = Nix::default_store();
    if args.dry_run {
        let release = build(&spec, cache_keys(&cache_key, &settings.extra_cache_keys))?;
        let hosts: Vec<HostName> = release.hosts.keys().cloned().collect();
        check_hosts_exist(&bucket, &hosts).await?;
        let publishers = TrustedKeys::new(
            std::iter::once(signing_key.public()).chain(settings.trusted.iter().cloned()),
        );
        let waves = preview(&bucket, &nix, &release, &publishers).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&waves)?);
        } else {
            print!("{}", describe(&waves));
        }
        return Ok(());
    }
    let release = create(&bucket, &nix, &cache_key, &signing_key, &spec, &settings).await?;
    println!(
        "release {}: {} host(s) in {} wave(s), written to {store}; roll it out with \
         `fleet-publish rollout advance {}`",
        release.id,
        release.hosts.len(),
        release.plan.waves.len(),
        release.id
    );
    for (i, w) in release.plan.waves.iter().enumerate() {
        let names: Vec<&str> = w.hosts.iter().map(|h| h.as_str()).collect();
        println!(
            "wave {} ({}; soak {}s; budget {}): {}",
            i + 1,
            w.select,
            w.soak_seconds,
            w.budget,
            names.join(", ")
        );
    }
    Ok(())
}
