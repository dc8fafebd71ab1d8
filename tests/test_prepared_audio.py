"""One route from samples to features, and one segment decode, for requests and stream partials (no server)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from qwen3_asr_triton.errors import InputError
from qwen3_asr_triton.features import LogMel
from qwen3_asr_triton.pipeline import PreparedAudio, prepare_audio, prepare_segment
from qwen3_asr_triton.streaming import StreamRecognizer, StreamRegistry


def test_the_wire_carries_each_segments_frames_and_rebuilds_the_same_features(recognizer, clips):
    cfg = recognizer.recognizer.spec.features
    wave = next(c for c in clips if c.name == "en_long").waveform()
    prepared = prepare_audio(wave, cfg, 10.0)  # 23 s cut into 3 segments
    assert len(prepared.segments) >= 2
    mel, rows = prepared.wire()
    assert rows[:, 2].tolist() == [s.mel.shape[1] for s in prepared.segments]
    assert rows[:, :2].tolist() == [[s.start, s.stop] for s in prepared.segments]
    rebuilt = PreparedAudio.from_wire(mel, rows, cfg)
    for a, b in zip(prepared.segments, rebuilt.segments, strict=True):
        assert (a.start, a.stop) == (b.start, b.stop)
        np.testing.assert_array_equal(a.mel, b.mel)
        assert len(a.windows.features) == len(b.windows.features)
        for x, y in zip(a.windows.features, b.windows.features, strict=True):
            np.testing.assert_array_equal(x, y)
    bad = rows.copy()
    bad[0, 2] += 1
    with pytest.raises(InputError, match="frames but SEGMENTS counts"):
        PreparedAudio.from_wire(mel, bad, cfg)


def test_a_partial_is_the_unary_decode_of_the_same_audio(recognizer, clips):
    """Without a prefix, a stream's partial decodes exactly as a request's only segment does."""
    rec = recognizer.recognizer
    wave = next(c for c in clips if c.name == "en_long").waveform()[: 16000 * 6]
    options = rec.options(None, "", False, 12)
    streamer = StreamRecognizer(rec)
    state = StreamRegistry(streamer.policy).open("s", options, 16000)
    streamer.add_chunk(state, wave, 16000)
    partial = asyncio.run(streamer.partial(state))
    unary = recognizer.transcribe(wave, None, "", False, 12)
    assert partial.token_ids == unary.token_ids
    assert partial.text == unary.text
    assert (partial.language or "") == unary.language  # canonical names on both paths ("" or None: none found)


def test_decode_segment_canonicalises_the_language_and_keeps_the_prefix(recognizer):
    """The one decode: a lower-case language from the model comes out canonical; a prefix starts the ids."""
    rec = recognizer.recognizer
    tokenizer = rec.prompts.tokenizer
    answer = tokenizer.encode("language english<asr_text>hello")

    class Stages:
        async def generate(
            self, prompt_ids, prompt_table, max_new_tokens, min_new_tokens=0, on_token=None, want_logprobs=True
        ):
            from qwen3_asr_triton.pipeline import Generation

            assert max_new_tokens == 20 - 2  # the budget shrinks by the prefix
            return Generation([*answer[2:], rec.spec.eos_token_ids[0]], [0.0] * (len(answer) - 1))

        postprocess = recognizer.recognizer.stages.postprocess

    cfg = rec.spec.features
    segment = prepare_segment(np.zeros(16000, np.float32), 0, 16000, cfg, LogMel(cfg))
    audio = np.zeros((segment.windows.total_tokens, rec.spec.text.hidden_size), np.float32)
    fake = replace_stages(rec, Stages())
    decoded = asyncio.run(
        fake.decode_segment(segment.windows, audio, 1.0, rec.options(None, "", False, 20), prefix=answer[:2])
    )
    assert decoded.token_ids == answer
    assert decoded.language == "English" and decoded.text == "hello"


def replace_stages(recognizer, stages):
    """A shallow copy of ``recognizer`` that runs on other stages."""
    import copy

    clone = copy.copy(recognizer)
    clone.stages = stages
    return clone


def test_prepare_segment_is_the_front_end_of_prepare_audio(recognizer, clips):
    cfg = recognizer.recognizer.spec.features
    wave = clips[0].waveform()
    (only,) = prepare_audio(wave, cfg, 1200.0).segments
    again = prepare_segment(wave, 0, wave.size, cfg, LogMel(cfg))
    np.testing.assert_array_equal(only.mel, again.mel)
    assert (only.start, only.stop) == (again.start, again.stop) == (0, wave.size)
    for x, y in zip(only.windows.features, again.windows.features, strict=True):
        np.testing.assert_array_equal(x, y)
