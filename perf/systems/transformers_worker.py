"""The transformers reference as a child process: one request per stdin line, one answer per stdout line.

    python -m perf.systems.transformers_worker --checkpoint CKPT [--dtype float32]

Request: ``{"wav_b64": ..., "max_new_tokens": N, "min_new_tokens": M}``; answer (a line
starting with :data:`ANSWER_PREFIX`, so stray library output on stdout is ignored):
``{"ids": [...], "seconds": s}`` or ``{"error": "..."}``. A line ``ready`` (same prefix)
follows loading. It runs in its own process so that its memory is measured alone.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
import time

ANSWER_PREFIX = "@@bench "

logger = logging.getLogger("transformers_worker")


def _answer(obj: object) -> None:
    sys.stdout.write(ANSWER_PREFIX + json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    import torch

    from qwen3_asr_triton.audio import load_audio
    from qwen3_asr_triton.export.reference import TransformersReference

    reference = TransformersReference(args.checkpoint)
    if args.dtype != "float32":
        reference.model = reference.model.to(getattr(torch, args.dtype))
    _answer("ready")
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            wave = load_audio(base64.b64decode(request["wav_b64"]))
            t0 = time.perf_counter()
            with torch.no_grad():
                inputs = reference.inputs(wave)
                if args.dtype != "float32":
                    inputs["input_features"] = inputs["input_features"].to(getattr(torch, args.dtype))
                out = reference.model.generate(
                    **inputs,
                    max_new_tokens=int(request["max_new_tokens"]),
                    min_new_tokens=int(request["min_new_tokens"]),
                    do_sample=False,
                )
            sequences = out.sequences if hasattr(out, "sequences") else out
            ids = sequences[0, inputs["input_ids"].shape[1] :].tolist()
            _answer({"ids": ids, "seconds": time.perf_counter() - t0})
        except Exception as exc:  # the parent reports it
            _answer({"error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    main()
