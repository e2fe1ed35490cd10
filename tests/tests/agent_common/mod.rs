//! Helpers shared by the `agent_*` end-to-end tests: one host's world (bucket, keys,
//! chroot Nix store, profile, facts root, state directory), publishing closures with
//! real `nix copy --to file://…` and signed manifests, and running the real
//! `fleet-agent` binary against it.
//!
//! Besides the harness's fixture system (`tests/fixtures/system.nix`), this module
//! builds its own small system closure ([`World::held_system`]) whose
//! `switch-to-configuration` logs its call like the harness's and then, when
//! `FLEET_TEST_HOLD_UNTIL` names a file, waits until that file exists; and which can
//! carry a large random blob. Those give the kill -9 tests real slowness (a long
//! fetch, an activation that does not end) without any test hook in the agent.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fleet_core::bucket::BucketError;
use fleet_core::keys::{PublicKey, SecretKey};
use fleet_core::manifest::Manifest;
use fleet_core::narinfo::Compression;
use fleet_core::status::{AgentState, StatusReport};
use fleet_core::{Activation, Bucket, HostName, Key, KeyPrefix, S3Credentials, StorePath};
use fleet_tests::nix::{ActivationCall, Closure, FixtureOptions, Nix, read_activation_log};

/// The held-system fixture (see the module docs).
const HELD_NIX: &str = r#"
{ name ? "host", generation ? "1", salt ? "", blobBytes ? "0" }:
let
  mk = pname: script: attrs: derivation ({
    name = pname;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-eu" "-c" script ];
    PATH = "/bin:/usr/bin";
  } // attrs);
  blob = mk "fleet-agent-test-blob-${blobBytes}-${salt}" ''
    mkdir $out
    head -c "$blobBytes" /dev/urandom > $out/blob
  '' { inherit blobBytes; };
in mk "nixos-system-${name}-${generation}-${salt}" ''
  mkdir -p $out/bin
  ln -s $blob $out/blob
  {
    printf '#!/bin/sh\nself=%s\n' "$out"
    cat <<'EOF'
if [ -n "$FLEET_ACTIVATION_LOG" ]; then
  line="$self"
  for a in "$@"; do line="$line	$a"; done
  printf '%s\n' "$line" >> "$FLEET_ACTIVATION_LOG"
fi
if [ -n "$FLEET_TEST_HOLD_UNTIL" ]; then
  while [ ! -e "$FLEET_TEST_HOLD_UNTIL" ]; do sleep 0.05; done
fi
exit 0
EOF
  } > $out/bin/switch-to-configuration
  chmod 0755 $out/bin/switch-to-configuration
'' { inherit blob generation; }
"#;

/// Environment variable the held fixture waits on.
pub const HOLD_ENV: &str = fleet_tests::agent::FIXTURE_ENV[1];

/// A fresh bucket on the shared SeaweedFS server: the server, the bucket's name, the
/// admin's view of it and `host`'s own scoped agent credentials (real IAM calls).
pub fn seaweedfs_bucket(
    label: &str,
    host: &str,
) -> (
    &'static fleet_tests::s3::S3Server,
    String,
    Bucket,
    S3Credentials,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = fleet_tests::s3::S3Server::seaweedfs()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let name = server.new_bucket(label).await.unwrap();
        let admin = server
            .bucket(&name, "", &server.admin_credentials())
            .unwrap();
        let role = fleet_core::iam::Role::Agent(HostName::new(host).unwrap());
        let agent = server.user_for(&role, &name, "").await.unwrap();
        (server, name, admin, agent)
    })
}

/// Real Nix, or a panic that says how to install it.
pub fn nix() -> Nix {
    Nix::new().unwrap_or_else(|e| panic!("{e:#}"))
}

/// One host's world in a temporary directory.
pub struct World {
    pub nix: Nix,
    pub dir: tempfile::TempDir,
    pub host: HostName,
    pub publisher: SecretKey,
    pub cache_secret_file: PathBuf,
    pub cache_public: PublicKey,
    /// Root of the `file://` bucket (unused, but still made, for S3 worlds).
    pub bucket_root: PathBuf,
    /// The bucket with full rights (the test's admin view).
    pub bucket: Bucket,
    /// Where `nix copy` writes the cache: the bucket's `cache/` for `file://`, a
    /// local directory uploaded to the bucket afterwards for S3.
    pub local_cache: PathBuf,
    upload_cache: bool,
    rt: tokio::runtime::Runtime,
    /// `bucket` option of the agent; `file://<bucket_root>` unless changed.
    pub store_url: String,
    pub chroot: PathBuf,
    pub profile: PathBuf,
    pub state_dir: PathBuf,
    pub facts_root: PathBuf,
    pub activation_log: PathBuf,
    /// Extra TOML lines for the agent's config file.
    pub extra_config: String,
    /// Extra environment for the agent.
    pub env: Vec<(String, String)>,
    pub expires_in: jiff::SignedDuration,
}

impl World {
    pub fn new(host: &str) -> Self {
        let nix = nix();
        let dir = tempfile::Builder::new()
            .prefix("fleet-agent-test-")
            .tempdir()
            .unwrap();
        let (sk, pk) = nix
            .generate_binary_cache_key("fleet-cache-1", dir.path())
            .unwrap();
        let bucket_root = dir.path().join("bucket");
        let store_url = format!("file://{}", bucket_root.display());
        let facts_root = dir.path().join("root");
        std::fs::create_dir_all(facts_root.join("etc")).unwrap();
        std::fs::write(
            facts_root.join("etc/os-release"),
            "NAME=NixOS\nVERSION_ID=\"24.05\"\n",
        )
        .unwrap();
        Self {
            host: HostName::new(host).unwrap(),
            publisher: SecretKey::generate("publisher-1").unwrap(),
            cache_secret_file: sk,
            cache_public: PublicKey::load(&pk).unwrap(),
            bucket: Bucket::open_url(&store_url).unwrap(),
            local_cache: bucket_root.join("cache"),
            upload_cache: false,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            store_url,
            bucket_root,
            chroot: dir.path().join("chroot"),
            profile: dir.path().join("profiles/system"),
            state_dir: dir.path().join("state"),
            activation_log: dir.path().join("activation.log"),
            facts_root,
            extra_config: String::new(),
            env: Vec::new(),
            expires_in: jiff::SignedDuration::from_hours(24),
            nix,
            dir,
        }
    }

    /// A world whose bucket is `bucket` on an S3 server: the agent gets `store_url`
    /// and `agent_creds` (in its environment), the test reads and writes with
    /// `admin`.
    pub fn s3(host: &str, store_url: &str, admin: Bucket, agent_creds: &S3Credentials) -> Self {
        let mut w = Self::new(host);
        w.local_cache = w.dir.path().join("s3-cache");
        w.upload_cache = true;
        w.bucket = admin;
        w.store_url = store_url.to_owned();
        w.env = fleet_tests::s3::S3Server::credentials_env(agent_creds)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        w
    }

    /// Runs `f` on this world's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The object at `key`, if it exists.
    pub fn read(&self, key: &Key) -> Option<Vec<u8>> {
        match self.block_on(self.bucket.get(key, 1 << 20)) {
            Ok(o) => Some(o.bytes.to_vec()),
            Err(BucketError::NotFound { .. }) => None,
            Err(e) => panic!("{e}"),
        }
    }

    /// The harness's fixture system for this host.
    pub fn system(&self, generation: &str, activation_exit: u8) -> Closure {
        self.nix
            .fixture_system(
                self.host.as_str(),
                generation,
                &FixtureOptions {
                    activation_exit,
                    ..FixtureOptions::salted("agent")
                },
            )
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// This module's held fixture (see the module docs), with a blob of `blob_bytes`
    /// random bytes.
    pub fn held_system(&self, generation: &str, salt: &str, blob_bytes: u64) -> Closure {
        let file = self.dir.path().join("held.nix");
        std::fs::write(&file, HELD_NIX).unwrap();
        let mut cmd = self.nix.command("nix-build");
        cmd.arg("--no-out-link").arg(&file);
        for (k, v) in [
            ("name", self.host.as_str().to_owned()),
            ("generation", generation.to_owned()),
            ("salt", salt.to_owned()),
            ("blobBytes", blob_bytes.to_string()),
        ] {
            cmd.arg("--argstr").arg(k).arg(v);
        }
        let out = self.nix.output(cmd).unwrap_or_else(|e| panic!("{e}"));
        let top = StorePath::new(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
        let paths = self.nix.closure(&top).unwrap();
        Closure { top, paths }
    }

    /// Copies `closure` into the bucket's `cache/` with real `nix copy`, signed by the
    /// trusted cache key.
    pub fn publish_closure(&self, closure: &Closure) {
        self.publish_closure_signed(closure, &self.cache_secret_file);
    }

    /// Like [`World::publish_closure`], signed by the key in `secret_file`.
    pub fn publish_closure_signed(&self, closure: &Closure, secret_file: &Path) {
        self.nix
            .copy_to_file_cache(
                std::slice::from_ref(&closure.top),
                &self.local_cache,
                Some(secret_file),
                Compression::Zstd,
            )
            .unwrap_or_else(|e| panic!("{e:#}"));
        if self.upload_cache {
            self.upload_dir(&self.local_cache.clone(), "cache");
        }
    }

    /// Uploads every file under `dir` to `prefix/<relative path>`.
    fn upload_dir(&self, dir: &Path, prefix: &str) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = format!("{prefix}/{name}");
            if entry.file_type().unwrap().is_dir() {
                self.upload_dir(&entry.path(), &rel);
                continue;
            }
            let key = if let Some(nar) = rel.strip_prefix("cache/nar/") {
                Key::nar(&format!("nar/{nar}")).unwrap()
            } else if rel == "cache/nix-cache-info" {
                Key::cache_info()
            } else {
                let hash = name.strip_suffix(".narinfo").unwrap();
                Key::narinfo(&fleet_core::store_path::StorePathHash::new(hash).unwrap())
            };
            let bytes = std::fs::read(entry.path()).unwrap();
            self.block_on(self.bucket.put(&key, bytes)).unwrap();
        }
    }

    /// A manifest for this host.
    pub fn manifest(&self, sequence: u64, closure: &StorePath) -> Manifest {
        let now = jiff::Timestamp::now();
        Manifest {
            version: 1,
            host: self.host.clone(),
            sequence,
            closure: closure.clone(),
            issued_at: now - jiff::SignedDuration::from_mins(1),
            expires_at: now + self.expires_in,
            cache_keys: vec![self.cache_public.clone()],
            activation: Activation::Switch,
            activate_after: None,
            maintenance_windows: None,
        }
    }

    /// Writes raw bytes as this host's manifest object.
    pub fn put_manifest_bytes(&self, bytes: Vec<u8>) {
        self.block_on(self.bucket.put(&Key::manifest(&self.host), bytes))
            .unwrap();
    }

    /// Signs `m` with the publisher key and writes it.
    pub fn put_manifest(&self, m: &Manifest) {
        self.put_manifest_bytes(m.sign(&self.publisher));
    }

    /// Publishes `closure` and a manifest with `sequence` for it.
    pub fn deploy(&self, sequence: u64, closure: &Closure) {
        self.publish_closure(closure);
        self.put_manifest(&self.manifest(sequence, &closure.top));
    }

    /// Writes the agent's config file and returns its path.
    pub fn config_file(&self) -> PathBuf {
        let path = self.dir.path().join("agent.toml");
        fleet_tests::agent::AgentConfig {
            bucket: self.store_url.clone(),
            host: self.host.to_string(),
            publisher_keys: vec![self.publisher.public().to_nix_string()],
            cache_keys: vec![self.cache_public.to_nix_string()],
            state_dir: self.state_dir.clone(),
            chroot: self.chroot.clone(),
            profile: self.profile.clone(),
            facts_root: Some(self.facts_root.clone()),
            request_timeout: "5s".into(),
            activation_timeout: "60s".into(),
            extra: self.extra_config.clone(),
        }
        .write(&path)
        .unwrap();
        path
    }

    /// The agent binary with Nix's test environment, this world's config, and no
    /// AWS or FLEET variables from the caller.
    pub fn agent_cmd(&self, sub: &str) -> Command {
        let mut cmd = fleet_tests::agent::clean_command(
            &fleet_tests::bin("fleet-agent"),
            &self.dir.path().join("xdg-cache"),
        );
        cmd.arg(sub)
            .arg("--config")
            .arg(self.config_file())
            .env("FLEET_ACTIVATION_LOG", &self.activation_log)
            .env("RUST_LOG", "info,fleet_agent=debug")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `fleet-agent <args…> --state-dir <the world's>` (the local commands
    /// such as `pause` and `resume`, which take no config) and checks it succeeded.
    pub fn agent_local(&self, args: &[&str]) -> std::process::Output {
        let out = fleet_tests::agent::clean_command(
            &fleet_tests::bin("fleet-agent"),
            &self.dir.path().join("xdg-cache"),
        )
        .args(args)
        .arg("--state-dir")
        .arg(&self.state_dir)
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "fleet-agent {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs `fleet-agent once`; returns the exit code and the output.
    pub fn once(&self) -> Run {
        let out = self.agent_cmd("once").output().unwrap();
        Run::from(out)
    }

    /// Runs `fleet-agent once` and checks its exit code.
    pub fn once_expect(&self, code: i32) -> Run {
        let r = self.once();
        assert_eq!(r.code, code, "exit code; stderr:\n{}", r.stderr);
        r
    }

    /// Starts `fleet-agent once` without waiting; its log goes to `spawned.log`.
    pub fn spawn_once(&self, extra_env: &[(&str, &Path)]) -> Background {
        let mut cmd = self.agent_cmd("once");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        Background(
            cmd.stdout(Stdio::null())
                .stderr(std::fs::File::create(self.dir.path().join("spawned.log")).unwrap())
                .spawn()
                .unwrap(),
        )
    }

    /// Starts `fleet-agent run`; its log goes to `daemon.log`.
    pub fn spawn_daemon(&self) -> Background {
        Background(
            self.agent_cmd("run")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(self.daemon_log()).unwrap())
                .spawn()
                .unwrap(),
        )
    }

    /// The log file of [`World::spawn_daemon`].
    pub fn daemon_log(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// The status object in the bucket, parsed as a reader would.
    pub fn status(&self) -> StatusReport {
        self.try_status().expect("a status object")
    }

    /// The status object, if one was written.
    pub fn try_status(&self) -> Option<StatusReport> {
        let key = Key::status(&self.host);
        let bytes = self.read(&key)?;
        Some(StatusReport::parse(&bytes, key.as_str(), &self.host).unwrap())
    }

    /// The event objects in the bucket, oldest first (by name).
    pub fn events(&self) -> Vec<StatusReport> {
        let mut listed = self
            .block_on(self.bucket.list(&KeyPrefix::status_events(&self.host)))
            .unwrap();
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        listed
            .iter()
            .map(|info| {
                let name = info
                    .key
                    .rsplit('/')
                    .next()
                    .and_then(|n| n.strip_suffix(".json"))
                    .unwrap();
                let key =
                    Key::status_event(&self.host, &fleet_core::ObjectName::new(name).unwrap());
                let bytes = self.read(&key).unwrap();
                StatusReport::parse(&bytes, key.as_str(), &self.host).unwrap()
            })
            .collect()
    }

    /// The states of the events, oldest first.
    pub fn event_states(&self) -> Vec<AgentState> {
        self.events().iter().map(|e| e.state).collect()
    }

    /// The calls of `switch-to-configuration` so far.
    pub fn activations(&self) -> Vec<ActivationCall> {
        read_activation_log(&self.activation_log).unwrap()
    }

    /// The tops activated so far, in order.
    pub fn activated(&self) -> Vec<StorePath> {
        self.activations().into_iter().map(|c| c.toplevel).collect()
    }

    /// What the profile points at.
    pub fn profile_target(&self) -> Option<StorePath> {
        fleet_agent::activate::profile_target(&self.profile)
    }

    /// The agent's state file.
    pub fn state(&self) -> fleet_agent::state::State {
        fleet_agent::state::StateStore::load(&self.state_dir.join("state.json")).unwrap()
    }

    /// Waits until `f` holds, up to `limit`; on timeout the panic shows the end of
    /// `daemon.log` and `spawned.log` (the logs of agents started in the background).
    pub fn wait_for(&self, what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            if start.elapsed() >= limit {
                let mut logs = String::new();
                for name in ["daemon.log", "spawned.log"] {
                    if let Ok(t) = std::fs::read_to_string(self.dir.path().join(name)) {
                        let tail: Vec<&str> = t.lines().rev().take(40).collect();
                        logs.push_str(&format!("--- {name} (end)\n"));
                        for l in tail.into_iter().rev() {
                            logs.push_str(l);
                            logs.push('\n');
                        }
                    }
                }
                panic!("timed out after {limit:?} waiting for {what}\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a first deploy of `closure` at `sequence` and checks it is healthy.
    pub fn bring_up(&self, sequence: u64, closure: &Closure) {
        self.deploy(sequence, closure);
        let r = self.once_expect(0);
        assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
        assert_eq!(self.activated(), vec![closure.top.clone()]);
    }
}

/// An agent process started in the background; killed (SIGKILL) when dropped, so a
/// failing test leaves no agent behind.
pub struct Background(pub Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The result of one `fleet-agent once`.
pub struct Run {
    pub code: i32,
    /// The status report it printed.
    pub report: StatusReport,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out.status.code().unwrap_or(-1);
        let report: StatusReport = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "agent printed no status report ({e}), exit {code}; stdout:\n{}\nstderr:\n{stderr}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        Self {
            code,
            report,
            stderr,
        }
    }
}

impl Run {
    /// The reported error kind.
    pub fn kind(&self) -> &str {
        self.report
            .last_error
            .as_ref()
            .map(|e| e.kind.as_str())
            .unwrap_or("")
    }

    /// The reported error message.
    pub fn message(&self) -> &str {
        self.report
            .last_error
            .as_ref()
            .map(|e| e.message.as_str())
            .unwrap_or("")
    }
}
