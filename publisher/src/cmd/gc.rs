//! `fleet-publish gc`: garbage-collects the bucket's cache (the engine is
//! [`mod@crate::gc`]). A dry run unless `--apply`; deleting needs the admin role.
//! Prints what it finds and frees:
//!
//! ```text
//! roots: 3 generations, 0 holds, 2 manifests
//! kept: 812 objects, 1204.3 MiB; unreachable: 40 objects, 96.0 MiB
//! freed: 30 objects, 80.1 MiB
//! condemned: 10 objects, 15.9 MiB, deleted by a gc --apply from 2026-12-03T22:00:00Z
//! ```
//!
//! `--json` prints the [`GcReport`](crate::gc::GcReport) instead.

use anyhow::Context;
use clap::Args;
use fleet_core::TrustedKeys;
use fleet_core::duration::{Zero, parse_duration};
use serde::{Deserialize, Serialize};

use crate::config::{self, ConfigFile, TrustedKeyOptions};
use crate::gc::{DEFAULT_GRACE, DEFAULT_KEEP_GENERATIONS, GcReport, GcSettings, Tally, gc};

/// `gc` options (also config-file keys).
#[derive(Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", default)]
pub struct GcOptions {
    /// The fleet bucket (required).
    #[arg(long, env = "FLEET_BUCKET", value_name = "URL")]
    pub bucket: Option<String>,
    /// Publisher keys the manifests and holds must verify with (at least one).
    #[command(flatten)]
    #[serde(flatten)]
    pub trusted: TrustedKeyOptions,
    /// Distinct closures kept per host from its audit history (rollback targets)
    /// [default: 5].
    #[arg(long, env = "FLEET_KEEP_GENERATIONS", value_name = "N")]
    pub keep_generations: Option<usize>,
    /// Objects younger than this are never deleted, and a condemned object waits
    /// this long: "24h", "1h", "P1D" [default: 24h].
    #[arg(long, env = "FLEET_GC_GRACE", value_name = "DURATION")]
    pub grace: Option<String>,
    /// Secret key file that signs the audit entry of a `--apply` run (required with
    /// `--apply`: what gc deletes is recorded in the audit chain).
    #[arg(long, env = "FLEET_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<std::path::PathBuf>,
}

/// `gc` arguments.
#[derive(Args, Debug, Clone)]
pub struct GcArgs {
    /// Options.
    #[command(flatten)]
    pub options: GcOptions,
    /// Delete (without it nothing changes).
    #[arg(long)]
    pub apply: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `fleet-publish gc`.
pub async fn run(args: GcArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let o = config_file.layer(args.options)?;
    let url = config::bucket(&o.bucket, &None)?;
    let keys = o.trusted.keys()?;
    anyhow::ensure!(
        !keys.is_empty(),
        "no trusted-key given: gc verifies every manifest and hold before deciding what \
         they keep; pass --trusted-key-file with the publisher's public key"
    );
    let grace = match &o.grace {
        Some(t) => jiff::SignedDuration::try_from(parse_duration("grace", t, Zero::Allowed)?)?,
        None => DEFAULT_GRACE,
    };
    let signing_key = if args.apply {
        let file = config::required(&o.signing_key, "signing-key", "FLEET_SIGNING_KEY")
            .context("gc --apply records what it deletes in the signed audit chain")?;
        Some(crate::load_secret_key(file, "signing key (--signing-key)")?)
    } else {
        None
    };
    let settings = GcSettings {
        signing_key,
        trusted: TrustedKeys::new(keys),
        keep_generations: o.keep_generations.unwrap_or(DEFAULT_KEEP_GENERATIONS),
        grace,
        apply: args.apply,
    };
    let report = gc(&crate::open_bucket(url)?, &settings).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

fn tally(t: Tally) -> String {
    format!(
        "{} object{}, {:.1} MiB",
        t.objects,
        if t.objects == 1 { "" } else { "s" },
        t.bytes as f64 / (1024.0 * 1024.0)
    )
}

/// The text report.
pub fn render(r: &GcReport) -> String {
    let roots: Vec<String> = r.roots.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let mut out = format!(
        "roots: {}\nkept: {}; unreachable: {}\n",
        roots.join(", "),
        tally(r.kept),
        tally(r.unreachable)
    );
    if r.applied {
        out.push_str(&format!("freed: {}\n", tally(r.freed)));
    } else {
        out.push_str(&format!(
            "dry run: `gc --apply` would free {} now\n",
            tally(r.freed)
        ));
    }
    if let Some(t) = r.delete_after {
        out.push_str(&format!(
            "condemned: {}, deleted by a gc --apply from {t} if still unreachable\n",
            tally(r.condemned)
        ));
    }
    out
}
