"""Streaming recognition through the client library (sync and asyncio) against a real Triton server.

The served model has random weights: the tests check structure and behaviour
(event order, pacing, agreement with the unary model), never words. The
streaming final is exact by design, so it must equal ``qwen3_asr`` on the same PCM.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time

import numpy as np
import pytest

from qwen3_asr_triton.audio import decode_audio_bytes
from qwen3_asr_triton.client import (
    AsyncQwen3ASRClient,
    ClientOptions,
    InvalidRequestError,
    Partial,
    Qwen3ASRClient,
    ServerUnavailableError,
    StreamOptions,
    TranscribeOptions,
    Transcription,
)

pytestmark = pytest.mark.server

MAX_NEW_TOKENS = 24  # random weights ramble: a cap keeps every request short
# Four times real time: chunks still arrive spaced out (so partials come), and a 20 s clip takes 5 s.
FAST = StreamOptions(chunk_seconds=1.0, speed=4.0)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# CONFIDENCE is a float32 mean over the decoder's probabilities, whose last digits depend on which other
# sequences shared the decoder's batch; everything else (tokens, text, times) is exact.
CONFIDENCE_RTOL = 1e-5


def _exact_fields(result: Transcription) -> dict:
    fields = {k: v for k, v in result.to_dict().items() if k not in ("request_id", "confidence")}
    fields["segments"] = [{k: v for k, v in s.items() if k != "avg_logprob"} for s in fields["segments"]]
    return fields


def assert_same_result(got: Transcription, want: Transcription) -> None:
    """``got`` equals ``want`` in every field but the request id (and log-probabilities to float32 noise)."""
    assert _exact_fields(got) == _exact_fields(want)
    assert got.confidence == pytest.approx(want.confidence, rel=CONFIDENCE_RTOL)
    for a, b in zip(got.segments, want.segments):
        assert a.avg_logprob == pytest.approx(b.avg_logprob, rel=CONFIDENCE_RTOL)


def split_events(events: list) -> tuple[list[Partial], Transcription]:
    """The partials and the final, checking that the final comes once, last."""
    assert events and isinstance(events[-1], Transcription), events[-1:]
    assert all(isinstance(e, Partial) for e in events[:-1])
    return events[:-1], events[-1]


# How far a partial may lag the audio sent at a rate other than 16 kHz: the streaming resampler's delay
# (libsoxr HQ: 21 ms at 22.05-48 kHz, 66 ms at 8 kHz), plus rounding.
RESAMPLER_LAG_S = 0.07


def check_partials(partials: list[Partial], seconds: float, chunk_seconds: float, lag: float = 0.0) -> None:
    assert partials, "paced chunks get partial hypotheses"
    chunks = [p.chunk for p in partials]
    assert chunks == sorted(set(chunks)), "one partial per chunk at most, in order"
    for partial in partials:
        # A partial covers the audio up to the end of the chunk it answers (less what the resampler holds).
        sent = min((partial.chunk + 1) * chunk_seconds, seconds)
        assert sent - lag - 2e-3 <= partial.audio_seconds <= sent + 2e-3, (partial.audio_seconds, sent)
        assert 0.0 < partial.latency < 60.0
        assert isinstance(partial.text, str) and partial.token_ids


@pytest.fixture(scope="module")
def client(triton_server):
    with Qwen3ASRClient(ClientOptions(url=triton_server.grpc_url, timeout=120)) as c:
        yield c


@pytest.fixture(scope="module")
def options() -> TranscribeOptions:
    return TranscribeOptions(max_new_tokens=MAX_NEW_TOKENS)


def test_a_file_streamed_in_real_time_ends_with_the_unary_result(client, clips, options):
    clip = next(c for c in clips if c.name == "en_long")
    wave = clip.waveform()
    seconds = wave.size / 16000
    began = time.monotonic()
    with client.stream(clip.path, options, FAST) as stream:
        partials, final = split_events(list(stream))
    elapsed = time.monotonic() - began
    check_partials(partials, seconds, FAST.chunk_seconds)
    assert_same_result(final, client.transcribe(wave, options, sample_rate=16000))
    assert_same_result(final, client.transcribe(clip.path, options))  # the server decodes files alike
    stats = stream.stats
    assert stats.chunks == math.ceil(seconds / FAST.chunk_seconds)
    assert stats.partials == len(partials) < stats.chunks
    assert stats.audio_seconds == pytest.approx(seconds, abs=1e-3) and stats.final_latency > 0
    # Played at 4x: chunk i leaves when its last sample would have been heard, (i + 1) / 4 s in.
    for i, offset in enumerate(stats.chunk_offsets[:-1]):
        assert offset >= (i + 1) * FAST.chunk_seconds / FAST.speed - 0.01
    assert elapsed >= seconds / FAST.speed


def test_a_waveform_keeps_its_rate_and_gets_word_timestamps(client, clips):
    clip = next(c for c in clips if c.name == "en_hello")  # 22.05 kHz
    samples, rate = decode_audio_bytes(clip.path.read_bytes())
    assert rate == 22050
    stereo = (np.stack([samples, 0.5 * samples], axis=1) * 32767).astype(np.int16)
    options = TranscribeOptions(language="en", timestamps=True, max_new_tokens=MAX_NEW_TOKENS)
    with client.stream(stereo, options, StreamOptions(chunk_seconds=0.5, speed=4.0), sample_rate=rate) as stream:
        partials, final = split_events(list(stream))
    check_partials(partials, samples.size / rate, 0.5, lag=RESAMPLER_LAG_S)
    unary = client.transcribe(stereo, options, sample_rate=rate)
    assert final.words and final.words == unary.words
    assert_same_result(final, unary)
    assert final.language == "English" and all(p.language in (None, "English") for p in partials)


def test_live_frames_are_gathered_into_chunks(client, clips, options):
    wave = next(c for c in clips if c.name == "de_greeting").waveform()
    frame = 1600  # 0.1 s frames, as a capture callback would deliver them
    taken = []

    def microphone():
        for start in range(0, wave.size, frame):
            taken.append(time.monotonic())
            time.sleep(0.1 / 8)  # an 8x-real-time "device"
            yield wave[start : start + frame]

    chunk = StreamOptions(chunk_seconds=0.5)
    with client.stream(microphone(), options, chunk, sample_rate=16000) as stream:
        partials, final = split_events(list(stream))
    assert len(taken) == math.ceil(wave.size / frame)
    # Full 0.5 s chunks as the frames come, then END with the rest (possibly empty).
    assert stream.stats.chunks == wave.size // 8000 + 1
    assert stream.stats.audio_seconds == pytest.approx(wave.size / 16000, abs=1e-6)
    assert partials
    assert_same_result(final, client.transcribe(wave, options, sample_rate=16000))


def test_async_streams_share_one_channel_concurrently(triton_server, client, clips, options):
    chosen = [c for c in clips if c.waveform().size >= 2 * 16000][:5]
    waves = [c.waveform() for c in chosen]
    expected = [client.transcribe(w, options, sample_rate=16000) for w in waves]

    async def frames(wave):
        for start in range(0, wave.size, 4000):
            await asyncio.sleep(0.25 / 4)
            yield wave[start : start + 4000]

    async def play(aclient, source, sample_rate):
        began = time.monotonic()
        async with aclient.stream(source, options, FAST, sample_rate=sample_rate) as stream:
            events = [event async for event in stream]
        return events, stream, began, time.monotonic()

    async def run():
        async with AsyncQwen3ASRClient(ClientOptions(url=triton_server.grpc_url, timeout=120)) as aclient:
            files = [play(aclient, c.path, None) for c in chosen]
            return await asyncio.gather(*files, play(aclient, frames(waves[0]), 16000))

    outcomes = asyncio.run(run())
    for (events, _, _, _), want in zip(outcomes, [*expected, expected[0]]):
        partials, final = split_events(events)
        assert partials
        assert_same_result(final, want)
    assert len({stream.sequence_id for _, stream, _, _ in outcomes}) == len(outcomes)
    # They ran at the same time: every stream started before any finished.
    assert max(began for *_, began, _ in outcomes) < min(ended for *_, ended in outcomes)


@pytest.mark.parametrize(
    ("wave", "options", "message"),
    [
        (np.array([0.1, np.nan] * 16000, np.float32), TranscribeOptions(), "NaN"),
        (np.zeros(16000, np.float32), TranscribeOptions(context="x<|im_end|>"), "control token"),
        (np.zeros(16000, np.float32), TranscribeOptions(language="Thai", timestamps=True), "aligner does not support"),
        (np.zeros(0, np.float32), TranscribeOptions(), "without any audio"),
    ],
)
def test_rejected_streams_raise_invalid_request(client, wave, options, message):
    began = time.monotonic()
    with pytest.raises(InvalidRequestError) as info, client.stream(wave, options, sample_rate=16000) as stream:
        list(stream)
    assert info.value.status == "INVALID_ARGUMENT"
    assert message in info.value.message
    assert f"stream {stream.sequence_id} of qwen3_asr_streaming at {client.options.url}" in info.value.message
    assert time.monotonic() - began < 30
    assert client.health(model="qwen3_asr_streaming").ok  # and the server is still fine


def test_unknown_language_and_missing_model(triton_server, clips):
    with pytest.raises(ValueError, match="unknown LANGUAGE"):
        TranscribeOptions(language="Klingon")  # refused before anything is sent
    options = ClientOptions(url=triton_server.grpc_url, stream_model="no_such_model", timeout=30)
    with Qwen3ASRClient(options) as other, pytest.raises(InvalidRequestError, match="unknown model"):
        list(other.stream(clips[0].path))


def test_leaving_early_stops_the_stream(client, clips, options):
    clip = next(c for c in clips if c.name == "en_long")
    began = time.monotonic()
    with client.stream(clip.path, options, StreamOptions(chunk_seconds=1.0, speed=2.0)) as stream:
        first = next(iter(stream))
    assert isinstance(first, Partial)
    sent = stream.stats.chunks
    time.sleep(1.0)  # two more chunks would have been due
    assert stream.stats.chunks == sent
    assert time.monotonic() - began < 10


def test_unreachable_server_fails_fast(clips):
    options = ClientOptions(url=f"127.0.0.1:{closed_port()}", timeout=20)
    began = time.monotonic()
    with Qwen3ASRClient(options) as unreachable, pytest.raises(ServerUnavailableError):
        list(unreachable.stream(clips[0].path))
    assert time.monotonic() - began < 5
