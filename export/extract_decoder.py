"""Write a recogniser's decoder as a plain Qwen3 causal-LM checkpoint.

The decoder of Qwen3-ASR is an ordinary Qwen3 model (audio and text share one
1-D position stream), so its weights, renamed from ``model.language_model.*``
to ``model.*`` with the ``lm_head``, form a ``Qwen3ForCausalLM`` checkpoint
that gives identical logits. That is what TensorRT-LLM's Qwen3 checkpoint
converter consumes for the gpu target; audio enters through its prompt
embedding table (see :mod:`qwen3_asr_triton.prompt`).

Usage::

    python -m qwen3_asr_triton.export.extract_decoder --checkpoint CKPT --output DIR
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import torch

from qwen3_asr_triton.model_spec import ModelSpec, read_model_config
from qwen3_asr_triton.torch_modules import sub_state

from .checkpoint import CheckpointError, load_state_dict

logger = logging.getLogger(__name__)

# Files copied unchanged so the extracted directory tokenizes like the original.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "generation_config.json")


def extract_decoder(checkpoint: str | Path, output: str | Path) -> Path:
    """Write ``output`` as a ``Qwen3ForCausalLM`` checkpoint; returns its path."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    checkpoint, output = Path(checkpoint), Path(output)
    spec = ModelSpec.from_checkpoint(checkpoint)
    if spec.kind != "asr":
        raise CheckpointError(f"{checkpoint} is not a recogniser checkpoint (it is a {spec.kind})")
    text_cfg = dict(read_model_config(checkpoint)["text_config"])
    for key in ("model_type", "architectures", "rope_scaling"):
        text_cfg.pop(key, None)
    text_cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": spec.text.rope_theta}
    text_cfg["tie_word_embeddings"] = spec.text.tie_word_embeddings
    text_cfg["eos_token_id"] = list(spec.eos_token_ids)
    text_cfg["pad_token_id"] = spec.pad_token_id
    config = Qwen3Config(**text_cfg)
    config.architectures = ["Qwen3ForCausalLM"]
    state = load_state_dict(checkpoint, spec, keep_dtype=True)
    weights = {f"model.{k}": v for k, v in sub_state(state, "model.language_model.").items()}
    if not spec.text.tie_word_embeddings:
        weights["lm_head.weight"] = state["lm_head.weight"]
    dtype = weights["model.embed_tokens.weight"].dtype
    with torch.device("meta"):
        model = Qwen3ForCausalLM(config)
    model.load_state_dict(weights, strict=False, assign=True)
    model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if missing:
        raise CheckpointError(f"decoder weights missing from {checkpoint}: {missing[:5]}")
    if output.exists():
        shutil.rmtree(output)
    model.to(dtype).save_pretrained(str(output))
    for name in TOKENIZER_FILES:
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, output / name)
    logger.info("wrote Qwen3ForCausalLM decoder (%s) to %s", dtype, output)
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Extract the Qwen3 decoder of a Qwen3-ASR checkpoint.")
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        extract_decoder(args.checkpoint, args.output)
    except CheckpointError as exc:
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
