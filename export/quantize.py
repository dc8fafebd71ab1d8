"""The fast cpu mode: int8 weights for the encoder and the decoder (and, for bf16, the torch weights).

Exact mode serves the fp32 graphs (token-exact with transformers). Fast mode
serves copies whose weight products are int8 (:mod:`.per_token_int8`: 7-bit
weights per output channel, activations quantised at run time with one scale
per token, ONNX Runtime's ``MatMulInteger``). Decoding on a CPU is bound by
reading the weights, so quartering them is what pays; the attention products
between activations stay fp32, and so do the encoder's convolutions: ONNX
Runtime's ConvInteger ran 2.7x slower than its fp32 Conv on this project's
2-core AVX2 machine (0.6B encoder, 5 s of audio).
The fast mode's error against the exact mode is measured teacher-forced by
perf/fast_accuracy.py and bounded in CI (tests/test_fast_accuracy.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

from qwen3_asr_triton.artifacts import DECODER_GRAPH, ENCODER_GRAPH, onnx_filename
from qwen3_asr_triton.cpu_precision import GRAPH_PRECISION, HOLDS_TORCH_WEIGHTS, PRECISIONS

from .per_token_int8 import RECIPE, graph_recipe, rewrite_graph

logger = logging.getLogger(__name__)

# The precisions an ONNX graph comes in (bf16 has no graph: ONNX Runtime's CPU provider has no bf16 kernels).
GRAPH_PRECISIONS = ("fp32", "int8")
# Graphs quantized in fast mode; the aligner keeps fp32 (its timestamps are one forward pass).
FAST_GRAPHS = (ENCODER_GRAPH, DECODER_GRAPH)


def quantized_name(graph: str, precision: str) -> str:
    """File stem of a graph at a precision: ``decoder`` (fp32) or ``decoder-int8``."""
    if precision not in GRAPH_PRECISIONS:
        raise ValueError(f"graph precision must be one of {GRAPH_PRECISIONS}, got {precision!r}")
    return graph if precision == "fp32" else f"{graph}-{precision}"


def _is_current(src: Path, dst: Path) -> bool:
    """Whether ``dst`` was made from ``src`` as it is now, with the current recipe."""
    return dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime and graph_recipe(dst) == RECIPE


def ensure_precision(export_dir: Path, precision: str) -> None:
    """Make what ``precision`` serves exist in an export directory (made once, remade when the export changes).

    int8 graphs for ``int8`` and ``fast``; the torch runners' bf16 weights for ``bf16`` and ``fast``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    graphs = GRAPH_PRECISION[precision]
    if graphs is not None and graphs != "fp32":
        for graph in FAST_GRAPHS:
            src = export_dir / onnx_filename(graph)
            if not src.is_file():
                continue
            dst = export_dir / onnx_filename(quantized_name(graph, graphs))
            if _is_current(src, dst):
                continue
            rewrite_graph(src, dst)  # per-token activations, 7-bit weights
    if HOLDS_TORCH_WEIGHTS[precision]:
        from .torch_weights import write_torch_weights

        write_torch_weights(export_dir)
