//! `fleet-tests`: the harness the end-to-end tests stand on, and those tests.
//!
//! - [`s3`]: real S3 servers that enforce IAM (SeaweedFS `weed mini`, moto's server),
//!   started per test binary on free loopback ports with temporary data directories,
//!   with per-role users whose policies come from `fleet_core::iam`;
//! - [`nix`]: real Nix (Debian's `nix-bin`: sandbox off, no substituters, offline)
//!   and fixture closures built from plain `derivation`s.
//!
//! Tests live in `tests/tests/`. They need the tools `scripts/test.sh` installs; a
//! test whose tool is missing fails with a message naming the install command,
//! except the Docker-based ones, which skip with a printed reason.

pub mod nix;
pub mod s3;
