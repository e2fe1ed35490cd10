//! `fleet-publish trust show`: reads every root version from 1 to the newest,
//! checks each step by TUF's rule, and prints the newest as JSON:
//!
//! ```json
//! {"version": 2, "sha256": "…", "expired": false, "root": {"format": 1, "version": 2, …}}
//! ```

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::config::{self, ConfigFile};

/// `trust show` options (also config-file keys).
#[derive(Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", default)]
pub struct ShowArgs {
    /// The fleet bucket (required).
    #[arg(long, env = "FLEET_BUCKET", value_name = "URL")]
    pub bucket: Option<String>,
}

/// `fleet-publish trust show`.
pub async fn run(args: ShowArgs, config_file: &ConfigFile) -> anyhow::Result<()> {
    let o = config_file.layer(args)?;
    let bucket = crate::open_bucket(config::bucket(&o.bucket, &None)?)?;
    let Some(root) = crate::trust_write::current(&bucket).await? else {
        anyhow::bail!(
            "{} does not exist: this bucket has no root of trust (fleet-publish trust init)",
            fleet_core::Key::trust_root()
        );
    };
    let out = serde_json::json!({
        "version": root.version(),
        "sha256": root.digest(),
        "expired": root.check_fresh(jiff::Timestamp::now()).is_err(),
        "root": root.root(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
