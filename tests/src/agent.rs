//! Running real fleet binaries from tests and benchmarks: one way to give them a
//! clean environment ([`clean_command`]) and one way to write an agent's config file
//! ([`AgentConfig`]), so a change to the agent's settings is made here once.
//!
//! The config is TOML in the agent's own schema (`agent/src/config.rs`): every value
//! is quoted by the `toml` crate, and `extra` lines (durations, health checks, …) are
//! placed among the top-level keys, before anything that could open a table.
//! `pass-environment` always lists [`FIXTURE_ENV`]: the agent gives its children only
//! an allow-listed environment, and the fixtures' `switch-to-configuration` scripts
//! read these variables.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A command for `program` (a fleet binary) with Nix's test settings and none of the
/// caller's `FLEET_*`, `AWS_*` or systemd variables, so a developer's environment
/// never changes what a test sees. `xdg_cache` keeps Nix's cache inside the test.
pub fn clean_command(program: &Path, xdg_cache: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("FLEET_") || k.starts_with("AWS_") || k == "NOTIFY_SOCKET" {
            cmd.env_remove(&k);
        }
    }
    cmd.env("NIX_CONFIG", crate::nix::NIX_CONFIG)
        .env("NIX_USER_CONF_FILES", "")
        .env("XDG_CACHE_HOME", xdg_cache)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null());
    cmd
}

/// The variables the fixture systems' `switch-to-configuration` read: where to log
/// calls ([`crate::nix::ACTIVATION_LOG_ENV`]) and the file a held switch waits for.
pub const FIXTURE_ENV: [&str; 2] = [crate::nix::ACTIVATION_LOG_ENV, "FLEET_TEST_HOLD_UNTIL"];

/// The settings a test agent runs with: its own state, chroot Nix store and profile,
/// no jitter, short timeouts.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The `bucket` URL.
    pub bucket: String,
    /// The host name.
    pub host: String,
    /// `trusted-publisher-keys`, as `name:base64`.
    pub publisher_keys: Vec<String>,
    /// `trusted-cache-keys`, as `name:base64`.
    pub cache_keys: Vec<String>,
    /// `state-dir`.
    pub state_dir: PathBuf,
    /// The chroot store: both `nix-store` and `store-root`.
    pub chroot: PathBuf,
    /// `profile`.
    pub profile: PathBuf,
    /// `facts-root`, if not `/`.
    pub facts_root: Option<PathBuf>,
    /// `request-timeout`.
    pub request_timeout: String,
    /// `activation-timeout`.
    pub activation_timeout: String,
    /// More top-level TOML lines, such as `poll-interval = "300ms"`.
    pub extra: String,
}

impl AgentConfig {
    /// The config file's text.
    pub fn to_toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let p = |p: &Path| q(&p.to_string_lossy());
        let list = |keys: &[String]| {
            let quoted: Vec<String> = keys.iter().map(|k| q(k)).collect();
            format!("[{}]", quoted.join(", "))
        };
        let mut text = format!(
            "bucket = {}\nhost = {}\ntrusted-publisher-keys = {}\ntrusted-cache-keys = {}\n\
             state-dir = {}\nnix-store = {chroot}\nstore-root = {chroot}\nprofile = {}\n\
             poll-jitter = \"0s\"\nrequest-timeout = {}\nactivation-timeout = {}\n\
             pass-environment = {}\n",
            q(&self.bucket),
            q(&self.host),
            list(&self.publisher_keys),
            list(&self.cache_keys),
            p(&self.state_dir),
            p(&self.profile),
            q(&self.request_timeout),
            q(&self.activation_timeout),
            list(&FIXTURE_ENV.map(str::to_owned)),
            chroot = p(&self.chroot),
        );
        if let Some(facts) = &self.facts_root {
            text.push_str(&format!("facts-root = {}\n", p(facts)));
        }
        text.push_str(&self.extra);
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
    }

    /// Writes the config file at `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_toml())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_toml_with_the_extra_lines_at_top_level() {
        let c = AgentConfig {
            bucket: "file:///b \"q\"".into(),
            host: "web-1".into(),
            publisher_keys: vec!["p:AAAA".into()],
            cache_keys: vec!["c:BBBB".into(), "c2:CCCC".into()],
            state_dir: "/s".into(),
            chroot: "/c".into(),
            profile: "/p".into(),
            facts_root: None,
            request_timeout: "5s".into(),
            activation_timeout: "60s".into(),
            extra: "poll-interval = \"300ms\"".into(),
        };
        let v: toml::Table = c.to_toml().parse().unwrap();
        assert_eq!(v["bucket"].as_str(), Some("file:///b \"q\""));
        assert_eq!(v["trusted-cache-keys"].as_array().unwrap().len(), 2);
        assert_eq!(v["nix-store"].as_str(), Some("/c"));
        assert_eq!(v["poll-interval"].as_str(), Some("300ms"));
        assert!(v.get("facts-root").is_none());
        assert_eq!(v["pass-environment"].as_array().unwrap().len(), 2);
    }
}
