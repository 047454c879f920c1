#!/usr/bin/env bash
# Fuzz every target of fuzz/ (cargo-fuzz, libFuzzer) for a bounded time and report what ran:
#   1. installs the nightly toolchain and cargo-fuzz when they are missing,
#   2. builds the targets once (fuzz/target, not the workspace's target/),
#   3. runs each target for FUZZ_SECONDS (default 60) on a temporary copy of its committed seed corpus
#      (fuzz/corpus/<target>/ never grows here), and prints its number of executions,
#   4. exits non-zero when any target crashed (the input is saved under fuzz/artifacts/<target>/; replay it with
#      `cargo +nightly fuzz run -s none <target> fuzz/artifacts/<target>/<file>`).
# FUZZ_SANITIZER (default `none`) is passed to `cargo fuzz -s`: our crates forbid unsafe code, so AddressSanitizer
# mostly costs speed; use `address` to check the dependencies' unsafe code too.
# FUZZ_SEED (default 0: a random seed each run) is libFuzzer's -seed; .ci/run sets it to 1 so that a CI verdict is
# reproducible (the same mutations in the same order; a faster machine only gets further along them).
# Arguments name the targets to run (default: all), e.g. `FUZZ_SECONDS=600 scripts/fuzz.sh sse_decoder`.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
SANITIZER="${FUZZ_SANITIZER:-none}"
SEED="${FUZZ_SEED:-0}"
TARGETS=("$@")
if [[ ${#TARGETS[@]} -eq 0 ]]; then
    TARGETS=(parse_request topic_rules sse_decoder)
fi

phase() { printf '\n==> %s\n' "$*"; }

phase "toolchain: nightly and cargo-fuzz"
if ! cargo +nightly --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal </dev/null
fi
cargo +nightly --version
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked </dev/null
fi
cargo fuzz --version

phase "build the fuzz targets (sanitizer: $SANITIZER)"
cargo +nightly fuzz build -s "$SANITIZER" </dev/null

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

failed=()
summary=()
for target in "${TARGETS[@]}"; do
    phase "fuzz $target for ${FUZZ_SECONDS}s"
    corpus="$work/corpus-$target"
    cp -r "fuzz/corpus/$target" "$corpus"
    log="$work/$target.log"
    status=0
    # -timeout: one input running 10 s is a hang, reported like a crash.
    cargo +nightly fuzz run -s "$SANITIZER" "$target" "$corpus" -- \
        -max_total_time="$FUZZ_SECONDS" -seed="$SEED" -print_final_stats=1 -timeout=10 \
        >"$log" 2>&1 </dev/null || status=$?
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*$' || true)"
    if [[ $status -ne 0 ]]; then
        tail -n 60 "$log"
        failed+=("$target")
        summary+=("$target: FAILED (exit $status) after ${runs:-?} executions")
    else
        grep -E '^#[0-9]+ *DONE|stat::' "$log" || true
        summary+=("$target: ${runs:-?} executions in ${FUZZ_SECONDS}s, corpus $(find "$corpus" -type f | wc -l) inputs")
    fi
done

phase "fuzz summary"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "crashed: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
