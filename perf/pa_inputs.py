"""perf_analyzer helpers: input-data JSON from real speech clips, and merging per-level CSVs.

    python -m perf.pa_inputs inputs OUT.json [--seconds 5] [--pool 8] [--tokens 32] [--input audio|waveform]
                                             [--streaming --chunk-seconds 1] [--url HOST:PORT --model NAME]
    python -m perf.pa_inputs merge OUT.csv LEVEL.csv... [--seconds-per-request 5]

perf_analyzer's JSON takes a ``{"b64": ...}`` object as the tensor's raw buffer. For a BYTES
tensor that buffer must already be Triton's serialised form (each element a 4-byte little-endian
length, then its bytes), so ``AUDIO`` (a WAV file) is written as ``b64(len + wav)`` with shape
``[1]``; ``WAVEFORM`` as ``b64`` of little-endian float32 samples with its shape, plus
``SAMPLE_RATE``. ``MAX_NEW_TOKENS`` = ``MIN_NEW_TOKENS`` = ``--tokens`` force the output length.
With ``--streaming`` (for ``qwen3_asr_streaming``) each clip becomes one sequence ("stream") of
``--chunk-seconds`` WAVEFORM chunks; perf_analyzer sets START / END / CORRID itself.
With ``--url`` and ``--model`` the served model's metadata is read and inputs it does not
declare are left out (with a warning), since perf_analyzer rejects unknown inputs.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import logging
import struct
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from perf.clips import clip_pool  # noqa: E402
from perf.systems.base import BENCH_CACHE  # noqa: E402
from qwen3_asr_triton.audio import TARGET_SAMPLE_RATE  # noqa: E402

logger = logging.getLogger("pa_inputs")


def bytes_tensor_b64(items: list[bytes]) -> str:
    """Base64 of a BYTES tensor in Triton's wire form (uint32 LE length + bytes per element)."""
    return base64.b64encode(b"".join(struct.pack("<I", len(item)) + item for item in items)).decode()


def fp32_tensor(values: np.ndarray) -> dict[str, object]:
    """``{"b64": ..., "shape": [...]}`` of little-endian float32 values."""
    array = np.ascontiguousarray(values, dtype="<f4")
    return {"b64": base64.b64encode(array.tobytes()).decode(), "shape": list(array.shape)}


def unary_step(wav: bytes, waveform: np.ndarray, tokens: int, kind: str) -> dict[str, object]:
    """One ``qwen3_asr`` request of the input-data file."""
    step: dict[str, object] = {"MAX_NEW_TOKENS": [tokens], "MIN_NEW_TOKENS": [tokens]}
    if kind == "audio":
        step["AUDIO"] = {"b64": bytes_tensor_b64([wav]), "shape": [1]}
    else:
        step["WAVEFORM"] = fp32_tensor(waveform)
        step["SAMPLE_RATE"] = [TARGET_SAMPLE_RATE]
    return step


def stream_steps(waveform: np.ndarray, tokens: int, chunk_seconds: float) -> list[dict[str, object]]:
    """One ``qwen3_asr_streaming`` sequence: the clip in chunks (WAVEFORM + SAMPLE_RATE)."""
    size = round(chunk_seconds * TARGET_SAMPLE_RATE)
    steps = []
    for start in range(0, waveform.size, size):
        steps.append(
            {
                "WAVEFORM": fp32_tensor(waveform[start : start + size]),
                "SAMPLE_RATE": [TARGET_SAMPLE_RATE],
                "MAX_NEW_TOKENS": [tokens],
                "MIN_NEW_TOKENS": [tokens],
            }
        )
    return steps


def served_inputs(url: str, model: str) -> set[str]:
    """Input names ``model`` declares on the server at ``url`` (gRPC)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        metadata = client.get_model_metadata(model, as_json=True)
    finally:
        client.close()
    return {item["name"] for item in metadata.get("inputs", [])}


def keep_only(step: dict[str, object], allowed: set[str]) -> dict[str, object]:
    """``step`` without the inputs the model does not declare."""
    return {name: value for name, value in step.items() if name in allowed}


def make_inputs(args: argparse.Namespace) -> None:
    clips = clip_pool(BENCH_CACHE / "clips", args.seconds, args.pool)
    if args.streaming:
        data: list = [stream_steps(c.waveform, args.tokens, args.chunk_seconds) for c in clips]
    else:
        data = [unary_step(c.wav, c.waveform, args.tokens, args.input) for c in clips]
    if args.url and args.model:
        allowed = served_inputs(args.url, args.model)
        steps = [s for stream in data for s in stream] if args.streaming else data
        missing = sorted({name for step in steps for name in step} - allowed)
        if missing:
            logger.warning("%s does not declare %s: left out of the input data", args.model, ", ".join(missing))
        if args.streaming:
            data = [[keep_only(s, allowed) for s in stream] for stream in data]
        else:
            data = [keep_only(s, allowed) for s in data]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"data": data}))
    logger.info("wrote %s: %s clips of %.1f s", args.output, len(clips), args.seconds)


def merge_csv(args: argparse.Namespace) -> None:
    """Concatenate perf_analyzer's per-level CSVs and add audio seconds per wall second."""
    rows: list[dict[str, str]] = []
    fields: list[str] = []
    for path in args.inputs:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            for name in reader.fieldnames or []:
                if name not in fields:
                    fields.append(name)
            rows += list(reader)
    fields.append("Audio s/s")
    for row in rows:
        rate = float(row.get("Inferences/Second") or 0.0)
        row["Audio s/s"] = f"{rate * args.seconds_per_request:.3f}"
    with open(args.output, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    print(f"{'concurrency':>11} {'infer/s':>9} {'audio s/s':>10} {'p50 ms':>9} {'p95 ms':>9}")
    for row in rows:
        print(
            f"{row.get('Concurrency', '?'):>11} {float(row.get('Inferences/Second') or 0):9.3f} "
            f"{row['Audio s/s']:>10} {float(row.get('p50 latency') or 0) / 1000:9.1f} "
            f"{float(row.get('p95 latency') or 0) / 1000:9.1f}"
        )
    logger.info("wrote %s", args.output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    inputs = sub.add_parser("inputs", help="write perf_analyzer's --input-data JSON")
    inputs.add_argument("output", type=Path)
    inputs.add_argument("--seconds", type=float, default=5.0)
    inputs.add_argument("--pool", type=int, default=8)
    inputs.add_argument("--tokens", type=int, default=32)
    inputs.add_argument("--input", choices=["audio", "waveform"], default="audio")
    inputs.add_argument("--streaming", action="store_true", help="sequences of chunks for qwen3_asr_streaming")
    inputs.add_argument("--chunk-seconds", type=float, default=1.0)
    inputs.add_argument("--url", help="server (gRPC) whose model metadata filters the inputs")
    inputs.add_argument("--model", help="model name for --url")
    merge = sub.add_parser("merge", help="merge per-level CSVs into one")
    merge.add_argument("output", type=Path)
    merge.add_argument("inputs", nargs="+", type=Path)
    merge.add_argument(
        "--seconds-per-request", type=float, default=5.0, help="audio per request: the clip, or one stream chunk"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "inputs":
        make_inputs(args)
    else:
        merge_csv(args)


if __name__ == "__main__":
    main()
