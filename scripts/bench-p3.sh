#!/usr/bin/env bash
# P3 with trimming, on vllm-sim: SESSIONS conversations of TURNS turns each through `mqtt-llm up
# --max-history-tokens BUDGET`, a budget the history fills after about ten turns, once per trimming policy
# (`--trim-policy stable`, then `sliding`, passed through bench-stack.sh's UP_FLAGS), with the engine's prefix-cache
# counters scraped before and after each run. Prints a markdown table ready for BENCHMARKS.md (turns 1-based: turn 1
# is a conversation's first request): TTFT p50 at turns 1, 2, 10, 20, 29, 30, the turn-30/turn-2 ratio, the engine's
# prefix-cache hit rate and the share of prompt tokens served from cache (usage), see scripts/bench-p3-table.py.
#
#   scripts/bench-p3.sh
#   POLICIES=sliding BUDGET=1000 scripts/bench-p3.sh
#
# A binary without --trim-policy runs once, as policy "current" (today's behaviour: the oldest turns are dropped as
# the budget is passed, i.e. sliding). `--state-dir DIR` is passed only when `mqtt-llm up --help` lists it.
# Needs a release build (`cargo build --release --bin mqtt-llm --bin vllm-sim`), mosquitto, curl and python3.
#
# Environment:
#   MQTT_LLM_RELEASE_DIR  where the release binaries are (default: target/release)
#   POLICIES              the policies to compare (default "stable sliding")
#   SESSIONS TURNS        conversations and turns each (default 16 and 30)
#   PROMPT_TOKENS         words per message (default 32)
#   MAX_TOKENS            answer tokens (default 32)
#   BUDGET                --max-history-tokens (default 800: 32-word messages and 32-token answers add about 75
#                         tokens a turn on vllm-sim, so the history passes it at turn 11)
#   P3_TURNS              the (1-based) turns whose TTFT the table shows (default "1 2 10 20 29 30")
#   SIM_FLAGS             vllm-sim timing (default "--sim-itl-ms 5 --sim-prefill-us-per-token 200")
#   UP_FLAGS              more flags for `mqtt-llm up` (e.g. "--trim-low-water 0.5")
#   BENCH_FLAGS           more flags for `mqtt-llm bench`
#   OUT=DIR               keep the JSON reports (p3-POLICY.json) and the table (p3.md) in DIR
set -u
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${MQTT_LLM_RELEASE_DIR:-$repo/target/release}"
sessions="${SESSIONS:-16}"
turns="${TURNS:-30}"
prompt_tokens="${PROMPT_TOKENS:-32}"
max_tokens="${MAX_TOKENS:-32}"
budget="${BUDGET:-800}"
sim_flags="${SIM_FLAGS:---sim-itl-ms 5 --sim-prefill-us-per-token 200}"
work="$(mktemp -d)"
out="${OUT:-$work}"
mkdir -p "$out"
cleanup() { [ -n "${OUT:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
for b in mqtt-llm vllm-sim; do
    [ -x "$bin/$b" ] || { echo "bench-p3: no $bin/$b (cargo build --release --bin mqtt-llm --bin vllm-sim)" >&2; exit 2; }
done
up_help="$("$bin/mqtt-llm" up --help 2>&1)"
if grep -q -- --trim-policy <<<"$up_help"; then
    policies="${POLICIES:-stable sliding}"
else
    policies=current
    echo "bench-p3: this mqtt-llm has no --trim-policy: one run of its current behaviour" >&2
fi
has_state_dir=0
grep -q -- --state-dir <<<"$up_help" && has_state_dir=1

tables=()
for policy in $policies; do
    flags="--max-history-tokens $budget"
    [ "$policy" != current ] && flags+=" --trim-policy $policy"
    [ "$has_state_dir" = 1 ] && flags+=" --state-dir $work/state-$policy"
    echo "bench-p3: policy $policy: mqtt-llm up $flags ${UP_FLAGS:-}" >&2
    # shellcheck disable=SC2086
    UP_FLAGS="$flags ${UP_FLAGS:-}" "$repo/scripts/bench-stack.sh" $sim_flags -- --sessions "$sessions" \
        --turns "$turns" --prompt-tokens "$prompt_tokens" --max-tokens "$max_tokens" --per-turn \
        --engine-metrics SIMURL/metrics --json "$out/p3-$policy.json" ${BENCH_FLAGS:-} \
        >"$out/p3-$policy.txt" 2>"$out/p3-$policy.err"
    rc=$?
    if [ "$rc" != 0 ] || [ ! -s "$out/p3-$policy.json" ]; then
        echo "bench-p3: policy $policy failed (status $rc):" >&2; tail -n 20 "$out/p3-$policy.err" >&2
        exit 1
    fi
    tables+=("$policy=$out/p3-$policy.json")
done
{
    echo "P3 with trimming on vllm-sim ($sim_flags): $sessions conversations x $turns turns, $prompt_tokens-word"
    echo "messages, $max_tokens-token answers, --max-history-tokens $budget; turns are 1-based."
    echo
    python3 "$repo/scripts/bench-p3-table.py" "${tables[@]}"
} | tee "$out/p3.md"
