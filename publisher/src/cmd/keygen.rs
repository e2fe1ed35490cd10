//! `fleet-publish keygen`: makes an ed25519 key pair in Nix's `name:base64` format
//! (`fleet_core::keys`), usable as the cache key (Nix's `secret-key` /
//! `trusted-public-keys`) or as the publisher key that signs manifests.
//!
//! The secret key file is created with mode 0600 and never replaces an existing
//! file; the public key file is (re)written with mode 0644 and printed.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use fleet_core::SecretKey;
use serde::{Deserialize, Serialize};

use crate::config::{self, ConfigFile};

/// `keygen` options.
#[derive(Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", default)]
pub struct KeygenOptions {
    /// Key name, by convention `<who>-<n>` such as `cache.example.org-1` (required).
    #[arg(long, env = "FLEET_KEY_NAME", value_name = "NAME")]
    pub name: Option<String>,
    /// Where to write the secret key (mode 0600; an existing file is never replaced) (required).
    #[arg(long, env = "FLEET_SECRET_OUT", value_name = "FILE")]
    pub secret_out: Option<PathBuf>,
    /// Where to write the public key (required).
    #[arg(long, env = "FLEET_PUBLIC_OUT", value_name = "FILE")]
    pub public_out: Option<PathBuf>,
}

/// Makes a key named `name`, writes both halves, returns the public key text.
pub fn keygen(name: &str, secret_out: &Path, public_out: &Path) -> anyhow::Result<String> {
    let key = SecretKey::generate(name)?;
    key.write_new(secret_out)?;
    key.public()
        .write(public_out)
        .with_context(|| format!("the secret key was written to {}", secret_out.display()))?;
    Ok(key.public().to_nix_string())
}

/// `fleet-publish keygen`.
pub fn run(o: KeygenOptions, config_file: &ConfigFile) -> anyhow::Result<()> {
    let o = config_file.layer(o)?;
    let name = config::required(&o.name, "name", "FLEET_KEY_NAME")?;
    let secret_out = config::required(&o.secret_out, "secret-out", "FLEET_SECRET_OUT")?;
    let public_out = config::required(&o.public_out, "public-out", "FLEET_PUBLIC_OUT")?;
    let public = keygen(name, secret_out, public_out)?;
    println!("{public}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_core::PublicKey;

    #[test]
    fn writes_a_pair_and_never_replaces_a_secret() {
        let d = tempfile::tempdir().unwrap();
        let (sk, pk) = (d.path().join("k.secret"), d.path().join("k.public"));
        let public = keygen("cache-1", &sk, &pk).unwrap();
        assert_eq!(PublicKey::load(&pk).unwrap().to_nix_string(), public);
        assert_eq!(
            SecretKey::load(&sk).unwrap().public().to_nix_string(),
            public
        );
        let e = keygen("cache-2", &sk, &pk).unwrap_err().to_string();
        assert!(
            e.contains("already exists") && e.contains("k.secret"),
            "{e}"
        );
        assert_eq!(PublicKey::load(&pk).unwrap().to_nix_string(), public);
        let e = keygen("bad name", &d.path().join("x"), &pk)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad name"), "{e}");
    }
}
