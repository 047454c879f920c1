#!/usr/bin/env bash
# P5: memory per idle conversation. Starts the stack of scripts/bench-stack.sh (mosquitto + an instant vllm-sim +
# `mqtt-llm up --max-sessions 200000`, so that nothing is evicted), reads mqtt-llm's VmRSS once it is ready, runs
# SESSIONS single-turn conversations with distinct session ids (short prompts, 8-token answers, CONCURRENCY at a
# time), then reads VmRSS and the service's /metrics again (mqtt_llm_sessions and, when the service has it,
# mqtt_llm_session_bytes) and prints the figures as a markdown table:
#
#   scripts/bench-p5.sh
#   SESSIONS=20000 CONCURRENCY=128 scripts/bench-p5.sh
#
# bytes per idle session = (RSS after - RSS before) / sessions; beyond its text = (RSS delta - session text bytes) /
# sessions, where the text bytes are mqtt_llm_session_bytes, or, when the service does not export it, the bytes of
# the messages sent plus the replies received as the bench counted them (marked "bench").
#
# Needs a release build (`cargo build --release --bin mqtt-llm --bin vllm-sim`), mosquitto, curl and python3.
#
# Environment:
#   MQTT_LLM_RELEASE_DIR  where the release binaries are (default: target/release)
#   SESSIONS              conversations (default 100000)
#   CONCURRENCY           conversations at once (default 256)
#   PROMPT_TOKENS         words per message (default 8)
#   MAX_TOKENS            answer tokens (default 8)
#   UP_FLAGS              extra flags for `mqtt-llm up` (after --max-sessions, e.g. "--no-persist")
#   KEEP=1                keep the temporary directory (bench JSON, memory figures, logs)
set -u
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${MQTT_LLM_RELEASE_DIR:-$repo/target/release}"
sessions="${SESSIONS:-100000}"
concurrency="${CONCURRENCY:-256}"
prompt_tokens="${PROMPT_TOKENS:-8}"
max_tokens="${MAX_TOKENS:-8}"
work="$(mktemp -d)"
cleanup() { [ "${KEEP:-}" = 1 ] || rm -rf "$work"; }
trap cleanup EXIT
for b in mqtt-llm vllm-sim; do
    [ -x "$bin/$b" ] || { echo "bench-p5: no $bin/$b (cargo build --release --bin mqtt-llm --bin vllm-sim)" >&2; exit 2; }
done
max_sessions=$(( sessions * 2 > 200000 ? sessions * 2 : 200000 ))
echo "bench-p5: $sessions single-turn conversations, $concurrency at a time (work dir $work)" >&2

# bench-stack.sh kills everything it started when it exits.
BENCH_MEM="$work/mem" UP_FLAGS="--max-sessions $max_sessions ${UP_FLAGS:-}" \
    "$repo/scripts/bench-stack.sh" --sim-itl-ms 0 -- --sessions "$sessions" --turns 1 --concurrency "$concurrency" \
    --prompt-tokens "$prompt_tokens" --max-tokens "$max_tokens" --timeout 120s --json "$work/p5.json" \
    >"$work/bench.out" 2>"$work/stack.err"
rc=$?
cat "$work/bench.out"
if [ "$rc" != 0 ] || [ ! -s "$work/mem" ] || [ ! -s "$work/p5.json" ]; then
    echo "bench-p5: the bench failed (status $rc):" >&2; tail -n 30 "$work/stack.err" >&2
    KEEP=1; exit 1
fi

python3 - "$work/mem" "$work/p5.json" "$sessions" <<'EOF'
import json, sys
mem = dict(l.rstrip("\n").split("=", 1) for l in open(sys.argv[1]) if "=" in l)
report = json.load(open(sys.argv[2]))
asked = int(sys.argv[3])
num = lambda k: int(mem[k]) if mem.get(k, "").strip() else None
before, after, hwm = num("rss_before_kb"), num("rss_after_kb"), num("hwm_kb")
held, text = num("sessions"), num("session_bytes")
completed = report["mqtt"]["completed"]
source = "mqtt_llm_session_bytes"
if text is None and "message_bytes" in report["mqtt"]:
    text, source = report["mqtt"]["message_bytes"] + report["mqtt"]["reply_bytes"], "bench: messages + replies"

n = held if held else completed
delta = (after - before) * 1024
fmt = lambda v: f"{v:,.0f}" if v is not None else "n/a"
per = delta / n if n else None
beyond = (delta - text) / n if (n and text is not None) else None
text_per = text / n if (n and text is not None) else None
print()
print("| conversations asked / completed | held (mqtt_llm_sessions) | RSS ready | RSS after | RSS peak | RSS delta "
      "| text bytes | bytes per session | text per session | **beyond its text** |")
print("|---|---|---|---|---|---|---|---|---|---|")
print(f"| {asked:,} / {completed:,} | {fmt(held)} | {before / 1024:.1f} MiB | {after / 1024:.1f} MiB "
      f"| {hwm / 1024:.1f} MiB | {delta / 2**20:.1f} MiB | {fmt(text)} ({source}) | {fmt(per)} | {fmt(text_per)} "
      f"| **{fmt(beyond)}** |")
errors = report["mqtt"]["errors"]
if errors:
    print(f"\nerrors: {errors}")
EOF
