"""qwen3_asr_deltas through a real server: the transcript as it is generated, then qwen3_asr's answer."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from qwen3_asr_triton.audio import load_audio
from qwen3_asr_triton.client import (
    AsyncQwen3ASRClient,
    ClientOptions,
    InvalidRequestError,
    Qwen3ASRClient,
    TextDelta,
    TranscribeOptions,
    Transcription,
)
from qwen3_asr_triton.output import fix_repetitions
from tests.test_faults import _decoder, _wait_until_quiet

pytestmark = pytest.mark.server

MAX_NEW_TOKENS = 24  # random weights ramble: a cap keeps every request short


async def _collect(url: str, audio, options: TranscribeOptions) -> tuple[list[tuple[float, TextDelta]], Transcription]:
    async with AsyncQwen3ASRClient(ClientOptions(url=url, timeout=120)) as client:
        events = []
        started = time.monotonic()
        async for event in client.transcribe_stream(audio, options):
            events.append((time.monotonic() - started, event))
    *deltas, (_, final) = events
    assert all(isinstance(d, TextDelta) for _, d in deltas) and isinstance(final, Transcription)
    return deltas, final


def _assert_deltas_join_to(sent: str, final: str, what: str) -> None:
    """The deltas join to the final text, except where the repetition fix rewrote what was already sent
    (output.TranscriptDeltas): a random model's run of one character can grow past the fix's threshold
    while it streams; then the final text is the fixed form of what was sent."""
    if sent != final:
        assert fix_repetitions(sent) != sent, (what, "the deltas differ from the final text without a rewrite")
        assert fix_repetitions(sent) == final, what


@pytest.mark.parametrize(
    "options",
    [
        TranscribeOptions(max_new_tokens=MAX_NEW_TOKENS),
        TranscribeOptions(language="en", max_new_tokens=MAX_NEW_TOKENS, min_new_tokens=MAX_NEW_TOKENS),
        TranscribeOptions(language="en", context="Qwen Triton", timestamps=True, max_new_tokens=MAX_NEW_TOKENS),
    ],
    ids=["auto", "forced", "context-timestamps"],
)
def test_the_final_answer_equals_qwen3_asr_and_the_deltas_join_to_it(triton_server, clips, options):
    with Qwen3ASRClient(ClientOptions(url=triton_server.grpc_url, timeout=120)) as client:
        for clip in clips[:4]:
            data = clip.path.read_bytes()
            unary = client.transcribe(data, options)
            deltas, final = asyncio.run(_collect(triton_server.grpc_url, data, options))
            assert final.text == unary.text and final.token_ids == unary.token_ids, clip.spec.name
            assert final.words == unary.words
            # Log-probabilities carry float32 noise from which other sequences shared the decoder's batch.
            assert [(s.text, s.start, s.end, s.token_ids) for s in final.segments] == [
                (s.text, s.start, s.end, s.token_ids) for s in unary.segments
            ]
            assert [s.avg_logprob for s in final.segments] == pytest.approx(
                [s.avg_logprob for s in unary.segments], rel=1e-5
            )
            assert final.language == unary.language
            _assert_deltas_join_to("".join(d.text for _, d in deltas), final.text, clip.spec.name)


def test_deltas_arrive_while_the_decoder_runs(triton_server, clips):
    """Not the finished result cut into pieces: the first text comes long before the last token."""
    tokens = 400
    options = TranscribeOptions(language="en", max_new_tokens=tokens, min_new_tokens=tokens)
    deltas, final = asyncio.run(_collect(triton_server.grpc_url, clips[0].path.read_bytes(), options))
    assert len(final.token_ids) >= tokens - 1
    assert len(deltas) >= 20, f"{len(deltas)} deltas for {tokens} tokens"
    first, last = deltas[0][0], deltas[-1][0]
    print(f"first delta at {first:.2f} s, last at {last:.2f} s, {len(deltas)} deltas")
    assert first < 0.5 * last


def test_segments_carry_their_tokens_and_mean_logprob(triton_server, clips):
    with Qwen3ASRClient(ClientOptions(url=triton_server.grpc_url, timeout=120)) as client:
        long_clip = next(c for c in clips if c.spec.name == "en_long")
        result = client.transcribe(long_clip.path, TranscribeOptions(timestamps=True, max_new_tokens=MAX_NEW_TOKENS))
    assert result.segments
    assert tuple(t for s in result.segments for t in s.token_ids) == result.token_ids
    for segment in result.segments:
        assert segment.avg_logprob is not None and segment.avg_logprob <= 0.0


def test_audio_in_several_segments_streams_in_order(triton_server, clips):
    # 190 s of speech: with timestamps, segments are cut at the aligner's 180 s limit.
    speech = load_audio(next(c for c in clips if c.spec.name == "en_long").path.read_bytes())
    wave = np.tile(speech, int(np.ceil(190 * 16000 / speech.size)))[: 190 * 16000]
    options = TranscribeOptions(language="en", timestamps=True, max_new_tokens=MAX_NEW_TOKENS)
    with Qwen3ASRClient(ClientOptions(url=triton_server.grpc_url, timeout=300)) as client:
        unary = client.transcribe(wave, options, sample_rate=16000)

    async def run():
        async with AsyncQwen3ASRClient(ClientOptions(url=triton_server.grpc_url, timeout=300)) as client:
            return [e async for e in client.transcribe_stream(wave, options, sample_rate=16000)]

    *deltas, final = asyncio.run(run())
    assert len(final.segments) == 2
    assert final.text == unary.text and final.token_ids == unary.token_ids
    _assert_deltas_join_to("".join(d.text for d in deltas), final.text, "190 s")


def test_leaving_the_stream_stops_the_decoder(triton_server, clips):
    before = _decoder(triton_server)

    async def first_delta_then_leave():
        async with AsyncQwen3ASRClient(ClientOptions(url=triton_server.grpc_url, timeout=120)) as client:
            options = TranscribeOptions(language="en", max_new_tokens=4000, min_new_tokens=4000)
            async for event in client.transcribe_stream(clips[0].path, options):
                assert isinstance(event, TextDelta)
                break

    asyncio.run(first_delta_then_leave())
    assert _wait_until_quiet(triton_server) < 5
    after = _decoder(triton_server)
    assert after["cancelled"] - before["cancelled"] == 1
    assert after["completed"] == before["completed"], "the abandoned generation did not run to its end"


def test_bad_audio_is_an_invalid_request_on_the_stream(triton_server):
    async def run():
        async with AsyncQwen3ASRClient(ClientOptions(url=triton_server.grpc_url, timeout=60)) as client:
            return [e async for e in client.transcribe_stream(b"RIFF\x00\x00not audio at all")]

    with pytest.raises(InvalidRequestError):
        asyncio.run(run())


def test_many_concurrent_streams_all_receive_text_while_they_decode(triton_server, clips):
    """Ten streams at once, more than the test repository's 6 entry instances: none waits for another."""
    streams, tokens = 10, 150
    options = TranscribeOptions(language="en", max_new_tokens=tokens, min_new_tokens=tokens)
    data = clips[0].path.read_bytes()

    async def run():
        async with AsyncQwen3ASRClient(ClientOptions(url=triton_server.grpc_url, timeout=300)) as client:
            started = time.monotonic()

            async def one():
                first = None
                async for event in client.transcribe_stream(data, options):
                    if first is None and isinstance(event, TextDelta):
                        first = time.monotonic() - started
                return first, time.monotonic() - started, event

            return await asyncio.gather(*(one() for _ in range(streams)))

    results = asyncio.run(run())
    firsts = [first for first, _, _ in results]
    ends = [end for _, end, _ in results]
    assert all(f is not None for f in firsts)
    assert len({final.token_ids for _, _, final in results}) == 1, "the same audio gives the same tokens"
    print(f"first deltas {min(firsts):.2f}-{max(firsts):.2f} s, finals {min(ends):.2f}-{max(ends):.2f} s")
    assert max(firsts) < min(ends), "a stream got no text until another one had finished"
