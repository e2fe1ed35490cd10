//! Calls to the local `nix` command-line tools, shared by the publisher (reading the
//! CI machine's store) and the agent (importing into the host's store and switching
//! profiles).
//!
//! fleet never links against Nix: it runs `nix-store`, `nix` and `nix-env`, so it
//! works with whatever Nix the host has (2.8 or newer) and Nix keeps doing its own
//! checks (signatures on import, store locking, profile generations). Each call
//! passes `--extra-experimental-features nix-command` where needed and inherits the
//! rest of Nix's configuration (`nix.conf`, `NIX_CONFIG`).
//!
//! `store` selects the Nix store (`--store`): `None` for the default, or a local
//! chroot store such as `/var/tmp/chroot` (tests), or any store URI.

use std::path::Path;
use std::process::Stdio;

use serde::Deserialize;

use crate::keys::TrustedKeys;
use crate::narinfo::Sha256Hash;
use crate::store_path::StorePath;

/// A local Nix installation and the store it operates on.
#[derive(Clone, Debug, Default)]
pub struct Nix {
    /// `--store` argument; `None` for Nix's default store.
    pub store: Option<String>,
}

/// A Nix command failed.
#[derive(Debug, thiserror::Error)]
pub enum NixError {
    /// The program could not be started.
    #[error("cannot run `{program}`: {error} (is Nix installed and on PATH?)")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error (part of the message, so not also a `source`).
        error: std::io::Error,
    },
    /// The program ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line (program and arguments).
        command: String,
        /// Its exit status.
        status: String,
        /// The end of its standard error.
        stderr: String,
    },
    /// The program's output could not be understood.
    #[error("`{command}` printed output fleet cannot read: {why}")]
    Output {
        /// The command line.
        command: String,
        /// What is wrong.
        why: String,
    },
}

/// What `nix path-info --json` says about a valid path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathInfo {
    /// The path.
    pub path: StorePath,
    /// SHA-256 of its NAR serialisation.
    pub nar_hash: Sha256Hash,
    /// Size of its NAR serialisation.
    pub nar_size: u64,
    /// Paths it refers to.
    pub references: Vec<StorePath>,
    /// The derivation that built it, if known.
    pub deriver: Option<StorePath>,
    /// Signatures the store holds for it, as `name:base64`.
    pub signatures: Vec<String>,
    /// Content address, if any.
    pub ca: Option<String>,
}

/// One path's entry in `nix path-info --json`. Nix 2.18 and older print an array of
/// these, each naming its `path`; 2.19 and newer print an object keyed by path
/// (`null` for an invalid one), without `path` inside.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPathInfo {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    valid: Option<bool>,
    nar_hash: Option<String>,
    nar_size: Option<u64>,
    #[serde(default)]
    references: Vec<String>,
    deriver: Option<String>,
    #[serde(default)]
    signatures: Vec<String>,
    ca: Option<String>,
}

/// Keeps the last `max` bytes (trimmed, cut on a character boundary) of a
/// command's output for messages: the end is where tools say what went wrong.
pub fn tail(output: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(output);
    let s = s.trim();
    if s.len() <= max {
        return s.to_owned();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

impl Nix {
    /// Nix on its default store.
    pub fn default_store() -> Self {
        Self { store: None }
    }

    /// Nix on the store at `store` (a path or a store URI).
    pub fn with_store(store: impl Into<String>) -> Self {
        Self {
            store: Some(store.into()),
        }
    }

    async fn run(&self, program: &str, args: &[String]) -> Result<Vec<u8>, NixError> {
        self.run_with_input(program, args, None).await
    }

    /// [`Nix::run`], writing `input` to the program's standard input.
    async fn run_with_input(
        &self,
        program: &str,
        args: &[String],
        input: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, NixError> {
        let mut all: Vec<String> = Vec::new();
        if program == "nix" {
            all.extend(["--extra-experimental-features".into(), "nix-command".into()]);
        }
        if let Some(s) = &self.store {
            all.extend(["--store".into(), s.clone()]);
        }
        all.extend(args.iter().cloned());
        let command = format!("{program} {}", all.join(" "));
        let spawn_err = |error| NixError::Spawn {
            program: program.into(),
            error,
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&all).kill_on_drop(true);
        let out = match input {
            None => cmd.stdin(Stdio::null()).output().await.map_err(spawn_err)?,
            Some(input) => {
                let mut child = cmd
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(spawn_err)?;
                let mut stdin = child.stdin.take().expect("piped");
                // Written while the output is read, so a program that answers before
                // it has read everything cannot deadlock against a full pipe. A
                // write failure shows up as the program's own error.
                let write = async move {
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut stdin, &input).await;
                };
                let (out, ()) = tokio::join!(child.wait_with_output(), write);
                out.map_err(spawn_err)?
            }
        };
        if !out.status.success() {
            return Err(NixError::Failed {
                command: truncate_command(&command),
                status: out.status.to_string(),
                stderr: tail(&out.stderr, 2000),
            });
        }
        Ok(out.stdout)
    }

    fn parse_paths(command: &str, out: &[u8]) -> Result<Vec<StorePath>, NixError> {
        String::from_utf8_lossy(out)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                StorePath::new(l).map_err(|e| NixError::Output {
                    command: command.into(),
                    why: e.to_string(),
                })
            })
            .collect()
    }

    /// The closure of `paths` (every path they reference, transitively, and
    /// themselves), sorted.
    pub async fn closure(&self, paths: &[StorePath]) -> Result<Vec<StorePath>, NixError> {
        let mut args = vec!["--query".into(), "--requisites".into()];
        args.extend(paths.iter().map(|p| p.to_string()));
        let out = self.run("nix-store", &args).await?;
        let mut v = Self::parse_paths("nix-store --query --requisites", &out)?;
        v.sort();
        v.dedup();
        Ok(v)
    }

    /// Which of `paths` are not valid in the store.
    pub async fn invalid_paths(&self, paths: &[StorePath]) -> Result<Vec<StorePath>, NixError> {
        if paths.is_empty() {
            return Ok(vec![]);
        }
        let mut args = vec!["--check-validity".into(), "--print-invalid".into()];
        args.extend(paths.iter().map(|p| p.to_string()));
        let out = self.run("nix-store", &args).await?;
        Self::parse_paths("nix-store --check-validity", &out)
    }

    /// `nix path-info --json` for `paths`; an invalid path is an error naming it.
    pub async fn path_info(&self, paths: &[StorePath]) -> Result<Vec<PathInfo>, NixError> {
        self.path_info_json(&[], paths).await
    }

    /// What [`Nix::path_info`] says about every path of the closure of `roots`
    /// (`nix path-info --json --recursive`), sorted by path: the closure and its
    /// metadata from one Nix process, where [`Nix::closure`] and then
    /// [`Nix::path_info`] take two. A root that is not valid makes it fail.
    pub async fn closure_info(&self, roots: &[StorePath]) -> Result<Vec<PathInfo>, NixError> {
        let mut infos = self.path_info_json(&["--recursive"], roots).await?;
        infos.sort_by(|a, b| a.path.cmp(&b.path));
        infos.dedup_by(|a, b| a.path == b.path);
        Ok(infos)
    }

    /// `nix path-info --json <flags> <paths>`, parsed (nothing to ask: no process).
    async fn path_info_json(
        &self,
        flags: &[&str],
        paths: &[StorePath],
    ) -> Result<Vec<PathInfo>, NixError> {
        if paths.is_empty() {
            return Ok(vec![]);
        }
        let mut args: Vec<String> = vec!["path-info".into(), "--json".into()];
        args.extend(flags.iter().map(|f| f.to_string()));
        let command = format!("nix {}", args.join(" "));
        args.extend(paths.iter().map(|p| p.to_string()));
        let out = self.run("nix", &args).await?;
        parse_path_infos(&command, &out)
    }

    /// Imports exactly `paths` from the binary cache at `cache_url` into this store,
    /// accepting only signatures by `trusted` (Nix checks them again).
    ///
    /// `--no-recursive`: the cache may hold only the paths this store lacks (the
    /// agent's staging cache does), and a recursive copy would ask it for the
    /// narinfos of paths the store already has, and fail. Nix still refuses a path
    /// whose references are not valid, so `paths` must include every missing one.
    pub async fn copy_from(
        &self,
        cache_url: &str,
        paths: &[StorePath],
        trusted: &TrustedKeys,
    ) -> Result<(), NixError> {
        self.copy_from_with(cache_url, paths, trusted, &[]).await
    }

    /// [`Nix::copy_from`] with more `--option NAME VALUE` pairs. They come before the
    /// trust options, and Nix takes the last of a repeated option, so they cannot
    /// loosen `trusted-public-keys` or `require-sigs`.
    pub async fn copy_from_with(
        &self,
        cache_url: &str,
        paths: &[StorePath],
        trusted: &TrustedKeys,
        options: &[(&str, &str)],
    ) -> Result<(), NixError> {
        if paths.is_empty() {
            return Ok(());
        }
        let to = self.store.clone().unwrap_or_else(|| "auto".into());
        let mut args = vec![
            "copy".into(),
            "--no-recursive".into(),
            "--from".into(),
            cache_url.into(),
            "--to".into(),
            to,
        ];
        for (name, value) in options {
            args.extend(["--option".into(), (*name).into(), (*value).into()]);
        }
        args.extend([
            "--option".into(),
            "trusted-public-keys".into(),
            trusted.to_nix_option(),
            "--option".into(),
            "require-sigs".into(),
            "true".into(),
        ]);
        args.extend(paths.iter().map(|p| p.to_string()));
        // `--store` would name the source for `nix copy`; the target is `--to`.
        Nix { store: None }.run("nix", &args).await.map(|_| ())
    }

    /// The directory that holds this store's paths on this machine: `/nix/store` for
    /// the default store, `<root>/nix/store` for a local chroot store given as a path
    /// (`--store /var/tmp/chroot`). `None` for any other store URI, whose files fleet
    /// cannot write itself.
    pub fn real_store_dir(&self) -> Option<std::path::PathBuf> {
        match self.store.as_deref() {
            None => Some("/nix/store".into()),
            Some(s) if s.starts_with('/') => Some(Path::new(s).join("nix/store")),
            Some(_) => None,
        }
    }

    /// Registers `paths`, already written under [`Nix::real_store_dir`] in Nix's
    /// form (modes, modification time 1), as valid with the given `NarHash`, `NarSize`,
    /// references and deriver: `nix-store --load-db`, as NixOS's installer images do
    /// with `nix-path-registration`. Nix neither hashes nor checks the files: the
    /// caller must have verified them. Signatures and content addresses are not
    /// recorded (`--load-db` reads neither). Nix orders the set itself and registers
    /// it in one transaction; references outside the set must already be valid.
    pub async fn register_valid(&self, paths: &[PathInfo]) -> Result<(), NixError> {
        if paths.is_empty() {
            return Ok(());
        }
        let mut input = String::new();
        for p in paths {
            let deriver = p
                .deriver
                .as_ref()
                .map(|d| d.to_string())
                .unwrap_or_default();
            input.push_str(&format!(
                "{}\nsha256:{}\n{}\n{}\n{}\n",
                p.path,
                p.nar_hash.to_base32(),
                p.nar_size,
                deriver,
                p.references.len()
            ));
            for r in &p.references {
                input.push_str(&format!("{r}\n"));
            }
        }
        self.run_with_input("nix-store", &["--load-db".into()], Some(input.into_bytes()))
            .await
            .map(|_| ())
    }

    /// Points `profile` at `path` as a new generation (`nix-env -p PROFILE --set PATH`).
    pub async fn set_profile(&self, profile: &Path, path: &StorePath) -> Result<(), NixError> {
        self.run(
            "nix-env",
            &[
                "--profile".into(),
                profile.display().to_string(),
                "--set".into(),
                path.to_string(),
            ],
        )
        .await
        .map(|_| ())
    }
}

fn truncate_command(c: &str) -> String {
    if c.len() <= 400 {
        c.to_owned()
    } else {
        let mut end = 400;
        while !c.is_char_boundary(end) {
            end -= 1;
        }
        format!("{} …", &c[..end])
    }
}

/// Parses `nix path-info --json` output in either of Nix's formats (see
/// [`RawPathInfo`]); an invalid path is an error naming it.
fn parse_path_infos(command: &str, out: &[u8]) -> Result<Vec<PathInfo>, NixError> {
    let bad = |why: String| NixError::Output {
        command: command.into(),
        why,
    };
    let first = out.iter().find(|b| !b.is_ascii_whitespace());
    let raw: Vec<(String, Option<RawPathInfo>)> = if first == Some(&b'{') {
        serde_json::from_slice::<std::collections::BTreeMap<String, Option<RawPathInfo>>>(out)
            .map_err(|e| bad(e.to_string()))?
            .into_iter()
            .collect()
    } else {
        serde_json::from_slice::<Vec<RawPathInfo>>(out)
            .map_err(|e| bad(e.to_string()))?
            .into_iter()
            .map(|mut r| (r.path.take().unwrap_or_default(), Some(r)))
            .collect()
    };
    raw.into_iter()
        .map(|(key, r)| {
            let r = match r {
                Some(r) if r.valid != Some(false) => r,
                _ => return Err(bad(format!("{key} is not valid in the store"))),
            };
            let path = StorePath::new(&key).map_err(|e| bad(e.to_string()))?;
            let hash = r.nar_hash.unwrap_or_default();
            Ok(PathInfo {
                nar_hash: Sha256Hash::parse(&hash)
                    .ok_or_else(|| bad(format!("narHash {hash:?} of {path}")))?,
                nar_size: r
                    .nar_size
                    .ok_or_else(|| bad(format!("no narSize for {path}")))?,
                references: r
                    .references
                    .iter()
                    .map(|p| StorePath::new(p).map_err(|e| bad(e.to_string())))
                    .collect::<Result<_, _>>()?,
                deriver: r.deriver.as_deref().and_then(|d| StorePath::new(d).ok()),
                signatures: r.signatures,
                ca: r.ca,
                path,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_keep_the_end() {
        assert_eq!(tail(b"  short\n", 100), "short");
        let t = tail("é".repeat(100).as_bytes(), 11);
        assert!(t.starts_with('…') && t.len() <= 15, "{t}");
    }

    const A: &str = "/nix/store/7h2ykxm6r3gqcd5dbvx3lg6dqp5f3mz7-a";
    const B: &str = "/nix/store/0c9gvxi7jr29g4f3wz2dajrd7h1bzh6n-b";
    const HASH: &str = "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s";

    #[test]
    fn path_info_json_is_read_in_the_array_and_the_object_format() {
        // Nix 2.18 and older: an array of objects naming their path.
        let old = format!(
            r#"[{{"path":"{A}","narHash":"{HASH}","narSize":120,"references":["{B}"],"signatures":["k:s"],"valid":true}},
               {{"path":"{B}","narHash":"{HASH}","narSize":96,"references":[]}}]"#
        );
        // Nix 2.19 and newer: an object keyed by path.
        let new = format!(
            r#"{{"{A}":{{"narHash":"{HASH}","narSize":120,"references":["{B}"],"signatures":["k:s"]}},
                "{B}":{{"narHash":"{HASH}","narSize":96,"references":[]}}}}"#
        );
        for out in [old, new] {
            let mut v = parse_path_infos("nix path-info --json", out.as_bytes()).unwrap();
            v.sort_by(|a, b| a.path.cmp(&b.path));
            let paths: Vec<String> = v.iter().map(|i| i.path.to_string()).collect();
            assert_eq!(paths, [B, A], "{out}");
            let a = &v[1];
            assert_eq!(a.nar_size, 120);
            assert_eq!(a.references, [StorePath::new(B).unwrap()]);
            assert_eq!(a.signatures, ["k:s"]);
            assert_eq!(a.nar_hash, Sha256Hash::parse(HASH).unwrap());
        }
    }

    #[test]
    fn an_invalid_path_in_path_info_json_is_an_error_naming_it() {
        let old = format!(r#"[{{"path":"{A}","valid":false}}]"#);
        let new = format!(r#"{{"{A}":null}}"#);
        for out in [old, new] {
            let e = parse_path_infos("nix path-info --json", out.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(&format!("{A} is not valid")), "{e}");
        }
        let e = parse_path_infos("nix path-info --json", b"\"what\"").unwrap_err();
        assert!(e.to_string().contains("nix path-info --json"), "{e}");
    }

    #[tokio::test]
    async fn missing_program_is_a_clear_error() {
        let n = Nix::default_store();
        let e = n.run("fleet-no-such-program", &[]).await.unwrap_err();
        assert!(e.to_string().contains("is Nix installed"), "{e}");
    }
}
