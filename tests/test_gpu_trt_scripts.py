"""The container-side scripts of export/trt/ with stand-ins for tensorrt and tensorrt_llm (neither can run
here): which layers stay fp32, what the TensorRT-LLM conversion checks, what the preflight refuses,
and that the comparison inputs look like serving inputs."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest

from qwen3_asr_triton.artifacts import onnx_filename
from qwen3_asr_triton.model_spec import SPEC_FILENAME

TRT_DIR = Path(__file__).resolve().parents[1] / "export" / "trt"
# TensorRT layer type for the ONNX ops of the exported graphs (as TensorRT's ONNX parser maps them).
LAYER_TYPES = {
    "LayerNormalization": "NORMALIZATION",
    "Softmax": "SOFTMAX",
    "MatMul": "MATRIX_MULTIPLY",
    "Conv": "CONVOLUTION",
    "Pow": "ELEMENTWISE",
    "Add": "ELEMENTWISE",
    "Mul": "ELEMENTWISE",
    "Div": "ELEMENTWISE",
    "Sub": "ELEMENTWISE",
    "ReduceMean": "REDUCE",
    "ReduceSum": "REDUCE",
    "Sqrt": "UNARY",
    "Erf": "UNARY",
    "Sigmoid": "ACTIVATION",
    "Constant": "CONSTANT",
    "Shape": "SHAPE",
    "Cast": "CAST",
    "Reshape": "SHUFFLE",
    "Transpose": "SHUFFLE",
    "Gather": "GATHER",
}
# Ops that are part of LayerNorm / RMSNorm / softmax arithmetic.
NORM_OPS = {"LayerNormalization", "Softmax", "Pow", "ReduceMean", "Sqrt"}


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"trt_{name}", TRT_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- fp32_layers
class FakeTensor:
    def __init__(self, dtype):
        self.dtype = dtype


class FakeLayer:
    def __init__(self, name, type_name, dtype):
        self.name = name
        self.type = types.SimpleNamespace(name=type_name)
        self.outputs = [FakeTensor(dtype)]
        self.num_outputs = 1
        self.precision = None
        self.output_types: dict[int, object] = {}

    def get_output(self, i):
        return self.outputs[i]

    def set_output_type(self, i, dtype):
        self.output_types[i] = dtype


class FakeNetwork:
    def __init__(self, layers):
        self.layers = layers
        self.num_layers = len(layers)

    def get_layer(self, i):
        return self.layers[i]


@pytest.fixture
def fake_tensorrt(monkeypatch):
    trt = types.ModuleType("tensorrt")
    trt.float32, trt.float16, trt.bfloat16, trt.int64 = "float32", "float16", "bfloat16", "int64"
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


def network_of(path: Path, trt) -> tuple[FakeNetwork, list]:
    graph = onnx.load(str(path), load_external_data=False).graph
    nodes = [n for n in graph.node if n.op_type in LAYER_TYPES]
    layers = [
        FakeLayer(n.name, LAYER_TYPES[n.op_type], trt.int64 if n.op_type in ("Shape", "Cast") else trt.float32)
        for n in nodes
    ]
    return FakeNetwork(layers), nodes


@pytest.mark.parametrize(("which", "graph"), [("asr", "encoder"), ("aligner", "aligner")])
def test_norms_and_softmax_stay_fp32(asr_export, aligner_export, fake_tensorrt, which, graph, capsys):
    fp32 = load_script("fp32_layers")
    path = (asr_export if which == "asr" else aligner_export) / onnx_filename(graph)
    network, nodes = network_of(path, fake_tensorrt)
    fp32.postprocess(network)
    pinned = {layer.name for layer in network.layers if layer.precision == "float32"}
    for node, layer in zip(nodes, network.layers):
        if node.op_type in NORM_OPS:
            assert node.name in pinned, f"{node.name} ({node.op_type}) not kept in fp32"
            assert layer.output_types == {0: "float32"}
        if node.op_type in ("MatMul", "Conv", "Erf", "Sigmoid", "Constant", "Shape"):
            assert node.name not in pinned, f"{node.name} ({node.op_type}) needlessly pinned"
    assert "pinned to fp32" in capsys.readouterr().out
    if graph == "aligner":  # RMSNorm: square, mean, sqrt and the division all in fp32
        rms = [n for n in nodes if "/input_layernorm/" in n.name and n.op_type in ("Pow", "ReduceMean", "Sqrt", "Div")]
        assert len({n.op_type for n in rms}) == 4 and all(n.name in pinned for n in rms)


def test_postprocess_refuses_a_network_it_does_not_recognise(fake_tensorrt):
    fp32 = load_script("fp32_layers")
    network = FakeNetwork([FakeLayer("/proj/MatMul", "MATRIX_MULTIPLY", "float32")])
    with pytest.raises(RuntimeError, match="no layer matched"):
        fp32.postprocess(network)


# ----------------------------------------------------------------------------- data_loader
def test_comparison_inputs_look_like_serving_inputs(asr_export, aligner_export, monkeypatch):
    loader = load_script("data_loader")
    monkeypatch.setenv("QWEN3_ASR_PG_SPEC", str(asr_export / SPEC_FILENAME))
    monkeypatch.setenv("QWEN3_ASR_PG_BATCH", "3")
    (feed,) = list(loader.load_encoder_data())
    spec = json.loads((asr_export / SPEC_FILENAME).read_text())
    frames = spec["features"]["window_frames"]
    assert feed["input_features"].shape == (3, spec["features"]["n_mels"], frames)
    assert feed["input_features"].dtype == np.float32 and feed["feature_lens"].dtype == np.int64
    assert feed["feature_lens"].tolist()[:2] == [frames, frames] and 0 < feed["feature_lens"][2] < frames
    assert not feed["input_features"][2, :, feed["feature_lens"][2] :].any(), "padding is zero as in serving"
    monkeypatch.setenv("QWEN3_ASR_PG_SPEC", str(aligner_export / SPEC_FILENAME))
    monkeypatch.setenv("QWEN3_ASR_PG_SEQ", "37")
    (feed,) = list(loader.load_aligner_lm_data())
    hidden = json.loads((aligner_export / SPEC_FILENAME).read_text())["text"]["hidden_size"]
    assert feed["inputs_embeds"].shape == (1, 37, hidden) and feed["attention_mask"].tolist() == [[1] * 37]
    monkeypatch.delenv("QWEN3_ASR_PG_SPEC")
    with pytest.raises(RuntimeError, match="QWEN3_ASR_PG_SPEC"):
        list(loader.load_encoder_data())


# ----------------------------------------------------------------------------- preflight
def test_preflight_reports_every_problem():
    preflight = load_script("preflight")
    expected = {"tensorrt": "10.11.0.33", "tensorrt_llm": "1.0.0", "polygraphy": "0.53.6"}
    good = {"tensorrt": "10.11.0.33", "tensorrt_llm": "1.0.0", "polygraphy": "0.53.6"}
    assert preflight.problems(expected, good, {"trtllm-build": True}, gpus=1) == []
    assert preflight.problems(expected, {**good, "tensorrt_llm": "1.0.0+abc"}, {"trtllm-build": True}, 1) == []
    bad = preflight.problems(
        expected, {**good, "tensorrt_llm": "1.1.0", "polygraphy": None}, {"trtllm-build": False}, 0
    )
    assert len(bad) == 4 and any("1.1.0" in b for b in bad) and any("no CUDA device" in b for b in bad)
    assert preflight.problems(expected, {**good, "tensorrt_llm": "1.0.01"}, {"trtllm-build": True}, 1)


# ----------------------------------------------------------------------------- trtllm_convert
def fake_tensorrt_llm(monkeypatch, rotary_default: float = 10000.0, tamper: bool = False):
    """A stand-in for tensorrt_llm's Qwen conversion that reads the config the way transformers 4 does."""

    calls = {}

    class Mapping:
        def __init__(self, **kwargs):
            calls["mapping"] = kwargs

    class QWenForCausalLM:
        def __init__(self, config):
            self.config = config

        @classmethod
        def from_hugging_face(cls, model_dir, dtype, mapping=None):
            calls["from_hugging_face"] = (model_dir, dtype)
            hf = json.loads((Path(model_dir) / "config.json").read_text())
            return cls(
                {
                    "architecture": hf["architectures"][0],
                    "dtype": dtype,
                    "vocab_size": hf["vocab_size"],
                    "num_hidden_layers": hf["num_hidden_layers"],
                    # transformers 4's Qwen3Config: rope_theta defaults to 10000 when absent.
                    "rotary_base": 1.0 if tamper else float(hf.get("rope_theta", rotary_default)),
                    "qwen_type": hf["model_type"],
                }
            )

        def save_checkpoint(self, output, save_config=True):
            calls["save_checkpoint"] = (output, save_config)
            (Path(output) / "config.json").write_text(json.dumps(self.config))

    package = types.ModuleType("tensorrt_llm")
    mapping_module = types.ModuleType("tensorrt_llm.mapping")
    mapping_module.Mapping = Mapping
    models_module = types.ModuleType("tensorrt_llm.models")
    models_module.QWenForCausalLM = QWenForCausalLM
    for name, module in (
        ("tensorrt_llm", package),
        ("tensorrt_llm.mapping", mapping_module),
        ("tensorrt_llm.models", models_module),
    ):
        monkeypatch.setitem(sys.modules, name, module)
    return calls


@pytest.fixture(scope="module")
def trtllm_decoder(asr_checkpoint, tmp_path_factory):
    from qwen3_asr_triton.export.trtllm_checkpoint import write_trtllm_decoder

    return write_trtllm_decoder(asr_checkpoint, tmp_path_factory.mktemp("decoder") / "hf")


def test_conversion_keeps_the_rope_base(trtllm_decoder, tmp_path, monkeypatch):
    convert = load_script("trtllm_convert")
    calls = fake_tensorrt_llm(monkeypatch)
    converted = convert.convert(trtllm_decoder, tmp_path / "ckpt", "float16")
    assert converted["rotary_base"] == 1_000_000.0 and converted["architecture"] == "Qwen3ForCausalLM"
    assert calls["mapping"] == {"world_size": 1, "rank": 0, "tp_size": 1, "pp_size": 1}
    assert calls["from_hugging_face"][1] == "float16" and calls["save_checkpoint"][1] is True


def test_conversion_refuses_what_would_garble_transcripts(trtllm_decoder, tmp_path, monkeypatch):
    convert = load_script("trtllm_convert")
    fake_tensorrt_llm(monkeypatch, tamper=True)
    with pytest.raises(ValueError, match="rotary_base"):
        convert.convert(trtllm_decoder, tmp_path / "a", "float16")
    plain = tmp_path / "plain"
    plain.mkdir()
    config = json.loads((trtllm_decoder / "config.json").read_text())
    del config["rope_theta"]
    (plain / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="rope_theta"):
        convert.convert(plain, tmp_path / "b", "float16")
    with pytest.raises(ValueError, match="dtype"):
        convert.convert(trtllm_decoder, tmp_path / "c", "bfloat16")
    assert convert.main(["--model-dir", str(plain), "--output", str(tmp_path / "d")]) == 1
