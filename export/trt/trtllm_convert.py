"""Hugging Face Qwen3 decoder -> TensorRT-LLM checkpoint (runs in the NGC tritonserver trtllm container).

A standalone script for the container's own Python (it imports only the
standard library and ``tensorrt_llm``): the project environment is not needed
here. It converts the checkpoint written by
``python -m qwen3_asr_triton.export.trtllm_checkpoint`` with TensorRT-LLM's
Qwen model class (dense Qwen3 is supported by its TensorRT engine flow from
1.0 on), single GPU, no quantisation, and checks that the converted config
kept the architecture, the vocabulary and the RoPE base: a wrong RoPE base
still builds an engine, it just transcribes nonsense.

Usage::

    python3 export/trt/trtllm_convert.py --model-dir DECODER_HF --output TRTLLM_CKPT --dtype float16
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger("trtllm_convert")
DTYPES = ("float16",)


def expected_fields(hf_config: dict[str, Any]) -> dict[str, Any]:
    """What the converted TensorRT-LLM config must say, read from the Hugging Face config."""
    return {
        "architecture": "Qwen3ForCausalLM",
        "vocab_size": int(hf_config["vocab_size"]),
        "num_hidden_layers": int(hf_config["num_hidden_layers"]),
        "rotary_base": float(hf_config["rope_theta"]),
    }


def check_converted(converted: dict[str, Any], expected: dict[str, Any]) -> None:
    """Raise ValueError when a converted field differs from the source checkpoint."""
    wrong = {k: (converted.get(k), v) for k, v in expected.items() if converted.get(k) != v}
    if wrong:
        raise ValueError(f"converted checkpoint disagrees with the source (got, expected): {wrong}")


def convert(model_dir: Path, output: Path, dtype: str) -> dict[str, Any]:
    """Convert ``model_dir`` into ``output``; returns the converted config."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES} (the prompt table is sent as fp16)")
    hf_config = json.loads((model_dir / "config.json").read_text())
    if "rope_theta" not in hf_config:
        raise ValueError(f"{model_dir}/config.json has no top-level rope_theta; write it with trtllm_checkpoint")
    from tensorrt_llm.mapping import Mapping
    from tensorrt_llm.models import QWenForCausalLM

    mapping = Mapping(world_size=1, rank=0, tp_size=1, pp_size=1)
    model = QWenForCausalLM.from_hugging_face(str(model_dir), dtype, mapping=mapping)
    output.mkdir(parents=True, exist_ok=True)
    model.save_checkpoint(str(output), save_config=True)
    converted = json.loads((output / "config.json").read_text())
    check_converted(converted, expected_fields(hf_config))
    logger.info("converted %s -> %s (%s, rotary_base %s)", model_dir, output, dtype, converted["rotary_base"])
    return converted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--dtype", default="float16", choices=DTYPES)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        convert(args.model_dir, args.output, args.dtype)
    except (OSError, ValueError, KeyError) as exc:
        print(f"trtllm_convert: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
