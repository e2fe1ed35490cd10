//! Real Nix for tests: a [`Nix`] handle that runs Debian's `nix-bin` (Nix 2.8) as
//! root, single-user, offline, and fixture closures built from plain `derivation`s.
//!
//! Every command runs with the same fixed environment ([`NIX_CONFIG`]: no sandbox, no
//! substituters, no build-users group, no signing key of the machine's own; user
//! configuration files ignored; a private `XDG_CACHE_HOME` so Nix's narinfo disk cache
//! never leaks between handles). What works on Nix 2.8 without a sandbox:
//!
//! - builds go into the real `/nix/store` (building into a chroot store such as
//!   `--store /tmp/x` needs the sandbox, so it does not work here);
//! - copies into chroot stores do work: `nix copy --to /tmp/x` (a local store whose
//!   files live under `/tmp/x/nix/store`);
//! - `nix copy --to 'file:///dir?compression=zstd&secret-key=FILE'` writes a signed
//!   binary cache (`nix-cache-info`, `<hash>.narinfo`, `nar/<filehash>.nar.zst`);
//! - `nix copy --from file:///dir --to /chroot --trusted-public-keys 'name:key'`
//!   refuses a path no trusted key signed, with "lacks a valid signature".
//!
//! Fixtures (Nix files in `tests/fixtures/`, compiled into this crate):
//!
//! - [`Nix::fixture_system`]: a small fake NixOS system closure of 5 store paths
//!   (a chain and a diamond of references, a self-reference, relative and absolute
//!   symlinks, executables, empty files and directories, a file with no trailing
//!   newline, a `kernel` symlink, and a `bin/switch-to-configuration` that logs each
//!   call, see [`read_activation_log`]). Generations of one host share 3 paths.
//! - [`Nix::bulk_closure`]: many paths or many bytes, for benchmarks (seconds to build).
//!
//! Fixture store paths are input-addressed: building the same fixture twice, in any
//! test process, gives the same paths (Nix's own locks make concurrent builds safe).
//! Use a distinct `salt` where a test needs paths that no other test touches.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail, ensure};
use fleet_core::StorePath;
use fleet_core::narinfo::Compression;

/// The Nix settings every command runs with (as the `NIX_CONFIG` environment variable).
///
/// `build-users-group =` lets root build without a `nixbld` group; `substituters =`
/// keeps Nix offline; `secret-key-files =` keeps a machine's signing key from signing
/// what fixtures build (tests rely on locally built paths being unsigned).
pub const NIX_CONFIG: &str = "experimental-features = nix-command
sandbox = false
substituters =
build-users-group =
secret-key-files =
";

/// The programs the harness runs.
pub const NIX_TOOLS: [&str; 4] = ["nix", "nix-store", "nix-build", "nix-env"];

const SYSTEM_NIX: &str = include_str!("../fixtures/system.nix");
const BULK_NIX: &str = include_str!("../fixtures/bulk.nix");

/// Name prefixes of the fixture paths every generation of a [`Nix::fixture_system`]
/// shares (as long as the `kernel` label is the same); see [`Closure::named`].
pub const SHARED_FIXTURE_PATHS: [&str; 3] = [
    "fleet-fixture-lib",
    "fleet-fixture-tool",
    "fleet-fixture-kernel",
];

/// Bulk closure preset: about 200 MB in 20 store paths of incompressible data.
pub const BULK_LARGE: BulkOptions = BulkOptions {
    n_paths: 20,
    total_bytes: 200_000_000,
};

/// Bulk closure preset: 1,000 store paths of 100 bytes.
pub const BULK_MANY: BulkOptions = BulkOptions {
    n_paths: 1000,
    total_bytes: 99_900,
};

/// A handle on the machine's Nix; every method runs real Nix commands.
#[derive(Debug)]
pub struct Nix {
    /// Holds the fixture expressions and `XDG_CACHE_HOME`; removed on drop.
    work: tempfile::TempDir,
}

/// A store path and its whole closure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closure {
    /// The top path (a system's toplevel).
    pub top: StorePath,
    /// Every path in the closure of `top`, `top` included, sorted.
    pub paths: Vec<StorePath>,
}

impl Closure {
    /// The path whose name (after the hash) starts with `prefix`, if exactly one does.
    pub fn named(&self, prefix: &str) -> Option<&StorePath> {
        let mut it = self.paths.iter().filter(|p| p.name().starts_with(prefix));
        let first = it.next()?;
        it.next().is_none().then_some(first)
    }
}

/// Options of [`Nix::fixture_system`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixtureOptions {
    /// Appended to every path name (`-<salt>`) so the closure shares no path with
    /// fixtures of another salt; empty for none.
    pub salt: String,
    /// Exit code of `bin/switch-to-configuration`; non-zero makes a generation whose
    /// activation fails (it changes the top path only).
    pub activation_exit: u8,
    /// Label of the kernel path: generations with the same label share the kernel,
    /// as on NixOS when only the configuration changes.
    pub kernel: String,
    /// `switch-to-configuration` also appends its whole environment (`env`) to
    /// `$FLEET_ACTIVATION_LOG.env` (see [`environment_log`]); it changes the top
    /// path only.
    pub record_environment: bool,
}

impl Default for FixtureOptions {
    fn default() -> Self {
        Self {
            salt: String::new(),
            activation_exit: 0,
            kernel: "1".into(),
            record_environment: false,
        }
    }
}

impl FixtureOptions {
    /// Default options with this salt.
    pub fn salted(salt: &str) -> Self {
        Self {
            salt: salt.into(),
            ..Self::default()
        }
    }
}

/// Shape of a [`Nix::bulk_closure`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkOptions {
    /// Store paths in the closure, the top included (at least 2).
    pub n_paths: usize,
    /// Data bytes, split evenly over the `n_paths - 1` paths under the top.
    pub total_bytes: u64,
}

/// One call of a fixture's `bin/switch-to-configuration`, read back from the file
/// named by `FLEET_ACTIVATION_LOG`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivationCall {
    /// The toplevel whose script ran.
    pub toplevel: StorePath,
    /// Its arguments (`switch`, `boot`, `test`, …).
    pub args: Vec<String>,
}

/// Environment variable the fixture's `switch-to-configuration` appends its calls to.
pub const ACTIVATION_LOG_ENV: &str = "FLEET_ACTIVATION_LOG";

/// Where a fixture built with [`FixtureOptions::record_environment`] appends its
/// environment: the activation log's name with `.env` added.
pub fn environment_log(activation_log: &Path) -> PathBuf {
    let mut name = activation_log.as_os_str().to_owned();
    name.push(".env");
    PathBuf::from(name)
}

/// Reads the calls a fixture's `switch-to-configuration` appended to `log`: one line
/// per call, the toplevel then each argument, tab-separated. A missing file means no
/// call.
pub fn read_activation_log(log: &Path) -> Result<Vec<ActivationCall>> {
    let text = match std::fs::read_to_string(log) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e).with_context(|| format!("reading activation log {}", log.display()));
        }
    };
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let mut fields = line.split('\t');
            let top = fields.next().unwrap_or_default();
            let toplevel = StorePath::new(top).with_context(|| {
                format!(
                    "activation log {} line {}: first field",
                    log.display(),
                    i + 1
                )
            })?;
            Ok(ActivationCall {
                toplevel,
                args: fields.map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// Whether `s` may appear in a store path name (Nix's rule).
fn valid_name_part(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b))
}

fn check_label(what: &str, s: &str, may_be_empty: bool) -> Result<()> {
    ensure!(
        may_be_empty || !s.is_empty(),
        "fixture {what} is empty; give a short label such as `1`"
    );
    ensure!(
        valid_name_part(s) && s.len() <= 64,
        "fixture {what} {s:?} must be at most 64 characters of A-Z a-z 0-9 + - . _ ? = \
         (it becomes part of store path names)"
    );
    Ok(())
}

/// The [`NIX_TOOLS`] not found as executable files in the directories of `path_var`
/// (a `PATH` value).
fn missing_tools(path_var: &std::ffi::OsStr) -> Vec<&'static str> {
    use std::os::unix::fs::PermissionsExt;
    let dirs: Vec<PathBuf> = std::env::split_paths(path_var).collect();
    NIX_TOOLS
        .into_iter()
        .filter(|tool| {
            !dirs.iter().any(|d| {
                std::fs::metadata(d.join(tool))
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
        })
        .collect()
}

fn missing_tools_error(missing: &[&str]) -> anyhow::Error {
    anyhow::anyhow!(
        "{} not found on PATH: these tests need real Nix (Debian's nix-bin 2.8); \
         install it with scripts/deps.sh",
        missing.join(", ")
    )
}

/// Renders a command line for messages.
fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.contains(char::is_whitespace) || a.is_empty() {
            let _ = write!(s, " {a:?}");
        } else {
            let _ = write!(s, " {a}");
        }
    }
    s
}

/// Why a Nix command failed: the command line, the exit status and Nix's stderr.
fn failure(cmd: &Command, out: &Output) -> String {
    format!(
        "`{}` failed ({}):\n{}",
        describe(cmd),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

/// A `file://` store URL for `dir`, with query parameters.
fn file_url(dir: &Path, params: &[(&str, &Path)], extra: &[(&str, &str)]) -> Result<String> {
    let check = |p: &Path| -> Result<String> {
        let s = p
            .to_str()
            .with_context(|| format!("path {} is not UTF-8", p.display()))?;
        ensure!(
            p.is_absolute(),
            "path {s} must be absolute to go in a store URL"
        );
        // Nix splits store URLs at these and does not decode them back.
        ensure!(
            !s.contains(['?', '&', '#', '%', '=', ' ']),
            "path {s} holds one of ? & # % = or a space, which Nix's store URL parser \
             cannot carry; use a plain temporary directory"
        );
        Ok(s.to_owned())
    };
    let mut url = format!("file://{}", check(dir)?);
    let mut sep = '?';
    for (k, v) in extra {
        let _ = write!(url, "{sep}{k}={v}");
        sep = '&';
    }
    for (k, p) in params {
        let _ = write!(url, "{sep}{k}={}", check(p)?);
        sep = '&';
    }
    Ok(url)
}

/// Parses Nix's output of one store path per line.
fn parse_paths(stdout: &[u8], what: &str) -> Result<Vec<StorePath>> {
    let text =
        std::str::from_utf8(stdout).with_context(|| format!("{what}: output is not UTF-8"))?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| StorePath::new(l).with_context(|| format!("{what}: output line {l:?}")))
        .collect()
}

impl Nix {
    /// Checks that Nix's programs are on `PATH` and prepares the fixture expressions.
    pub fn new() -> Result<Self> {
        let missing = missing_tools(&std::env::var_os("PATH").unwrap_or_default());
        if !missing.is_empty() {
            return Err(missing_tools_error(&missing));
        }
        let work = tempfile::Builder::new()
            .prefix("fleet-nix-")
            .tempdir()
            .context("creating a temporary directory for the Nix harness")?;
        for (name, text) in [("system.nix", SYSTEM_NIX), ("bulk.nix", BULK_NIX)] {
            let p = work.path().join(name);
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        }
        std::fs::create_dir(work.path().join("cache"))
            .with_context(|| format!("creating {}/cache", work.path().display()))?;
        Ok(Self { work })
    }

    /// A command for `program` (one of [`NIX_TOOLS`]) with the harness's environment;
    /// for `nix` itself, `--offline` comes first.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("NIX_CONFIG", NIX_CONFIG)
            // An empty list: no user nix.conf changes what the tests see.
            .env("NIX_USER_CONF_FILES", "")
            .env("XDG_CACHE_HOME", self.work.path().join("cache"))
            .env_remove("NIX_REMOTE")
            .env_remove("NIX_STORE_DIR")
            .env_remove("NIX_STORE")
            .env_remove("NIX_STATE_DIR")
            .env_remove("NIX_PATH")
            .stdin(Stdio::null());
        if program == "nix" {
            cmd.arg("--offline");
        }
        cmd
    }

    /// Runs `cmd`; `Err` holds the command line, exit status and Nix's stderr.
    pub fn output(&self, mut cmd: Command) -> Result<Output, String> {
        let out = cmd
            .output()
            .map_err(|e| format!("`{}` could not start: {e}", describe(&cmd)))?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(failure(&cmd, &out))
        }
    }

    fn run(&self, cmd: Command) -> Result<Output> {
        self.output(cmd).map_err(anyhow::Error::msg)
    }

    /// `nix --version`, e.g. `nix (Nix) 2.8.0`.
    pub fn version(&self) -> Result<String> {
        let mut cmd = self.command("nix");
        cmd.arg("--version");
        Ok(String::from_utf8_lossy(&self.run(cmd)?.stdout)
            .trim()
            .to_owned())
    }

    /// Builds `attr` of the fixture file `file` with `--argstr`s; returns the one
    /// output path nix-build printed.
    fn build_fixture(
        &self,
        file: &str,
        attr: Option<&str>,
        args: &[(&str, String)],
    ) -> Result<StorePath> {
        let mut cmd = self.command("nix-build");
        cmd.arg("--no-out-link").arg(self.work.path().join(file));
        if let Some(a) = attr {
            cmd.args(["-A", a]);
        }
        for (k, v) in args {
            cmd.arg("--argstr").arg(k).arg(v);
        }
        let out = self.run(cmd)?;
        let mut paths = parse_paths(&out.stdout, "nix-build")?;
        ensure!(
            paths.len() == 1,
            "nix-build of {file} printed {} paths, expected 1: {paths:?}",
            paths.len()
        );
        Ok(paths.remove(0))
    }

    /// Builds a fake NixOS system closure for host `name`, generation `generation`
    /// (see `tests/fixtures/system.nix` for its exact shape). Different generations
    /// share [`SHARED_FIXTURE_PATHS`]; the top path's `bin/switch-to-configuration`
    /// appends a line to `$FLEET_ACTIVATION_LOG` and exits `options.activation_exit`.
    pub fn fixture_system(
        &self,
        name: &str,
        generation: &str,
        options: &FixtureOptions,
    ) -> Result<Closure> {
        check_label("host name", name, false)?;
        check_label("generation label", generation, false)?;
        check_label("salt", &options.salt, true)?;
        check_label("kernel label", &options.kernel, false)?;
        let top = self.build_fixture(
            "system.nix",
            None,
            &[
                ("name", name.to_owned()),
                ("generation", generation.to_owned()),
                ("salt", options.salt.clone()),
                ("activationExit", options.activation_exit.to_string()),
                ("kernel", options.kernel.clone()),
                (
                    "recordEnvironment",
                    if options.record_environment { "1" } else { "0" }.to_owned(),
                ),
            ],
        )?;
        let paths = self.closure(&top)?;
        Ok(Closure { top, paths })
    }

    /// Builds a closure of `opts.n_paths` store paths: a top holding `index` (the list
    /// of the others) and `n_paths - 1` paths each holding `data`, an even share of
    /// `opts.total_bytes` of incompressible bytes (see `tests/fixtures/bulk.nix`: they
    /// are deterministic only where the builder finds `openssl`). One build, however
    /// many paths: [`BULK_MANY`] takes about 2 s, [`BULK_LARGE`] under 1 s here.
    pub fn bulk_closure(&self, opts: BulkOptions, salt: &str) -> Result<Closure> {
        ensure!(
            opts.n_paths >= 2,
            "a bulk closure needs at least 2 paths (a top and one data path), not {}",
            opts.n_paths
        );
        check_label("salt", salt, true)?;
        let per_path = opts.total_bytes / (opts.n_paths as u64 - 1);
        let top = self.build_fixture(
            "bulk.nix",
            Some("out"),
            &[
                ("paths", opts.n_paths.to_string()),
                ("bytesPerPath", per_path.to_string()),
                ("salt", salt.to_owned()),
            ],
        )?;
        let paths = self.closure(&top)?;
        ensure!(
            paths.len() == opts.n_paths,
            "bulk closure {top} has {} paths, expected {}",
            paths.len(),
            opts.n_paths
        );
        Ok(Closure { top, paths })
    }

    /// The NAR serialisation of `path` (`nix-store --dump`).
    pub fn dump(&self, path: &StorePath) -> Result<Vec<u8>> {
        let mut cmd = self.command("nix-store");
        cmd.arg("--dump").arg(path.to_string());
        Ok(self.run(cmd)?.stdout)
    }

    /// The closure of `path` in the real store (`nix-store -qR`), sorted.
    pub fn closure(&self, path: &StorePath) -> Result<Vec<StorePath>> {
        let mut cmd = self.command("nix-store");
        cmd.arg("-qR").arg(path.to_string());
        let mut paths = parse_paths(&self.run(cmd)?.stdout, "nix-store -qR")?;
        paths.sort();
        Ok(paths)
    }

    /// `nix path-info --json` of `paths` in `store` (a chroot directory or store URL;
    /// `None` for the real store): an array of objects with `path`, `narHash` (SRI),
    /// `narSize`, `references` (full paths), `signatures`, …
    pub fn path_info_json(
        &self,
        store: Option<&str>,
        paths: &[StorePath],
    ) -> Result<serde_json::Value> {
        let mut cmd = self.command("nix");
        cmd.args(["path-info", "--json"]);
        if let Some(s) = store {
            cmd.args(["--store", s]);
        }
        cmd.args(paths.iter().map(|p| p.to_string()));
        let out = self.run(cmd)?;
        serde_json::from_slice(&out.stdout).context("parsing `nix path-info --json` output")
    }

    /// Copies `paths` and their closures from the real store into a binary cache in
    /// `dir` (`nix copy --to file://dir?compression=…&secret-key=…`), signed with
    /// `secret_key_file` if given. Returns the cache's store URL (no parameters).
    pub fn copy_to_file_cache(
        &self,
        paths: &[StorePath],
        dir: &Path,
        secret_key_file: Option<&Path>,
        compression: Compression,
    ) -> Result<String> {
        let keys: Vec<(&str, &Path)> = secret_key_file
            .map(|k| ("secret-key", k))
            .into_iter()
            .collect();
        let url = file_url(dir, &keys, &[("compression", compression.as_str())])?;
        let mut cmd = self.command("nix");
        cmd.args(["copy", "--to", &url]);
        cmd.args(paths.iter().map(|p| p.to_string()));
        self.run(cmd)?;
        file_url(dir, &[], &[])
    }

    /// Copies `paths` with their closures from the store at `cache_url` into the chroot
    /// store `to_store_dir`, trusting only `trusted_keys` (space-separated
    /// `name:base64`). `Err` holds Nix's stderr (e.g. "… lacks a valid signature").
    pub fn copy_from_cache(
        &self,
        cache_url: &str,
        to_store_dir: &Path,
        paths: &[StorePath],
        trusted_keys: &str,
    ) -> Result<(), String> {
        let mut cmd = self.command("nix");
        cmd.args(["copy", "--from", cache_url, "--to"])
            .arg(to_store_dir)
            .args(["--trusted-public-keys", trusted_keys]);
        cmd.args(paths.iter().map(|p| p.to_string()));
        self.output(cmd).map(drop)
    }

    /// Checks `paths` in `store` (a chroot directory or store URL): contents match
    /// their NAR hashes and each has at least `sigs_needed` signatures by
    /// `trusted_keys` (`nix store verify --sigs-needed`; 0 checks contents only,
    /// `--no-trust`). `Err` holds Nix's stderr.
    pub fn verify_store(
        &self,
        store: &str,
        paths: &[StorePath],
        trusted_keys: &str,
        sigs_needed: u32,
    ) -> Result<(), String> {
        let mut cmd = self.command("nix");
        cmd.args(["store", "verify", "--store", store]);
        if sigs_needed == 0 {
            // Contents only: Nix counts a path with no signature as untrusted even
            // when 0 are needed.
            cmd.arg("--no-trust");
        } else {
            cmd.args(["--sigs-needed", &sigs_needed.to_string()])
                .args(["--trusted-public-keys", trusted_keys]);
        }
        cmd.args(paths.iter().map(|p| p.to_string()));
        self.output(cmd).map(drop)
    }

    /// Adds signatures by `key_file` to `paths` in `store` (`None`: the real store;
    /// prefer a chroot store or cache, since signatures in the real store outlive the
    /// test) with `nix store sign`.
    pub fn store_sign(
        &self,
        store: Option<&str>,
        paths: &[StorePath],
        key_file: &Path,
    ) -> Result<()> {
        let mut cmd = self.command("nix");
        cmd.args(["store", "sign", "--key-file"]).arg(key_file);
        if let Some(s) = store {
            cmd.args(["--store", s]);
        }
        cmd.args(paths.iter().map(|p| p.to_string()));
        self.run(cmd).map(drop)
    }

    /// Makes a key pair with `nix-store --generate-binary-cache-key name` in `dir`;
    /// returns the secret and public key files (`<name>.secret`, `<name>.public`).
    pub fn generate_binary_cache_key(&self, name: &str, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        let sk = dir.join(format!("{name}.secret"));
        let pk = dir.join(format!("{name}.public"));
        let mut cmd = self.command("nix-store");
        cmd.arg("--generate-binary-cache-key")
            .arg(name)
            .arg(&sk)
            .arg(&pk);
        self.run(cmd)?;
        Ok((sk, pk))
    }

    /// Whether `path` is valid (registered) in the chroot store `store_dir` (Nix
    /// creates an empty store there if there is none).
    pub fn is_valid_in(&self, store_dir: &Path, path: &StorePath) -> Result<bool> {
        let mut cmd = self.command("nix-store");
        cmd.arg("--store")
            .arg(store_dir)
            .arg("--check-validity")
            .arg(path.to_string());
        let out = cmd
            .output()
            .with_context(|| format!("`{}` could not start", describe(&cmd)))?;
        if out.status.success() {
            return Ok(true);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("is not valid") {
            Ok(false)
        } else {
            bail!("{}", failure(&cmd, &out))
        }
    }
}

#[cfg(test)]
mod tests {
    //! Checks that the fixtures have the shape other tests rely on, with real Nix.

    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const SALT: &str = "harness-selftest";

    fn nix() -> Nix {
        Nix::new().expect("real Nix")
    }

    fn in_store(p: &StorePath, rel: &str) -> PathBuf {
        Path::new(&p.to_string()).join(rel)
    }

    fn references(nix: &Nix, p: &StorePath) -> Vec<String> {
        let info = nix.path_info_json(None, std::slice::from_ref(p)).unwrap();
        let mut refs: Vec<String> = info[0]["references"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect();
        refs.sort();
        refs
    }

    #[test]
    fn system_fixture_has_the_promised_shape() {
        let nix = nix();
        let g1 = nix
            .fixture_system("web", "1", &FixtureOptions::salted(SALT))
            .unwrap();
        let g2 = nix
            .fixture_system("web", "2", &FixtureOptions::salted(SALT))
            .unwrap();
        assert_eq!(g1.paths.len(), 5, "{:?}", g1.paths);
        assert!(g1.paths.contains(&g1.top));
        assert!(g1.paths.is_sorted());
        assert_eq!(g1.top.name(), format!("nixos-system-web-1-{SALT}"));

        // Generations share exactly the library, tool and kernel paths.
        let shared: Vec<&StorePath> = g1.paths.iter().filter(|p| g2.paths.contains(p)).collect();
        let mut shared_names: Vec<&str> = shared.iter().map(|p| p.name()).collect();
        shared_names.sort();
        assert_eq!(
            shared_names,
            [
                format!("fleet-fixture-kernel-1-{SALT}"),
                format!("fleet-fixture-lib-{SALT}"),
                format!("fleet-fixture-tool-{SALT}"),
            ]
        );
        for prefix in SHARED_FIXTURE_PATHS {
            assert!(
                shared.iter().any(|p| p.name().starts_with(prefix)),
                "{prefix}"
            );
        }

        // References: a chain (etc -> tool -> lib), a diamond (top -> etc/tool -> lib)
        // and the top's reference to itself.
        let lib = g1.named("fleet-fixture-lib").unwrap();
        let tool = g1.named("fleet-fixture-tool").unwrap();
        let etc = g1.named("fleet-fixture-etc").unwrap();
        let kernel = g1.named("fleet-fixture-kernel").unwrap();
        let s = |p: &StorePath| p.to_string();
        assert_eq!(references(&nix, lib), Vec::<String>::new());
        assert_eq!(references(&nix, tool), vec![s(lib)]);
        let mut etc_refs = vec![s(lib), s(tool)];
        etc_refs.sort();
        assert_eq!(references(&nix, etc), etc_refs);
        let mut top_refs = vec![s(&g1.top), s(etc), s(tool), s(kernel)];
        top_refs.sort();
        assert_eq!(references(&nix, &g1.top), top_refs);

        // File shapes.
        let share = in_store(lib, "share");
        assert_eq!(
            std::fs::read(share.join("no-newline")).unwrap(),
            b"this file has no trailing newline"
        );
        assert_eq!(std::fs::metadata(share.join("empty")).unwrap().len(), 0);
        assert_eq!(
            std::fs::read_dir(share.join("empty-dir")).unwrap().count(),
            0
        );
        assert_eq!(
            std::fs::read_link(share.join("data-link")).unwrap(),
            Path::new("data.txt")
        );
        assert!(
            std::fs::metadata(share.join("doc/a/b/c/deep.txt"))
                .unwrap()
                .is_file()
        );
        assert_eq!(
            std::fs::read_link(in_store(tool, "data")).unwrap(),
            in_store(lib, "share/data.txt")
        );
        assert_eq!(
            std::fs::read_link(in_store(&g1.top, "kernel")).unwrap(),
            in_store(kernel, "bzImage")
        );
        for exe in [
            in_store(tool, "bin/fixture-tool"),
            in_store(&g1.top, "bin/switch-to-configuration"),
        ] {
            let mode = std::fs::metadata(&exe).unwrap().permissions().mode();
            assert_eq!(mode & 0o111, 0o111, "{}", exe.display());
        }
        let data = std::fs::metadata(share.join("data.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(data & 0o111, 0);
    }

    #[test]
    fn switch_to_configuration_logs_and_exits_as_asked() {
        let nix = nix();
        let ok = nix
            .fixture_system("db", "1", &FixtureOptions::salted(SALT))
            .unwrap();
        let bad_opts = FixtureOptions {
            activation_exit: 3,
            ..FixtureOptions::salted(SALT)
        };
        let bad = nix.fixture_system("db", "1", &bad_opts).unwrap();
        // Only the top differs: a failing generation shares everything else.
        assert_ne!(ok.top, bad.top);
        let diff: Vec<_> = bad.paths.iter().filter(|p| !ok.paths.contains(p)).collect();
        assert_eq!(diff, vec![&bad.top]);

        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("activation.log");
        assert!(read_activation_log(&log).unwrap().is_empty());
        for (closure, args, code) in [
            (&ok, &["switch"][..], 0),
            (&bad, &["test", "two words"][..], 3),
        ] {
            let status = Command::new(in_store(&closure.top, "bin/switch-to-configuration"))
                .args(args)
                .env(ACTIVATION_LOG_ENV, &log)
                .status()
                .unwrap();
            assert_eq!(status.code(), Some(code));
        }
        // Without the variable it logs nothing and still exits as configured.
        let status = Command::new(in_store(&ok.top, "bin/switch-to-configuration"))
            .arg("boot")
            .env_remove(ACTIVATION_LOG_ENV)
            .status()
            .unwrap();
        assert!(status.success());
        let calls = read_activation_log(&log).unwrap();
        assert_eq!(
            calls,
            vec![
                ActivationCall {
                    toplevel: ok.top.clone(),
                    args: vec!["switch".into()]
                },
                ActivationCall {
                    toplevel: bad.top.clone(),
                    args: vec!["test".into(), "two words".into()]
                },
            ]
        );

        // A new kernel label gives a new kernel path.
        let k2 = nix
            .fixture_system(
                "db",
                "1",
                &FixtureOptions {
                    kernel: "2".into(),
                    ..FixtureOptions::salted(SALT)
                },
            )
            .unwrap();
        assert_ne!(
            k2.named("fleet-fixture-kernel"),
            ok.named("fleet-fixture-kernel")
        );
    }

    #[test]
    fn bulk_closure_has_the_asked_size() {
        let nix = nix();
        let c = nix
            .bulk_closure(
                BulkOptions {
                    n_paths: 6,
                    total_bytes: 5 * 4096,
                },
                SALT,
            )
            .unwrap();
        assert_eq!(c.paths.len(), 6);
        let index = std::fs::read_to_string(in_store(&c.top, "index")).unwrap();
        let listed: Vec<&str> = index.lines().collect();
        assert_eq!(listed.len(), 5);
        let mut datas = Vec::new();
        for l in listed {
            let p = StorePath::new(l).unwrap();
            assert!(c.paths.contains(&p));
            let d = std::fs::read(in_store(&p, "data")).unwrap();
            assert_eq!(d.len(), 4096);
            datas.push(d);
        }
        datas.sort();
        datas.dedup();
        assert_eq!(datas.len(), 5, "data pieces must all differ");
        assert!(
            nix.bulk_closure(
                BulkOptions {
                    n_paths: 1,
                    total_bytes: 1
                },
                SALT
            )
            .is_err()
        );
    }

    #[test]
    fn bad_labels_and_missing_tools_are_explained() {
        let nix = nix();
        let err = nix
            .fixture_system("a b", "1", &FixtureOptions::default())
            .unwrap_err();
        assert!(err.to_string().contains("host name \"a b\""), "{err}");
        let err = nix
            .fixture_system("a", "", &FixtureOptions::default())
            .unwrap_err();
        assert!(
            err.to_string().contains("generation label is empty"),
            "{err}"
        );

        assert!(nix.version().unwrap().starts_with("nix (Nix) "));
        let empty = tempfile::tempdir().unwrap();
        let missing = missing_tools(empty.path().as_os_str());
        assert_eq!(missing, NIX_TOOLS);
        let msg = missing_tools_error(&missing).to_string();
        assert!(
            msg.contains("nix-build") && msg.contains("scripts/deps.sh"),
            "{msg}"
        );
        let here = std::env::var_os("PATH").unwrap();
        assert!(missing_tools(&here).is_empty());
    }

    #[test]
    fn store_urls_refuse_what_nix_cannot_parse() {
        assert_eq!(
            file_url(
                Path::new("/c"),
                &[("secret-key", Path::new("/k"))],
                &[("compression", "zstd")]
            )
            .unwrap(),
            "file:///c?compression=zstd&secret-key=/k"
        );
        assert!(file_url(Path::new("/c?x"), &[], &[]).is_err());
        assert!(file_url(Path::new("rel"), &[], &[]).is_err());
    }
}
