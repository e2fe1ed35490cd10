//! The world of the whole-fleet tests (`e2e_fleet.rs`): one SeaweedFS bucket with a
//! scoped IAM user per role (publisher, reporter, one agent per host), keys made by
//! `fleet-publish keygen`, fixture systems built with real Nix, and the three real
//! binaries run with those users' credentials:
//!
//! - [`FleetWorld::publish`]: `fleet-publish deploy --hosts FILE` as the publisher;
//! - [`FleetWorld::once`]: `fleet-agent once` as a host, with its own state directory,
//!   chroot Nix store and profile;
//! - [`FleetWorld::reporter`]: `fleet-reporter serve` as the reporter, read over HTTP.
//!
//! The test itself reads and writes the bucket with the admin identity
//! ([`FleetWorld::admin`]), which is also what the hostile-bucket attacker holds.

// Shared by several test binaries, each using only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use fleet_core::bucket::BucketError;
use fleet_core::iam::Role;
use fleet_core::keys::PublicKey;
use fleet_core::status::StatusReport;
use fleet_core::{Bucket, HostName, Key, Manifest, S3Credentials, StorePath, TrustedKeys};
use fleet_tests::agent::clean_command;
use fleet_tests::nix::{Closure, FixtureOptions, Nix, read_activation_log};
use fleet_tests::s3::S3Server;

/// One host: its name, credentials and local directories.
pub struct Host {
    pub name: HostName,
    pub creds: S3Credentials,
    /// The agent's state directory.
    pub state_dir: PathBuf,
    /// Its chroot Nix store (`nix-store` and `store-root`).
    pub chroot: PathBuf,
    /// Its system profile (inside the chroot).
    pub profile: PathBuf,
    /// Where the fixture's `switch-to-configuration` logs its calls.
    pub activation_log: PathBuf,
}

/// The result of one `fleet-agent once`.
pub struct AgentRun {
    pub code: i32,
    pub report: StatusReport,
    pub stderr: String,
}

impl AgentRun {
    /// `last_error.kind`, or "".
    pub fn kind(&self) -> &str {
        self.report
            .last_error
            .as_ref()
            .map_or("", |e| e.kind.as_str())
    }
}

/// A bucket on SeaweedFS, its users, keys, hosts and a Nix handle.
pub struct FleetWorld {
    pub nix: Nix,
    pub dir: tempfile::TempDir,
    pub server: &'static S3Server,
    pub bucket_name: String,
    pub store_url: String,
    /// The bucket with admin (write-everything, no signing key) credentials.
    pub admin: Bucket,
    pub publisher_creds: S3Credentials,
    pub reporter_creds: S3Credentials,
    pub hosts: Vec<Host>,
    /// The cache key `publish` signs with.
    pub cache_secret: PathBuf,
    /// The public half of the first cache key.
    pub cache_public: PublicKey,
    /// What the agents' `trusted-cache-keys` hold (the first cache key at start).
    pub agent_cache_keys: Vec<PublicKey>,
    pub publisher_secret: PathBuf,
    pub publisher_public: PublicKey,
    pub publisher_public_file: PathBuf,
    /// Public key files passed to `deploy --extra-cache-key`.
    pub extra_cache_keys: Vec<PathBuf>,
    /// Public key files `deploy --trusted-key-file` gets (a publisher key rotation).
    pub deploy_trusted_keys: Vec<PathBuf>,
    /// Root keys and version the agents pin instead of publisher and cache keys.
    pub root_pin: Option<(Vec<PublicKey>, u64)>,
    /// Label of the fixture closures (their salt), so each test has its own paths.
    pub salt: String,
    rt: tokio::runtime::Runtime,
}

fn with_creds(cmd: &mut Command, creds: &S3Credentials) {
    for (k, v) in S3Server::credentials_env(creds) {
        cmd.env(k, v);
    }
}

/// Runs `fleet-publish keygen` for `keys/<file>.{secret,public}`; checks that it
/// printed the public key it wrote.
fn keygen(keys: &Path, xdg_cache: &Path, name: &str, file: &str) -> PublicKey {
    let public = keys.join(format!("{file}.public"));
    let out = clean_command(&fleet_tests::bin("fleet-publish"), xdg_cache)
        .args(["keygen", "--name", name, "--secret-out"])
        .arg(keys.join(format!("{file}.secret")))
        .arg("--public-out")
        .arg(&public)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = PublicKey::load(&public).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        key.to_nix_string()
    );
    key
}

impl FleetWorld {
    /// A fresh bucket on this process's SeaweedFS with users for `hosts`, the
    /// publisher and the reporter, and a new cache key and publisher key.
    pub fn new(salt: &str, hosts: &[&str]) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let nix = Nix::new().unwrap_or_else(|e| panic!("{e:#}"));
        let dir = tempfile::Builder::new()
            .prefix("fleet-e2e-")
            .tempdir()
            .unwrap();
        let server = rt
            .block_on(S3Server::seaweedfs())
            .unwrap_or_else(|e| panic!("{e:#}"));
        let (bucket_name, publisher_creds, reporter_creds, host_creds) = rt.block_on(async {
            let name = server.new_bucket("e2e").await.unwrap();
            let publisher = server.user_for(&Role::Publisher, &name, "").await.unwrap();
            let reporter = server.user_for(&Role::Reporter, &name, "").await.unwrap();
            let mut agents = Vec::new();
            for h in hosts {
                let role = Role::Agent(HostName::new(h).unwrap());
                agents.push(server.user_for(&role, &name, "").await.unwrap());
            }
            (name, publisher, reporter, agents)
        });
        let store_url = server.store_url(&bucket_name, "").unwrap().to_string();
        let admin = server
            .bucket(&bucket_name, "", &server.admin_credentials())
            .unwrap();
        let hosts = hosts
            .iter()
            .zip(host_creds)
            .map(|(h, creds)| {
                let base = dir.path().join("hosts").join(h);
                let chroot = base.join("root");
                Host {
                    name: HostName::new(h).unwrap(),
                    creds,
                    state_dir: base.join("state"),
                    profile: chroot.join("nix/var/nix/profiles/system"),
                    chroot,
                    activation_log: base.join("activation.log"),
                }
            })
            .collect();
        let keys = dir.path().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let xdg = dir.path().join("xdg-cache");
        let cache_public = keygen(&keys, &xdg, "e2e-cache-1", "cache");
        let publisher_public = keygen(&keys, &xdg, "e2e-publisher-1", "publisher");
        Self {
            nix,
            server,
            bucket_name,
            store_url,
            admin,
            publisher_creds,
            reporter_creds,
            hosts,
            cache_secret: keys.join("cache.secret"),
            agent_cache_keys: vec![cache_public.clone()],
            cache_public,
            publisher_secret: keys.join("publisher.secret"),
            publisher_public,
            publisher_public_file: keys.join("publisher.public"),
            extra_cache_keys: Vec::new(),
            deploy_trusted_keys: Vec::new(),
            root_pin: None,
            salt: salt.to_owned(),
            dir,
            rt,
        }
    }

    /// Makes another key pair with `fleet-publish keygen` as `keys/<file>.secret` and
    /// `.public`; returns the secret file and the public key.
    pub fn new_key(&self, name: &str, file: &str) -> (PathBuf, PublicKey) {
        let keys = self.dir.path().join("keys");
        let public = keygen(&keys, &self.dir.path().join("xdg-cache"), name, file);
        (keys.join(format!("{file}.secret")), public)
    }

    /// Adds a signature by `secret_file` to every narinfo in the bucket's cache, the
    /// way `docs/operations.md` rotates the cache key: copy the narinfos (and
    /// `nix-cache-info`) to a local directory as the admin, `nix store sign --all` on it
    /// with real Nix, upload the narinfos back. Returns how many were re-signed.
    pub fn resign_cache(&self, secret_file: &Path) -> usize {
        let local = self.dir.path().join("resign");
        std::fs::create_dir_all(&local).unwrap();
        let listed = self
            .block_on(self.admin.list(&fleet_core::KeyPrefix::cache()))
            .unwrap();
        std::fs::write(local.join("nix-cache-info"), self.read(&Key::cache_info())).unwrap();
        let mut names = Vec::new();
        for info in listed {
            let Some(name) = info.key.strip_prefix("cache/") else {
                continue;
            };
            let Some(hash) = name.strip_suffix(".narinfo") else {
                continue;
            };
            let key = Key::narinfo(&fleet_core::store_path::StorePathHash::new(hash).unwrap());
            std::fs::write(local.join(name), self.read(&key)).unwrap();
            names.push((name.to_owned(), key));
        }
        let mut cmd = self.nix.command("nix");
        cmd.args(["store", "sign", "--all", "--store"])
            .arg(format!("file://{}", local.display()))
            .arg("--key-file")
            .arg(secret_file);
        self.nix.output(cmd).unwrap_or_else(|e| panic!("{e}"));
        for (name, key) in &names {
            self.write(key, std::fs::read(local.join(name)).unwrap());
        }
        names.len()
    }

    /// Runs `f` on this world's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// A fleet binary with the clean environment.
    pub fn command(&self, name: &str) -> Command {
        clean_command(&fleet_tests::bin(name), &self.dir.path().join("xdg-cache"))
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name.as_str() == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// The fixture system of `host` for `generation`; `activation_exit` non-zero
    /// makes one whose `switch-to-configuration` fails.
    pub fn system(&self, host: &str, generation: &str, activation_exit: u8) -> Closure {
        self.nix
            .fixture_system(
                host,
                generation,
                &FixtureOptions {
                    activation_exit,
                    ..FixtureOptions::salted(&self.salt)
                },
            )
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// `fleet-publish` with the publisher's credentials.
    pub fn publisher_command(&self) -> Command {
        let mut cmd = self.command("fleet-publish");
        with_creds(&mut cmd, &self.publisher_creds);
        cmd
    }

    /// `fleet-publish deploy --hosts FILE` with the publisher's credentials; returns
    /// the sequence written per host, as it printed them.
    pub fn publish(&self, targets: &[(&str, &Closure)]) -> BTreeMap<String, u64> {
        let map: BTreeMap<&str, String> = targets
            .iter()
            .map(|(h, c)| (*h, c.top.to_string()))
            .collect();
        let file = self.dir.path().join("deploy.json");
        std::fs::write(&file, serde_json::to_vec(&map).unwrap()).unwrap();
        let mut cmd = self.publisher_command();
        cmd.args(["deploy", "--bucket", &self.store_url, "--expires-in", "1d"])
            .arg("--cache-key")
            .arg(&self.cache_secret)
            .arg("--signing-key")
            .arg(&self.publisher_secret)
            .arg("--hosts")
            .arg(&file);
        for k in &self.extra_cache_keys {
            cmd.arg("--extra-cache-key-file").arg(k);
        }
        for k in &self.deploy_trusted_keys {
            cmd.arg("--trusted-key-file").arg(k);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "fleet-publish deploy failed:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // "<host>: sequence <n> (was …) -> …"
        stdout
            .lines()
            .filter_map(|l| {
                let (host, rest) = l.split_once(": sequence ")?;
                let seq = rest.split(' ').next()?.parse().ok()?;
                Some((host.to_owned(), seq))
            })
            .collect()
    }

    /// Runs `fleet-publish trust ARGS --bucket URL` with the admin's credentials (the
    /// Admin role is not there yet), its audit entry signed by the current publisher
    /// key; returns whether it succeeded, stdout and stderr.
    pub fn trust(&self, args: &[&str]) -> (bool, String, String) {
        let mut cmd = self.command("fleet-publish");
        with_creds(&mut cmd, &self.server.admin_credentials());
        let out = cmd
            .env("FLEET_SIGNING_KEY", &self.publisher_secret)
            .arg("trust")
            .args(args)
            .args(["--bucket", &self.store_url])
            .current_dir(self.dir.path().join("keys"))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// [`FleetWorld::trust`] that must succeed; returns its stdout.
    pub fn trust_ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.trust(args);
        assert!(ok, "fleet-publish trust {args:?} failed:\n{stdout}{stderr}");
        stdout
    }

    /// The text of `host`'s agent configuration as `once` writes it.
    pub fn agent_config_text(&self, host: &str) -> String {
        std::fs::read_to_string(self.agent_config(self.host(host))).unwrap()
    }

    /// Writes `host`'s agent configuration and returns its path.
    fn agent_config(&self, host: &Host) -> PathBuf {
        let path = self
            .dir
            .path()
            .join(format!("agent-{}.toml", host.name.as_str()));
        let (publisher_keys, cache_keys, extra) = match &self.root_pin {
            // With a root of trust the host pins only the root keys.
            Some((keys, version)) => (
                Vec::new(),
                Vec::new(),
                format!(
                    "trust-root-keys = [{}]\ntrust-root-version = {version}\n",
                    keys.iter()
                        .map(|k| format!("{:?}", k.to_nix_string()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            None => (
                vec![self.publisher_public.to_nix_string()],
                self.agent_cache_keys
                    .iter()
                    .map(|k| k.to_nix_string())
                    .collect(),
                String::new(),
            ),
        };
        fleet_tests::agent::AgentConfig {
            bucket: self.store_url.clone(),
            host: host.name.to_string(),
            publisher_keys,
            cache_keys,
            state_dir: host.state_dir.clone(),
            chroot: host.chroot.clone(),
            profile: host.profile.clone(),
            facts_root: None,
            request_timeout: "10s".into(),
            activation_timeout: "60s".into(),
            extra,
        }
        .write(&path)
        .unwrap();
        path
    }

    /// Runs `fleet-agent once` as `host` with its own credentials.
    pub fn once(&self, host: &str) -> AgentRun {
        let h = self.host(host);
        let mut cmd = self.command("fleet-agent");
        with_creds(&mut cmd, &h.creds);
        let out = cmd
            .arg("once")
            .arg("--config")
            .arg(self.agent_config(h))
            .env(fleet_tests::nix::ACTIVATION_LOG_ENV, &h.activation_log)
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out.status.code().unwrap_or(-1);
        let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "fleet-agent once ({host}) printed no status report ({e}), exit {code}:\n{}\n{stderr}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        AgentRun {
            code,
            report,
            stderr,
        }
    }

    /// Runs `fleet-agent once` as `host` and checks the exit code.
    pub fn once_expect(&self, host: &str, code: i32) -> AgentRun {
        let r = self.once(host);
        assert_eq!(r.code, code, "{host}: exit code; stderr:\n{}", r.stderr);
        r
    }

    /// The top paths `host`'s `switch-to-configuration` ran for, in order.
    pub fn activated(&self, host: &str) -> Vec<StorePath> {
        read_activation_log(&self.host(host).activation_log)
            .unwrap()
            .into_iter()
            .map(|c| c.toplevel)
            .collect()
    }

    /// What `host`'s profile points at.
    pub fn profile_target(&self, host: &str) -> Option<StorePath> {
        fleet_agent::activate::profile_target(&self.host(host).profile)
    }

    /// Whether `path` is valid in `host`'s chroot store.
    pub fn in_store(&self, host: &str, path: &StorePath) -> bool {
        self.nix
            .is_valid_in(&self.host(host).chroot, path)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The object at `key`, read as the admin.
    pub fn read(&self, key: &Key) -> Vec<u8> {
        self.block_on(self.admin.get(key, 1 << 24))
            .unwrap_or_else(|e| panic!("{e}"))
            .bytes
            .to_vec()
    }

    /// Writes `bytes` at `key` as the admin.
    pub fn write(&self, key: &Key, bytes: Vec<u8>) {
        self.block_on(self.admin.put(key, bytes))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// `host`'s status object, read with admin credentials and parsed as a reader does.
    pub fn status(&self, host: &str) -> StatusReport {
        let h = &self.host(host).name;
        let key = Key::status(h);
        StatusReport::parse(&self.read(&key), key.as_str(), h).unwrap()
    }

    /// `host`'s manifest, verified with the publisher's key.
    pub fn manifest(&self, host: &str) -> Manifest {
        let h = &self.host(host).name;
        self.block_on(fleet_publish::show(
            &self.admin,
            h,
            &TrustedKeys::new([self.publisher_public.clone()]),
        ))
        .unwrap_or_else(|e| panic!("{e:#}"))
        .manifest
    }

    /// `host`'s credentials as a bucket handle.
    pub fn bucket_as(&self, host: &str) -> Bucket {
        self.server
            .bucket(&self.bucket_name, "", &self.host(host).creds)
            .unwrap()
    }

    /// Whether reading `key` with `host`'s credentials is denied.
    pub fn denied_read(&self, host: &str, key: &Key) -> bool {
        match self.block_on(self.bucket_as(host).get(key, 1 << 20)) {
            Err(BucketError::AccessDenied { .. }) => true,
            Ok(_) => false,
            Err(e) => panic!("reading {key} as {host}: unexpected {e}"),
        }
    }

    /// Starts `fleet-reporter serve` with the reporter's credentials, trusting the
    /// publisher key, on a free loopback port.
    pub fn reporter(&self) -> Reporter {
        let mut cmd = self.command("fleet-reporter");
        with_creds(&mut cmd, &self.reporter_creds);
        let mut child = cmd
            .args(["serve", "--bucket", &self.store_url])
            .args(["--listen", "127.0.0.1:0", "--cache-ttl", "0s"])
            .arg("--trusted-key-file")
            .arg(&self.publisher_public_file)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.dir.path().join("reporter.log")).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("fleet-reporter listening on http://")
            .and_then(|a| a.strip_suffix('/'))
            .unwrap_or_else(|| {
                panic!(
                    "fleet-reporter serve printed {line:?}; log:\n{}",
                    std::fs::read_to_string(self.dir.path().join("reporter.log"))
                        .unwrap_or_default()
                )
            })
            .to_owned();
        Reporter { child, addr }
    }
}

/// A running `fleet-reporter serve`; killed when dropped.
pub struct Reporter {
    child: Child,
    pub addr: String,
}

impl Reporter {
    /// GETs `path` and parses the JSON answer; panics unless it is 200.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP answer: {text}"));
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "GET {path}: {head}\n{body}"
        );
        assert!(
            !head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "this client reads only Content-Length bodies: {head}"
        );
        serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// The rows of `/api/v1/hosts`, by host name.
    pub fn hosts(&self) -> BTreeMap<String, serde_json::Value> {
        let v = self.get_json("/api/v1/hosts?limit=1000");
        v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["host"].as_str().unwrap().to_owned(), r.clone()))
            .collect()
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
