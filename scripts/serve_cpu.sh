#!/usr/bin/env bash
# Run the Triton Inference Server (2.51, shipped in the nvidia-pytriton wheel) on this machine's CPU.
#
#   scripts/serve_cpu.sh --model-repository DIR [--grpc-port P] [--http-port Q] [--metrics-port R]
#                        [--address 127.0.0.1] [--http-address ADDRESS] [--ready-timeout 300] [--log-verbose 0]
#                        [--max-restarts 5] [--watch-interval 1]
#                        [--triton-grpc-port PORT] [--guard-args "EXTRA ARGS"] [--no-grpc-guard]
#                        [--openai-port PORT] [--openai-address ADDRESS] [--openai-args "EXTRA ARGS"]
#
# Binds to 127.0.0.1 by default (--http-address defaults to --address; keep Triton's HTTP port
# away from untrusted clients: one crafted JSON body crashes Triton 2.51's HTTP server),
# keeps the model-control API closed (mode "none"),
# waits until the server is ready, then stays in the foreground; SIGTERM / SIGINT /
# exit stop the server's whole process group (python backend stubs included).
# Clients' gRPC port (--grpc-port, on --address) is served by the gRPC guard (`qwen3-asr serve-grpc`):
# it checks every inference message (declared shapes against the data carried, sizes from the
# repository's max_audio_bytes) and forwards it to Triton's own gRPC endpoint, which listens on
# 127.0.0.1:--triton-grpc-port (default: --grpc-port + 10). One message declaring a tensor of 2^62
# elements kills a python worker of Triton 2.51 when it reaches Triton directly. --no-grpc-guard puts
# Triton itself on --grpc-port (trusted clients only).
# A watchdog checks every --watch-interval seconds that tritonserver and every python
# worker it started are alive (Triton 2.51 never restarts a dead worker). When one is gone,
# the server is stopped and started again, up to --max-restarts times; after that (or with
# --max-restarts 0, as in the containers, whose orchestrator restarts them) the script exits 1.
# --openai-port starts the OpenAI-compatible gateway (`qwen3-asr serve-openai`, bound to
# --openai-address, default --address) once Triton is ready; it talks to Triton's own gRPC endpoint,
# stays up while Triton restarts (its /health answers 503 meanwhile), and stops with the script.
# Its API key comes from QWEN3_ASR_API_KEY in the environment. The guard and the gateway are
# restarted when they die (together at most --max-restarts times).
# Works from any directory; creates the project environment (.venv) if it is missing.
set -euo pipefail

# ---- knobs -------------------------------------------------------------------
MODEL_REPOSITORY=""
ADDRESS="127.0.0.1"
HTTP_ADDRESS=""           # empty: same as ADDRESS
GRPC_PORT=8001
HTTP_PORT=8000
METRICS_PORT=8002
READY_TIMEOUT=300          # seconds; the first ONNX Runtime load in a fresh venv can take ~30 s
LOG_VERBOSE=0
SHM_BYTES=$((64 * 1024 * 1024))   # python backend shared memory: initial size and growth step
MAX_RESTARTS=5             # restarts after a dead worker or server, then exit 1 (0: exit at once)
WATCH_INTERVAL=1           # seconds between watchdog checks
RESTART_GRACE=2            # seconds a failed server gets for in-flight requests before it is killed
OPENAI_PORT=""             # empty: no OpenAI-compatible gateway
OPENAI_ADDRESS=""          # empty: same as ADDRESS
OPENAI_ARGS=""             # more `qwen3-asr serve-openai` options, e.g. "--max-concurrency 32"
GRPC_GUARD=1               # 0: Triton itself listens on GRPC_PORT (trusted clients only)
TRITON_GRPC_PORT=""        # empty: GRPC_PORT + 10 (Triton's own gRPC endpoint, loopback, behind the guard)
GUARD_ARGS=""              # more `qwen3-asr serve-grpc` options, e.g. "--max-concurrent-rpcs 1024"

usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
  case "$1" in
    --model-repository) MODEL_REPOSITORY="$2"; shift 2 ;;
    --grpc-port) GRPC_PORT="$2"; shift 2 ;;
    --http-port) HTTP_PORT="$2"; shift 2 ;;
    --metrics-port) METRICS_PORT="$2"; shift 2 ;;
    --address) ADDRESS="$2"; shift 2 ;;
    --http-address) HTTP_ADDRESS="$2"; shift 2 ;;
    --ready-timeout) READY_TIMEOUT="$2"; shift 2 ;;
    --log-verbose) LOG_VERBOSE="$2"; shift 2 ;;
    --max-restarts) MAX_RESTARTS="$2"; shift 2 ;;
    --watch-interval) WATCH_INTERVAL="$2"; shift 2 ;;
    --openai-port) OPENAI_PORT="$2"; shift 2 ;;
    --openai-address) OPENAI_ADDRESS="$2"; shift 2 ;;
    --openai-args) OPENAI_ARGS="$2"; shift 2 ;;
    --triton-grpc-port) TRITON_GRPC_PORT="$2"; shift 2 ;;
    --guard-args) GUARD_ARGS="$2"; shift 2 ;;
    --no-grpc-guard) GRPC_GUARD=0; shift ;;
    -h|--help) usage 0 ;;
    *) echo "serve_cpu.sh: unknown argument $1" >&2; usage 2 ;;
  esac
done
[[ -n "$MODEL_REPOSITORY" ]] || { echo "serve_cpu.sh: --model-repository is required" >&2; usage 2; }
[[ -d "$MODEL_REPOSITORY" ]] || { echo "serve_cpu.sh: $MODEL_REPOSITORY is not a directory" >&2; exit 2; }
MODEL_REPOSITORY="$(cd "$MODEL_REPOSITORY" && pwd)"
HTTP_ADDRESS="${HTTP_ADDRESS:-$ADDRESS}"
OPENAI_ADDRESS="${OPENAI_ADDRESS:-$ADDRESS}"
if ((GRPC_GUARD)); then
  # Triton's own gRPC endpoint stays on loopback; the guard serves clients on ADDRESS:GRPC_PORT.
  TRITON_GRPC_PORT="${TRITON_GRPC_PORT:-$((GRPC_PORT + 10))}"
  TRITON_GRPC_ADDRESS="127.0.0.1"
  if ((TRITON_GRPC_PORT == GRPC_PORT)); then
    echo "serve_cpu.sh: --triton-grpc-port must differ from --grpc-port" >&2
    exit 2
  fi
else
  TRITON_GRPC_PORT="$GRPC_PORT"
  TRITON_GRPC_ADDRESS="$ADDRESS"
fi
# Where the gateway reaches Triton's own gRPC endpoint (a wildcard address is reached on loopback).
case "$TRITON_GRPC_ADDRESS" in
  0.0.0.0) GRPC_TARGET="127.0.0.1:$TRITON_GRPC_PORT" ;;
  ::) GRPC_TARGET="[::1]:$TRITON_GRPC_PORT" ;;
  *:*) GRPC_TARGET="[$TRITON_GRPC_ADDRESS]:$TRITON_GRPC_PORT" ;;
  *) GRPC_TARGET="$TRITON_GRPC_ADDRESS:$TRITON_GRPC_PORT" ;;
esac
# Where this script checks that the guard listens (a wildcard address is reached on loopback).
case "$ADDRESS" in
  0.0.0.0) GUARD_HOST="127.0.0.1" ;;
  ::) GUARD_HOST="::1" ;;
  *) GUARD_HOST="$ADDRESS" ;;
esac
# Where this script itself reaches the HTTP endpoint (readiness, the watchdog's model list); a
# wildcard address is reached on loopback.
case "$HTTP_ADDRESS" in
  0.0.0.0) HTTP_URL="http://127.0.0.1:$HTTP_PORT" ;;
  ::) HTTP_URL="http://[::1]:$HTTP_PORT" ;;
  *:*) HTTP_URL="http://[$HTTP_ADDRESS]:$HTTP_PORT" ;;
  *) HTTP_URL="http://$HTTP_ADDRESS:$HTTP_PORT" ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# ---- stage 1: project environment ---------------------------------------------
"$ROOT/scripts/setup_env.sh"
PY="$ROOT/.venv/bin/python"

# ---- stage 2: locate the server and make the python backend usable -------------
TRITON_HOME="$("$PY" -c 'import pathlib, pytriton; print(pathlib.Path(pytriton.__file__).parent / "tritonserver")')"
PY_VERSION="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
PY_LIBDIR="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
STUB="$TRITON_HOME/backends/python/triton_python_backend_stub"
if [[ ! -x "$STUB" ]]; then
  # The backend looks for its stub next to libtriton_python.so.
  cp "$TRITON_HOME/python_backend_stubs/$PY_VERSION/triton_python_backend_stub" "$STUB"
  chmod +x "$STUB"
fi
# The stub runs the `python3` found first on PATH and must load this interpreter's libpython.
export PATH="$ROOT/.venv/bin:$PATH"
export LD_LIBRARY_PATH="$PY_LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# ---- stage 3: start in its own process group, wait until ready, watch, restart ---------
SERVER_PID=""
WATCH_PID=""
REGIONS_FILE="$(mktemp -t qwen3-asr-shm-regions.XXXXXX)"

start_server() {
  setsid "$TRITON_HOME/bin/tritonserver" \
    --model-repository="$MODEL_REPOSITORY" \
    --backend-directory="$TRITON_HOME/backends" \
    --http-address="$HTTP_ADDRESS" --http-port="$HTTP_PORT" \
    --grpc-address="$TRITON_GRPC_ADDRESS" --grpc-port="$TRITON_GRPC_PORT" \
    --metrics-address="$ADDRESS" --metrics-port="$METRICS_PORT" \
    --allow-gpu-metrics=false \
    --model-control-mode=none \
    --strict-readiness=true \
    --exit-on-error=true \
    --log-verbose="$LOG_VERBOSE" \
    --backend-config=python,shm-default-byte-size="$SHM_BYTES" \
    --backend-config=python,shm-growth-byte-size="$SHM_BYTES" &
  SERVER_PID=$!
}

stop_server() {  # stop_server [GRACE_SECONDS]: SIGTERM, up to GRACE s for in-flight requests, then SIGKILL
  local grace="${1:-30}"
  if [[ -n "$WATCH_PID" ]]; then kill "$WATCH_PID" 2>/dev/null || true; wait "$WATCH_PID" 2>/dev/null || true; fi
  WATCH_PID=""
  [[ -n "$SERVER_PID" ]] || return 0
  # The shared memory of the server's group, to free once it is dead (killed processes leave it behind);
  # added to what was listed at start-up, when a killed server's workers may already have exited.
  "$PY" -m qwen3_asr_triton.supervision regions --pgid "$SERVER_PID" >> "$REGIONS_FILE" 2>/dev/null || true
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 "$grace"); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 1; done
  fi
  # The whole group: stubs whose server died are orphans that would hold memory for minutes.
  kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
  "$PY" -m qwen3_asr_triton.supervision clean-shm --names-file "$REGIONS_FILE" || true
  rm -f "$REGIONS_FILE"
}

# ---- the fronts: the gRPC guard and the OpenAI-compatible gateway (--openai-port) ---------------
GUARD_PID=""
GATEWAY_PID=""
front_restarts=0
start_guard() {
  # shellcheck disable=SC2086  # GUARD_ARGS is a list of options
  "$ROOT/.venv/bin/qwen3-asr" serve-grpc --triton-url "$GRPC_TARGET" --model-repository "$MODEL_REPOSITORY" \
    --host "$ADDRESS" --port "$GRPC_PORT" $GUARD_ARGS &
  GUARD_PID=$!
}
wait_guard() {  # until the guard accepts connections; fails when it exited (a taken port, a bad option)
  "$PY" - "$GUARD_HOST" "$GRPC_PORT" "$GUARD_PID" <<'EOF'
import socket, sys, time

host, port, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            gone = stat.read().rsplit(")", 1)[1].split()[0] in "ZX"  # exited, not yet reaped
    except FileNotFoundError:
        gone = True
    if gone:
        sys.exit("serve_cpu.sh: the gRPC guard exited during start-up (see its log above)")
    try:
        socket.create_connection((host, port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit("serve_cpu.sh: the gRPC guard is not listening after 60 s")
EOF
}
start_gateway() {
  # shellcheck disable=SC2086  # OPENAI_ARGS is a list of options
  "$ROOT/.venv/bin/qwen3-asr" serve-openai --triton-url "$GRPC_TARGET" \
    --host "$OPENAI_ADDRESS" --port "$OPENAI_PORT" $OPENAI_ARGS &
  GATEWAY_PID=$!
  echo "serve_cpu.sh: OpenAI-compatible gateway starting on $OPENAI_ADDRESS:$OPENAI_PORT (pid $GATEWAY_PID)" >&2
}
stop_fronts() {  # SIGTERM: both finish the requests in flight, then exit
  local pid
  for pid in "$GATEWAY_PID" "$GUARD_PID"; do if [[ -n "$pid" ]]; then kill -TERM "$pid" 2>/dev/null || true; fi; done
  for pid in "$GATEWAY_PID" "$GUARD_PID"; do if [[ -n "$pid" ]]; then wait "$pid" 2>/dev/null || true; fi; done
  GATEWAY_PID=""
  GUARD_PID=""
}

trap 'trap - TERM INT EXIT; stop_fronts; stop_server; rm -f "$REGIONS_FILE"; exit 143' TERM
trap 'trap - TERM INT EXIT; stop_fronts; stop_server; rm -f "$REGIONS_FILE"; exit 130' INT
trap 'stop_fronts; stop_server; rm -f "$REGIONS_FILE"' EXIT

wait_ready() {
  "$PY" - "$HTTP_URL" "$READY_TIMEOUT" "$SERVER_PID" <<'EOF'
import os, sys, time, urllib.request

url, timeout, pid = f"{sys.argv[1]}/v2/health/ready", float(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("serve_cpu.sh: tritonserver exited during start-up (see its log above)")
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit(f"serve_cpu.sh: server not ready after {timeout:.0f} s")
EOF
}

restarts=0
# Regions a killed server left behind (a container restarted in the same pod keeps its /dev/shm); the
# age keeps the new regions of another server starting on the same machine at this moment.
"$PY" -m qwen3_asr_triton.supervision clean-shm --min-age 120 || true
started_once=0
while true; do
  start_server
  if ! wait_ready; then
    # The first start failing is a configuration error: report it at once. A restart failing (the
    # server killed before it was ready) counts as one more restart.
    ((started_once)) || exit 1
    why="it failed during start-up"
  else
    started_once=1
    "$PY" -m qwen3_asr_triton.supervision regions --pgid "$SERVER_PID" > "$REGIONS_FILE" 2>/dev/null || true
    # The fronts start once Triton is first ready and keep running across Triton's restarts; the
    # guard's first start failing is a configuration error (a taken port, a bad --guard-args).
    if ((GRPC_GUARD)) && [[ -z "$GUARD_PID" ]]; then
      start_guard
      wait_guard || exit 1
    fi
    echo "serve_cpu.sh: Triton ready (grpc $ADDRESS:$GRPC_PORT, http $HTTP_ADDRESS:$HTTP_PORT, metrics $ADDRESS:$METRICS_PORT)" >&2
    if [[ -n "$OPENAI_PORT" && -z "$GATEWAY_PID" ]]; then start_gateway; fi
    "$PY" -m qwen3_asr_triton.supervision watch --pid "$SERVER_PID" --url "$HTTP_URL" --interval "$WATCH_INTERVAL" &
    WATCH_PID=$!
    status=0
    while true; do
      ended=""
      code=0
      wait -n -p ended "$WATCH_PID" ${GUARD_PID:+"$GUARD_PID"} ${GATEWAY_PID:+"$GATEWAY_PID"} || code=$?
      if [[ "$ended" == "$WATCH_PID" ]]; then status=$code; break; fi
      # A front died (Triton is fine): start it again, within the fronts' restart budget.
      if [[ "$ended" == "$GUARD_PID" ]]; then front="gRPC guard"; else front="OpenAI-compatible gateway"; fi
      echo "serve_cpu.sh: the $front exited with status $code" >&2
      if ((front_restarts >= MAX_RESTARTS)); then
        echo "serve_cpu.sh: --max-restarts $MAX_RESTARTS is used up for the $front" >&2
        exit 1
      fi
      front_restarts=$((front_restarts + 1))
      sleep 1
      if [[ "$ended" == "$GUARD_PID" ]]; then
        start_guard
      else
        start_gateway
      fi
    done
    WATCH_PID=""
    why="watchdog status $status"
  fi
  # A server with a dead worker never finishes its graceful shutdown (it waits on the worker until
  # its 30 s exit timeout): give in-flight requests RESTART_GRACE seconds, then kill it.
  stop_server "$RESTART_GRACE"
  if ((restarts >= MAX_RESTARTS)); then
    echo "serve_cpu.sh: the server failed ($why) and --max-restarts $MAX_RESTARTS is used up" >&2
    exit 1
  fi
  restarts=$((restarts + 1))
  echo "serve_cpu.sh: restarting Triton ($why; restart $restarts of $MAX_RESTARTS)" >&2
done
