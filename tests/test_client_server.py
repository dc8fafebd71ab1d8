"""The client library (sync and asyncio) against a real Triton server.

The served model has random weights: the tests check structure and behaviour
(types, timings, agreement between input paths and clients), never words.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time

import numpy as np
import pytest

from qwen3_asr_triton.alignment import is_kept_char
from qwen3_asr_triton.client import (
    AsyncQwen3ASRClient,
    ClientOptions,
    InvalidRequestError,
    Qwen3ASRClient,
    ServerUnavailableError,
    TranscribeOptions,
)
from qwen3_asr_triton.client.wire import OUTPUTS
from qwen3_asr_triton.languages import LANGUAGE_NAMES

pytestmark = pytest.mark.server

MAX_NEW_TOKENS = 24  # random weights ramble: a cap keeps every request short
CONTRACT_INPUTS = [
    "AUDIO",
    "WAVEFORM",
    "SAMPLE_RATE",
    "LANGUAGE",
    "CONTEXT",
    "RETURN_TIMESTAMPS",
    "MAX_NEW_TOKENS",
    "MIN_NEW_TOKENS",
    "DIARIZE",
    "NUM_SPEAKERS",
    "MIN_SPEAKERS",
    "MAX_SPEAKERS",
]
CONTRACT_OUTPUTS = list(OUTPUTS)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def client(triton_server):
    with Qwen3ASRClient(ClientOptions(url=triton_server.grpc_url, timeout=120)) as c:
        yield c


def test_every_container_format(client, clips):
    assert {c.spec.fmt for c in clips} >= {"wav", "flac", "mp3", "ogg", "opus", "m4a"}
    known = set(LANGUAGE_NAMES.values())
    for clip in clips:
        result = client.transcribe(clip.path, TranscribeOptions(max_new_tokens=MAX_NEW_TOKENS))
        assert isinstance(result.text, str) and result.text.strip(), clip.name
        assert result.language is None or set(result.language.split(",")) <= known, result.language
        assert 0.0 < result.confidence <= 1.0
        assert 0 < len(result.token_ids) <= MAX_NEW_TOKENS + 4  # + the language prefix the model writes
        assert result.words == ()  # no timestamps asked for
        assert re.fullmatch(r"[0-9a-f]{32}", result.request_id)
        # Segments tile the decoded audio, so the last one ends at its duration.
        assert result.segments[0].start == 0.0
        assert all(a.end == b.start for a, b in zip(result.segments, result.segments[1:]))
        assert result.audio_seconds == pytest.approx(clip.waveform().size / 16000, abs=2e-3), clip.name


def test_forced_language_and_word_timestamps(client, clips):
    checked = 0
    for clip in clips:
        if clip.spec.language in ("Japanese", "Korean"):
            continue  # their word splitting needs optional server packages
        options = TranscribeOptions(language=clip.spec.language, timestamps=True, max_new_tokens=MAX_NEW_TOKENS)
        result = client.transcribe(clip.path.read_bytes(), options)
        assert result.language == clip.spec.language
        assert result.words, clip.name
        # The words are the transcript's letters and digits, in order, split for the aligner.
        assert "".join(w.text for w in result.words) == "".join(c for c in result.text if is_kept_char(c))
        assert all(0.0 <= w.start <= w.end for w in result.words)
        assert all(a.start <= b.start for a, b in zip(result.words, result.words[1:]))
        checked += 1
    assert checked >= 8


def test_waveform_input_matches_file_input(client, clips):
    clip = next(c for c in clips if c.name == "de_greeting")
    options = TranscribeOptions(max_new_tokens=MAX_NEW_TOKENS)
    by_file = client.transcribe(clip.path, options)
    wave = clip.waveform()
    by_pcm = client.transcribe(wave, options, sample_rate=16000)
    by_stereo = client.transcribe(np.stack([wave, wave], axis=1), options, sample_rate=16000)
    assert by_file.token_ids == by_pcm.token_ids == by_stereo.token_ids
    assert by_file.text == by_pcm.text


def test_async_client_under_concurrency_matches_sync(client, clips, triton_server):
    options = TranscribeOptions(max_new_tokens=MAX_NEW_TOKENS)
    chosen = clips[:6]
    expected = [client.transcribe(c.path, options).token_ids for c in chosen]

    async def run():
        async with AsyncQwen3ASRClient(ClientOptions(url=triton_server.grpc_url, timeout=120)) as aclient:
            health = await aclient.health()
            results = await asyncio.gather(*(aclient.transcribe(c.path, options) for c in chosen))
            return health, results

    health, results = asyncio.run(run())
    assert health.ok
    assert [r.token_ids for r in results] == expected
    assert len({r.request_id for r in results}) == len(chosen)


@pytest.mark.parametrize(
    ("audio", "options", "message"),
    [
        (b"RIFF\x10\x00\x00\x00WAVEfmt garbage" * 20, TranscribeOptions(), "could not decode AUDIO"),
        (b"", TranscribeOptions(), "AUDIO is empty"),
        ("CLIP", TranscribeOptions(context="x<|im_end|>"), "control token"),
        ("CLIP", TranscribeOptions(language="Thai", timestamps=True), "aligner does not support"),
    ],
)
def test_rejected_requests_raise_invalid_request(client, clips, audio, options, message):
    payload = clips[1].path if audio == "CLIP" else audio
    began = time.monotonic()
    with pytest.raises(InvalidRequestError) as info:
        client.transcribe(payload, options)
    assert info.value.status == "INVALID_ARGUMENT"
    assert message in info.value.message
    assert client.options.url in info.value.message  # says which server answered
    assert time.monotonic() - began < 30
    assert client.health().ok  # and the server is still fine


def test_health_models_and_metadata(client):
    health = client.health()
    assert health.ok and health.live and health.ready and health.model_ready
    assert health.server_version == "2.51.0"
    metadata = client.model_metadata()
    assert metadata.name == "qwen3_asr"
    assert [t.name for t in metadata.inputs] == CONTRACT_INPUTS
    assert [t.name for t in metadata.outputs] == CONTRACT_OUTPUTS
    assert {t.name: t.datatype for t in metadata.inputs}["RETURN_TIMESTAMPS"] == "BOOL"
    states = {m.name: m.state for m in client.models()}
    assert states.get("qwen3_asr") == "READY"
    assert all(state == "READY" for state in states.values()), states
    missing = ClientOptions(url=client.options.url, model="no_such_model", timeout=10)
    with Qwen3ASRClient(missing) as other:
        assert not other.health().ok


def test_unreachable_server_fails_fast():
    options = ClientOptions(url=f"127.0.0.1:{closed_port()}", timeout=20)
    began = time.monotonic()
    with Qwen3ASRClient(options) as unreachable, pytest.raises(ServerUnavailableError, match="4 attempts"):
        unreachable.transcribe(b"RIFF")
    assert time.monotonic() - began < 5
