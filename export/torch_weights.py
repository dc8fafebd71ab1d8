"""The encoder's and decoder's bf16 weights that the torch runners load (the bf16 and fast precisions).

Written at build time from the export's checkpoint; the runners themselves serve, so they live in the
core (:mod:`qwen3_asr_triton.torch_runner`) and need neither the checkpoint nor this module.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from qwen3_asr_triton.artifacts import DECODER_GRAPH, ENCODER_GRAPH, torch_weights_filename
from qwen3_asr_triton.model_spec import ModelSpec
from qwen3_asr_triton.torch_modules import AudioEncoder, DecoderWithCache

from .checkpoint import load_state_dict
from .onnx_export import STAMP_FILENAME

logger = logging.getLogger(__name__)

# The weights files hold bf16 (what the published checkpoints store: widening them is exact).
WEIGHTS_DTYPE = torch.bfloat16


def _modules(spec: ModelSpec, state: dict[str, torch.Tensor]) -> dict[str, torch.nn.Module]:
    return {
        ENCODER_GRAPH: AudioEncoder.from_state(spec, state),
        DECODER_GRAPH: DecoderWithCache.from_state(spec, state),
    }


def write_torch_weights(export_dir: Path) -> None:
    """Write the encoder's and decoder's bf16 weights next to their graphs (once; from the export's checkpoint).

    The files hold each module's own state (``module.state_dict()`` names), so a runner loads them
    without the checkpoint or its naming; a tied output projection is stored as its own tensor.
    """
    from safetensors.torch import save_file

    targets = {g: export_dir / torch_weights_filename(g) for g in (ENCODER_GRAPH, DECODER_GRAPH)}
    stamp = export_dir / STAMP_FILENAME
    if all(t.is_file() and t.stat().st_mtime >= stamp.stat().st_mtime for t in targets.values()):
        return
    checkpoint = Path(json.loads(stamp.read_text())["checkpoint"])
    spec = ModelSpec.load(export_dir)
    if ModelSpec.from_checkpoint(checkpoint) != spec:
        raise ValueError(f"checkpoint {checkpoint} does not match the export's model spec")
    state = load_state_dict(checkpoint, spec, keep_dtype=True)
    for graph, module in _modules(spec, state).items():
        weights = {k: v.detach().to(WEIGHTS_DTYPE).contiguous().clone() for k, v in module.state_dict().items()}
        tmp = targets[graph].with_suffix(".tmp")
        save_file(weights, str(tmp))
        os.replace(tmp, targets[graph])
        logger.info("wrote %s (%d tensors)", targets[graph], len(weights))
