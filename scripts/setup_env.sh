#!/usr/bin/env bash
# Create (or refresh) the project environment at <repo>/.venv.
#
# Idempotent: does nothing when .venv already matches pyproject.toml.
# Knobs (environment):
#   PYTHON        interpreter to build the venv from (default: python3; 3.10-3.12)
#   EXTRAS        pip extras to install (default: export,serve,gateway,test)
#   INSTALL_SYSTEM_PACKAGES=1  also apt-get the tools the tests use (espeak-ng, sox, ffmpeg, openssl, ps, ss, chromium)
#                              when one is missing
set -euo pipefail

PYTHON="${PYTHON:-python3}"
EXTRAS="${EXTRAS:-export,serve,gateway,test}"
INSTALL_SYSTEM_PACKAGES="${INSTALL_SYSTEM_PACKAGES:-0}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.qwen3-asr-stamp"

# --- stage 1: system packages for tests and the sample audio tools (optional) ---
# Commands the tests run, and the Debian packages that bring them.
SYSTEM_TOOLS=(espeak-ng sox ffmpeg openssl ps ss chromium)
SYSTEM_PACKAGES=(espeak-ng sox libsox-fmt-all ffmpeg openssl procps iproute2 chromium)
if [[ "$INSTALL_SYSTEM_PACKAGES" == "1" ]]; then
  missing=()
  for tool in "${SYSTEM_TOOLS[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    echo "[setup] installing system packages for: ${missing[*]}" >&2
    pkgs=("${SYSTEM_PACKAGES[@]}")
    if [[ "$(id -u)" == "0" ]]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
    else
      sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
    fi
  fi
fi

# --- stage 2: the virtual environment ---
want="$(cat "$ROOT/pyproject.toml" <(echo "$EXTRAS") | sha256sum | cut -c1-16)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[setup] creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
echo "[setup] installing the project into $VENV (extras: $EXTRAS)" >&2
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch is pinned in pyproject.toml (a CPU build); numpy<2 is required by Triton's python backend.
"$VENV/bin/python" -m pip install -q -e "$ROOT[$EXTRAS]"
echo "$want" > "$STAMP"
echo "[setup] environment ready" >&2
