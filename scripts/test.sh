#!/usr/bin/env bash
# Runs the whole test suite from any directory: installs what is missing
# (scripts/deps.sh), then every crate's tests under cargo-nextest (settings in
# .config/nextest.toml) and the doc tests, which nextest does not run.
#
# Extra arguments go to `cargo nextest run`, e.g. `scripts/test.sh -E 'test(iam)'`.
# Exits non-zero if either run failed; both always run.
#
# The fault suite (tests/tests/faults.rs) runs two seeds per test here; longer runs:
# `FLEET_FAULT_ITERATIONS=50 scripts/test.sh -E 'binary(faults)'`, a fresh seed with
# FLEET_FAULT_SEED=random (docs/reliability.md). Fuzzing is scripts/fuzz.sh, not here.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

scripts/deps.sh

# The harness finds weed, moto_server and the venv's Python in .venv/bin by itself;
# PATH is for tests and tools that call them by name.
export PATH="$repo/.venv/bin:$PATH"

# The end-to-end tests run the real binaries (fleet_tests::bin finds them next to the
# test binaries); cargo builds a package's binaries only for that package's own tests.
cargo build --workspace --bins

status=0
cargo nextest run --workspace --no-fail-fast "$@" || status=$?
cargo test --doc --workspace || status=$?
exit "$status"
