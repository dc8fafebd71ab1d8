"""model.py logic without a server: a fake triton_python_backend_utils and the built repository's artifacts."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from qwen3_asr_triton.artifacts import ENCODER_FILENAME
from qwen3_asr_triton.features import LogMel, split_windows
from qwen3_asr_triton.model_spec import ModelSpec
from qwen3_asr_triton.sessions import EncoderRunner
from tests import fake_pb_utils as pb
from tests.fake_pb_utils import InferenceRequest


def model_args(repository, name: str) -> dict[str, str]:
    from google.protobuf import json_format

    from qwen3_asr_triton.export.fill_config import parse_model_config

    config = parse_model_config((repository / name / "config.pbtxt").read_text())
    as_json = json_format.MessageToDict(config, preserving_proto_field_name=True)
    return {
        "model_config": json.dumps(as_json),
        "model_repository": str(repository / name),
        "model_version": "1",
        "model_name": name,
        "model_instance_kind": "CPU",
    }


def load(repository, name):
    module = pb.load_model(repository / name / "1" / "model.py")
    model = module.TritonPythonModel()
    model.initialize(model_args(repository, name))
    return model


def error_text(response) -> str:
    assert response.has_error()
    return response.error().message()


def test_encoder_batch_isolates_a_bad_request(model_repository, clips):
    model = load(model_repository, "encoder")
    spec = ModelSpec.load(model_repository / "encoder" / "1")
    mel = LogMel(spec.features)(clips[-1].waveform())
    win = split_windows(mel, spec.features)
    full = np.stack(win.features[:2])  # two 8 s windows
    tail = win.features[-1][None]
    good_a = InferenceRequest({"input_features": full, "feature_lens": win.frames[:2].reshape(-1, 1)})
    bad = InferenceRequest({"input_features": full[:, :, :750], "feature_lens": np.array([[750], [750]])})
    good_b = InferenceRequest({"input_features": tail, "feature_lens": win.frames[-1:].reshape(-1, 1)})
    responses = model.execute([good_a, bad, good_b])
    assert "multiple of 100" in error_text(responses[1])
    assert responses[1].error().code() == pb.TritonError.INVALID_ARG
    direct = EncoderRunner(model_repository / "encoder" / "1" / ENCODER_FILENAME)
    for response, feats, frames in ((responses[0], full, win.frames[:2]), (responses[2], tail, win.frames[-1:])):
        assert not response.has_error()
        embeds = pb.get_output_tensor_by_name(response, "audio_embeds").as_numpy()
        lens = pb.get_output_tensor_by_name(response, "embed_lens").as_numpy()
        ref_embeds, ref_lens = direct(feats, frames)
        np.testing.assert_array_equal(lens, ref_lens)
        for i, n in enumerate(lens):
            np.testing.assert_allclose(embeds[i, :n], ref_embeds[i, :n], atol=1e-5)


def test_preprocess_errors_are_per_request(model_repository, clips):
    model = load(model_repository, "preprocess")
    wav = clips[1].path.read_bytes()
    # preprocess batches requests: every input and output has a leading batch dimension of 1.
    requests = [
        InferenceRequest({"AUDIO": np.array([[wav]], dtype=object)}),
        InferenceRequest({"AUDIO": np.array([[b"not audio"]], dtype=object)}),
        InferenceRequest({"WAVEFORM": np.zeros((1, 1600), np.float32)}),
        InferenceRequest({"WAVEFORM": np.zeros((1, 24000), np.float32), "SAMPLE_RATE": np.array([[48000]], np.int32)}),
        InferenceRequest({"WAVEFORM": np.zeros((2, 24000), np.float32), "SAMPLE_RATE": np.array([[16000]], np.int32)}),
    ]
    first, corrupt, no_rate, pcm, two = model.execute(requests)
    mel = pb.get_output_tensor_by_name(first, "MEL").as_numpy()
    segments = pb.get_output_tensor_by_name(first, "SEGMENTS").as_numpy()
    assert mel.shape[:2] == (1, 128) and segments.shape == (1, 1, 3)
    assert mel.shape[2] == segments[0, 0, 2] == segments[0, 0, 1] // 160  # (start, stop, frames)
    assert "could not decode" in error_text(corrupt)
    assert "SAMPLE_RATE" in error_text(no_rate)
    assert pb.get_output_tensor_by_name(pcm, "SEGMENTS").as_numpy().tolist() == [[[0, 8000, 50]]]
    assert "one item per request" in error_text(two)


def test_postprocess_parses_generated_ids(model_repository):
    model = load(model_repository, "postprocess")
    from qwen3_asr_triton.tokenizer import TextTokenizer

    tok = TextTokenizer.from_file(model_repository / "postprocess" / "1")
    ids = tok.encode("language German<asr_text>Guten Tag")
    (resp,) = model.execute([InferenceRequest({"TOKEN_IDS": np.array(ids, np.int32)})])
    assert pb.get_output_tensor_by_name(resp, "TEXT").as_numpy()[0] == b"Guten Tag"
    assert pb.get_output_tensor_by_name(resp, "LANGUAGE").as_numpy()[0] == b"German"


@pytest.fixture
def decoder_model(model_repository):
    model = load(model_repository, "decoder")
    yield model
    model.finalize()


def _decoder_request(ids, table, max_new, **extra):
    inputs = {
        "input_ids": np.asarray(ids, np.int32)[None],
        "input_lengths": np.array([[len(ids)]], np.int32),
        "request_output_len": np.array([[max_new]], np.int32),
        "prompt_embedding_table": table[None].astype(np.float32),
        "prompt_vocab_size": np.array([[table.shape[0]]], np.int32),
        "return_log_probs": np.array([[True]]),
    }
    inputs.update(extra)
    return InferenceRequest(inputs)


def test_decoder_serves_good_requests_next_to_bad_ones(decoder_model, model_repository):
    from qwen3_asr_triton.decoding.decoder import DecoderRunner, greedy_decode

    spec = decoder_model.spec
    vocab, hidden = spec.text.vocab_size, spec.text.hidden_size
    rng = np.random.default_rng(0)
    table = rng.standard_normal((20, hidden)).astype(np.float32)
    prompt = _chat_prompt(model_repository, spec, 20)
    good = _decoder_request(prompt, table, 12)
    out_of_range = _decoder_request([*prompt[:-1], vocab + 50], table, 12)
    too_long = _decoder_request(prompt, table, 10**7)
    streaming = _decoder_request(prompt, table, 5, streaming=np.array([[True]]))
    assert decoder_model.execute([good, out_of_range, too_long, streaming]) is None
    for req in (good, out_of_range, too_long, streaming):
        assert req.sender.done.wait(60)
    assert "input_ids must be in" in error_text(out_of_range.sender.responses[-1][0])
    assert "request_output_len must be between 1 and 4096" in error_text(too_long.sender.responses[-1][0])
    final, flags = good.sender.responses[-1]
    assert flags == pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL and not final.has_error()
    ids = pb.get_output_tensor_by_name(final, "output_ids").as_numpy()[0, 0].tolist()
    runner = DecoderRunner(model_repository / "decoder" / "1")
    alone = greedy_decode(runner, np.array(prompt), table, 12)
    assert ids == alone.tokens
    logprobs = pb.get_output_tensor_by_name(final, "output_log_probs").as_numpy()[0, 0]
    np.testing.assert_allclose(logprobs, alone.logprobs, atol=1e-5)
    streamed = [
        pb.get_output_tensor_by_name(r, "output_ids").as_numpy().item()
        for r, f in streaming.sender.responses
        if r is not None and not f
    ]
    assert streamed == greedy_decode(runner, np.array(prompt), table, 5).tokens  # a response per token, all of them
    assert streaming.sender.responses[-1] == (None, pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)


def test_a_request_without_log_probabilities_gets_the_same_ids_and_none_computed(
    decoder_model, model_repository, monkeypatch
):
    """Stream partials ask for no log-probabilities: same ids, no log-prob outputs, no log-softmax run."""
    from qwen3_asr_triton.decoding import decoder as decoding

    prompt, table = _tiny_prompt(model_repository, decoder_model.spec)
    with_scores = _decoder_request(prompt, table, 8)
    without = _decoder_request(prompt, table, 8, return_log_probs=np.array([[False]]))
    calls = []
    original = decoding._log_softmax_at
    monkeypatch.setattr(
        decoding, "_log_softmax_at", lambda logits, index: calls.append(index) or original(logits, index)
    )
    assert decoder_model.execute([without]) is None
    assert without.sender.done.wait(60)
    assert calls == []  # nothing scored for the request that asked for no log-probabilities
    assert decoder_model.execute([with_scores]) is None
    assert with_scores.sender.done.wait(60)
    scored, bare = with_scores.sender.responses[-1][0], without.sender.responses[-1][0]
    assert not scored.has_error() and not bare.has_error()
    ids = pb.get_output_tensor_by_name(scored, "output_ids").as_numpy().tolist()
    assert pb.get_output_tensor_by_name(bare, "output_ids").as_numpy().tolist() == ids
    assert len(calls) == len(ids[0][0])  # one score per generated id when asked
    assert pb.get_output_tensor_by_name(bare, "output_log_probs") is None
    assert pb.get_output_tensor_by_name(bare, "cum_log_probs") is None


def _chat_prompt(repository, spec, rows: int) -> list[int]:
    """The recogniser's prompt with ``rows`` audio positions, in prompt-table form (as the entry model sends it)."""
    from qwen3_asr_triton.prompt import PromptBuilder, to_prompt_table_ids
    from qwen3_asr_triton.tokenizer import TextTokenizer

    builder = PromptBuilder(TextTokenizer.from_file(repository / "postprocess" / "1"), spec.audio_token_id)
    return to_prompt_table_ids(builder.asr_prompt(rows), spec.audio_token_id, spec.text.vocab_size).tolist()


def _tiny_prompt(repository, spec, rows=20):
    table = np.random.default_rng(1).standard_normal((rows, spec.text.hidden_size)).astype(np.float32)
    return _chat_prompt(repository, spec, rows), table


def test_decoder_enforces_its_own_limits(decoder_model, model_repository):
    """Called directly, the decoder can do nothing the public model cannot: a request for 20,000 tokens is
    refused (at most 4,096), not generated."""
    prompt, table = _tiny_prompt(model_repository, decoder_model.spec)
    cases = {
        "request_output_len must be between 1 and 4096": _decoder_request(prompt, table, 20000),
        "request_output_len must be between 1 and": _decoder_request(prompt, table, 0),
        "min_length must be between 0 and request_output_len": _decoder_request(
            prompt, table, 8, min_length=np.array([[9]], np.int32)
        ),
        "more than the": _decoder_request(prompt[:5], table, 8),
        "prompt_vocab_size 3 != 20": _decoder_request(prompt, table, 8, prompt_vocab_size=np.array([[3]], np.int32)),
        "columns": _decoder_request(prompt, table[:, :-1], 8),
    }
    assert decoder_model.execute(list(cases.values())) is None
    for expected, req in cases.items():
        assert req.sender.done.wait(10)
        response, flags = req.sender.responses[-1]
        assert flags == pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        assert expected in error_text(response), (expected, error_text(response))
    assert decoder_model.scheduler.stats.steps == 0, "nothing was generated for a refused request"


def test_a_stop_request_drops_the_running_generation(decoder_model, model_repository):
    """TensorRT-LLM's cancellation: ``stop`` with a running request's id frees it at the next step."""
    prompt, table = _tiny_prompt(model_repository, decoder_model.spec)
    long = _decoder_request(prompt, table, 4000, min_length=np.array([[4000]], np.int32))
    long.request_id_value = "generation-1"
    other = _decoder_request(prompt, table, 6)
    decoder_model.execute([long, other])
    deadline = time.monotonic() + 30
    while decoder_model.scheduler.stats.steps < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop = _decoder_request([0], table[:0], 1, stop=np.array([[True]]))
    stop.request_id_value = "generation-1"
    unknown = _decoder_request([0], table[:0], 1, stop=np.array([[True]]))
    unknown.request_id_value = "nobody"
    decoder_model.execute([stop, unknown])
    assert stop.sender.responses == [(None, pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)]
    assert unknown.sender.responses == [(None, pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)]
    assert long.sender.done.wait(30)
    response, _ = long.sender.responses[-1]
    assert response.error().code() == pb.TritonError.CANCELLED and "cancelled" in error_text(response)
    assert decoder_model.scheduler.stats.cancelled == 1
    assert decoder_model.scheduler.stats.steps < 1000, "stopped long before its 4000 tokens"
    assert other.sender.done.wait(30) and not other.sender.responses[-1][0].has_error()
    assert not decoder_model._active and not decoder_model._stopped


def test_stop_words_list_layout():
    from qwen3_asr_triton.bls import stop_words_list

    module = pb.load_model(__import__("pathlib").Path(__file__).parents[1] / "model_repository/decoder/1/model.py")
    assert module._stop_ids(stop_words_list((151643, 7))) == {151643, 7}
    assert module._stop_ids(stop_words_list(())) == set()
    two_token_word = np.array([[[5, 6, 9], [2, 3, -1]]], np.int32)  # "5 6" is a two-token stop word
    assert module._stop_ids(two_token_word) == {9}
