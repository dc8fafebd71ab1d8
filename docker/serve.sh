#!/usr/bin/env bash
# Container entry point of the server images: start Triton on a built model repository.
#
#   docker/serve.sh            (knobs from the environment, see below)
#
# Binds 0.0.0.0 explicitly: inside a container the network namespace is the boundary (compose publishes
# the ports on 127.0.0.1 only; Kubernetes reaches them through the Service and NetworkPolicy).
# The model-control API stays closed (mode "none"); the repository must carry build_info.json of the
# image's target (QWEN3_ASR_TARGET), so a cpu repository never starts on the gpu image or vice versa.
# Triton's HTTP port binds 127.0.0.1 (TRITON_HTTP_ADDRESS): one crafted JSON body crashes Triton 2.51's HTTP
# server, so only gRPC (and metrics) face the network; health checks use gRPC health checking.
# The gRPC port that faces the network is the project's gRPC guard (`qwen3-asr serve-grpc`): it checks
# every inference message (one whose declared tensor size overflows Triton's arithmetic kills a python
# worker) and forwards it to Triton's own gRPC endpoint on 127.0.0.1:TRITON_INTERNAL_GRPC_PORT.
# Knobs: MODEL_REPOSITORY (/models), QWEN3_ASR_TARGET (set by the image), TRITON_HTTP_PORT (8000),
# TRITON_GRPC_PORT (8001, the guard), TRITON_INTERNAL_GRPC_PORT (8011, Triton's own, loopback),
# TRITON_METRICS_PORT (8002), TRITON_LOG_VERBOSE (0),
# TRITON_SHM_BYTES (python backend shared memory, default 64 MiB), QWEN3_ASR_SITE (gpu: python models' packages),
# QWEN3_ASR_GATEWAY_SITE (gpu: the gateway's packages).
#
#   docker/serve.sh COMMAND [ARG...]
#
# With arguments, runs COMMAND in the image's Python environment instead of Triton: this is how compose and
# Kubernetes start the OpenAI-compatible gateway from the server image
# (`qwen3-asr serve-openai --triton-url 127.0.0.1:8011 --host 0.0.0.0 --port 8080` in the server's pod). cpu: the project's .venv;
# gpu: the gateway's packages, then the project's site (the image's own packages stay as they are).
set -euo pipefail

MODEL_REPOSITORY="${MODEL_REPOSITORY:-/models}"
TARGET="${QWEN3_ASR_TARGET:?the image sets QWEN3_ASR_TARGET (cpu or gpu)}"
ADDRESS="0.0.0.0"
# Triton's HTTP port stays inside the container: its JSON parser (2.51) can be crashed by one request.
HTTP_ADDRESS="${TRITON_HTTP_ADDRESS:-127.0.0.1}"
HTTP_PORT="${TRITON_HTTP_PORT:-8000}"
GRPC_PORT="${TRITON_GRPC_PORT:-8001}"
INTERNAL_GRPC_PORT="${TRITON_INTERNAL_GRPC_PORT:-8011}"
METRICS_PORT="${TRITON_METRICS_PORT:-8002}"
LOG_VERBOSE="${TRITON_LOG_VERBOSE:-0}"
SHM_BYTES="${TRITON_SHM_BYTES:-$((64 * 1024 * 1024))}"
SITE="${QWEN3_ASR_SITE:-/opt/qwen3-asr/site}"
GATEWAY_SITE="${QWEN3_ASR_GATEWAY_SITE:-/opt/qwen3-asr/gateway}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# ---- a command instead of Triton (the gateway container) -----------------------------------------
if (($#)); then
  case "$TARGET" in
    cpu) export PATH="$ROOT/.venv/bin:$PATH" ;;
    gpu)
      export PYTHONPATH="$GATEWAY_SITE:$SITE${PYTHONPATH:+:$PYTHONPATH}"
      export PATH="$SITE/bin:$PATH"
      ;;
    *)
      echo "serve.sh: QWEN3_ASR_TARGET must be cpu or gpu, got $TARGET" >&2
      exit 2
      ;;
  esac
  exec "$@"
fi

# ---- stage 1: the repository must be a finished build for this image's target ----------------
built="$(python3 "$ROOT/docker/build_target.py" "$MODEL_REPOSITORY/build_info.json")"
if [[ "$built" != "$TARGET" ]]; then
  echo "serve.sh: $MODEL_REPOSITORY holds no finished $TARGET build (build_info.json target: '${built:-none}')" >&2
  exit 2
fi

# ---- stage 2: start Triton ---------------------------------------------------------------------
case "$TARGET" in
  cpu)
    # --max-restarts 0: a dead worker ends the container, and its orchestrator restarts it.
    exec "$ROOT/scripts/serve_cpu.sh" --model-repository "$MODEL_REPOSITORY" --address "$ADDRESS" \
      --http-address "$HTTP_ADDRESS" \
      --http-port "$HTTP_PORT" --grpc-port "$GRPC_PORT" --triton-grpc-port "$INTERNAL_GRPC_PORT" \
      --metrics-port "$METRICS_PORT" --log-verbose "$LOG_VERBOSE" --max-restarts 0
    ;;
  gpu)
    # The python models import the project from its own site folder: the image's packages (TensorRT-LLM's
    # transformers and tokenizers pins) stay untouched for everything else.
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    # A container restarted in the same pod keeps /dev/shm: free what the killed server left there.
    python3 -m qwen3_asr_triton.supervision clean-shm --min-age 120 || true
    tritonserver \
      --model-repository="$MODEL_REPOSITORY" \
      --http-address="$HTTP_ADDRESS" --http-port="$HTTP_PORT" \
      --grpc-address=127.0.0.1 --grpc-port="$INTERNAL_GRPC_PORT" \
      --metrics-address="$ADDRESS" --metrics-port="$METRICS_PORT" \
      --allow-metrics=true --allow-gpu-metrics=true \
      --model-control-mode=none \
      --strict-readiness=true \
      --exit-on-error=true \
      --log-verbose="$LOG_VERBOSE" \
      --backend-config=python,shm-default-byte-size="$SHM_BYTES" \
      --backend-config=python,shm-growth-byte-size="$SHM_BYTES" &
    server=$!
    trap 'kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; exit 143' TERM INT
    # Triton never restarts a dead python worker: once the server is ready, the watchdog returns when
    # the server or one of its workers is gone, and the container exits for its orchestrator to restart.
    until python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
      "http://127.0.0.1:$HTTP_PORT/v2/health/ready" 2>/dev/null; do
      kill -0 "$server" 2>/dev/null || { wait "$server" || true; exit 1; }
      sleep 2
    done
    # The gRPC guard takes clients' port once Triton is ready; it runs with the gateway's packages.
    PYTHONPATH="$GATEWAY_SITE:$PYTHONPATH" python3 -m qwen3_asr_triton.gateway.cli serve-grpc \
      --triton-url "127.0.0.1:$INTERNAL_GRPC_PORT" --model-repository "$MODEL_REPOSITORY" \
      --host "$ADDRESS" --port "$GRPC_PORT" &
    guard=$!
    python3 -m qwen3_asr_triton.supervision watch --pid "$server" --url "http://127.0.0.1:$HTTP_PORT" &
    watcher=$!
    trap 'kill "$watcher" "$guard" "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; exit 143' TERM INT
    # Whichever ends first (a dead worker or server, or a dead guard) ends the container.
    status=0
    wait -n "$watcher" "$guard" || status=$?
    kill -TERM "$guard" "$watcher" "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    exit "$((status ? status : 1))"
    ;;
  *)
    echo "serve.sh: QWEN3_ASR_TARGET must be cpu or gpu, got $TARGET" >&2
    exit 2
    ;;
esac
