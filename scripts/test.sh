#!/usr/bin/env bash
# Run the project's checks: ruff, import-linter, then the whole pytest suite (unit tests and the
# end-to-end tests against a real Triton server the tests start themselves).
#
#   scripts/test.sh [pytest args...]
#
# The one command a new machine needs: it creates .venv (scripts/setup_env.sh, extras
# export,serve,gateway,test), installs the deployment linters into it (scripts/install_lint_tools.sh)
# and apt-gets the system tools the tests use (espeak-ng, sox, ffmpeg, openssl, ps, ss, chromium) when one
# is missing: as root, or through sudo where it needs no password.
# Re-runs skip what is already there. Generated checkpoints, ONNX graphs, audio and model
# repositories are cached under .cache/ (git-ignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

can_install=0
if [[ "$(id -u)" == "0" ]] || sudo -n true 2>/dev/null; then
  can_install=1
fi
INSTALL_SYSTEM_PACKAGES="$can_install" "$ROOT/scripts/setup_env.sh"
"$ROOT/scripts/install_lint_tools.sh"
for tool in espeak-ng sox ffmpeg openssl ps ss chromium; do
  command -v "$tool" >/dev/null || {
    echo "test.sh: $tool is missing (run as root or with password-less sudo, or apt-get install espeak-ng sox libsox-fmt-all ffmpeg openssl procps iproute2 chromium)" >&2
    exit 1
  }
done

"$ROOT/.venv/bin/ruff" check .
"$ROOT/.venv/bin/ruff" format --check . >/dev/null || { "$ROOT/.venv/bin/ruff" format --diff . | head -50; exit 1; }
# The import layering (pyproject.toml [tool.importlinter]), read from a tree of links laid out like the
# installed package: export/, client/ and gateway/ join qwen3_asr_triton only through package-dir.
IMPORT_TREE="$("$ROOT/.venv/bin/python" "$ROOT/scripts/import_tree.py")"
(cd "$IMPORT_TREE" && "$ROOT/.venv/bin/lint-imports" "$ROOT/pyproject.toml" --no-logo)
PATH="$ROOT/.venv/bin:$PATH" exec "$ROOT/.venv/bin/python" -m pytest -ra "$@"
