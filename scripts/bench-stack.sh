#!/usr/bin/env bash
# Run one `mqtt-llm bench` against a fresh stack on this machine: mosquitto + vllm-sim + `mqtt-llm up` attached to it
# (or, with BENCH_BROKER=embedded, `mqtt-llm up`'s embedded broker instead of mosquitto).
#
#   scripts/bench-stack.sh [vllm-sim flags] -- [mqtt-llm bench flags]
#
# The word SIMURL in the bench flags becomes the simulator's URL (for --direct / --compare). Needs a release build
# (`cargo build --release`) and mosquitto. Logs go to a temporary directory, printed at the end.
#
# Environment:
#   MQTT_LLM_RELEASE_DIR  where the release binaries are (default: target/release)
#   UP_FLAGS              extra flags for `mqtt-llm up` (e.g. "--stream-interval-ms 0")
#   BENCH_CPU=1           print the CPU time (user+system) each process of the stack used during the bench,
#                         in total and per completed request (read from /proc/PID/stat before and after)
#   BENCH_PERF=FILE       sample `mqtt-llm up` with `perf record --call-graph dwarf` (cpu-clock, 499 Hz) during the bench
#   BENCH_MEM=FILE        write `mqtt-llm up`'s memory to FILE as key=value lines: rss_before_kb (VmRSS once it is
#                         ready), rss_after_kb (after the bench, BENCH_MEM_SETTLE_S seconds later, default 2),
#                         hwm_kb (VmHWM), sessions (the mqtt_llm_sessions gauge), session_bytes (mqtt_llm_session_bytes,
#                         when the service has it) and up_metrics (the file with its whole /metrics text)
#   STACK_READY_TIMEOUT_S how long to wait for `mqtt-llm up`'s `ready` (default 30)
#   BENCH_BROKER=embedded no mosquitto: `mqtt-llm up` runs its embedded broker on the same port (its CPU time is
#                         then part of `up`'s)
#
# The word SIMURL in the bench flags becomes the simulator's URL, so `--engine-metrics SIMURL/metrics` reports the
# engine's prefix-cache hit rate.
set -u
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${MQTT_LLM_RELEASE_DIR:-$repo/target/release}"
work="$(mktemp -d)"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# utime + stime of a process and its threads, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
simflags=()
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do simflags+=("$1"); shift; done
[ "$#" -gt 0 ] && shift
mqtt_port=$(free_port)
sim_port=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\nmax_queued_messages 100000\nmax_inflight_messages 0\n' \
    "$mqtt_port" > "$work/mosquitto.conf"
broker_flags=(--broker "mqtt://127.0.0.1:$mqtt_port")
if [ "${BENCH_BROKER:-mosquitto}" = embedded ]; then
    broker_flags=(--mqtt-listen "127.0.0.1:$mqtt_port" --mqtt-ws-listen off)
    sleep infinity & broker=$!
else
    mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 & broker=$!
fi
"$bin/vllm-sim" serve sim --host 127.0.0.1 --port "$sim_port" --disable-uvicorn-access-log \
    --enable-prompt-tokens-details "${simflags[@]}" >"$work/sim.log" 2>&1 & sim=$!
cleanup() { kill "${up:-}" 2>/dev/null; wait "${up:-}" 2>/dev/null; kill "$sim" "$broker" 2>/dev/null; wait 2>/dev/null; }
trap cleanup EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$sim_port/health" >/dev/null && break; sleep 0.1; done
# shellcheck disable=SC2086
# Each run gets its own session store (a fresh, empty one), when this mqtt-llm persists conversations.
state_flags=()
"$bin/mqtt-llm" up --help 2>/dev/null | grep -q -- '--state-dir' && state_flags=(--state-dir "$work/state")
MQTT_LLM_LOG=warn "$bin/mqtt-llm" up "${state_flags[@]}" --engine-url "http://127.0.0.1:$sim_port" "${broker_flags[@]}" \
    --http 127.0.0.1:0 --max-inflight 256 ${UP_FLAGS:-} >"$work/up.out" 2>"$work/up.err" & up=$!
ready_ticks=$(( ${STACK_READY_TIMEOUT_S:-30} * 10 ))
for _ in $(seq "$ready_ticks"); do grep -q '^ready' "$work/up.out" && break; sleep 0.1; done
if ! grep -q '^ready' "$work/up.out"; then
    echo "mqtt-llm up is not ready (logs: $work):" >&2; tail -n 20 "$work/up.err" >&2; exit 2
fi
# VmRSS / VmHWM of a process, in kB.
proc_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null; }
# The service's /metrics address, from its `http listening on ADDR` line.
up_http=$(sed -n 's/^http listening on //p' "$work/up.out" | head -n1)
[ -n "${BENCH_MEM:-}" ] && echo "rss_before_kb=$(proc_kb "$up" VmRSS)" >"$BENCH_MEM"
if [ -n "${BENCH_PERF:-}" ]; then
    perf record -F 499 -e cpu-clock --call-graph dwarf,32768 -p "$up" -o "$BENCH_PERF" >"$work/perf.log" 2>&1 & perf=$!
fi
declare -A before
for p in broker sim up; do before[$p]=$(cpu_ticks "${!p}"); done
# CPU time of reaped children, in ms (bash's `times`, second line); the bench is the only sizeable one.
# (`times` must run in this shell, not in a command substitution's subshell.)
children_ms() { awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60000 + a[2] * 1000 } print int(t) }' "$work/times"; }
times >"$work/times"; bench_before=$(children_ms)
start_ns=$(date +%s%N)
"$bin/mqtt-llm" bench --broker "mqtt://127.0.0.1:$mqtt_port" "${@//SIMURL/http://127.0.0.1:$sim_port}" 2>"$work/bench.err"
rc=$?
end_ns=$(date +%s%N)
times >"$work/times"; bench_ms=$(( $(children_ms) - bench_before ))
if [ -n "${BENCH_PERF:-}" ]; then kill -INT "$perf" 2>/dev/null; wait "$perf" 2>/dev/null; fi
if [ -n "${BENCH_MEM:-}" ]; then
    sleep "${BENCH_MEM_SETTLE_S:-2}"
    curl -sf "http://$up_http/metrics" >"$BENCH_MEM.metrics" 2>/dev/null
    # A gauge's value (summed over label sets), or nothing when the service does not have it.
    gauge() { awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $NF; n++ } END { if (n) printf "%.0f\n", s }' "$BENCH_MEM.metrics"; }
    {
        echo "rss_after_kb=$(proc_kb "$up" VmRSS)"
        echo "hwm_kb=$(proc_kb "$up" VmHWM)"
        echo "sessions=$(gauge mqtt_llm_sessions)"
        echo "session_bytes=$(gauge mqtt_llm_session_bytes)"
        echo "up_metrics=$BENCH_MEM.metrics"
    } >>"$BENCH_MEM"
fi
if [ "${BENCH_CPU:-}" = 1 ]; then
    hz=$(getconf CLK_TCK)
    wall=$(( (end_ns - start_ns) / 1000000 ))
    {
        echo "cpu time during the bench (wall ${wall} ms):"
        for p in broker sim up; do
            echo "  $p: $(( ($(cpu_ticks "${!p}") - before[$p]) * 1000 / hz )) ms"
        done
        echo "  bench: $bench_ms ms"
    } >&2
fi
echo "logs: $work" >&2
exit "$rc"
