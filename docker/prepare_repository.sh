#!/usr/bin/env bash
# Builder images' entry point (Kubernetes init container, compose one-shot service): make sure
# MODEL_REPOSITORY holds a finished build for QWEN3_ASR_TARGET.
#
#   docker/prepare_repository.sh          (knobs from the environment, see below)
#
# A repository already there (e.g. mounted from a volume that a previous build filled) is kept when its
# build_info.json names the same target; an empty MODEL_REPOSITORY is built from the checkpoints with
# build_engines.sh (gpu: TensorRT plans and the TensorRT-LLM engine, on the GPU this container was given).
# Anything else there is refused. Knobs: MODEL_REPOSITORY (/models), QWEN3_ASR_TARGET (set by the image),
# QWEN3_ASR_CHECKPOINT (/checkpoints/asr), QWEN3_ASR_ALIGNER_CHECKPOINT (/checkpoints/aligner, used when
# present), QWEN3_ASR_WORK_DIR (/work: exported graphs and engines, reused by a re-run),
# QWEN3_ASR_BUILD_ARGS (extra build_engines.sh knobs, e.g. "--decoder-max-batch 32 --max-segment-seconds 300").
set -euo pipefail

MODEL_REPOSITORY="${MODEL_REPOSITORY:-/models}"
TARGET="${QWEN3_ASR_TARGET:?the image sets QWEN3_ASR_TARGET (cpu or gpu)}"
CHECKPOINT="${QWEN3_ASR_CHECKPOINT:-/checkpoints/asr}"
ALIGNER_CHECKPOINT="${QWEN3_ASR_ALIGNER_CHECKPOINT:-/checkpoints/aligner}"
WORK_DIR="${QWEN3_ASR_WORK_DIR:-/work}"
read -r -a BUILD_ARGS <<< "${QWEN3_ASR_BUILD_ARGS:-}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# ---- stage 1: keep a finished build of the same target --------------------------------------------
built="$(python3 "$ROOT/docker/build_target.py" "$MODEL_REPOSITORY/build_info.json")"
if [[ "$built" == "$TARGET" ]]; then
  echo "prepare_repository.sh: $MODEL_REPOSITORY already holds a $TARGET build; nothing to do" >&2
  exit 0
fi
if [[ -n "$built" ]]; then
  echo "prepare_repository.sh: $MODEL_REPOSITORY holds a $built build, this image serves $TARGET" >&2
  exit 2
fi

# ---- stage 2: build it from the checkpoints ---------------------------------------------------------
[[ -d "$CHECKPOINT" ]] || { echo "prepare_repository.sh: checkpoint $CHECKPOINT not found" >&2; exit 2; }
args=(--target "$TARGET" --model "$CHECKPOINT" --output "$MODEL_REPOSITORY" --work-dir "$WORK_DIR")
if [[ -d "$ALIGNER_CHECKPOINT" ]]; then
  args+=(--aligner "$ALIGNER_CHECKPOINT")
fi
mkdir -p "$WORK_DIR"
exec "$ROOT/build_engines.sh" "${args[@]}" "${BUILD_ARGS[@]}"
