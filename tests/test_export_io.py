"""Export plumbing that keeps a 1.7B export within memory: weights by reference and streamed external data."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from qwen3_asr_triton.export.external_data import (
    EXTERNAL_ALIGN,
    EXTERNAL_MIN_BYTES,
    map_tensor,
    read_tensor,
    save_with_external_data,
)
from qwen3_asr_triton.model_spec import ModelSpec
from qwen3_asr_triton.torch_modules import DecoderWithCache, with_weights


def _graph_with(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """``y = x + w0 + w1 + ...`` over [n] float32 tensors, each weight an initializer."""
    names = list(weights)
    nodes, current = [], "x"
    for i, name in enumerate(names):
        nodes.append(helper.make_node("Add", [current, name], [f"s{i}"]))
        current = f"s{i}"
    n = max(w.size for w in weights.values())
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, [n])],
        initializer=[numpy_helper.from_array(w, name) for name, w in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("layout", ["inline", "one_file_per_tensor"])
def test_save_with_external_data_moves_every_large_tensor_into_one_aligned_file(tmp_path, layout):
    rng = np.random.default_rng(0)
    weights = {f"w{i}": rng.standard_normal(1000 + i).astype(np.float32)[:1000] for i in range(3)}
    weights["tiny"] = np.array([0.5], np.float32)  # below EXTERNAL_MIN_BYTES: stays in the graph
    model = _graph_with(weights)
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    src = src_dir / "m.onnx"
    if layout == "inline":
        onnx.save_model(model, str(src))
    else:  # what torch.onnx.export writes for graphs above 2 GB
        onnx.save_model(model, str(src), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)
        assert len(list(src_dir.iterdir())) == 1 + len(weights)

    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    save_with_external_data(src, out)

    assert sorted(p.name for p in out.parent.iterdir()) == ["m.onnx", "m.onnx.data"]
    saved = onnx.load(str(out), load_external_data=False)
    for tensor in saved.graph.initializer:
        nbytes = weights[tensor.name].nbytes
        if nbytes >= EXTERNAL_MIN_BYTES:
            info = {e.key: e.value for e in tensor.external_data}
            assert tensor.data_location == TensorProto.EXTERNAL and info["location"] == "m.onnx.data"
            assert int(info["offset"]) % EXTERNAL_ALIGN == 0 and int(info["length"]) == nbytes
        else:
            assert tensor.data_location != TensorProto.EXTERNAL
    loaded = onnx.load(str(out))
    for tensor in loaded.graph.initializer:
        np.testing.assert_array_equal(numpy_helper.to_array(tensor), weights[tensor.name])
    onnx.checker.check_model(str(out))


def test_an_external_tensor_is_read_and_mapped_in_place_and_an_inline_one_is_not_mapped(tmp_path):
    rng = np.random.default_rng(1)
    weights = {"a": rng.standard_normal(2000).astype(np.float32), "tiny": np.array([0.5], np.float32)}
    src, out = tmp_path / "src.onnx", tmp_path / "m.onnx"
    onnx.save_model(_graph_with(weights), str(src))
    save_with_external_data(src, out)
    tensors = {t.name: t for t in onnx.load(str(out), load_external_data=False).graph.initializer}
    mapped = map_tensor(tensors["a"], tmp_path)
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    np.testing.assert_array_equal(mapped, weights["a"])
    np.testing.assert_array_equal(read_tensor(tensors["a"], tmp_path), weights["a"])
    np.testing.assert_array_equal(read_tensor(tensors["tiny"], tmp_path), weights["tiny"])
    with pytest.raises(ValueError, match="not external float32 data"):
        map_tensor(tensors["tiny"], tmp_path)
    short = onnx.TensorProto()
    short.CopyFrom(tensors["a"])
    short.dims[0] = 4000  # more than the span holds
    with pytest.raises(ValueError, match="shape"):
        map_tensor(short, tmp_path)


def test_with_weights_uses_the_checkpoint_tensors_without_copying(asr_checkpoint):
    from qwen3_asr_triton.export.checkpoint import load_state_dict

    spec = ModelSpec.from_checkpoint(asr_checkpoint)
    state = load_state_dict(asr_checkpoint, spec)
    module = DecoderWithCache.from_state(spec, state)
    q = module.body.layers[0].self_attn.q_proj.weight
    assert q.data_ptr() == state["model.language_model.layers.0.self_attn.q_proj.weight"].data_ptr()
    assert module.lm_head.weight.data_ptr() == state["lm_head.weight"].data_ptr()
    assert not any(p.is_meta for p in module.parameters())
    assert not module.training


def test_with_weights_refuses_a_module_left_without_some_tensor():
    class Two(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(2, 2, bias=False)
            self.b = torch.nn.Linear(2, 2, bias=False)

    with pytest.raises(ValueError, match=r"b\.weight"):
        with_weights(Two, {"a": {"weight": torch.ones(2, 2)}})
    with pytest.raises(RuntimeError, match="Missing key"):
        with_weights(Two, {"a": {}})
