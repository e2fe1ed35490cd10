//! `fleet-publish policy`: prints the IAM policy JSON of a role, exactly the text
//! `fleet_core::iam::policy` makes (the same text Terraform deploys and the tests
//! attach to users of a real IAM-enforcing S3 server).

use std::path::Path;

use anyhow::{Context, bail};
use fleet_core::HostName;
use fleet_core::iam::{Role, policy};

use crate::config::{self, PolicyOptions, RoleArg};

/// `fleet-publish policy`.
pub fn run(o: PolicyOptions, config_file: Option<&Path>) -> anyhow::Result<()> {
    print!("{}", render(o, config_file)?);
    Ok(())
}

/// The policy text for the layered options.
pub fn render(o: PolicyOptions, config_file: Option<&Path>) -> anyhow::Result<String> {
    let o = config::layer(o, config_file)?;
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
        let p = render(opts(RoleArg::Agent, Some("web-1")), None).unwrap();
        let want = policy(
            &Role::Agent(HostName::new("web-1").unwrap()),
            "fleet-prod",
            "site-a",
        )
        .unwrap();
        assert_eq!(p, want);
        assert!(p.contains("site-a/status/web-1/*"));
        assert!(
            render(opts(RoleArg::Agent, None), None)
                .unwrap_err()
                .to_string()
                .contains("--host")
        );
        assert!(render(opts(RoleArg::Publisher, Some("a")), None).is_err());
        let e = format!(
            "{:#}",
            render(opts(RoleArg::Agent, Some("A/b")), None).unwrap_err()
        );
        assert!(e.contains("A/b"), "{e}");
    }
}
