#!/usr/bin/env bash
# The quickstart: the whole of fleet on this machine, in one command.
#
#   scripts/quickstart.sh
#
# What it does, on the embedded default (a file:// bucket in a temporary directory, no
# server):
#
#   1. installs what is missing (scripts/deps.sh quickstart: nix-bin) and builds the fleet binaries
#      (cargo build --bins);
#   2. builds sample system closures with real nix (tests/fixtures/system.nix): a
#      generation 1 for host-1, host-2 and host-3, a generation 2 for host-1, and a
#      generation 2 for host-2 whose bin/switch-to-configuration fails;
#   3. makes a cache key and a publisher key (fleet-publish keygen) and publishes
#      generation 1 to the three hosts (fleet-publish deploy);
#   4. starts three fleet-agent daemons, each with its own state directory, chroot Nix
#      store and system profile, and fleet-reporter serve (the dashboard);
#   5. deploys generation 2 to host-1, then the failing generation to host-2, which
#      rolls back; prints the fleet (fleet-reporter summary) after each step;
#   6. waits for Ctrl-C while the dashboard runs (only when stdin is a terminal;
#      otherwise it stops after the story, for CI and tests), then stops everything
#      it started and removes its temporary directory.
#
# Environment:
#
#   FLEET_BUCKET=s3://BUCKET[/PREFIX][?endpoint=URL&region=R]
#                            use this S3 bucket (AWS, MinIO, SeaweedFS…) instead of a
#                            file:// bucket; credentials come from the standard AWS
#                            variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
#                            AWS_REGION…). The run writes under a new sub-prefix
#                            quickstart-<time>-<n>/ of it, which stays in the bucket.
#   FLEET_KEEP_WORKDIR=1     keep the temporary directory (keys, logs, agent states).
#   FLEET_QUICKSTART_LISTEN  dashboard address (default 127.0.0.1:8080, or a free
#                            port when 8080 is taken).
#   FLEET_BIN_DIR=DIR        use fleet-publish, fleet-agent and fleet-reporter from DIR
#                            instead of building them (the end-to-end test does).
#
# Needs root (or a writable /nix): Debian's nix-bin is a single-user Nix.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

store_env="${FLEET_BUCKET:-}"
keep_workdir="${FLEET_KEEP_WORKDIR:-0}"
listen="${FLEET_QUICKSTART_LISTEN:-}"
bin="${FLEET_BIN_DIR:-}"
# Everything else named FLEET_* would be read by the binaries as their own settings
# (FLEET_HOST, FLEET_AGENT_CONFIG, FLEET_REPORTER_TOKEN…) and change the story.
for v in $(compgen -e); do
    case "$v" in FLEET_*) unset "$v" ;; esac
done

hosts=(host-1 host-2 host-3)
poll=2s
started=$SECONDS
pids=()
work=""

say() { printf '%s\n' "$*"; }
step_no=0
step() {
    step_no=$((step_no + 1))
    printf '[%d/7] %s ... ' "$step_no" "$*"
}
die() {
    printf '\nquickstart: %s\n' "$*" >&2
    exit 1
}
# The end of a log file, indented, for failure messages.
tail_of() {
    [ -s "$1" ] || return 0
    printf '  --- %s (last lines)\n' "${1#"$work"/}" >&2
    tail -n "${2:-15}" "$1" | sed 's/^/  | /' >&2
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "${#pids[@]}" -gt 0 ]; then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        # Agents finish an activation in progress before they leave; bound the wait.
        local deadline=$((SECONDS + 30)) pid
        for pid in "${pids[@]}"; do
            while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        done
    fi
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ] && [ -n "$work" ] && [ -d "$work" ]; then
        local h
        for h in "${hosts[@]}"; do tail_of "$work/hosts/$h/agent.log"; done
        tail_of "$work/reporter.log"
        tail_of "$work/publish.log"
        tail_of "$work/nix-build.log"
    fi
    local what="stopped ${#pids[@]} processes"
    if [ -n "$work" ] && [ -d "$work" ]; then
        if [ "$keep_workdir" = 1 ]; then
            what="$what, kept the work directory $work (FLEET_KEEP_WORKDIR=1)"
        else
            # Store paths in the chroot stores are read-only.
            chmod -R u+w "$work" 2>/dev/null || true
            rm -rf "$work"
            what="$what, removed the work directory"
        fi
    fi
    case "$rc" in
        0) say "cleaned up: $what." ;;
        130 | 143) printf '\ncleaned up: %s.\n' "$what" ;;
        *) say "cleaned up: $what." >&2 ;;
    esac
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- where the bucket is ----------------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/fleet-quickstart.XXXXXX")"
# Nix's store URLs cannot carry these characters, and TOML strings must not hold quotes.
case "$work" in
    *[!A-Za-z0-9/._-]*) die "the temporary directory $work holds characters Nix store URLs cannot carry; set TMPDIR to a plain path such as /tmp" ;;
esac
if [ -n "$store_env" ]; then
    case "$store_env" in
        s3://*) ;;
        *) die "FLEET_BUCKET=$store_env is not an s3:// URL (without FLEET_BUCKET the quickstart uses a file:// bucket of its own)" ;;
    esac
    run_prefix="quickstart-$(date -u +%Y%m%dt%H%M%S)-$RANDOM"
    base="${store_env%%\?*}"
    query=""
    [ "$base" != "$store_env" ] && query="?${store_env#*\?}"
    store="${base%/}/$run_prefix$query"
    [ -n "${AWS_ACCESS_KEY_ID:-}" ] ||
        say "note: AWS_ACCESS_KEY_ID is not set; the binaries fall back to web identity or instance metadata"
    say "fleet quickstart: 3 hosts following $store"
else
    store="file://$work/bucket"
    mkdir -p "$work/bucket"
    say "fleet quickstart: 3 hosts following a local bucket, $store (no server)"
fi
say "  work directory $work ($([ "$keep_workdir" = 1 ] && echo kept || echo 'removed at exit; FLEET_KEEP_WORKDIR=1 keeps it'))"

# --- tools ---------------------------------------------------------------------
if [ -z "$bin" ]; then
    step "checking tools (scripts/deps.sh quickstart) and building fleet (cargo build --bins; the first build takes minutes)"
    scripts/deps.sh quickstart
    t=$SECONDS
    cargo build --bins --quiet 2>"$work/cargo.log" || { cat "$work/cargo.log" >&2; die "cargo build failed"; }
    bin="${CARGO_TARGET_DIR:-$repo/target}/debug"
    say "ok ($((SECONDS - t))s)"
else
    step "checking tools (scripts/deps.sh quickstart); fleet binaries from $bin"
    scripts/deps.sh quickstart
    say "ok"
fi
for b in fleet-publish fleet-agent fleet-reporter; do
    [ -x "$bin/$b" ] || die "$bin/$b is missing: run cargo build --bins (or unset FLEET_BIN_DIR)"
done
command -v nix-build >/dev/null || die "nix-build is not on PATH: run scripts/deps.sh quickstart (Debian's nix-bin)"

# The same Nix settings as the tests (tests/src/nix.rs): no sandbox, offline, root
# without a nixbld group, no signing key of the machine's own, no user config.
export NIX_CONFIG='experimental-features = nix-command
sandbox = false
substituters =
build-users-group =
secret-key-files =
'
export NIX_USER_CONF_FILES=""
export XDG_CACHE_HOME="$work/xdg-cache"

# Debian's nix-bin makes /nix/store the first time Nix opens its store, not when
# it is installed: open it once (as root this creates it) before judging it.
nix store ping >"$work/nix-init.log" 2>&1 || true
if [ ! -w /nix/store ]; then
    if [ "$(id -u)" -ne 0 ]; then
        die "/nix/store is not writable by $(id -un): run the quickstart as root (Debian's nix-bin is a single-user Nix)"
    fi
    cat "$work/nix-init.log" >&2
    die "/nix/store is missing or not writable even for root (nix store ping said the above); is /nix read-only or another Nix installed?"
fi
export RUST_LOG=info

# --- sample systems ---------------------------------------------------------------
step "building sample systems with nix: generation 1 for ${hosts[*]}, generation 2 for host-1, a failing generation 2 for host-2"
t=$SECONDS
mkdir -p "$work/systems"
declare -A label
# build NAME HOST GENERATION ACTIVATION-EXIT: prints the system's store path.
build() {
    local link="$work/systems/$1"
    nix-build tests/fixtures/system.nix --out-link "$link" \
        --argstr name "$2" --argstr generation "$3" --argstr salt quickstart \
        --argstr activationExit "$4" >>"$work/nix-build.log" 2>&1 ||
        die "nix-build of $1 failed (see above)"
    readlink "$link"
}
for h in "${hosts[@]}"; do
    sys=$(build "$h-gen1" "$h" 1 0)
    label[$sys]="generation 1"
    printf -v "gen1_${h//-/_}" '%s' "$sys"
done
gen2_host_1=$(build host-1-gen2 host-1 2 0)
label[$gen2_host_1]="generation 2"
broken_host_2=$(build host-2-gen2-broken host-2 2 1)
label[$broken_host_2]="failing generation 2"
say "ok ($((SECONDS - t))s)"

# --- keys and the first publish ---------------------------------------------------
keys="$work/keys"
mkdir -p "$keys"
step "making keys: cache key quickstart-cache-1 (signs narinfos), publisher key quickstart-publisher-1 (signs manifests)"
"$bin/fleet-publish" keygen --name quickstart-cache-1 --secret-out "$keys/cache.secret" --public-out "$keys/cache.public" >/dev/null
"$bin/fleet-publish" keygen --name quickstart-publisher-1 --secret-out "$keys/publisher.secret" --public-out "$keys/publisher.public" >/dev/null
cache_pub=$(cat "$keys/cache.public")
publisher_pub=$(cat "$keys/publisher.public")
say "ok"

# publish HOSTS-JSON-FILE: deploys and prints "host: sequence N" for each host.
publish() {
    local out
    out=$("$bin/fleet-publish" deploy --bucket "$store" --cache-key "$keys/cache.secret" \
        --signing-key "$keys/publisher.secret" --expires-in 1d --hosts "$1" 2>>"$work/publish.log") ||
        die "fleet-publish deploy failed"
    printf '%s\n' "$out" >>"$work/publish.log"
    printf '%s\n' "$out" | awk '{sub(":", "", $1); printf "%s%s sequence %s", sep, $1, $3; sep=", "} END {print ""}'
}
pushed() { sed -n 's/^pushed to [^ ]*: //p' "$work/publish.log" | tail -n 1; }

step "publishing generation 1 to ${hosts[*]} (fleet-publish deploy)"
printf '{"host-1": "%s", "host-2": "%s", "host-3": "%s"}\n' "$gen1_host_1" "$gen1_host_2" "$gen1_host_3" >"$work/gen1.json"
result=$(publish "$work/gen1.json")
say "ok: $result"
say "      pushed $(pushed)"

# --- agents and dashboard -------------------------------------------------------------
step "starting ${#hosts[@]} agents (fleet-agent run: own state dir and Nix store each, polling every $poll) and the dashboard"
for h in "${hosts[@]}"; do
    d="$work/hosts/$h"
    mkdir -p "$d/state" "$d/chroot"
    cat >"$d/agent.toml" <<EOF
bucket = "$store"
host = "$h"
trusted-publisher-keys = ["$publisher_pub"]
trusted-cache-keys = ["$cache_pub"]
state-dir = "$d/state"
nix-store = "$d/chroot"
store-root = "$d/chroot"
profile = "$d/chroot/nix/var/nix/profiles/system"
poll-interval = "$poll"
poll-jitter = "1s"
heartbeat-interval = "30s"
backoff-max = "10s"
activation-timeout = "60s"
# The agent gives switch-to-configuration only an allow-listed environment
# (docs/agent.md); the sample systems log their activations to this variable.
pass-environment = ["FLEET_ACTIVATION_LOG"]
EOF
    FLEET_ACTIVATION_LOG="$d/activation.log" "$bin/fleet-agent" run --config "$d/agent.toml" \
        </dev/null >"$d/agent.log" 2>&1 &
    pids+=("$!")
done

if [ -z "$listen" ]; then
    listen=127.0.0.1:8080
    # Something answers on 8080 already: let the kernel pick a free port.
    if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then listen=127.0.0.1:0; fi
fi
"$bin/fleet-reporter" serve --bucket "$store" --trusted-key-file "$keys/publisher.public" \
    --listen "$listen" --cache-ttl 1s </dev/null >"$work/reporter.out" 2>"$work/reporter.log" &
reporter_pid=$!
pids+=("$reporter_pid")
url=""
for _ in $(seq 100); do
    url=$(sed -n 's/^fleet-reporter listening on //p' "$work/reporter.out")
    [ -n "$url" ] && break
    kill -0 "$reporter_pid" 2>/dev/null || die "fleet-reporter serve stopped"
    sleep 0.1
done
[ -n "$url" ] || die "fleet-reporter serve did not start listening in 10 s"
say "ok"
say "      dashboard: $url"

# Exit code 3 only says some host is failing (rolled back, …): the table is there.
summary() {
    "$bin/fleet-reporter" summary --bucket "$store" --trusted-key-file "$keys/publisher.public" \
        2>>"$work/summary.log" || [ $? -eq 3 ]
}
show_summary() {
    summary | sed 's/^/      /' || say "      (could not read the fleet; see $work/summary.log)"
}
# wait_for HOST STATE CURRENT-SEQUENCE: until the dashboard shows it (or 90 s pass).
wait_for() {
    local deadline=$((SECONDS + 90)) pid
    while :; do
        if summary | awk -v h="$1" -v s="$2" -v c="$3" \
            '$1 == h && $2 == s && $3 == c {found = 1} END {exit !found}'; then
            return 0
        fi
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null || die "a fleet process stopped while waiting for $1 to be $2 at sequence $3"
        done
        [ $SECONDS -lt $deadline ] || die "$1 is not $2 at sequence $3 after 90 s; the dashboard shows:
$(summary)"
        sleep 0.5
    done
}

printf '      waiting for %s to fetch, verify and activate generation 1 ... ' "${hosts[*]}"
t=$SECONDS
for h in "${hosts[@]}"; do wait_for "$h" up-to-date 1; done
say "ok ($((SECONDS - t))s)"
show_summary

# --- the two deploys ------------------------------------------------------------------
step "deploying generation 2 to host-1"
printf '{"host-1": "%s"}\n' "$gen2_host_1" >"$work/gen2.json"
result=$(publish "$work/gen2.json")
printf 'published (%s), ' "$result"
t=$SECONDS
wait_for host-1 up-to-date 2
say "host-1 runs generation 2 ($((SECONDS - t))s)"
show_summary

step "deploying a generation whose activation fails to host-2"
printf '{"host-2": "%s"}\n' "$broken_host_2" >"$work/broken.json"
result=$(publish "$work/broken.json")
printf 'published (%s), ' "$result"
t=$SECONDS
wait_for host-2 rolled-back 1
say "its switch-to-configuration failed and host-2 rolled back to generation 1 ($((SECONDS - t))s)"
show_summary

say "What each host's bin/switch-to-configuration recorded, in order:"
for h in "${hosts[@]}"; do
    calls=()
    while IFS=$'\t' read -r top mode; do
        calls+=("${label[$top]:-$top} ($mode)")
    done <"$work/hosts/$h/activation.log"
    joined=$(printf ', %s' "${calls[@]}")
    say "  $h: ${joined:2}"
done

say "The story took $((SECONDS - started))s."
if [ -n "$store_env" ]; then
    say "The objects stay in the bucket under $store (fleet never deletes; remove them with your S3 tools)."
fi
if [ -t 0 ]; then
    say "Dashboard: $url (JSON under ${url}api/v1/, metrics at ${url}metrics)."
    say "Press Ctrl-C to stop the agents and the dashboard and clean up."
    wait "$reporter_pid" || true
    die "fleet-reporter serve stopped"
else
    say "stdin is not a terminal: stopping the agents and the dashboard now."
fi
