#!/usr/bin/env bash
# Run the project's checks: ruff, then the whole pytest suite (unit tests and the
# end-to-end tests against a real Triton server the tests start themselves).
#
#   scripts/test.sh [pytest args...]
#
# Creates .venv if needed; as root it also apt-gets the audio tools the tests use
# (espeak-ng, sox, ffmpeg). Generated checkpoints, ONNX graphs, audio and model
# repositories are cached under .cache/ (git-ignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

INSTALL_SYSTEM_PACKAGES="$([[ "$(id -u)" == "0" ]] && echo 1 || echo 0)" "$ROOT/scripts/setup_env.sh"
for tool in espeak-ng sox ffmpeg; do
  command -v "$tool" >/dev/null || { echo "test.sh: $tool is missing (apt-get install espeak-ng sox ffmpeg)" >&2; exit 1; }
done

"$ROOT/.venv/bin/ruff" check .
"$ROOT/.venv/bin/ruff" format --check . >/dev/null || { "$ROOT/.venv/bin/ruff" format --diff . | head -50; exit 1; }
PATH="$ROOT/.venv/bin:$PATH" exec "$ROOT/.venv/bin/python" -m pytest -ra "$@"
