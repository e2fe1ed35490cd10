#!/usr/bin/env bash
# Fuzzes every parser of bucket bytes with cargo-fuzz (libFuzzer), each target for a
# fixed time, from a seed corpus of real objects. Not run by CI: it needs the nightly
# toolchain and `cargo install cargo-fuzz`, and takes minutes.
#
#   scripts/fuzz.sh                 # every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh nar manifest
#
# Targets (fuzz/fuzz_targets/): nar, narinfo, manifest, status, snapshot, audit_entry,
# release, rollout, trust_root, enrollment, bundle, registry, hold, status_sig. Seeds:
# the valid objects the property tests make (tests/tests/properties.rs,
# fuzz_seeds_are_valid_objects), written to fuzz/corpus/<target>/seed; the corpus
# grows there between runs. A crash leaves its input in fuzz/artifacts/<target>/:
# replay it with `cargo +nightly fuzz run <target> <file>`, then turn it into a
# regression test beside the parser. Prints one line per target: executions and
# whether it crashed; exits non-zero if any did.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(nar narinfo manifest status snapshot audit_entry release rollout trust_root enrollment
	bundle registry hold status_sig)

rustup toolchain list | grep -q '^nightly' || {
	echo "fuzz.sh: needs the nightly toolchain: rustup toolchain install nightly" >&2
	exit 2
}
cargo fuzz --version >/dev/null 2>&1 || {
	echo "fuzz.sh: needs cargo-fuzz: cargo install cargo-fuzz" >&2
	exit 2
}

# Seed the corpus from real objects (made by fleet's own code).
FLEET_FUZZ_SEEDS_DIR="$repo/fuzz/corpus" \
	cargo test -q -p fleet-tests --test properties fuzz_seeds_are_valid_objects >/dev/null

cd fuzz
cargo +nightly fuzz build -O
status=0
for t in "${targets[@]}"; do
	log="$(mktemp)"
	if cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$seconds" -seed=1 \
		-print_final_stats=1 >"$log" 2>&1; then
		result=ok
	else
		result="CRASHED (input in fuzz/artifacts/$t/)"
		status=1
	fi
	execs="$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')"
	printf '%-10s %8s s  %12s executions  %s\n' "$t" "$seconds" "${execs:-?}" "$result"
	[ "$result" = ok ] || tail -40 "$log" >&2
	rm -f "$log"
done
exit "$status"
