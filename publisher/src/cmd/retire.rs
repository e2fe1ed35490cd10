//! `fleet-publish retire HOST…`: writes each host's signed tombstone (the engine is
//! [`mod@crate::retire`]); with `--purge`, then deletes the host's objects (admin
//! role only). Prints one line per host:
//!
//! ```text
//! web-3: retired (sequence 8; it applies nothing from now on)
//! web-3: purged 5 objects
//! ```

use anyhow::Context;
use clap::Args;
use fleet_core::{HostName, TrustedKeys};

use crate::cmd::resign::SigningOptions;
use crate::config::ConfigFile;
use crate::retire::{RetireSettings, purge, retire};

/// `retire` arguments.
#[derive(Args, Debug, Clone)]
pub struct RetireArgs {
    /// Options (also config-file keys).
    #[command(flatten)]
    pub options: SigningOptions,
    /// The hosts to retire.
    #[arg(value_name = "HOST", required = true)]
    pub hosts: Vec<String>,
    /// Then delete every object of the hosts under hosts/ and status/ (needs the
    /// admin role's credentials; audit entries stay).
    #[arg(long)]
    pub purge: bool,
    /// Lifetime of the tombstone: "365d", "P30D" [default: 365d].
    #[arg(long, value_name = "DURATION")]
    pub expires_in: Option<String>,
}

/// `fleet-publish retire`.
pub async fn run(args: RetireArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let o = config_file.layer(args.options)?;
    let mut hosts = args
        .hosts
        .iter()
        .map(|h| HostName::new(h).with_context(|| format!("host {h:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    hosts.sort();
    hosts.dedup();
    let (bucket, signing_key, trusted) = o.resolve()?;
    let mut settings = RetireSettings {
        trusted: trusted.clone(),
        ..RetireSettings::default()
    };
    if let Some(t) = &args.expires_in {
        settings.expires_in = crate::cmd::deploy::parse_expires_in(t)?;
    }
    for r in retire(&bucket, &signing_key, &hosts, &settings).await? {
        match r.written {
            Some(w) => println!(
                "{}: retired (sequence {}; it applies nothing from now on)",
                r.host, w.sequence
            ),
            None => println!("{}: already retired", r.host),
        }
    }
    if args.purge {
        let trusted = TrustedKeys::new(std::iter::once(signing_key.public()).chain(trusted));
        let deleted = purge(&bucket, &hosts, &signing_key, &trusted).await?;
        for h in &hosts {
            let n = deleted
                .iter()
                .filter(|k| {
                    k.starts_with(&format!("hosts/{h}/")) || k.starts_with(&format!("status/{h}/"))
                })
                .count();
            println!("{h}: purged {n} objects");
        }
    }
    Ok(())
}
