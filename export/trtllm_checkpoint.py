"""The recogniser's decoder as a Hugging Face Qwen3 checkpoint that TensorRT-LLM 1.0 reads correctly.

:func:`~.extract_decoder.extract_decoder` writes a ``Qwen3ForCausalLM``
checkpoint with transformers 5, whose ``config.json`` keeps the RoPE base only
in ``rope_parameters`` and the dtype as ``dtype``. TensorRT-LLM's Qwen
converter loads the config with the transformers release of its container
(4.53 for TensorRT-LLM 1.0), which knows neither field: it would silently fall
back to ``rope_theta = 10000`` (the model uses 1,000,000) and wrong positions
would garble every transcript. :func:`legacy_config` adds the transformers 4
spellings (``rope_theta``, ``rope_scaling``, ``torch_dtype``) next to the new
ones; the weights are untouched.

Usage (project environment, before the TensorRT-LLM steps)::

    python -m qwen3_asr_triton.export.trtllm_checkpoint --checkpoint CKPT --output DIR
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointError
from .extract_decoder import extract_decoder

logger = logging.getLogger(__name__)


def legacy_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the transformers 4 field names TensorRT-LLM's converter reads.

    Raises
    ------
    ValueError
        When the RoPE base cannot be found or the two spellings disagree.
    """
    out = dict(config)
    rope = config.get("rope_parameters") or {}
    theta = rope.get("rope_theta", config.get("rope_theta"))
    if theta is None:
        raise ValueError("config.json carries no rope_theta (neither top-level nor in rope_parameters)")
    if "rope_theta" in config and float(config["rope_theta"]) != float(theta):
        raise ValueError(f"rope_theta {config['rope_theta']} disagrees with rope_parameters {theta}")
    rope_type = rope.get("rope_type", "default")
    if rope_type not in ("default", None):
        raise ValueError(f"only default RoPE is supported for the TensorRT-LLM decoder, got {rope_type!r}")
    out["rope_theta"] = float(theta)
    out["rope_scaling"] = None
    dtype = config.get("torch_dtype", config.get("dtype"))
    if dtype is not None:
        out["torch_dtype"] = dtype
    if config.get("model_type") != "qwen3" or config.get("architectures") != ["Qwen3ForCausalLM"]:
        raise ValueError("expected a Qwen3ForCausalLM checkpoint (model_type qwen3)")
    return out


def write_trtllm_decoder(checkpoint: str | Path, output: str | Path) -> Path:
    """Extract the decoder of ``checkpoint`` into ``output`` and make its config TensorRT-LLM-readable."""
    output = Path(output)
    extract_decoder(checkpoint, output)
    path = output / "config.json"
    config = legacy_config(json.loads(path.read_text()))
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    logger.info("wrote TensorRT-LLM-readable config (rope_theta %s) to %s", config["rope_theta"], path)
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Extract the Qwen3 decoder for TensorRT-LLM's Qwen converter.")
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        write_trtllm_decoder(args.checkpoint, args.output)
    except (CheckpointError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
