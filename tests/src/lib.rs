//! `fleet-tests`: the harness the end-to-end tests stand on, and those tests.
//!
//! - [`agent`]: a clean environment for fleet binaries and the one writer of test
//!   agents' config files;
//! - [`s3`]: real S3 servers that enforce IAM (SeaweedFS `weed mini`, moto's server),
//!   started per test binary on free loopback ports with temporary data directories,
//!   with per-role users whose policies come from `fleet_core::iam`;
//! - [`nix`]: real Nix (Debian's `nix-bin`: sandbox off, no substituters, offline)
//!   and fixture closures built from plain `derivation`s;
//! - [`proxy`]: a counting HTTP proxy, to count the requests a client makes to an S3
//!   server by what goes over the wire;
//! - [`fault_proxy`]: a seeded fault-injecting HTTP proxy (503 bursts, resets,
//!   stalls, drip-fed and truncated bodies, writes applied then dropped);
//! - [`shaped_proxy`]: a link-shaping TCP proxy (round-trip time per segment, a
//!   bandwidth cap shared by all connections), to measure clients over a WAN or LAN;
//! - [`rng`]: the seeded PRNG behind fault schedules and property tests.
//!
//! Tests live in `tests/tests/`. They need the tools `scripts/test.sh` installs; a
//! test whose tool is missing fails with a message naming the install command,
//! except the Docker-based ones, which skip with a printed reason.

#![warn(missing_docs)]

pub mod agent;
pub mod audit;
pub mod fault_proxy;
pub mod nix;
pub mod proxy;
pub mod rng;
pub mod s3;
pub mod shaped_proxy;

use std::path::PathBuf;
use std::process::Output;

/// Path of a workspace binary (`fleet-publish`, `fleet-agent`, `fleet-reporter`) built
/// in the same target directory as the running test (`cargo nextest run --workspace`
/// and `cargo test --workspace` build every binary before running tests).
///
/// Panics with the command to run when the binary has not been built.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary has a path");
    // target/<profile>/deps/<test binary> -> target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace --bins` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Exit code, stdout and stderr of a finished command, for assertion messages.
pub fn output_text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
