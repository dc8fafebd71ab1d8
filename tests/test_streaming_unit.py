"""Streaming state and policy on the in-process stages (no server)."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest

from qwen3_asr_triton.errors import CapacityError, InputError
from qwen3_asr_triton.streaming import StreamingPolicy, StreamRecognizer, StreamRegistry
from tests.harness import speech_with_pauses


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
    state.utterance_chunks = 2
    assert streamer.prefix(state) == []
    state.utterance_chunks = 3
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


# ----------------------------------------------------------------------------- endpointing
def _endpointed(recognizer, wave, chunk_seconds, options=None, endpointing=None):
    from qwen3_asr_triton.endpointing import EndpointingOptions
    from qwen3_asr_triton.export.files import silero_vad_graph
    from qwen3_asr_triton.vad import SileroVad

    streamer = StreamRecognizer(recognizer.recognizer, vad=SileroVad(silero_vad_graph()))
    options = options or recognizer.recognizer.options(None, "", False, 12)
    state = StreamRegistry(streamer.policy).open("e", options, 16000, endpointing or EndpointingOptions())
    finals, partials, held = [], [], []
    step = int(chunk_seconds * 16000)
    for start in range(0, wave.size, step):
        streamer.add_chunk(state, wave[start : start + step], 16000)
        finals += asyncio.run(streamer.advance(state))
        if state.speaking:
            partials.append(asyncio.run(streamer.partial(state)))
        held.append(state.audio.total - state.audio.first)
    finals += asyncio.run(streamer.advance(state, end=True))
    return finals, partials, held


def test_endpointing_cuts_utterances_recognised_like_unary_requests(recognizer, clips):
    wave = speech_with_pauses(clips)
    finals, partials, held = _endpointed(recognizer, wave, 0.5)
    assert [f.index for f in finals] == [0, 1, 2]
    for before, after in itertools.pairwise(finals):
        assert before.end_seconds <= after.start_seconds
    for final in finals:
        assert 0 <= final.start_seconds < final.end_seconds <= wave.size / 16000
        piece = wave[round(final.start_seconds * 16000) : round(final.end_seconds * 16000)]
        unary = recognizer.transcribe(piece, None, "", False, 12)
        assert final.transcript.token_ids == unary.token_ids and final.transcript.text == unary.text
    # Partials belong to the utterance being spoken and start where its final will.
    assert {p.utterance for p in partials} == {0, 1, 2}
    for p in partials:
        assert p.start_seconds == finals[p.utterance].start_seconds
    # The stream holds one utterance's audio (plus padding and a chunk), never the whole stream.
    longest = max(f.end_seconds - f.start_seconds for f in finals)
    assert max(held) / 16000 <= longest + 0.5 + 0.3 + 0.1
    assert max(held) < wave.size * 0.6


def test_endpointed_word_times_are_stream_times(recognizer, clips):
    wave = speech_with_pauses(clips, names=("en_hello", "en_hello"))
    finals, _, _ = _endpointed(recognizer, wave, 1.0, options=recognizer.recognizer.options("English", "", True, 12))
    assert len(finals) == 2
    for final in finals:
        piece = wave[round(final.start_seconds * 16000) : round(final.end_seconds * 16000)]
        unary = recognizer.transcribe(piece, "English", "", True, 12)
        assert [w.word for w in final.transcript.words] == [w.word for w in unary.words]
        assert [w.start for w in final.transcript.words] == pytest.approx(
            [w.start + final.start_seconds for w in unary.words], abs=1e-6
        )
        # (No bound against the utterance's end: the random aligner's classes put words anywhere.)
        assert final.transcript.words and final.transcript.words[0].start >= final.start_seconds


def test_endpointing_without_a_vad_is_refused(recognizer):
    from qwen3_asr_triton.endpointing import EndpointingOptions

    streamer = StreamRecognizer(recognizer.recognizer)
    state = StreamRegistry(streamer.policy).open(
        "n", recognizer.recognizer.options(None, "", False, 5), 16000, EndpointingOptions()
    )
    streamer.add_chunk(state, np.zeros(1600, np.float32), 16000)
    with pytest.raises(InputError, match="ENDPOINTING"):
        asyncio.run(streamer.advance(state))


def test_a_partial_is_capped_by_its_audio_and_the_final_is_not(recognizer, clips):
    """Random weights ramble to any budget: a partial's answer stays within ``partial_budget`` of its audio."""
    from qwen3_asr_triton.streaming import partial_budget

    wave = next(c for c in clips if c.name == "en_long").waveform()[: 16000 * 4]
    streamer = StreamRecognizer(recognizer.recognizer)
    options = recognizer.recognizer.options(None, "", False, 200)
    state, partials = _stream(streamer, StreamRegistry(streamer.policy), wave, 16000, 1.0, options)
    caps = [partial_budget(p.audio_seconds) for p in partials]
    assert all(len(p.token_ids) <= cap for p, cap in zip(partials, caps, strict=True))
    assert any(len(p.token_ids) == cap for p, cap in zip(partials, caps, strict=True))  # the cap did bind
    final = asyncio.run(streamer.final(state))
    assert final.token_ids == recognizer.transcribe(wave, None, "", False, 200).token_ids  # the request's budget
