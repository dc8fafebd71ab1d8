"""The aligner model's gpu mode (runtime "bls"): its glue drives two BLS models and gives the same word
times as the in-process cpu mode. ONNX Runtime stands in for the two TensorRT plans, running exactly the
graphs TensorRT builds them from, with the padded full-length windows the plans require."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from qwen3_asr_triton.artifacts import ALIGNER_FILENAME, ENCODER_FILENAME
from qwen3_asr_triton.features import LogMel
from qwen3_asr_triton.model_spec import ModelSpec
from qwen3_asr_triton.sessions import AlignerRunner, EncoderRunner
from tests import fake_pb_utils as pb
from tests.fake_pb_utils import InferenceRequest

MODEL_PY = __import__("pathlib").Path(__file__).resolve().parents[1] / "model_repository" / "aligner" / "1" / "model.py"
TEXT = "the quick brown fox jumps over the lazy dog again and again"


class BlsRouter:
    """BLS calls of the aligner model, served by ONNX Runtime on the aligner's exported graphs."""

    def __init__(self, export_dir, pad_to: int) -> None:
        self.encoder = EncoderRunner(export_dir / ENCODER_FILENAME)
        self.lm = AlignerRunner(export_dir / ALIGNER_FILENAME)
        self.pad_to = pad_to
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    def __call__(self, model: str, inputs: dict[str, np.ndarray]):
        if model == "aligner_encoder":
            feats = inputs["input_features"]
            assert feats.shape[2] == self.pad_to, "the plan takes full-length windows only"
            self.calls.append((model, feats.shape))
            embeds, lens = self.encoder(feats, inputs["feature_lens"].reshape(-1))
            return pb.InferenceResponse([pb.Tensor("audio_embeds", embeds), pb.Tensor("embed_lens", lens[:, None])])
        if model == "aligner_lm":
            self.calls.append((model, inputs["inputs_embeds"].shape))
            logits = self.lm(inputs["inputs_embeds"], inputs["attention_mask"])
            return pb.InferenceResponse([pb.Tensor("logits", logits)])
        raise AssertionError(f"unexpected BLS call to {model}")


def bls_pb_utils(router: BlsRouter) -> types.SimpleNamespace:
    """The fake pb_utils plus InferenceRequest(model_name=..., inputs=..., ...).exec()."""

    class BlsRequest:
        def __init__(self, model_name, inputs, requested_output_names):
            self.model, self.inputs = model_name, {t.name(): t.as_numpy() for t in inputs}

        def exec(self):
            return router(self.model, self.inputs)

    namespace = types.SimpleNamespace(**{k: getattr(pb, k) for k in dir(pb) if not k.startswith("__")})
    namespace.InferenceRequest = BlsRequest
    return namespace


def load_aligner(export_dir, parameters: dict[str, str], router: BlsRouter | None = None):
    module = pb.load_model(MODEL_PY)
    if router is not None:
        module.pb_utils = bls_pb_utils(router)
    model = module.TritonPythonModel()
    config = {"parameters": {k: {"string_value": v} for k, v in parameters.items()}}
    model.initialize(
        {
            "model_config": json.dumps(config),
            "model_repository": str(export_dir.parent),
            "model_version": export_dir.name,
            "model_name": "aligner",
        }
    )
    return module, model


def gpu_parameters(spec: ModelSpec, **overrides: str) -> dict[str, str]:
    params = {
        "runtime": "bls",
        "encoder_model": "aligner_encoder",
        "lm_model": "aligner_lm",
        "pad_windows_to": str(spec.features.window_frames),
        "encoder_max_batch": "2",
        "max_tokens": "6144",
    }
    params.update(overrides)
    return params


@pytest.fixture(scope="module")
def mel(aligner_export):
    spec = ModelSpec.load(aligner_export)
    rng = np.random.default_rng(7)
    samples = int(19.5 * spec.features.sampling_rate)  # 3 windows: 2 full, 1 short
    wave = 0.3 * np.sin(np.arange(samples) * 0.02) * rng.uniform(0.2, 1.0, samples)
    return LogMel(spec.features)(wave.astype(np.float32))


def words_of(module, response):
    assert not response.has_error(), response.error().message() if response.has_error() else ""
    out = [
        module.pb_utils.get_output_tensor_by_name(response, n).as_numpy() for n in ("WORDS", "WORD_START", "WORD_END")
    ]
    return [w.decode() for w in out[0]], out[1], out[2]


def request(mel):
    return InferenceRequest(
        {"MEL": mel, "TEXT": np.array([TEXT.encode()], dtype=object), "LANGUAGE": np.array([b"English"], dtype=object)}
    )


def test_bls_mode_matches_onnxruntime_mode(aligner_export, mel):
    spec = ModelSpec.load(aligner_export)
    cpu_module, cpu_model = load_aligner(aligner_export, {"intra_op_threads": "0"})
    assert cpu_model.runtime == "onnxruntime"
    router = BlsRouter(aligner_export, spec.features.window_frames)
    gpu_module, gpu_model = load_aligner(aligner_export, gpu_parameters(spec), router)
    assert gpu_model.runtime == "bls"
    (cpu_response,) = cpu_model.execute([request(mel)])
    (gpu_response,) = gpu_model.execute([request(mel)])
    cpu_words, gpu_words = words_of(cpu_module, cpu_response), words_of(gpu_module, gpu_response)
    assert cpu_words[0] == gpu_words[0] == TEXT.split()
    np.testing.assert_array_equal(cpu_words[1], gpu_words[1])
    np.testing.assert_array_equal(cpu_words[2], gpu_words[2])
    encoder_calls = [shape for model, shape in router.calls if model == "aligner_encoder"]
    assert [s[0] for s in encoder_calls] == [2, 1], "3 windows in calls of at most encoder_max_batch"
    (lm_shape,) = [shape for model, shape in router.calls if model == "aligner_lm"]
    assert lm_shape[0] == 1 and lm_shape[2] == spec.text.hidden_size


def test_bls_mode_refuses_inputs_beyond_the_plan_profile(aligner_export, mel):
    spec = ModelSpec.load(aligner_export)
    router = BlsRouter(aligner_export, spec.features.window_frames)
    _, model = load_aligner(aligner_export, gpu_parameters(spec, max_tokens="50"), router)
    (response,) = model.execute([request(mel)])
    assert response.has_error() and response.error().code() == pb.TritonError.INVALID_ARG
    assert "at most 50" in response.error().message()
    assert not [call for call in router.calls if call[0] == "aligner_lm"], "refused before calling the plan"


def test_unknown_runtime_is_refused(aligner_export):
    with pytest.raises(ValueError, match="runtime"):
        load_aligner(aligner_export, {"runtime": "tensorrt"})
