//! `fleet-publish policy`: prints the IAM policy JSON of a role, exactly the text
//! `fleet_core::iam::policy` makes (the same text Terraform deploys and the tests
//! attach to users of a real IAM-enforcing S3 server).

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use fleet_core::HostName;
use fleet_core::iam::{Role, policy};
use serde::{Deserialize, Serialize};

use crate::config::{self, ConfigFile};

/// A role that gets an IAM policy.
#[derive(ValueEnum, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RoleArg {
    /// One host's agent (needs --host).
    Agent,
    /// CI or an admin running fleet-publish.
    Publisher,
    /// The dashboard.
    Reporter,
    /// An operator: trust changes, retire --purge, gc --apply (may delete).
    Admin,
    /// Read-only access to what the dashboard shows.
    Viewer,
}

/// `policy` options.
#[derive(Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", default)]
pub struct PolicyOptions {
    /// The role (required).
    #[arg(long, env = "FLEET_ROLE", value_enum)]
    pub role: Option<RoleArg>,
    /// S3 bucket name (required).
    #[arg(long, env = "FLEET_BUCKET", value_name = "BUCKET")]
    pub bucket: Option<String>,
    /// Root prefix inside the bucket [default: none].
    #[arg(long, env = "FLEET_PREFIX", value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// The agent's host (role agent only).
    #[arg(long, env = "FLEET_HOST", value_name = "HOST")]
    pub host: Option<String>,
}

/// `fleet-publish policy`.
pub fn run(o: PolicyOptions, config_file: &ConfigFile) -> anyhow::Result<()> {
    print!("{}", render(o, config_file)?);
    Ok(())
}

/// The policy text for the layered options.
pub fn render(o: PolicyOptions, config_file: &ConfigFile) -> anyhow::Result<String> {
    let o = config_file.layer(o)?;
    let role = config::required(&o.role, "role", "FLEET_ROLE")?;
    let bucket = config::required(&o.bucket, "bucket", "FLEET_BUCKET")?;
    let role = match (role, &o.host) {
        (RoleArg::Agent, Some(h)) => Role::Agent(HostName::new(h).context("--host")?),
        (RoleArg::Agent, None) => {
            bail!("role agent needs --host HOST: an agent's policy names its host")
        }
        (_, Some(_)) => bail!("--host applies to role agent only"),
        (RoleArg::Publisher, None) => Role::Publisher,
        (RoleArg::Reporter, None) => Role::Reporter,
        (RoleArg::Admin, None) => Role::Admin,
        (RoleArg::Viewer, None) => Role::Viewer,
    };
    Ok(policy(&role, bucket, o.prefix.as_deref().unwrap_or(""))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(role: RoleArg, host: Option<&str>) -> PolicyOptions {
        PolicyOptions {
            role: Some(role),
            bucket: Some("fleet-prod".into()),
            prefix: Some("site-a".into()),
            host: host.map(Into::into),
        }
    }

    #[test]
    fn prints_core_policies() {
        let p = render(opts(RoleArg::Agent, Some("web-1")), &ConfigFile::default()).unwrap();
        let want = policy(
            &Role::Agent(HostName::new("web-1").unwrap()),
            "fleet-prod",
            "site-a",
        )
        .unwrap();
        assert_eq!(p, want);
        assert!(p.contains("site-a/status/web-1/*"));
        assert!(
            render(opts(RoleArg::Agent, None), &ConfigFile::default())
                .unwrap_err()
                .to_string()
                .contains("--host")
        );
        assert!(render(opts(RoleArg::Publisher, Some("a")), &ConfigFile::default()).is_err());
        let e = format!(
            "{:#}",
            render(opts(RoleArg::Agent, Some("A/b")), &ConfigFile::default()).unwrap_err()
        );
        assert!(e.contains("A/b"), "{e}");
    }
}
