"""The decoder's body graph and the int8 screen of its output projection, written beside an fp32 export.

The exact cpu mode decodes with ``decoder-body.onnx`` (the decoder graph without its ``lm_head``
MatMul, ending at ``hidden_states [B, H]``) and computes the logits with
:class:`qwen3_asr_triton.decoding.logit_screen.LogitScreen`, from ``lm_head-u8.onnx`` (a
``MatMulInteger`` over the uint8 rows) and ``lm_head-u8.npz`` (the rows' scales and norms). The
fp32 rows the screen recomputes are the token embedding table, so the files are written only for a
decoder whose output projection equals that table (Qwen3-ASR ties them); the body graph reads its
weights from the full graph's data file, so it costs no disk.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qwen3_asr_triton.artifacts import (
    DECODER_BODY_FILENAME,
    DECODER_FILENAME,
    EMBED_FILENAME,
    SCREEN_GRAPH_FILENAME,
    SCREEN_TABLES_FILENAME,
)
from qwen3_asr_triton.decoding.logit_screen import SCREEN_INPUT, SCREEN_OUTPUT, ZERO_POINT, quantize_rows

from .external_data import map_tensor

logger = logging.getLogger(__name__)

# The decoder graph's logits output and the body graph's hidden-state output.
LOGITS_OUTPUT = "logits"
HIDDEN_OUTPUT = "hidden_states"
# Columns of the [H, V] projection compared with the embedding table at a time (64 MB of float32 at H = 2048).
TIE_CHECK_CHUNK = 8192
ONNX_OPSET = 17


def _projection_node(graph: onnx.GraphProto) -> tuple[onnx.NodeProto, onnx.TensorProto]:
    """The MatMul that makes ``logits`` and its ``[H, V]`` weight initializer."""
    nodes = [n for n in graph.node if LOGITS_OUTPUT in n.output]
    if len(nodes) != 1 or nodes[0].op_type != "MatMul":
        raise ValueError("the decoder graph's logits do not come from one MatMul")
    node = nodes[0]
    weights = [i for i in graph.initializer if i.name == node.input[1]]
    if len(weights) != 1 or len(weights[0].dims) != 2:
        raise ValueError("the decoder graph's output projection is not a [H, V] initializer")
    return node, weights[0]


def projection_is_tied(projection: np.ndarray, embed: np.ndarray, chunk: int = TIE_CHECK_CHUNK) -> bool:
    """Whether the ``[H, V]`` projection is the ``[V, H]`` embedding table transposed, bit for bit."""
    if projection.shape != embed.shape[::-1]:
        return False
    vocab = embed.shape[0]
    return all(
        np.array_equal(projection[:, start : start + chunk].T, embed[start : start + chunk])
        for start in range(0, vocab, chunk)
    )


def body_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """The decoder graph ending at ``hidden_states [B, H]``: its projection MatMul becomes an Identity."""
    body = onnx.ModelProto()
    body.CopyFrom(model)
    graph = body.graph
    node, weight = _projection_node(graph)
    hidden = weight.dims[0]
    index = list(graph.node).index(node)
    graph.node.remove(node)
    graph.node.insert(index, helper.make_node("Identity", [node.input[0]], [HIDDEN_OUTPUT], name="hidden_states"))
    graph.initializer.remove(weight)
    outputs = list(graph.output)
    position = [o.name for o in outputs].index(LOGITS_OUTPUT)
    new = helper.make_tensor_value_info(HIDDEN_OUTPUT, TensorProto.FLOAT, ["batch", hidden])
    del graph.output[:]
    graph.output.extend([*outputs[:position], new, *outputs[position + 1 :]])
    return body


def screen_graph(codes: np.ndarray) -> onnx.ModelProto:
    """``MatMulInteger(hidden_u8 [B, H], codes [H, V])`` with zero point 128 on both sides -> int32 ``[B, V]``."""
    hidden, vocab = codes.shape
    node = helper.make_node("MatMulInteger", [SCREEN_INPUT, "codes", "hidden_zero", "codes_zero"], [SCREEN_OUTPUT])
    graph = helper.make_graph(
        [node],
        "lm_head_screen",
        [helper.make_tensor_value_info(SCREEN_INPUT, TensorProto.UINT8, ["batch", hidden])],
        [helper.make_tensor_value_info(SCREEN_OUTPUT, TensorProto.INT32, ["batch", vocab])],
        [
            numpy_helper.from_array(codes, "codes"),
            numpy_helper.from_array(np.array(ZERO_POINT, np.uint8), "hidden_zero"),
            numpy_helper.from_array(np.full(vocab, ZERO_POINT, np.uint8), "codes_zero"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])


def screen_is_current(export_dir: Path) -> bool:
    """Whether the screen files exist and are newer than the decoder graph they were made from."""
    made = [export_dir / n for n in (DECODER_BODY_FILENAME, SCREEN_GRAPH_FILENAME, SCREEN_TABLES_FILENAME)]
    source = export_dir / DECODER_FILENAME
    return all(p.is_file() for p in made) and min(p.stat().st_mtime for p in made) >= source.stat().st_mtime


def write_logit_screen(export_dir: Path) -> bool:
    """Write the body graph and the screen beside an fp32 decoder export; False (nothing written) when untied."""
    export_dir = Path(export_dir)
    if screen_is_current(export_dir):
        return True
    model = onnx.load(export_dir / DECODER_FILENAME, load_external_data=False)
    _, weight = _projection_node(model.graph)
    embed = np.load(export_dir / EMBED_FILENAME, mmap_mode="r")
    if not projection_is_tied(map_tensor(weight, export_dir), embed):
        logger.info("%s: the output projection is not the embedding table; no logit screen", export_dir)
        return False
    rows = quantize_rows(embed)
    data = export_dir / (SCREEN_GRAPH_FILENAME + ".data")
    data.unlink(missing_ok=True)  # onnx appends external data to an existing file
    onnx.save(
        screen_graph(rows.codes),
        export_dir / SCREEN_GRAPH_FILENAME,
        save_as_external_data=True,
        location=data.name,
        size_threshold=1024,
    )
    data.chmod(0o644)  # readable by the server's user, as the other exported files
    np.savez(
        export_dir / SCREEN_TABLES_FILENAME,
        scale=rows.scale,
        weight_norm=rows.weight_norm,
        error_norm=rows.error_norm,
    )
    # The body's initializers keep pointing into decoder.onnx.data; the proto is written as it is.
    (export_dir / DECODER_BODY_FILENAME).write_bytes(body_graph(model).SerializeToString())
    logger.info("wrote the decoder body and its int8 logit screen in %s", export_dir)
    return True
