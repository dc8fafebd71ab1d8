#!/usr/bin/env bash
# Checkpoint -> filled Triton model repository, for one target.
#
#   ./build_engines.sh --model CKPT [--aligner ALIGNER_CKPT] --target cpu|gpu --output REPO_DIR
#                      [--work-dir DIR] [--dry-run] [build knobs...]
#
# cpu : export ONNX (cached in the work dir), fill the config templates, assemble REPO_DIR
#       (python-backend models, ONNX Runtime inside).
# gpu : see README "GPU target"; run inside NVIDIA's tritonserver TensorRT-LLM container.
# Build knobs (instances, batch sizes, KV-cache budget, limits): run with --help-knobs.
# Every stage can be re-run; the export is skipped when the checkpoint has not changed.
set -euo pipefail

# ---- knobs -------------------------------------------------------------------
MODEL=""
ALIGNER=""
TARGET="cpu"
OUTPUT=""
WORK_DIR=""
DRY_RUN=0
EXTRA=()

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
  case "$1" in
    --model) MODEL="$2"; shift 2 ;;
    --aligner) ALIGNER="$2"; shift 2 ;;
    --target) TARGET="$2"; shift 2 ;;
    --output) OUTPUT="$2"; shift 2 ;;
    --work-dir) WORK_DIR="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --help-knobs) "$ROOT/scripts/setup_env.sh"; exec "$ROOT/.venv/bin/python" -m qwen3_asr_triton.export.build_repository --help ;;
    -h|--help) usage 0 ;;
    --*) EXTRA+=("$1" "$2"); shift 2 ;;
    *) echo "build_engines.sh: unexpected argument $1" >&2; usage 2 ;;
  esac
done
[[ -n "$MODEL" && -n "$OUTPUT" ]] || { echo "build_engines.sh: --model and --output are required" >&2; usage 2; }
[[ -d "$MODEL" ]] || { echo "build_engines.sh: checkpoint directory $MODEL does not exist" >&2; exit 2; }
[[ -z "$ALIGNER" || -d "$ALIGNER" ]] || { echo "build_engines.sh: aligner directory $ALIGNER does not exist" >&2; exit 2; }
WORK_DIR="${WORK_DIR:-${OUTPUT%/}.work}"

case "$TARGET" in
  cpu)
    # ---- stage 1: environment ----------------------------------------------------
    "$ROOT/scripts/setup_env.sh"
    args=(--model "$MODEL" --output "$OUTPUT" --work-dir "$WORK_DIR")
    [[ -n "$ALIGNER" ]] && args+=(--aligner "$ALIGNER")
    # ---- stages 2-4: export, fill templates, assemble (python) ----------------------
    if ((DRY_RUN)); then
      echo "$ROOT/.venv/bin/python -m qwen3_asr_triton.export.build_repository ${args[*]} ${EXTRA[*]:-}"
      exit 0
    fi
    exec "$ROOT/.venv/bin/python" -m qwen3_asr_triton.export.build_repository "${args[@]}" "${EXTRA[@]}"
    ;;
  gpu)
    echo "build_engines.sh: the gpu target is not implemented yet" >&2
    exit 3
    ;;
  *)
    echo "build_engines.sh: --target must be cpu or gpu, got $TARGET" >&2
    exit 2
    ;;
esac
