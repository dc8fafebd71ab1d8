"""The fast cpu mode: int8 weights for the encoder and the decoder (and, for bf16, the torch weights).

Exact mode serves the fp32 graphs (token-exact with transformers). Fast mode
serves copies whose weight matrices are int8 (per output channel) with
activations quantized on the fly (ONNX Runtime dynamic quantization: MatMul
with a constant weight -> MatMulInteger). Decoding on a CPU is bound by
reading the weights, so quartering them is what pays; the attention products
between activations stay fp32 (``MatMulConstBOnly``), and so do the encoder's
convolutions: ONNX Runtime's ConvInteger ran 2.7x slower than its fp32 Conv on
this project's 2-core AVX2 machine (0.6B encoder, 5 s of audio).
The token agreement with the exact mode is measured by the benchmark
(perf/), not assumed.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from qwen3_asr_triton.artifacts import DECODER_GRAPH, ENCODER_GRAPH, onnx_filename
from qwen3_asr_triton.cpu_precision import GRAPH_PRECISION, HOLDS_TORCH_WEIGHTS, PRECISIONS

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


def quantize_graph(src: Path, dst: Path) -> None:
    """Write an int8-weight copy of ``src`` (external data next to it) as ``dst``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .onnx_export import save_with_external_data

    work = dst.parent / ".quantize"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    tmp = work / f"out-{dst.name}"
    quantize_dynamic(
        str(src),
        str(tmp),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
        use_external_data_format=True,
        extra_options={"MatMulConstBOnly": True},
    )
    save_with_external_data(tmp, dst)  # so the data file carries the final name
    shutil.rmtree(work, ignore_errors=True)
    logger.info("wrote %s (int8 weights)", dst)


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
            if dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:
                continue
            quantize_graph(src, dst)
    if HOLDS_TORCH_WEIGHTS[precision]:
        from .torch_runner import write_torch_weights

        write_torch_weights(export_dir)
