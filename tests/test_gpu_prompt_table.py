"""The prompt-table layout the gpu decoder receives equals what the cpu decoder splices in.

The real entry-model code (Recognizer + BlsStages) runs twice on the same audio, once with the cpu
entry parameters and once with the gpu ones read from the filled gpu config, against fake BLS
models: the encoder is the exported encoder.onnx on ONNX Runtime (exactly the graph TensorRT
builds), the decoder records what it is sent. The gpu request is then turned into input embeddings
the way TensorRT-LLM's prompt tuning does (ids >= vocab_size select row id - vocab_size of the
prompt table, other ids the token embedding) and compared with the cpu decoder's own splicing.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from qwen3_asr_triton.artifacts import ENCODER_FILENAME
from qwen3_asr_triton.bls import BlsConfig, BlsStages
from qwen3_asr_triton.decoding.decoder import DecoderRunner
from qwen3_asr_triton.export.build_options import BuildOptions
from qwen3_asr_triton.export.fill_config import parse_model_config
from qwen3_asr_triton.export.gpu_options import GpuOptions, decoder_limits
from qwen3_asr_triton.export.repository_values import fill_repository_configs
from qwen3_asr_triton.model_spec import ModelSpec
from qwen3_asr_triton.pipeline import RecognitionOptions, Recognizer, prepare_audio
from qwen3_asr_triton.prompt import PromptBuilder
from qwen3_asr_triton.sessions import EncoderRunner
from qwen3_asr_triton.tokenizer import TextTokenizer
from tests import fake_pb_utils


class FakeBls:
    """pb_utils with BLS requests routed to in-process handlers (encoder on ORT, recording decoder)."""

    def __init__(self, encoder: EncoderRunner, eos: int) -> None:
        self.encoder = encoder
        self.eos = eos
        self.decoder_requests: list[dict[str, np.ndarray]] = []
        self.encoder_shapes: list[tuple[int, ...]] = []
        self.Tensor = fake_pb_utils.Tensor
        self.get_output_tensor_by_name = fake_pb_utils.get_output_tensor_by_name
        outer = self

        class InferenceRequest:
            def __init__(self, model_name, inputs, requested_output_names, request_id=""):
                self.model = model_name
                self.request_id = request_id
                self.inputs = {t.name(): t.as_numpy() for t in inputs}

            def exec(self, decoupled=False):
                response = outer.handle(self.model, self.inputs)
                return iter([response]) if decoupled else response

        self.InferenceRequest = InferenceRequest

    def handle(self, model: str, inputs: dict[str, np.ndarray]):
        t = fake_pb_utils.Tensor
        if model == "encoder":
            feats, lens = inputs["input_features"], inputs["feature_lens"].reshape(-1)
            self.encoder_shapes.append(feats.shape)
            embeds, embed_lens = self.encoder(feats, lens)
            return fake_pb_utils.InferenceResponse([t("audio_embeds", embeds), t("embed_lens", embed_lens)])
        if model == "decoder":
            self.decoder_requests.append(inputs)
            return fake_pb_utils.InferenceResponse(
                [
                    t("output_ids", np.array([[[self.eos]]], np.int32)),
                    t("sequence_length", np.array([[1]], np.int32)),
                    t("output_log_probs", np.zeros((1, 1, 1), np.float32)),
                ]
            )
        if model == "postprocess":
            return fake_pb_utils.InferenceResponse(
                [t("TEXT", np.array([b""], dtype=object)), t("LANGUAGE", np.array([b""], dtype=object))]
            )
        raise AssertionError(f"unexpected BLS call to {model}")


def entry_config(spec: ModelSpec, target: str) -> BlsConfig:
    """BlsConfig as the entry model builds it from its filled config (see model_repository/qwen3_asr/1/model.py)."""
    config = parse_model_config(fill_repository_configs(spec, BuildOptions(), target, False)["qwen3_asr"])
    params = {k: v.string_value for k, v in config.parameters.items()}
    eos = list(spec.eos_token_ids)
    end_id = spec.pad_token_id if spec.pad_token_id in eos else eos[0]
    return BlsConfig(
        end_id=end_id,
        stop_ids=tuple(e for e in eos if e != end_id),
        pad_windows_to=int(params["pad_windows_to"]),
        prompt_table_dtype=params["prompt_table_dtype"],
    )


def trtllm_prompt_tuning_embeddings(
    input_ids: np.ndarray, table: np.ndarray, vocab_size: int, embed: np.ndarray
) -> np.ndarray:
    """Input embeddings as TensorRT-LLM's prompt tuning forms them for one request."""
    ids = input_ids.astype(np.int64)
    fake = ids >= vocab_size
    out = embed[np.where(fake, 0, ids)].astype(np.float32)
    out[fake] = table[ids[fake] - vocab_size].astype(np.float32)
    return out


@pytest.fixture(scope="module")
def captured(asr_export):
    spec = ModelSpec.load(asr_export)
    encoder = EncoderRunner(asr_export / ENCODER_FILENAME)
    rng = np.random.default_rng(3)
    seconds = 19.3  # two full 8 s windows and a short one
    wave = 0.2 * np.sin(np.arange(int(seconds * 16000)) * 0.05) + 0.05 * rng.standard_normal(int(seconds * 16000))
    audio = prepare_audio(wave.astype(np.float32), spec.features, 1200.0)
    out = {}
    for target in ("cpu", "gpu"):
        fake = FakeBls(encoder, spec.eos_token_ids[-1])
        recognizer = Recognizer(spec, TextTokenizer.from_file(asr_export), BlsStages(fake, entry_config(spec, target)))
        asyncio.run(recognizer.transcribe(audio, RecognitionOptions(language="English", context="Triton")))
        (request,) = fake.decoder_requests
        out[target] = (request, fake.encoder_shapes)
    return spec, audio, out


def test_gpu_encoder_calls_use_full_windows(captured):
    spec, _, out = captured
    frames = {shape[2] for shape in out["gpu"][1]}
    assert frames == {spec.features.window_frames}, "TensorRT batches equal shapes: every window padded"
    assert len({shape[2] for shape in out["cpu"][1]}) == 2, "the cpu target keeps the last window short"


def test_ids_and_positions_match(captured, asr_export):
    spec, audio, out = captured
    cpu, gpu = out["cpu"][0], out["gpu"][0]
    np.testing.assert_array_equal(cpu["input_ids"], gpu["input_ids"])
    assert gpu["input_ids"].dtype == np.int32 and gpu["input_ids"].shape[0] == 1
    ids = gpu["input_ids"][0]
    vocab = spec.text.vocab_size
    (segment,) = audio.segments
    windows_tokens = spec.features.num_audio_tokens(segment.mel.shape[1])
    prompt = PromptBuilder(TextTokenizer.from_file(asr_export), spec.audio_token_id).asr_prompt(
        windows_tokens, "Triton", "English"
    )
    positions = np.flatnonzero(np.asarray(prompt) == spec.audio_token_id)
    np.testing.assert_array_equal(np.flatnonzero(ids >= vocab), positions)
    np.testing.assert_array_equal(ids[positions], vocab + np.arange(positions.size))
    rest = np.setdiff1d(np.arange(ids.size), positions)
    np.testing.assert_array_equal(ids[rest], np.asarray(prompt)[rest])
    assert int(gpu["prompt_vocab_size"].reshape(-1)[0]) == positions.size == gpu["prompt_embedding_table"].shape[1]
    assert int(gpu["input_lengths"].reshape(-1)[0]) == ids.size
    for name in ("end_id", "pad_id", "stop_words_list", "request_output_len", "return_log_probs"):
        np.testing.assert_array_equal(cpu[name], gpu[name])


def test_embeddings_match_the_cpu_splice(captured, asr_export):
    spec, _, out = captured
    cpu, gpu = out["cpu"][0], out["gpu"][0]
    assert cpu["prompt_embedding_table"].dtype == np.float32
    assert gpu["prompt_embedding_table"].dtype == np.float16
    cpu_table, gpu_table = cpu["prompt_embedding_table"][0], gpu["prompt_embedding_table"][0]
    # Same rows in the same order; the gpu rows come from padded windows and are rounded to fp16.
    np.testing.assert_allclose(gpu_table.astype(np.float32), cpu_table, rtol=2e-3, atol=2e-3)
    runner = DecoderRunner(asr_export)
    ids = cpu["input_ids"][0]
    cpu_embeds = runner.embed_prompt(ids, cpu_table)  # what the cpu decoder feeds its graph
    gpu_embeds = trtllm_prompt_tuning_embeddings(gpu["input_ids"][0], gpu_table, spec.text.vocab_size, runner.embed)
    audio = ids >= spec.text.vocab_size
    np.testing.assert_array_equal(gpu_embeds[~audio], cpu_embeds[~audio])
    np.testing.assert_allclose(gpu_embeds[audio], cpu_embeds[audio], rtol=2e-3, atol=2e-3)
    # A shifted table (an off-by-one in the ids) would not pass: the check can fail.
    shifted = trtllm_prompt_tuning_embeddings(
        gpu["input_ids"][0], np.roll(gpu_table, 1, axis=0), spec.text.vocab_size, runner.embed
    )
    assert not np.allclose(shifted[audio], cpu_embeds[audio], rtol=2e-3, atol=2e-3)


def test_request_fits_the_engine(captured):
    spec, _, out = captured
    gpu = out["gpu"][0]
    limits = decoder_limits(spec, BuildOptions(), GpuOptions())
    assert gpu["input_ids"].shape[1] <= limits.max_input_len
    assert gpu["prompt_embedding_table"].shape[1] <= limits.max_audio_tokens <= limits.prompt_table_rows
    assert gpu["prompt_embedding_table"].shape[2] == spec.text.hidden_size
