"""Streaming state and policy on the in-process stages (no server)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from qwen3_asr_triton.errors import CapacityError, InputError
from qwen3_asr_triton.streaming import StreamingPolicy, StreamRecognizer, StreamRegistry


def _stream(streamer, registry, wave, rate, chunk_seconds, options, key="s"):
    state = registry.open(key, options, rate)
    step = int(chunk_seconds * rate)
    partials = []
    for start in range(0, wave.size, step):
        streamer.add_chunk(state, wave[start : start + step], rate)
        partials.append(asyncio.run(streamer.partial(state)))
    return state, partials


def test_final_equals_offline_and_windows_are_reused(recognizer, clips):
    wave = next(c for c in clips if c.name == "en_long").waveform()
    streamer = StreamRecognizer(recognizer.recognizer)
    registry = StreamRegistry(streamer.policy)
    options = recognizer.recognizer.options(None, "", False, 30)
    state, partials = _stream(streamer, registry, wave, 16000, 2.0, options)
    final = asyncio.run(streamer.final(state))
    offline = recognizer.transcribe(wave, None, "", False, 30)
    assert final.token_ids == offline.token_ids and final.text == offline.text
    assert len(partials) == int(np.ceil(wave.size / 32000))
    assert partials[-1].audio_seconds == pytest.approx(wave.size / 16000)
    # 23 s = 3 windows: the first (and later the second) window stops changing once complete,
    # unless the utterance maximum moves; at least one encoding must have been saved.
    assert state.reused_windows >= 1
    assert state.encoded_windows + state.reused_windows == sum(int(np.ceil(p.audio_seconds / 8)) for p in partials)


def test_a_resampled_stream_final_equals_offline(recognizer, resampled_clips):
    """A 22.05 kHz stream in uneven chunks: one resampler over the stream, so the final equals one request."""
    import soundfile

    from qwen3_asr_triton.audio import prepare_waveform

    clip = next(c for c in resampled_clips if c.spec.rate == 22050 and c.spec.fmt == "flac")
    pcm, rate = soundfile.read(str(clip.path), dtype="float32")
    streamer = StreamRecognizer(recognizer.recognizer)
    options = recognizer.recognizer.options(None, "", False, 20)
    state, partials = _stream(streamer, StreamRegistry(streamer.policy), pcm, rate, 0.73, options)
    final = asyncio.run(streamer.final(state))
    offline = recognizer.transcribe(prepare_waveform(pcm, rate), None, "", False, 20)
    assert final.token_ids == offline.token_ids
    assert state.resampler.samples_out == prepare_waveform(pcm, rate).size
    # A partial sees what the resampler has finished: a few milliseconds behind the audio received.
    assert 0 < pcm.size / rate - partials[-1].audio_seconds < 0.05


def test_reuse_does_not_change_partials(recognizer, clips):
    wave = next(c for c in clips if c.name == "en_long").waveform()
    options = recognizer.recognizer.options("English", "", False, 20)
    results = []
    for reuse in (True, False):
        streamer = StreamRecognizer(recognizer.recognizer, StreamingPolicy(reuse_windows=reuse))
        _, partials = _stream(streamer, StreamRegistry(streamer.policy), wave, 16000, 3.0, options)
        results.append([p.token_ids for p in partials])
    assert results[0] == results[1]


def test_prefix_follows_the_rollback_rule(recognizer):
    streamer = StreamRecognizer(recognizer.recognizer, StreamingPolicy(rollback_tokens=5, prefix_after_chunks=2))
    registry = StreamRegistry(streamer.policy)
    state = registry.open("p", recognizer.recognizer.options(None, "", False, 10), 16000)
    state.previous_tokens = list(range(100, 112))
    state.chunks = 2
    assert streamer.prefix(state) == []
    state.chunks = 3
    assert streamer.prefix(state) == list(range(100, 107))
    state.previous_tokens = [1, 2, 3]
    assert streamer.prefix(state) == []


def test_registry_bounds_and_expiry(recognizer):
    policy = StreamingPolicy(max_streams=2, stream_idle_seconds=5, max_stream_seconds=2)
    registry = StreamRegistry(policy)
    options = recognizer.recognizer.options(None, "", False, 10)
    a = registry.open("a", options, 16000)
    registry.open("b", options, 16000)
    with pytest.raises(CapacityError):
        registry.open("c", options, 16000)
    with pytest.raises(InputError, match="started twice"):
        registry.open("a", options, 16000)
    streamer = StreamRecognizer(recognizer.recognizer, policy)
    with pytest.raises(InputError, match="exceeds 2 s"):
        streamer.add_chunk(a, np.zeros(16000 * 3, np.float32), 16000)
    with pytest.raises(InputError, match="SAMPLE_RATE changed"):
        streamer.add_chunk(a, np.zeros(100, np.float32), 8000)
    a.last_activity -= 10
    assert registry.expire() == ["a"]
    with pytest.raises(InputError, match="unknown"):
        registry.get("a")
    assert len(registry) == 1
