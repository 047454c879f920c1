#!/usr/bin/env bash
# The project's test command (see the README). From a fresh clone on a Debian machine:
#   1. installs mosquitto with apt-get when it is missing (the tests start their own brokers on free ports; no
#      system-wide service is started), python3-venv when python3 cannot make a virtual environment, and chromium
#      when it is missing (tests/web_example.rs drives examples/web/index.html in headless Chromium),
#   2. prepares the CPU engine for the end-to-end tests (scripts/setup-cpu-engine.sh: llama.cpp + SmolLM2),
#   3. runs every test with MQTT_LLM_REQUIRE_CPU_ENGINE=1 and MQTT_LLM_REQUIRE_CHROMIUM=1, so the end-to-end and
#      browser tests may not skip.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test llamacpp_e2e`).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

phase() { printf '\n==> %s\n' "$*"; }

# apt_install PACKAGE...: quiet apt-get install (after apt-get update), without starting any service.
apt_install() {
    command -v apt-get >/dev/null 2>&1 || { echo "missing: $*; apt-get is not available, install them yourself" >&2; exit 1; }
    local sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || { echo "installing $* needs root (or sudo)" >&2; exit 1; }
        sudo=(sudo)
    fi
    echo "installing with apt-get: $*"
    # A policy-rc.d that exits 101 keeps maintainer scripts from starting services (the system-wide mosquitto).
    local policy=/usr/sbin/policy-rc.d added=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod +x "$policy"
        added=1
    fi
    local rc=0
    {
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    } || rc=$?
    if [[ "$added" == 1 ]]; then "${sudo[@]}" rm -f "$policy"; fi
    return "$rc"
}

have_mosquitto() {
    command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]]
}

phase "system packages"
missing=()
have_mosquitto || missing+=(mosquitto)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ! command -v python3 >/dev/null 2>&1; then
    missing+=(python3 python3-venv)
elif ! python3 -c 'import ensurepip, venv' 2>/dev/null && ! python3 -m pip --version >/dev/null 2>&1; then
    # Debian's python3 without python3-venv (and without pip) cannot make a virtual environment with pip.
    missing+=(python3-venv)
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    apt_install "${missing[@]}"
fi
have_mosquitto || { echo "mosquitto is still not installed" >&2; exit 1; }
echo "mosquitto: $(command -v mosquitto || echo /usr/sbin/mosquitto)"
command -v chromium >/dev/null 2>&1 || { echo "chromium is still not installed" >&2; exit 1; }
echo "python3:   $(command -v python3) ($(python3 --version 2>&1))"
echo "chromium:  $(command -v chromium)"

phase "CPU engine (llama.cpp + SmolLM2)"
bash "$REPO/scripts/setup-cpu-engine.sh"

phase "cargo test --workspace --all-targets (MQTT_LLM_REQUIRE_CPU_ENGINE=1 MQTT_LLM_REQUIRE_CHROMIUM=1)"
# --no-fail-fast: run every test binary, so one run reports every failure.
MQTT_LLM_REQUIRE_CPU_ENGINE=1 MQTT_LLM_REQUIRE_CHROMIUM=1 cargo test --workspace --all-targets --no-fail-fast "$@"

phase "all tests passed"
