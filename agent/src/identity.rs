//! The host's identity key: an ed25519 key in Nix's format
//! ([`fleet_core::keys`]), named `<host>-identity`
//! ([`fleet_core::enrollment::identity_key_name`]), kept at
//! `<state-dir>/identity.key` with mode 0600.
//!
//! `fleet-agent init` creates it (written atomically, never overwritten); the agent
//! signs every status report and event with it when it exists
//! ([`fleet_core::status_sig`]). A host without one (set up before enrollment)
//! reports unsigned, as before.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use fleet_core::enrollment::identity_key_name;
use fleet_core::{HostName, SecretKey};

/// File name of the identity key in the state directory.
pub const IDENTITY_KEY_FILE: &str = "identity.key";

/// Where the identity key of the agent with state directory `state_dir` lives.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(IDENTITY_KEY_FILE)
}

/// The identity key, if this host has one.
pub fn load(state_dir: &Path) -> anyhow::Result<Option<SecretKey>> {
    let p = path(state_dir);
    if !p.exists() {
        return Ok(None);
    }
    Ok(Some(
        SecretKey::load(&p).context("loading the host identity key")?,
    ))
}

/// The identity key of `host`, created if the host has none yet. An existing key
/// made for another host name is refused.
pub fn load_or_create(state_dir: &Path, host: &HostName) -> anyhow::Result<(SecretKey, bool)> {
    let want = identity_key_name(host);
    if let Some(k) = load(state_dir)? {
        if k.name() != want {
            bail!(
                "{} holds the identity key {:?}, made for another host name; this host is to be {host}. \
                 Move the file away to make a new identity (the old one's registry entry then no longer matches)",
                path(state_dir).display(),
                k.name()
            );
        }
        return Ok((k, false));
    }
    create_private_dir(state_dir)?;
    let k = SecretKey::generate(&want)?;
    k.write_new(&path(state_dir))?;
    Ok((k, true))
}

/// Creates `dir` (mode 0700) if it does not exist.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn created_once_private_and_bound_to_the_host_name() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        let h = HostName::new("web-1").unwrap();
        assert!(load(&state).unwrap().is_none());
        let (k, made) = load_or_create(&state, &h).unwrap();
        assert!(made);
        assert_eq!(k.name(), "web-1-identity");
        let mode = std::fs::metadata(path(&state))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, made) = load_or_create(&state, &h).unwrap();
        assert!(!made);
        assert_eq!(again.public(), k.public());
        let e = load_or_create(&state, &HostName::new("web-2").unwrap()).unwrap_err();
        assert!(e.to_string().contains("another host name"), "{e}");
    }
}
