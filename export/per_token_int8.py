"""Rewrite an fp32 ONNX graph's weight products as int8 products with per-token activation scales.

Every ``MatMul`` whose second input is a 2-D float32 initializer ``W [K, N]`` becomes::

    s   = max(|x|, over K) / 127            [..., 1]   one scale per token (row), computed at run time
    xq  = round(x / s) + 128                [..., K]   uint8, zero point 128 (symmetric: 1..255)
    acc = MatMulInteger(xq, Wq, 128)        [..., N]   int32, exact
    y   = float(acc) * s * ws               [..., N]

with ``Wq = round(W / ws)`` and ``ws = max(|W|, over K) / 63`` per output channel (7-bit weights).

Why these choices (measured in perf/results/fast-accuracy/ and perf/results/cpu-precision/):

- **One scale per token, not per tensor.** ONNX Runtime's dynamic quantisation uses one scale for the
  whole activation tensor, i.e. for every request in a batch at once: a quiet request batched with a
  loud one is quantised with the loud one's step, so its result depends on who it shares a step with.
  On a product with rows of different magnitude its error was 10-98% of the rows' norm, against 1-2%
  with a scale per row. With per-token scales a row's integer product is exact and independent of the
  other rows.
- **7-bit weights.** On CPUs without VNNI (AVX2, AVX-512 without VNNI) ONNX Runtime's u8 x s8 kernels
  add pairs of products in 16 bits (VPMADDUBSW), which saturates: 255 * 127 * 2 = 64770 > 32767. With
  weights in [-63, 63] the largest pair is 255 * 63 * 2 = 32130, which fits, so the product is exact on
  every CPU (the alternative, 7-bit activations, would halve the resolution of what outliers already
  stretch). A repository is built once and served on any CPU, so the weights are safe for all of them.
- The activations' own quantisation is symmetric (zero point 128), so all-zero rows (padding) stay zero.

Products between activations (attention) and the encoder's convolutions stay fp32.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# Activation levels each side of zero: int8's symmetric range, stored as uint8 around ZERO_POINT.
ACTIVATION_LEVELS = 127
ZERO_POINT = 128
# Weight levels each side of zero: 7 bits, so that a pair of u8 x s8 products fits in int16 (see above).
WEIGHT_LEVELS = 63
# The weights' storage: int8 in [-63, 63] (served: ONNX Runtime's u8 x s8 kernels, VNNI where the CPU has it),
# or uint8 in [1, 255] around ZERO_POINT (8-bit weights on its u8 x u8 kernels, which widen to 16 bits and
# do not saturate; measured for comparison, perf/fast_accuracy.py --recipe per-token-u8).
INT7 = "int7"
UINT8 = "uint8"
WEIGHT_FORMATS = {INT7: WEIGHT_LEVELS, UINT8: ACTIVATION_LEVELS}
# The smallest activation scale: a row of zeros (padding) quantises to zeros instead of dividing by 0.
MIN_SCALE = 1e-30
# The per-channel weight scales of initializer W are the initializer ``W/scales``.
WEIGHT_SCALES_SUFFIX = "/scales"
# Written into the graph's metadata; a cached int8 graph without it (or with another value) is remade.
RECIPE_KEY = "qwen3_asr_int8_recipe"


def recipe_name(weight_format: str) -> str:
    """The metadata value of a graph written with ``weight_format``."""
    return f"per-token-activations-u8-{weight_format}-weights-v1"


# The served recipe's metadata value.
RECIPE = recipe_name(INT7)


def _weight_levels(weight_format: str) -> int:
    """Levels each side of zero of a weight format (refusing names other than :data:`WEIGHT_FORMATS`)."""
    if weight_format not in WEIGHT_FORMATS:
        raise ValueError(f"weight format must be one of {sorted(WEIGHT_FORMATS)}, got {weight_format!r}")
    return WEIGHT_FORMATS[weight_format]


@dataclass(frozen=True)
class QuantizedWeight:
    """One weight matrix in 7-bit integers with a scale per output channel.

    Attributes
    ----------
    values : ``[K, N]`` int8 or uint8
        In ``[-levels, levels]`` (int8), or that plus :data:`ZERO_POINT` (uint8).
    scales : ``[N]`` float32
        ``W ~= values * scales``; 1 for an all-zero column.
    """

    values: np.ndarray
    scales: np.ndarray


def quantize_weight(weight: np.ndarray, weight_format: str = INT7) -> QuantizedWeight:
    """``[K, N]`` float32 -> symmetric integers per output channel (column), in :data:`WEIGHT_FORMATS`."""
    if weight.ndim != 2:
        raise ValueError(f"a weight matrix is 2-D, got shape {weight.shape}")
    levels = _weight_levels(weight_format)
    w = weight.astype(np.float32, copy=False)
    peak = np.abs(w).max(axis=0)
    scales = np.where(peak > 0, peak / levels, 1.0).astype(np.float32)
    values = np.clip(np.rint(w / scales), -levels, levels)
    if weight_format == UINT8:
        return QuantizedWeight((values + ZERO_POINT).astype(np.uint8), scales)
    return QuantizedWeight(values.astype(np.int8), scales)


def quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The graph's activation quantisation in numpy (for tests).

    ``[..., K]`` float32 -> (``[..., K]`` uint8 around :data:`ZERO_POINT`, ``[..., 1]`` float32 scales).
    """
    scale = np.maximum(np.abs(x).max(axis=-1, keepdims=True) / ACTIVATION_LEVELS, MIN_SCALE).astype(np.float32)
    q = np.clip(np.rint(x / scale), -ACTIVATION_LEVELS, ACTIVATION_LEVELS) + ZERO_POINT
    return q.astype(np.uint8), scale


def rewrite_graph(src: Path, dst: Path, weight_format: str = INT7) -> int:
    """Write ``dst`` (weights in ``dst.data``): ``src`` with every constant-weight MatMul per-token int8.

    Returns the number of products rewritten. fp32 weights are read one matrix at a time, so memory
    stays near the int8 weights plus one fp32 matrix (a 1.7B decoder's fp32 weights are 8 GB).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from .external_data import read_tensor, write_with_external_data

    _weight_levels(weight_format)  # refuse an unknown format before reading anything
    model = onnx.load(str(src), load_external_data=False)
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    initializers = {t.name: t for t in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1

    constants = [
        numpy_helper.from_array(np.array(ACTIVATION_LEVELS, np.float32), "pt8/levels"),
        numpy_helper.from_array(np.array(-ACTIVATION_LEVELS, np.float32), "pt8/low"),
        numpy_helper.from_array(np.array(MIN_SCALE, np.float32), "pt8/min_scale"),
        numpy_helper.from_array(np.array(ZERO_POINT, np.float32), "pt8/zero_point_f"),
        numpy_helper.from_array(np.array(ZERO_POINT, np.uint8), "pt8/zero_point"),
    ]
    if opset >= 18:
        constants.append(numpy_helper.from_array(np.array([-1], np.int64), "pt8/last_axis"))
    w_zero = ["pt8/zero_point"] if weight_format == UINT8 else []
    quantized_inputs: dict[str, tuple[str, str]] = {}  # activation -> (uint8 tensor, scale tensor)
    weights: dict[str, tuple[str, str]] = {}  # fp32 initializer -> (int8 initializer, scale initializer)
    nodes = []
    rewritten = 0
    for node in graph.node:
        weight = initializers.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2 or weight.data_type != TensorProto.FLOAT:
            nodes.append(node)
            continue
        x, w_name, y = node.input[0], node.input[1], node.output[0]
        if x not in quantized_inputs:
            prefix = f"pt8/{len(quantized_inputs)}"
            nodes += _token_quantisation(x, prefix, opset)
            quantized_inputs[x] = (f"{prefix}/q", f"{prefix}/scale")
        if w_name not in weights:
            q = quantize_weight(read_tensor(weight, src.parent), weight_format)
            values = numpy_helper.from_array(q.values, f"{w_name}/int8")
            scales = numpy_helper.from_array(q.scales, w_name + WEIGHT_SCALES_SUFFIX)
            constants += [values, scales]
            weights[w_name] = (values.name, scales.name)
        xq, scale = quantized_inputs[x]
        wq, w_scale = weights[w_name]
        p = f"pt8/mm{rewritten}"
        nodes += [
            helper.make_node("MatMulInteger", [xq, wq, "pt8/zero_point", *w_zero], [f"{p}/acc"]),
            helper.make_node("Cast", [f"{p}/acc"], [f"{p}/accf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{p}/accf", scale], [f"{p}/row"]),
            helper.make_node("Mul", [f"{p}/row", w_scale], [y], name=node.name),
        ]
        uses[w_name] -= 1
        rewritten += 1
    keep = [t for t in graph.initializer if uses.get(t.name, 0) > 0]
    del graph.initializer[:]
    graph.initializer.extend(keep + constants)
    del graph.node[:]
    graph.node.extend(nodes)
    props = {p.key: p.value for p in model.metadata_props}
    helper.set_model_props(model, {**props, RECIPE_KEY: recipe_name(weight_format)})
    write_with_external_data(model, src.parent, dst)
    logger.info("wrote %s (%d products per-token int8)", dst, rewritten)
    return rewritten


def _token_quantisation(x: str, prefix: str, opset: int) -> list:
    """Nodes computing ``{prefix}/scale`` ``[..., 1]`` and ``{prefix}/q`` ``[..., K]`` uint8 from activation ``x``."""
    from onnx import TensorProto, helper

    p = prefix
    reduce = (
        helper.make_node("ReduceMax", [f"{p}/abs", "pt8/last_axis"], [f"{p}/peak"], keepdims=1)
        if opset >= 18  # axes became an input in opset 18
        else helper.make_node("ReduceMax", [f"{p}/abs"], [f"{p}/peak"], axes=[-1], keepdims=1)
    )
    return [
        helper.make_node("Abs", [x], [f"{p}/abs"]),
        reduce,
        helper.make_node("Div", [f"{p}/peak", "pt8/levels"], [f"{p}/scale0"]),
        helper.make_node("Max", [f"{p}/scale0", "pt8/min_scale"], [f"{p}/scale"]),
        helper.make_node("Div", [x, f"{p}/scale"], [f"{p}/scaled"]),
        helper.make_node("Round", [f"{p}/scaled"], [f"{p}/rounded"]),
        helper.make_node("Clip", [f"{p}/rounded", "pt8/low", "pt8/levels"], [f"{p}/clipped"]),
        helper.make_node("Add", [f"{p}/clipped", "pt8/zero_point_f"], [f"{p}/shifted"]),
        helper.make_node("Cast", [f"{p}/shifted"], [f"{p}/q"], to=TensorProto.UINT8),
    ]


def graph_recipe(path: Path) -> str | None:
    """The recipe an int8 graph was written with (None for one written before recipes were recorded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((p.value for p in model.metadata_props if p.key == RECIPE_KEY), None)
