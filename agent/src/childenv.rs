//! The environment of every program the agent starts for a generation:
//! `switch-to-configuration` (and with it every activation script) and each
//! `command` / `systemd-unit` health check.
//!
//! Those programs come from the closure being deployed, so they get an allow-list,
//! never the agent's whole environment: the unit's `EnvironmentFile=` may hold
//! `AWS_SECRET_ACCESS_KEY`, and a generation must not be able to read the host's
//! bucket credentials just by being activated. A child sees exactly:
//!
//! - [`PASSED`]: `PATH`, `HOME`, locale (`LANG`, `LANGUAGE`, `LC_*`,
//!   `LOCALE_ARCHIVE`), time zone (`TZ`, `TZDIR`), Nix's location settings
//!   (`NIX_PATH`, `NIX_REMOTE`, `NIX_CONF_DIR`, `NIX_SSL_CERT_FILE`) and the switches
//!   `switch-to-configuration` itself reads (`NIXOS_INSTALL_BOOTLOADER`,
//!   `NIXOS_NO_SYNC`, `NIXOS_NO_CHECK`, `STC_DISPLAY_ALL_UNITS`), each only when the
//!   agent has it;
//! - the names listed in the `pass-environment` setting (like systemd's
//!   `PassEnvironment=`), for a proxy a health check needs, say. Names that can only
//!   carry credentials or the agent's own plumbing (`AWS_*`, `CREDENTIALS_DIRECTORY`,
//!   `NOTIFY_SOCKET`, `WATCHDOG_*`) are refused there at start.
//!
//! This is close to what `nixos-rebuild` gives the switch (it runs it with
//! `systemd-run`, passing only `LOCALE_ARCHIVE` and `NIXOS_INSTALL_BOOTLOADER` on top
//! of systemd's own `PATH`).

use std::ffi::OsString;

/// Variables every child gets when the agent has them.
pub const PASSED: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "LOCALE_ARCHIVE",
    "TZ",
    "TZDIR",
    "NIX_PATH",
    "NIX_REMOTE",
    "NIX_CONF_DIR",
    "NIX_SSL_CERT_FILE",
    "NIXOS_INSTALL_BOOTLOADER",
    "NIXOS_NO_SYNC",
    "NIXOS_NO_CHECK",
    "STC_DISPLAY_ALL_UNITS",
];

/// Prefix of the locale variables every child gets (`LC_ALL`, `LC_TIME`, …).
pub const PASSED_PREFIX: &str = "LC_";

/// Name prefixes `pass-environment` may not list: credentials and the agent's own
/// service-manager plumbing.
const REFUSED_PREFIXES: &[&str] = &["AWS_", "WATCHDOG_"];
/// Names `pass-environment` may not list.
const REFUSED: &[&str] = &["CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET"];

/// Which of the agent's variables its children get: [`PASSED`], `LC_*` and the
/// operator's `pass-environment` names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChildEnv {
    extra: Vec<String>,
}

impl ChildEnv {
    /// The allow-list plus `pass_environment` (the setting, checked: a name that is
    /// not a variable name or could carry credentials is refused, naming `field`).
    pub fn new(field: &str, pass_environment: &[String]) -> anyhow::Result<Self> {
        for (i, name) in pass_environment.iter().enumerate() {
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            anyhow::ensure!(
                valid,
                "{field}[{i}] = {name:?} is not an environment variable name (letters, digits, `_`)"
            );
            let refused = REFUSED.contains(&name.as_str())
                || REFUSED_PREFIXES.iter().any(|p| name.starts_with(p));
            anyhow::ensure!(
                !refused,
                "{field}[{i}] = {name:?} may not be passed to switch-to-configuration and health checks: \
                 AWS_*, CREDENTIALS_DIRECTORY, NOTIFY_SOCKET and WATCHDOG_* stay with the agent"
            );
        }
        Ok(Self {
            extra: pass_environment.to_vec(),
        })
    }

    /// Whether a child gets the variable `name`.
    pub fn passes(&self, name: &str) -> bool {
        PASSED.contains(&name)
            || name.starts_with(PASSED_PREFIX)
            || self.extra.iter().any(|e| e == name)
    }

    /// The variables a child gets, read from the agent's environment now.
    pub fn vars(&self) -> Vec<(OsString, OsString)> {
        std::env::vars_os()
            .filter(|(k, _)| k.to_str().is_some_and(|k| self.passes(k)))
            .collect()
    }

    /// Gives `cmd` exactly [`ChildEnv::vars`] and nothing else.
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        cmd.env_clear().envs(self.vars());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_and_the_setting_decide() {
        let e = ChildEnv::new("pass-environment", &["HTTPS_PROXY".into()]).unwrap();
        for yes in [
            "PATH",
            "LC_ALL",
            "LOCALE_ARCHIVE",
            "HTTPS_PROXY",
            "NIX_PATH",
        ] {
            assert!(e.passes(yes), "{yes}");
        }
        for no in [
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ACCESS_KEY_ID",
            "CREDENTIALS_DIRECTORY",
            "NOTIFY_SOCKET",
            "FLEET_BUCKET",
            "NIX_CONFIG",
            "http_proxy",
        ] {
            assert!(!e.passes(no), "{no}");
        }
    }

    #[test]
    fn credential_names_are_refused_in_the_setting() {
        for (bad, want) in [
            ("AWS_SECRET_ACCESS_KEY", "stay with the agent"),
            ("CREDENTIALS_DIRECTORY", "stay with the agent"),
            ("WATCHDOG_USEC", "stay with the agent"),
            ("A-B", "not an environment variable name"),
            ("", "not an environment variable name"),
        ] {
            let e = ChildEnv::new("pass-environment", &["OK".into(), bad.into()])
                .unwrap_err()
                .to_string();
            assert!(e.contains("pass-environment[1]") && e.contains(want), "{e}");
        }
    }

    #[tokio::test]
    async fn a_child_sees_only_the_allowed_variables() {
        // Whatever the test runner's environment holds (cargo sets CARGO_*, RUST_*),
        // the child sees only allowed names.
        let e = ChildEnv::new("pass-environment", &[]).unwrap();
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.args(["-c", "env"]);
        e.apply(&mut cmd);
        let out = cmd.output().await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines() {
            let name = line.split('=').next().unwrap_or_default();
            // sh itself may add PWD, SHLVL and `_`.
            assert!(
                e.passes(name) || ["PWD", "SHLVL", "_", "OLDPWD"].contains(&name),
                "{line}"
            );
        }
    }
}
