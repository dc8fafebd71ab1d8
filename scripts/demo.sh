#!/usr/bin/env bash
# The main job, on a fresh machine: build a CPU model repository, start Triton,
# transcribe the bundled sample audio (with word timestamps) and print JSON.
#
#   scripts/demo.sh                      # tiny RANDOM checkpoints (generated once, cached)
#   MODEL=/path/Qwen3-ASR-1.7B-hf ALIGNER=/path/Qwen3-ForcedAligner-0.6B-hf scripts/demo.sh
#
# Knobs (environment): MODEL, ALIGNER (checkpoint dirs), SAMPLE (audio file),
# WORK (build/cache dir), GRPC_PORT / HTTP_PORT / METRICS_PORT.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL="${MODEL:-}"
ALIGNER="${ALIGNER:-}"
SAMPLE="${SAMPLE:-$ROOT/tests/data/sample_en.wav}"
WORK="${WORK:-$ROOT/.cache/demo}"
GRPC_PORT="${GRPC_PORT:-8001}"
HTTP_PORT="${HTTP_PORT:-8000}"
METRICS_PORT="${METRICS_PORT:-8002}"

log() { echo "[demo] $*" >&2; }

# ---- stage 1: environment --------------------------------------------------------
"$ROOT/scripts/setup_env.sh"
PY="$ROOT/.venv/bin/python"

# ---- stage 2: checkpoints (random tiny ones unless real ones are given) -------------
if [[ -z "$MODEL" ]]; then
  MODEL="$WORK/checkpoints/tiny-asr"
  ALIGNER="${ALIGNER:-$WORK/checkpoints/tiny-aligner}"
  for kind in asr aligner; do
    dir="$WORK/checkpoints/tiny-$kind"
    if [[ ! -f "$dir/RANDOM_WEIGHTS.txt" ]]; then
      log "writing a tiny RANDOMLY INITIALISED $kind checkpoint to $dir"
      "$PY" -m qwen3_asr_triton.export.random_checkpoint --size tiny --kind "$kind" --output "$dir" >&2
    fi
  done
  log "*******************************************************************************"
  log "* No MODEL given: using RANDOM weights of the real architecture and vocabulary. *"
  log "* The transcript below is MEANINGLESS words; set MODEL=<checkpoint dir> for    *"
  log "* real Qwen3-ASR weights (and ALIGNER=<Qwen3-ForcedAligner dir> for timestamps). *"
  log "*******************************************************************************"
fi

# ---- stage 3: model repository ------------------------------------------------------
build=(--model "$MODEL" --target cpu --output "$WORK/model_repository" --work-dir "$WORK/build"
       --entry-instances 2 --kv-cache-mb 1024)
[[ -n "$ALIGNER" ]] && build+=(--aligner "$ALIGNER")
"$ROOT/build_engines.sh" "${build[@]}" >&2

# ---- stage 4: Triton (stopped again when this script exits) --------------------------
"$ROOT/scripts/serve_cpu.sh" --model-repository "$WORK/model_repository" \
  --grpc-port "$GRPC_PORT" --http-port "$HTTP_PORT" --metrics-port "$METRICS_PORT" > "$WORK/triton.log" 2>&1 &
SERVER=$!
trap 'kill -TERM "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true' EXIT
log "starting Triton (log: $WORK/triton.log)"
for _ in $(seq 1 600); do
  grep -q "serve_cpu.sh: Triton ready" "$WORK/triton.log" 2>/dev/null && break
  kill -0 "$SERVER" 2>/dev/null || { tail -n 40 "$WORK/triton.log" >&2; exit 1; }
  sleep 0.5
done
grep -q "serve_cpu.sh: Triton ready" "$WORK/triton.log" || { log "Triton did not become ready"; exit 1; }

# ---- stage 5: transcribe the sample over gRPC and print JSON ---------------------------
args=(transcribe "$SAMPLE" --url "127.0.0.1:$GRPC_PORT" --format json)
[[ -n "$ALIGNER" ]] && args+=(--timestamps)
"$ROOT/.venv/bin/qwen3-asr" "${args[@]}"
