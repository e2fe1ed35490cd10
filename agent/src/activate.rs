//! Activation: point the system profile at a closure and run the closure's own
//! `bin/switch-to-configuration`.
//!
//! - The profile is set with `nix-env --profile PROFILE --set CLOSURE` (through
//!   [`fleet_core::nixcli::Nix`], so `--store` selects a chroot store in tests). Mode
//!   `test` leaves the profile alone, as `nixos-rebuild test` does.
//! - The script runs as `<store-root><closure>/bin/switch-to-configuration MODE`, with
//!   stdin closed, only the allow-listed environment of [`crate::childenv`] (no
//!   credentials, no systemd notification variables), and a timeout; its output goes
//!   to the log, and the end of its stderr into the error message.
//! - The closure path comes only from a verified manifest (or from the agent's own
//!   state), and it is a parsed [`StorePath`], so the script path cannot leave
//!   `<store-root>/nix/store/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fleet_core::nixcli::Nix;
use fleet_core::{Activation, StorePath};
use tokio::io::AsyncReadExt;

use crate::childenv::ChildEnv;

/// Why an activation step failed.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `nix-env --set` failed.
    #[error("setting profile {profile} to {closure} failed: {why}")]
    Profile {
        /// The profile.
        profile: PathBuf,
        /// The closure.
        closure: StorePath,
        /// Nix's error.
        why: String,
    },
    /// The closure has no `bin/switch-to-configuration`.
    #[error(
        "{script} does not exist or is not a file: {closure} is not a NixOS system closure (or is not in the store under {store_root})"
    )]
    NoScript {
        /// The script path.
        script: PathBuf,
        /// The closure.
        closure: StorePath,
        /// The store root.
        store_root: PathBuf,
    },
    /// The script could not be started.
    #[error("cannot start {script}: {source}")]
    Spawn {
        /// The script path.
        script: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The script failed.
    #[error("{script} {mode} exited with {status}{stderr}")]
    Failed {
        /// The script path.
        script: PathBuf,
        /// The mode.
        mode: Activation,
        /// Exit status.
        status: String,
        /// `: ` and the end of its stderr, or empty.
        stderr: String,
    },
    /// The script ran past the timeout and was killed.
    #[error("{script} {mode} did not finish within {timeout:?} and was killed")]
    Timeout {
        /// The script path.
        script: PathBuf,
        /// The mode.
        mode: Activation,
        /// The bound.
        timeout: Duration,
    },
}

/// Where a closure's files are on this machine.
pub fn real_path(store_root: &Path, closure: &StorePath) -> PathBuf {
    let s = closure.to_string();
    store_root.join(s.trim_start_matches('/'))
}

/// Points `profile` at `closure` (parent directories are created).
pub async fn set_profile(
    nix: &Nix,
    profile: &Path,
    closure: &StorePath,
) -> Result<(), ActivationError> {
    let err = |why: String| ActivationError::Profile {
        profile: profile.to_owned(),
        closure: closure.clone(),
        why,
    };
    if let Some(dir) = profile.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
    }
    nix.set_profile(profile, closure)
        .await
        .map_err(|e| err(e.to_string()))
}

/// Runs `<store_root><closure>/bin/switch-to-configuration <mode>` with a timeout and
/// the environment `env`.
pub async fn switch(
    store_root: &Path,
    closure: &StorePath,
    mode: Activation,
    timeout: Duration,
    env: &ChildEnv,
) -> Result<(), ActivationError> {
    let script = real_path(store_root, closure).join("bin/switch-to-configuration");
    let is_file = tokio::fs::metadata(&script)
        .await
        .is_ok_and(|m| m.is_file());
    if !is_file {
        return Err(ActivationError::NoScript {
            script,
            closure: closure.clone(),
            store_root: store_root.to_owned(),
        });
    }
    tracing::info!(script = %script.display(), %mode, "running switch-to-configuration");
    let mut cmd = tokio::process::Command::new(&script);
    env.apply(&mut cmd);
    let mut child = cmd
        .arg(mode.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout can stop everything it started.
        .process_group(0)
        .spawn()
        .map_err(|source| ActivationError::Spawn {
            script: script.clone(),
            source,
        })?;
    let pid = child.id();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    // Read both pipes while waiting, so a chatty script cannot block on a full pipe.
    let work = async {
        tokio::join!(
            drain(stdout.as_mut(), &mut out),
            drain(stderr.as_mut(), &mut err)
        );
        child.wait().await
    };
    let finished = tokio::time::timeout(timeout, work).await;
    let Ok(status) = finished else {
        if let Some(pgid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
        let _ = child.wait().await;
        return Err(ActivationError::Timeout {
            script,
            mode,
            timeout,
        });
    };
    let out = String::from_utf8_lossy(&out);
    let err_text = String::from_utf8_lossy(&err);
    for line in out.lines().chain(err_text.lines()).take(200) {
        tracing::info!(target: "switch-to-configuration", "{line}");
    }
    let status = status.map_err(|source| ActivationError::Spawn {
        script: script.clone(),
        source,
    })?;
    if status.success() {
        return Ok(());
    }
    let tail = fleet_core::nixcli::tail(err_text.as_bytes(), 1000);
    Err(ActivationError::Failed {
        script,
        mode,
        status: status.to_string(),
        stderr: if tail.is_empty() {
            String::new()
        } else {
            format!(": {tail}")
        },
    })
}

/// Reads `pipe` to its end, keeping about the last 64 KiB.
async fn drain<R: tokio::io::AsyncRead + Unpin>(pipe: Option<&mut R>, buf: &mut Vec<u8>) {
    const KEEP: usize = 64 * 1024;
    let Some(pipe) = pipe else { return };
    let mut chunk = [0u8; 8192];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 2 * KEEP {
                    buf.drain(..buf.len() - KEEP);
                }
            }
        }
    }
}

/// The store path `profile` points at, following its symlinks (`system` →
/// `system-3-link` → `/nix/store/…`), or `None` if there is no profile or it points
/// elsewhere.
pub fn profile_target(profile: &Path) -> Option<StorePath> {
    let mut path = profile.to_owned();
    for _ in 0..16 {
        let target = std::fs::read_link(&path).ok()?;
        let target = if target.is_absolute() {
            target
        } else {
            path.parent()?.join(target)
        };
        let text = target.to_str()?;
        if let Some(rest) = text.strip_prefix("/nix/store/") {
            let base = rest.split('/').next()?;
            return StorePath::new(&format!("/nix/store/{base}")).ok();
        }
        path = target;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const CLOSURE: &str = "/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-nixos-system-a";

    fn fake_closure(root: &Path, script: &str) -> StorePath {
        let c = StorePath::new(CLOSURE).unwrap();
        let bin = real_path(root, &c).join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let s = bin.join("switch-to-configuration");
        std::fs::write(&s, script).unwrap();
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o755)).unwrap();
        c
    }

    #[tokio::test]
    async fn runs_the_closures_own_script_with_the_mode() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let c = fake_closure(
            d.path(),
            &format!("#!/bin/sh\necho \"$1\" >> {}\n", log.display()),
        );
        switch(
            d.path(),
            &c,
            Activation::Boot,
            Duration::from_secs(5),
            &ChildEnv::default(),
        )
        .await
        .unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "boot\n");
    }

    #[tokio::test]
    async fn failure_and_timeout_and_missing_script_are_explained() {
        let d = tempfile::tempdir().unwrap();
        let c = fake_closure(d.path(), "#!/bin/sh\necho 'unit foo failed' >&2\nexit 4\n");
        let e = switch(
            d.path(),
            &c,
            Activation::Switch,
            Duration::from_secs(5),
            &ChildEnv::default(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("unit foo failed") && e.contains('4'), "{e}");

        let c = fake_closure(d.path(), "#!/bin/sh\nexec sleep 30\n");
        let t = std::time::Instant::now();
        let e = switch(
            d.path(),
            &c,
            Activation::Switch,
            Duration::from_millis(300),
            &ChildEnv::default(),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ActivationError::Timeout { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));

        let other = tempfile::tempdir().unwrap();
        let e = switch(
            other.path(),
            &c,
            Activation::Switch,
            Duration::from_secs(1),
            &ChildEnv::default(),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ActivationError::NoScript { .. }), "{e}");
        assert!(e.to_string().contains("not a NixOS system closure"), "{e}");
    }

    #[test]
    fn follows_profile_links_to_the_store_path() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("system");
        assert_eq!(profile_target(&p), None);
        std::os::unix::fs::symlink(format!("{CLOSURE}/"), d.path().join("system-3-link")).unwrap();
        std::os::unix::fs::symlink("system-3-link", &p).unwrap();
        assert_eq!(profile_target(&p), Some(StorePath::new(CLOSURE).unwrap()));
        let q = d.path().join("odd");
        std::os::unix::fs::symlink("/etc/passwd", &q).unwrap();
        assert_eq!(profile_target(&q), None);
    }
}
