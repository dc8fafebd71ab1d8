"""The fast mode's int8 rewrite (export/per_token_int8.py) on single products: exact integer maths, one
scale per token (a row's result does not depend on the other rows), no int16 saturation, and the recipe
recorded so that stale int8 graphs are remade."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qwen3_asr_triton.artifacts import DECODER_GRAPH, onnx_filename
from qwen3_asr_triton.export.external_data import save_with_external_data
from qwen3_asr_triton.export.per_token_int8 import (
    ACTIVATION_LEVELS,
    INT7,
    RECIPE,
    UINT8,
    WEIGHT_LEVELS,
    ZERO_POINT,
    graph_recipe,
    quantize_rows,
    quantize_weight,
    recipe_name,
    rewrite_graph,
)

K, N = 256, 96


def _product_graph(path: Path, weights: dict[str, np.ndarray], opset: int = 17) -> None:
    """``y_i = x @ W_i`` for each weight (all on the same input), saved with external data."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", K])
    outputs = [helper.make_tensor_value_info(f"y_{name}", TensorProto.FLOAT, ["B", "T", N]) for name in weights]
    nodes = [helper.make_node("MatMul", ["x", name], [f"y_{name}"], name=f"mm_{name}") for name in weights]
    inits = [numpy_helper.from_array(w, name) for name, w in weights.items()]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], outputs, inits), opset_imports=[helper.make_opsetid("", opset)]
    )
    raw = path.with_name("raw-" + path.name)
    onnx.save(model, str(raw), save_as_external_data=True, location=raw.name + ".data", size_threshold=0)
    save_with_external_data(raw, path)


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _expected(x: np.ndarray, w: np.ndarray, weight_format: str = INT7) -> np.ndarray:
    """What the rewritten product computes, in numpy: exact integer products, then the two scales."""
    q = quantize_weight(w, weight_format)
    values = q.values.astype(np.int64) - (ZERO_POINT if weight_format == UINT8 else 0)
    xq, scale = quantize_rows(x)
    acc = (xq.astype(np.int64) - ZERO_POINT) @ values
    return acc.astype(np.float32) * scale * q.scales


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    w = rng.normal(scale=0.05, size=(K, N)).astype(np.float32)
    w[:, 3] = 0.0  # an all-zero output channel
    return {"a": w, "b": rng.normal(scale=0.02, size=(K, N)).astype(np.float32)}


@pytest.fixture(scope="module")
def rewritten(tmp_path_factory, weights) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("pt8")
    _product_graph(folder / "fp32.onnx", weights)
    assert rewrite_graph(folder / "fp32.onnx", folder / "int8.onnx") == 2
    return folder / "fp32.onnx", folder / "int8.onnx"


def test_weights_are_7_bit_per_output_channel(weights) -> None:
    w = weights["a"]
    q = quantize_weight(w)
    assert q.values.dtype == np.int8 and q.scales.shape == (N,)
    assert int(np.abs(q.values).max()) == WEIGHT_LEVELS
    np.testing.assert_array_equal(np.abs(q.values).max(axis=0)[[0, 1, 2]], WEIGHT_LEVELS)  # each channel's own scale
    assert q.scales[3] == 1.0 and not q.values[:, 3].any()
    assert np.all(np.abs(q.values * q.scales - w) <= q.scales / 2 + 1e-7)
    u = quantize_weight(w, UINT8)
    assert u.values.dtype == np.uint8 and int(u.values.max()) == ZERO_POINT + ACTIVATION_LEVELS
    with pytest.raises(ValueError):
        quantize_weight(w[0])
    with pytest.raises(ValueError):
        quantize_weight(w, "int4")


def test_the_rewrite_computes_exact_integer_products(rewritten, weights) -> None:
    fp32, int8 = rewritten
    x = np.random.default_rng(1).normal(size=(3, 5, K)).astype(np.float32)
    got = _session(int8).run(None, {"x": x})
    ref = _session(fp32).run(None, {"x": x})
    for name, y, y_ref in zip(weights, got, ref):
        np.testing.assert_allclose(y, _expected(x, weights[name]), rtol=1e-5, atol=1e-6)
        rel = np.linalg.norm(y - y_ref) / np.linalg.norm(y_ref)
        assert 0 < rel < 0.03, (name, rel)  # 7-bit weights and 8-bit tokens: ~1-2% here


def test_the_graph_shares_one_quantisation_per_input_and_drops_the_fp32_weights(rewritten) -> None:
    _, int8 = rewritten
    model = onnx.load(str(int8), load_external_data=False)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MatMulInteger") == 2 and ops.count("ReduceMax") == 1 and "MatMul" not in ops
    assert "DynamicQuantizeLinear" not in ops  # ONNX Runtime's per-tensor activation scale
    assert {t.name for t in model.graph.initializer}.isdisjoint({"a", "b"})
    onnx.checker.check_model(str(int8))


def test_a_row_does_not_depend_on_the_rows_beside_it(rewritten, weights) -> None:
    # One scale per token: a quiet request batched with a loud one gets the same bits as alone. One scale
    # per tensor (ONNX Runtime's dynamic quantisation) quantises the quiet row with the loud row's step.
    _, int8 = rewritten
    rng = np.random.default_rng(2)
    quiet = rng.normal(scale=0.01, size=(1, 4, K)).astype(np.float32)
    loud = rng.normal(scale=100.0, size=(1, 4, K)).astype(np.float32)
    sess = _session(int8)
    alone = sess.run(None, {"x": quiet})[0]
    batched = sess.run(None, {"x": np.concatenate([quiet, loud])})[0]
    np.testing.assert_array_equal(batched[0], alone[0])
    # ... while a per-tensor step (the loud row's) would have wiped the quiet row out:
    step = np.abs(loud).max() / ACTIVATION_LEVELS
    assert np.abs(quiet).max() < step / 2


def test_full_scale_products_do_not_saturate(tmp_path) -> None:
    # Every weight at its channel's peak and every activation at its row's peak: the largest pair of u8 x s8
    # products (255 * 63 * 2 = 32130) fits in int16. With 8-bit weights (255 * 127 * 2 = 64770) ONNX Runtime's
    # kernels on CPUs without VNNI saturate and return a wrong sum.
    w = np.full((K, N), 0.5, np.float32)
    _product_graph(tmp_path / "fp32.onnx", {"w": w})
    rewrite_graph(tmp_path / "fp32.onnx", tmp_path / "int8.onnx")
    x = np.full((2, 3, K), 2.0, np.float32)
    y = _session(tmp_path / "int8.onnx").run(None, {"x": x})[0]
    np.testing.assert_allclose(y, np.full_like(y, 2.0 * 0.5 * K), rtol=1e-6)


def test_zero_rows_stay_zero(rewritten) -> None:
    _, int8 = rewritten
    x = np.zeros((2, 3, K), np.float32)
    x[1, 2] = 1.0
    y = _session(int8).run(None, {"x": x})
    assert all(np.all(out[0] == 0) and np.all(np.isfinite(out)) for out in y)


def test_uint8_weights_and_opset_18(tmp_path, weights) -> None:
    _product_graph(tmp_path / "fp32.onnx", weights, opset=18)
    rewrite_graph(tmp_path / "fp32.onnx", tmp_path / "u8.onnx", UINT8)
    x = np.random.default_rng(3).normal(size=(2, 2, K)).astype(np.float32)
    got = _session(tmp_path / "u8.onnx").run(None, {"x": x})
    for name, y in zip(weights, got):
        np.testing.assert_allclose(y, _expected(x, weights[name], UINT8), rtol=1e-5, atol=1e-6)
    assert graph_recipe(tmp_path / "u8.onnx") == recipe_name(UINT8) != RECIPE
    with pytest.raises(ValueError):
        rewrite_graph(tmp_path / "fp32.onnx", tmp_path / "bad.onnx", "int4")


def test_the_recipe_is_recorded_and_stale_graphs_are_remade(asr_export, tmp_path) -> None:
    from qwen3_asr_triton.export.quantize import ensure_precision, quantized_name

    export = tmp_path / "export"
    export.mkdir()
    for f in asr_export.iterdir():
        if "-int8" not in f.name and "bf16" not in f.name:
            (export / f.name).symlink_to(f.resolve())
    ensure_precision(export, "int8")
    decoder = export / onnx_filename(quantized_name(DECODER_GRAPH, "int8"))
    assert graph_recipe(decoder) == RECIPE
    made = decoder.stat().st_mtime_ns
    ensure_precision(export, "int8")
    assert decoder.stat().st_mtime_ns == made  # current: kept
    # An int8 graph from before recipes were recorded (ONNX Runtime's dynamic quantisation) is remade.
    model = onnx.load(str(decoder))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "old.onnx"), save_as_external_data=True, location="old.onnx.data")
    save_with_external_data(tmp_path / "old.onnx", decoder)
    assert graph_recipe(decoder) is None
    ensure_precision(export, "int8")
    assert graph_recipe(decoder) == RECIPE
