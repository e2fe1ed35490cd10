//! Facts about the host for the status report, read from files under a root
//! (`facts-root`, `/` in production, a temporary directory in tests):
//!
//! | fact | source |
//! |---|---|
//! | `nixos_version` | `VERSION_ID` in `etc/os-release` |
//! | `kernel` | `proc/sys/kernel/osrelease` |
//! | `uptime_seconds` | first field of `proc/uptime` |
//! | `boot_id` | `proc/sys/kernel/random/boot_id` |
//! | `reboot_needed` | `run/booted-system/{kernel,initrd}` and `run/current-system/{kernel,initrd}` resolve to different files (a `switch` that changed the kernel or initrd); the report also sets it while a `boot` generation waits for its reboot |
//!
//! A missing or unreadable source gives `None`, never an error. Reads are bounded and
//! values are cut to the status format's short-string bound, so odd files cannot make
//! a report its readers would refuse.

use std::io::Read;
use std::path::Path;

use fleet_core::status::{Facts, MAX_SHORT_LEN};

/// Largest file read for a fact.
const MAX_FACT_FILE: u64 = 16 * 1024;

fn read_small(path: &Path) -> Option<String> {
    let f = std::fs::File::open(path).ok()?;
    let mut s = String::new();
    f.take(MAX_FACT_FILE).read_to_string(&mut s).ok()?;
    Some(s)
}

fn short(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut end = s.len().min(MAX_SHORT_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Some(s[..end].to_owned())
}

/// `VERSION_ID` from os-release text (quotes removed).
fn os_release_version(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.trim().strip_prefix("VERSION_ID=")?;
        short(v.trim_matches(|c| c == '"' || c == '\''))
    })
}

/// Gathers the facts under `root`.
pub fn gather(root: &Path) -> Facts {
    let at = |rel: &str| root.join(rel);
    let resolve = |rel: &str| std::fs::canonicalize(at(rel)).ok();
    let differs = |file: &str| match (
        resolve(&format!("run/booted-system/{file}")),
        resolve(&format!("run/current-system/{file}")),
    ) {
        (Some(booted), Some(current)) => Some(booted != current),
        _ => None,
    };
    let reboot_needed = match (differs("kernel"), differs("initrd")) {
        (None, None) => None,
        (k, i) => Some(k == Some(true) || i == Some(true)),
    };
    Facts {
        nixos_version: read_small(&at("etc/os-release")).and_then(|t| os_release_version(&t)),
        kernel: read_small(&at("proc/sys/kernel/osrelease")).and_then(|t| short(&t)),
        uptime_seconds: read_small(&at("proc/uptime")).and_then(|t| {
            let secs: f64 = t.split_whitespace().next()?.parse().ok()?;
            (secs.is_finite() && secs >= 0.0).then_some(secs as u64)
        }),
        boot_id: read_small(&at("proc/sys/kernel/random/boot_id")).and_then(|t| short(&t)),
        reboot_needed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_fact_from_its_file() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for dir in [
            "etc",
            "proc/sys/kernel/random",
            "run/booted-system",
            "run/current-system",
            "store/k1",
            "store/k2",
        ] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        std::fs::write(
            r.join("etc/os-release"),
            "NAME=NixOS\nVERSION_ID=\"24.05\"\nID=nixos\n",
        )
        .unwrap();
        std::fs::write(r.join("proc/sys/kernel/osrelease"), "6.6.30\n").unwrap();
        std::fs::write(r.join("proc/uptime"), "3600.52 7000.01\n").unwrap();
        std::fs::write(r.join("proc/sys/kernel/random/boot_id"), "0b5d-1\n").unwrap();
        std::fs::write(r.join("store/k1/bzImage"), "k1").unwrap();
        std::fs::write(r.join("store/k2/bzImage"), "k2").unwrap();
        std::os::unix::fs::symlink(
            r.join("store/k1/bzImage"),
            r.join("run/booted-system/kernel"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            r.join("store/k1/bzImage"),
            r.join("run/current-system/kernel"),
        )
        .unwrap();
        let f = gather(r);
        assert_eq!(f.nixos_version.as_deref(), Some("24.05"));
        assert_eq!(f.kernel.as_deref(), Some("6.6.30"));
        assert_eq!(f.uptime_seconds, Some(3600));
        assert_eq!(f.boot_id.as_deref(), Some("0b5d-1"));
        assert_eq!(f.reboot_needed, Some(false));

        std::fs::remove_file(r.join("run/current-system/kernel")).unwrap();
        std::os::unix::fs::symlink(
            r.join("store/k2/bzImage"),
            r.join("run/current-system/kernel"),
        )
        .unwrap();
        assert_eq!(gather(r).reboot_needed, Some(true));
    }

    #[test]
    fn missing_or_odd_files_give_none() {
        let d = tempfile::tempdir().unwrap();
        let f = gather(d.path());
        assert_eq!(f, Facts::default());
        std::fs::create_dir_all(d.path().join("proc/sys/kernel")).unwrap();
        std::fs::write(d.path().join("proc/uptime"), "NaN x").unwrap();
        std::fs::write(
            d.path().join("proc/sys/kernel/osrelease"),
            "x".repeat(10_000),
        )
        .unwrap();
        let f = gather(d.path());
        assert_eq!(f.uptime_seconds, None);
        assert_eq!(f.kernel.unwrap().len(), MAX_SHORT_LEN);
    }
}
