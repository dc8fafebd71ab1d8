#!/usr/bin/env bash
# perf_analyzer against a running Qwen3-ASR Triton server, with real speech clips; sweeps concurrency -> CSV.
#
#   perf/perf_analyzer.sh [--url 127.0.0.1:8001] [--model qwen3_asr] [--concurrency "1 2 4 8 16"]
#                         [--tokens 32] [--clip-seconds 5] [--pool 8] [--input audio|waveform]
#                         [--requests 32] [--stable] [--output perf/results/perf_analyzer-qwen3_asr.csv]
#
# Installs perf_analyzer 2.51 on first use (re-runnable): the PyPI perf-analyzer wheels need glibc 2.38,
# so it comes from the tritonclient==2.51.0 manylinux1 wheel (tritonclient-2.51.0.data/data/bin/), with
# libb64.so.0d and libcudart.so.12 taken from the nvidia-pytriton wheel's bundled libraries.
# Inputs: espeak-ng clips of exactly --clip-seconds (perf/pa_inputs.py), MAX_NEW_TOKENS = MIN_NEW_TOKENS =
# --tokens. --model qwen3_asr_streaming sends each clip as a sequence of 1 s WAVEFORM chunks over gRPC
# streaming (perf_analyzer sets START/END/CORRID; one request = one chunk, its latency runs to the chunk's
# last response). Each level measures exactly --requests requests
# (--request-count); --stable instead repeats windows of --requests until 3 agree within 20 %.
# The server must be up (scripts/serve_cpu.sh).
set -euo pipefail

# ---- knobs -------------------------------------------------------------------
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
URL="127.0.0.1:8001"
MODEL="qwen3_asr"
CONCURRENCY="1 2 4 8 16"
TOKENS=32
CLIP_SECONDS=5
POOL=8
INPUT="audio"
CHUNK_SECONDS=1                  # qwen3_asr_streaming: audio per request (chunk)
REQUESTS=32                      # requests measured per level (per window with --stable)
STABLE=0                         # 1: perf_analyzer's stabilisation windows instead of a fixed request count
MAX_TRIALS=6                     # --stable: windows tried before giving up (perf_analyzer default 10)
STABILITY_PERCENT=20             # --stable: a 2-core machine shared with others is noisy (default 10)
OUTPUT=""
TRITONCLIENT_VERSION="2.51.0"
PA_HOME="$ROOT/.cache/perf_analyzer"
PY="$ROOT/.venv/bin/python"

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
  case "$1" in
    --url) URL="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --concurrency) CONCURRENCY="$2"; shift 2 ;;
    --tokens) TOKENS="$2"; shift 2 ;;
    --clip-seconds) CLIP_SECONDS="$2"; shift 2 ;;
    --pool) POOL="$2"; shift 2 ;;
    --input) INPUT="$2"; shift 2 ;;
    --requests) REQUESTS="$2"; shift 2 ;;
    --stable) STABLE=1; shift ;;
    --output) OUTPUT="$2"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "perf_analyzer.sh: unknown argument $1" >&2; usage 2 ;;
  esac
done
OUTPUT="${OUTPUT:-$ROOT/perf/results/perf_analyzer-$MODEL.csv}"
[[ -x "$PY" ]] || "$ROOT/scripts/setup_env.sh"

# ---- stage 1: perf_analyzer binary and its libraries -----------------------------------
PA_BIN="$PA_HOME/bin/perf_analyzer"
PA_LIBS="$PA_HOME/lib"
if [[ ! -x "$PA_BIN" ]]; then
  echo "[perf_analyzer] installing perf_analyzer from tritonclient==$TRITONCLIENT_VERSION" >&2
  mkdir -p "$PA_HOME/bin" "$PA_HOME/wheel"
  "$PY" -m pip download -q --no-deps --only-binary :all: --platform manylinux1_x86_64 \
    "tritonclient==$TRITONCLIENT_VERSION" -d "$PA_HOME/wheel"
  "$PY" - "$PA_HOME" "$TRITONCLIENT_VERSION" <<'EOF'
import pathlib, sys, zipfile

home, version = pathlib.Path(sys.argv[1]), sys.argv[2]
wheel = next((home / "wheel").glob(f"tritonclient-{version}-*manylinux1_x86_64.whl"))
member = f"tritonclient-{version}.data/data/bin/perf_analyzer"
target = home / "bin" / "perf_analyzer"
with zipfile.ZipFile(wheel) as zf:
    target.write_bytes(zf.read(member))
target.chmod(0o755)
EOF
fi
if [[ ! -e "$PA_LIBS/libb64.so.0d" || ! -e "$PA_LIBS/libcudart.so.12" ]]; then
  mkdir -p "$PA_LIBS"
  BUNDLED="$("$PY" -c 'import pathlib, pytriton; print(pathlib.Path(pytriton.__file__).parents[1] / "nvidia_pytriton.libs")')"
  for pair in "libb64-*.so.0d:libb64.so.0d" "libcudart-*.so.12*:libcudart.so.12"; do
    pattern="${pair%%:*}"; name="${pair##*:}"
    matches=("$BUNDLED"/$pattern)
    [[ -e "${matches[0]}" ]] || { echo "perf_analyzer.sh: no $pattern in $BUNDLED (pip install nvidia-pytriton==0.7.0)" >&2; exit 1; }
    ln -sf "${matches[0]}" "$PA_LIBS/$name"
  done
fi
export LD_LIBRARY_PATH="$PA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$PA_BIN" --version >/dev/null 2>&1 || "$PA_BIN" --help >/dev/null 2>&1 || {
  echo "perf_analyzer.sh: $PA_BIN does not run (missing libraries?):" >&2; ldd "$PA_BIN" | grep 'not found' >&2 || true; exit 1; }

# ---- stage 2: input data from real speech -----------------------------------------------
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
input_args=(--seconds "$CLIP_SECONDS" --pool "$POOL" --tokens "$TOKENS" --input "$INPUT" --url "$URL" --model "$MODEL")
pa_extra=()
SECONDS_PER_REQUEST="$CLIP_SECONDS"
if [[ "$MODEL" == *streaming* ]]; then
  input_args=(--seconds "$CLIP_SECONDS" --pool "$POOL" --tokens "$TOKENS" --streaming --chunk-seconds "$CHUNK_SECONDS"
              --url "$URL" --model "$MODEL")
  pa_extra=(--streaming)
  SECONDS_PER_REQUEST="$CHUNK_SECONDS"
fi
(cd "$ROOT" && "$PY" -m perf.pa_inputs inputs "$WORK/inputs.json" "${input_args[@]}")

# ---- stage 3: sweep ------------------------------------------------------------------------
if ((STABLE)); then
  measure=(--measurement-mode count_windows --measurement-request-count "$REQUESTS"
           --max-trials "$MAX_TRIALS" --stability-percentage "$STABILITY_PERCENT")
else
  measure=(--request-count "$REQUESTS")
fi
csvs=()
for c in $CONCURRENCY; do
  echo "[perf_analyzer] $MODEL at concurrency $c" >&2
  "$PA_BIN" -m "$MODEL" -u "$URL" -i grpc --input-data "$WORK/inputs.json" \
    --concurrency-range "$c:$c" "${measure[@]}" "${pa_extra[@]}" -f "$WORK/c$c.csv" >"$WORK/c$c.log" 2>&1 || {
      echo "perf_analyzer.sh: perf_analyzer failed at concurrency $c:" >&2; tail -20 "$WORK/c$c.log" >&2; exit 1; }
  csvs+=("$WORK/c$c.csv")
done

# ---- stage 4: one CSV ----------------------------------------------------------------------
mkdir -p "$(dirname "$OUTPUT")"
(cd "$ROOT" && "$PY" -m perf.pa_inputs merge "$OUTPUT" "${csvs[@]}" --seconds-per-request "$SECONDS_PER_REQUEST")
