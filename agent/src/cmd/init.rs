//! `fleet-agent init`: the two steps of enrolling a new host.
//!
//! 1. `fleet-agent init --host NAME [--label K=V]…` creates the host's identity key
//!    (`<state-dir>/identity.key`, [`crate::identity`]) unless it exists, and prints
//!    a signed enrollment request ([`fleet_core::enrollment`]) on stdout for an admin
//!    to pass to `fleet-publish enroll`. Running it again prints a fresh request for
//!    the same key. `--request-file FILE` writes it to a file as well.
//! 2. `fleet-agent init --bundle FILE` installs the bootstrap bundle that `enroll`
//!    wrote ([`fleet_core::bundle`]): the S3 credentials, if it carries any, as
//!    `aws-access-key-id` and `aws-secret-access-key` (mode 0600) in
//!    `--credentials-dir` (the files [`crate::credentials`] reads, for systemd's
//!    `LoadCredential=`), then the agent's config file (`--config-file`), each written
//!    atomically. The bundle must be for this host's identity key. It is deleted once
//!    installed (it holds a secret), unless `--keep-bundle`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use fleet_core::HostName;
use fleet_core::bundle::Bundle;
use fleet_core::enrollment::EnrollmentRequest;
use fleet_core::fsutil::write_atomic;

use crate::config::DEFAULT_STATE_DIR;
use crate::credentials::{ACCESS_KEY_ID_FILE, SECRET_ACCESS_KEY_FILE};
use crate::identity;

/// Default config file `init --bundle` writes.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/fleet/agent.toml";
/// Directory under the state directory that `init --bundle` puts credentials in
/// by default.
pub const CREDENTIALS_SUBDIR: &str = "credentials";

/// The arguments of `init`.
#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// State directory of the agent, where the identity key lives [default: /var/lib/fleet-agent].
    #[arg(long, env = "FLEET_AGENT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// This host's name (required without --bundle).
    #[arg(long, env = "FLEET_AGENT_HOST", value_name = "NAME")]
    pub host: Option<String>,
    /// A label for the registry, such as `role=web`; repeatable.
    #[arg(long = "label", value_name = "NAME=VALUE")]
    pub labels: Vec<String>,
    /// Root of /etc/os-release and /proc read for the request's facts [default: /].
    #[arg(long, env = "FLEET_AGENT_FACTS_ROOT", value_name = "DIR")]
    pub facts_root: Option<PathBuf>,
    /// Also write the request to this file (mode 0644), as the NixOS module does.
    #[arg(long, value_name = "FILE")]
    pub request_file: Option<PathBuf>,
    /// Install this bootstrap bundle (from `fleet-publish enroll`) instead of making a request.
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
    /// Config file written from the bundle [default: /etc/fleet/agent.toml].
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Directory the bundle's credentials are written to [default: <state-dir>/credentials].
    #[arg(long, value_name = "DIR")]
    pub credentials_dir: Option<PathBuf>,
    /// Keep the bundle file after installing it (it holds the host's secret key).
    #[arg(long)]
    pub keep_bundle: bool,
}

/// Runs `init`.
pub fn init(args: InitArgs) -> anyhow::Result<()> {
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| DEFAULT_STATE_DIR.into());
    match &args.bundle {
        Some(bundle) => install(&args, &state_dir, bundle),
        None => request(&args, &state_dir),
    }
}

fn parse_labels(texts: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for t in texts {
        let (k, v) = t
            .split_once('=')
            .with_context(|| format!("--label {t:?} is not NAME=VALUE"))?;
        labels.insert(k.to_owned(), v.to_owned());
    }
    fleet_core::registry::check_labels(&labels).map_err(|e| anyhow::anyhow!("--label: {e}"))?;
    Ok(labels)
}

/// Step 1: the identity key and the request.
fn request(args: &InitArgs, state_dir: &Path) -> anyhow::Result<()> {
    let Some(host) = &args.host else {
        bail!(
            "give --host NAME (or FLEET_AGENT_HOST) to make a request, or --bundle FILE to install one"
        );
    };
    let host = HostName::new(host).context("--host")?;
    let labels = parse_labels(&args.labels)?;
    let (key, made) = identity::load_or_create(state_dir, &host)?;
    let facts_root = args.facts_root.as_deref().unwrap_or(Path::new("/"));
    let mut facts = crate::facts::gather(facts_root);
    // Facts of the moment, not of the host: they would only make requests differ.
    facts.uptime_seconds = None;
    let req = EnrollmentRequest {
        version: 1,
        host: host.clone(),
        identity_key: key.public(),
        labels,
        facts,
        time: jiff::Timestamp::now(),
    };
    let signed = req.sign(&key);
    if let Some(f) = &args.request_file {
        write_atomic(f, &signed, 0o644, true)
            .with_context(|| format!("writing the request to {}", f.display()))?;
    }
    print!("{}", String::from_utf8_lossy(&signed));
    eprintln!(
        "{} identity key {} in {}; give the request above to an admin for `fleet-publish enroll`",
        if made { "created" } else { "kept the" },
        key.name(),
        identity::path(state_dir).display()
    );
    Ok(())
}

/// Step 2: the bundle.
fn install(args: &InitArgs, state_dir: &Path, bundle_path: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(bundle_path)
        .with_context(|| format!("reading bundle {}", bundle_path.display()))?;
    let bundle = Bundle::parse(&bytes)
        .map_err(|e| anyhow::anyhow!("bundle {} is not valid: {e}", bundle_path.display()))?;
    if let Some(h) = &args.host {
        ensure!(
            h == bundle.host.as_str(),
            "the bundle is for host {}, not {h}",
            bundle.host
        );
    }
    let Some(key) = identity::load(state_dir)? else {
        bail!(
            "this machine has no identity key in {}: run `fleet-agent init --host {}` first (the bundle is made for the key of that request)",
            state_dir.display(),
            bundle.host
        );
    };
    ensure!(
        key.public() == bundle.identity_key,
        "the bundle is for identity key {} but this machine's is {}: it was made for another machine (or this one's key was replaced since)",
        bundle.identity_key,
        key.public()
    );
    let creds_dir = args
        .credentials_dir
        .clone()
        .unwrap_or_else(|| state_dir.join(CREDENTIALS_SUBDIR));
    if let Some(c) = &bundle.credentials {
        identity::create_private_dir(&creds_dir)?;
        for (name, value) in [
            (ACCESS_KEY_ID_FILE, &c.access_key_id),
            (SECRET_ACCESS_KEY_FILE, &c.secret_access_key),
        ] {
            let p = creds_dir.join(name);
            write_atomic(&p, format!("{value}\n").as_bytes(), 0o600, true)
                .with_context(|| format!("writing {}", p.display()))?;
        }
        eprintln!("wrote credentials to {}", creds_dir.display());
    }
    let config = args
        .config_file
        .clone()
        .unwrap_or_else(|| DEFAULT_CONFIG_FILE.into());
    if let Some(dir) = config.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_atomic(
        &config,
        config_text(&bundle, state_dir).as_bytes(),
        0o644,
        true,
    )
    .with_context(|| format!("writing {}", config.display()))?;
    eprintln!("wrote agent config {}", config.display());
    if !args.keep_bundle {
        std::fs::remove_file(bundle_path)
            .with_context(|| format!("removing the installed bundle {}", bundle_path.display()))?;
    }
    println!(
        "host {} is set up: start the agent with --config {}{}",
        bundle.host,
        config.display(),
        if bundle.credentials.is_some() {
            format!(" and CREDENTIALS_DIRECTORY={}", creds_dir.display())
        } else {
            " (credentials from the instance profile / AWS environment)".to_owned()
        }
    );
    Ok(())
}

/// The agent config file for `bundle` (no secrets in it).
fn config_text(bundle: &Bundle, state_dir: &Path) -> String {
    let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let list = |keys: &[fleet_core::PublicKey]| {
        let quoted: Vec<String> = keys.iter().map(|k| q(&k.to_nix_string())).collect();
        format!("[{}]", quoted.join(", "))
    };
    let a = &bundle.agent;
    // A bundle carries either a root of trust or static keys (`Bundle::parse`).
    let keys = if a.trust_root_keys.is_empty() {
        format!(
            "trusted-publisher-keys = {}\ntrusted-cache-keys = {}\n",
            list(&a.trusted_publisher_keys),
            list(&a.trusted_cache_keys)
        )
    } else {
        format!(
            "trust-root-keys = {}\ntrust-root-version = {}\n",
            list(&a.trust_root_keys),
            a.trust_root_version.unwrap_or(1)
        )
    };
    format!(
        "# Written by `fleet-agent init --bundle` for host {host}.\n\
         bucket = {bucket}\nhost = {hostq}\n{keys}state-dir = {state}\n",
        host = bundle.host,
        bucket = q(&a.bucket),
        hostq = q(bundle.host.as_str()),
        state = q(&state_dir.to_string_lossy()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_core::bundle::{BundleAgent, BundleCredentials};
    use fleet_core::{PublicKey, SecretKey};

    fn args(state: &Path, dir: &Path, bundle: Option<PathBuf>) -> InitArgs {
        InitArgs {
            state_dir: Some(state.to_owned()),
            host: Some("web-1".into()),
            labels: vec!["role=web".into()],
            facts_root: Some(dir.to_owned()),
            request_file: None,
            bundle,
            config_file: Some(dir.join("etc/agent.toml")),
            credentials_dir: None,
            keep_bundle: false,
        }
    }

    #[test]
    fn a_bundle_installs_only_on_its_machine() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        let host = HostName::new("web-1").unwrap();
        let (key, _) = identity::load_or_create(&state, &host).unwrap();
        let k = |n: &str| SecretKey::generate(n).unwrap().public();
        let mut bundle = Bundle {
            version: 1,
            host,
            identity_key: k("web-1-identity"),
            agent: BundleAgent {
                bucket: "s3://b?endpoint=http://127.0.0.1:1".into(),
                trusted_publisher_keys: vec![k("p-1")],
                trusted_cache_keys: vec![k("c-1")],
                trust_root_keys: Vec::new(),
                trust_root_version: None,
            },
            credentials: Some(BundleCredentials {
                access_key_id: "AKID".into(),
                secret_access_key: "s3cr3t".into(),
            }),
        };
        let file = d.path().join("bundle.json");
        std::fs::write(&file, bundle.to_bytes()).unwrap();
        let e = init(args(&state, d.path(), Some(file.clone()))).unwrap_err();
        assert!(e.to_string().contains("another machine"), "{e}");

        bundle.identity_key = key.public();
        std::fs::write(&file, bundle.to_bytes()).unwrap();
        init(args(&state, d.path(), Some(file.clone()))).unwrap();
        assert!(!file.exists(), "the bundle is removed once installed");
        let creds = crate::credentials::from_directory(&state.join(CREDENTIALS_SUBDIR))
            .unwrap()
            .unwrap();
        assert_eq!(creds.secret_access_key, "s3cr3t");
        let config: crate::config::Config =
            toml::from_str(&std::fs::read_to_string(d.path().join("etc/agent.toml")).unwrap())
                .unwrap();
        assert_eq!(config.host.as_deref(), Some("web-1"));
        assert_eq!(
            PublicKey::parse(&config.trusted_cache_keys[0], "t").unwrap(),
            bundle.agent.trusted_cache_keys[0]
        );
        assert_eq!(config.state_dir.as_deref(), Some(state.as_path()));
    }

    #[test]
    fn a_bundle_with_a_root_of_trust_pins_the_root_not_static_keys() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        let host = HostName::new("web-1").unwrap();
        let (key, _) = identity::load_or_create(&state, &host).unwrap();
        let root = SecretKey::generate("root-1").unwrap().public();
        let bundle = Bundle {
            version: 1,
            host,
            identity_key: key.public(),
            agent: BundleAgent {
                bucket: "s3://b?endpoint=http://127.0.0.1:1".into(),
                trusted_publisher_keys: Vec::new(),
                trusted_cache_keys: Vec::new(),
                trust_root_keys: vec![root.clone()],
                trust_root_version: Some(4),
            },
            credentials: None,
        };
        let file = d.path().join("bundle.json");
        std::fs::write(&file, bundle.to_bytes()).unwrap();
        init(args(&state, d.path(), Some(file))).unwrap();
        let text = std::fs::read_to_string(d.path().join("etc/agent.toml")).unwrap();
        let config: crate::config::Config = toml::from_str(&text).unwrap();
        assert_eq!(config.trust_root_version, Some(4), "{text}");
        assert_eq!(
            PublicKey::parse(&config.trust_root_keys[0], "t").unwrap(),
            root
        );
        assert!(config.trusted_publisher_keys.is_empty(), "{text}");
        assert!(config.trusted_cache_keys.is_empty(), "{text}");
    }
}
