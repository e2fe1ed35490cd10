#!/usr/bin/env bash
# Builds the dashboard for AWS Lambda without Nix: a static (musl) fleet-reporter,
# packed reproducibly as `bootstrap` in a zip (scripts/lambda_zip.py), for
# terraform/modules/aws-fleet's dashboard_package.
#
#   scripts/lambda-zip.sh [x86_64|arm64] [OUT]
#
# OUT defaults to target/lambda/fleet-reporter-lambda-<arch>.zip. Needs the Rust
# target (rustup target add x86_64-unknown-linux-musl or aarch64-unknown-linux-musl)
# and, for arm64 on another machine, a cross linker. `nix build
# .#fleet-reporter-lambda` makes the same zip with Nix (result/fleet-reporter-lambda.zip).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

arch="${1:-x86_64}"
case "$arch" in
    x86_64) target=x86_64-unknown-linux-musl ;;
    arm64) target=aarch64-unknown-linux-musl ;;
    *)
        printf 'usage: scripts/lambda-zip.sh [x86_64|arm64] [OUT]\n' >&2
        exit 2
        ;;
esac
out="${2:-$repo/target/lambda/fleet-reporter-lambda-$arch.zip}"

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    printf 'lambda-zip.sh: the Rust target %s is not installed: rustup target add %s\n' "$target" "$target" >&2
    exit 1
fi
# No absolute build paths in the binary, so the same sources give the same bytes
# on any checkout.
RUSTFLAGS="${RUSTFLAGS:-} --remap-path-prefix=$repo=/build/fleet --remap-path-prefix=$HOME=/home" \
    cargo build --release --locked --target "$target" -p fleet-reporter
mkdir -p "$(dirname "$out")"
python3 scripts/lambda_zip.py "target/$target/release/fleet-reporter" "$out"
printf '%s  %s\n' "$(sha256sum "$out" | cut -d' ' -f1)" "$out"
