"""qwen3_asr_streaming through a real Triton server (gRPC bidirectional streaming)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.harness import speech_with_pauses
from tests.stream_requests import stream_pcm
from tests.triton_requests import transcribe

pytestmark = pytest.mark.server

MAX_NEW = np.array([[24]], np.int32)


def _active_streams(server) -> float:
    return sum(v for k, v in server.metrics().items() if k.startswith("qwen3_asr_streaming_active_streams"))


def _counter(server, name: str) -> float:
    return sum(v for k, v in server.metrics().items() if k.startswith(f"qwen3_asr_streaming_{name}_total"))


def test_final_equals_offline_and_partials_arrive(triton_server, clips):
    wave = next(c for c in clips if c.name == "en_long").waveform()
    result = stream_pcm(
        triton_server.grpc_url,
        wave,
        sequence_id=1001,
        chunk_seconds=2.0,
        pace=0.4,
        start_inputs={"MAX_NEW_TOKENS": (MAX_NEW, "INT32")},
    )
    assert not result.errors, result.errors
    offline = transcribe(triton_server.grpc_url, waveform=wave, rate=16000, max_new_tokens=24)
    assert result.final is not None
    assert result.final["TOKEN_IDS"].tolist() == offline["TOKEN_IDS"].tolist()
    assert result.final["TEXT"][0] == offline["TEXT"][0]
    assert abs(float(result.final["AUDIO_SECONDS"][0]) - wave.size / 16000) < 1e-3
    assert len(result.partials) >= 3, "paced chunks get partial hypotheses"
    seconds = [float(p["AUDIO_SECONDS"][0]) for p in result.partials]
    assert seconds == sorted(seconds)
    assert _counter(triton_server, "windows_reused") >= 1


def test_a_44k_stream_final_equals_the_unary_result(triton_server, resampled_clips):
    """Chunks at 44.1 kHz are resampled as they arrive; the final still equals one unary request."""
    import soundfile

    clip = next(c for c in resampled_clips if c.spec.rate == 44100 and c.spec.fmt == "wav")
    pcm, rate = soundfile.read(str(clip.path), dtype="float32")
    mono = pcm.mean(axis=1, dtype=np.float32)
    result = stream_pcm(
        triton_server.grpc_url,
        mono,
        sequence_id=1002,
        chunk_seconds=0.37,
        rate=rate,
        start_inputs={"MAX_NEW_TOKENS": (MAX_NEW, "INT32")},
    )
    assert not result.errors, result.errors
    unary = transcribe(triton_server.grpc_url, waveform=mono, rate=rate, max_new_tokens=int(MAX_NEW[0, 0]))
    by_bytes = transcribe(triton_server.grpc_url, audio=clip.path.read_bytes(), max_new_tokens=int(MAX_NEW[0, 0]))
    assert result.final is not None
    assert result.final["TOKEN_IDS"].tolist() == unary["TOKEN_IDS"].tolist() == by_bytes["TOKEN_IDS"].tolist()


def test_eight_concurrent_streams_finish_correctly(triton_server, clips):
    chosen = clips[:8]
    waves = [c.waveform() for c in chosen]
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(
                lambda i: stream_pcm(
                    triton_server.grpc_url,
                    waves[i],
                    sequence_id=2000 + i,
                    chunk_seconds=1.0,
                    pace=0.2,
                    start_inputs={"MAX_NEW_TOKENS": (MAX_NEW, "INT32")},
                ),
                range(8),
            )
        )
    for clip, wave, result in zip(chosen, waves, results):
        assert not result.errors, (clip.name, result.errors)
        offline = transcribe(triton_server.grpc_url, waveform=wave, rate=16000, max_new_tokens=24)
        assert result.final["TOKEN_IDS"].tolist() == offline["TOKEN_IDS"].tolist(), clip.name
    assert _active_streams(triton_server) == 0


def test_a_dropped_stream_frees_its_state(triton_server, clips):
    wave = clips[-1].waveform()
    expired_before = _counter(triton_server, "expired")
    result = stream_pcm(triton_server.grpc_url, wave, sequence_id=3001, chunk_seconds=1.0, pace=0.3, drop_after=3)
    assert not result.errors and result.final is None
    assert _active_streams(triton_server) >= 1
    deadline = time.monotonic() + 30  # the test repository's idle timeout is 3 s
    while _active_streams(triton_server) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _active_streams(triton_server) == 0
    assert _counter(triton_server, "expired") == expired_before + 1


def test_stream_errors_are_clear(triton_server):
    import tritonclient.grpc as grpcclient

    bad = np.array([0.1, np.nan] * 800, np.float32)
    result = stream_pcm(triton_server.grpc_url, bad, sequence_id=4001, chunk_seconds=0.1)
    assert any("NaN" in e for e in result.errors), result.errors
    unknown = stream_pcm(
        triton_server.grpc_url,
        np.zeros(1600, np.float32),
        sequence_id=4002,
        start_inputs={"LANGUAGE": (np.array([[b"Klingon"]], dtype=object), "BYTES")},
    )
    assert any("unknown LANGUAGE" in e for e in unknown.errors), unknown.errors
    # A chunk for a stream that was never started: Triton's sequence batcher refuses it itself.
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    errors = []
    client.start_stream(callback=lambda result, error: errors.append(str(error)) if error else None)
    tensor = grpcclient.InferInput("WAVEFORM", [1, 160], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 160), np.float32))
    client.async_stream_infer("qwen3_asr_streaming", [tensor], sequence_id=4003, sequence_start=False)
    deadline = time.monotonic() + 20
    while not errors and time.monotonic() < deadline:
        time.sleep(0.1)
    client.stop_stream()
    assert errors and "must specify the START flag" in errors[0]


# ----------------------------------------------------------------------------- endpointing
ENDPOINTING = {"ENDPOINTING": (np.array([[True]]), "BOOL"), "MAX_NEW_TOKENS": (MAX_NEW, "INT32")}


def test_an_endpointed_stream_sends_one_final_per_utterance(triton_server, clips):
    wave = speech_with_pauses(clips)
    result = stream_pcm(
        triton_server.grpc_url, wave, sequence_id=1301, chunk_seconds=0.5, pace=0.25, start_inputs=ENDPOINTING
    )
    assert not result.errors, result.errors
    assert [int(u["UTTERANCE_INDEX"][0]) for u in result.utterances] == [0, 1, 2]
    assert result.final is not None and result.final is not result.utterances[-1]  # it ends in silence
    for utterance in result.utterances:
        start, end = float(utterance["UTTERANCE_START"][0]), float(utterance["UTTERANCE_END"][0])
        assert 0 <= start < end <= wave.size / 16000 + 1e-3
        unary = transcribe(
            triton_server.grpc_url,
            waveform=wave[round(start * 16000) : round(end * 16000)],
            rate=16000,
            max_new_tokens=24,
        )
        assert utterance["TOKEN_IDS"].tolist() == unary["TOKEN_IDS"].tolist()
        assert utterance["TEXT"][0] == unary["TEXT"][0]
        # Partials skip log-probabilities; a final has them, as the unary result does.
        assert float(utterance["CONFIDENCE"][0]) == pytest.approx(float(unary["CONFIDENCE"][0]), abs=1e-5)
        assert 0.0 < float(utterance["CONFIDENCE"][0]) <= 1.0
    starts = {int(u["UTTERANCE_INDEX"][0]): float(u["UTTERANCE_START"][0]) for u in result.utterances}
    assert result.partials, "the utterances got partials while they were spoken"
    for partial in result.partials:
        assert not bool(partial["UTTERANCE_FINAL"][0])
        assert float(partial["UTTERANCE_START"][0]) == starts[int(partial["UTTERANCE_INDEX"][0])]
    assert _counter(triton_server, "utterances") >= 3
    time.sleep(0.3)
    assert _active_streams(triton_server) == 0


def test_an_endpointed_stream_ending_in_silence_closes_with_an_empty_final(triton_server, clips):
    wave = speech_with_pauses(clips, names=("en_hello",), pause=2.0)
    result = stream_pcm(triton_server.grpc_url, wave, sequence_id=1302, chunk_seconds=1.0, start_inputs=ENDPOINTING)
    assert not result.errors, result.errors
    assert len(result.utterances) == 1 and result.final is not None
    assert result.final is not result.utterances[0]
    assert result.final["TEXT"][0] == "" and not bool(result.final["UTTERANCE_FINAL"][0])
    assert int(result.final["UTTERANCE_INDEX"][0]) == 1


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            {"ENDPOINTING": (np.array([[True]]), "BOOL"), "VAD_THRESHOLD": (np.array([[1.5]], np.float32), "FP32")},
            "vad_threshold",
        ),
        ({"VAD_MIN_SILENCE_MS": (np.array([[300]], np.int32), "INT32")}, "need ENDPOINTING"),
        (
            {"ENDPOINTING": (np.array([[True]]), "BOOL"), "VAD_SPEECH_PAD_MS": (np.array([[-5]], np.int32), "INT32")},
            "vad_speech_pad_ms",
        ),
    ],
)
def test_bad_endpointing_knobs_are_refused_at_start(triton_server, inputs, message):
    result = stream_pcm(triton_server.grpc_url, np.zeros(8000, np.float32), sequence_id=1310, start_inputs=inputs)
    assert result.errors and message in result.errors[0], result.errors
    time.sleep(0.3)
    assert _active_streams(triton_server) == 0


def test_a_bad_chunk_in_an_endpointed_stream_is_refused_and_the_stream_goes_on(triton_server, clips):
    wave = speech_with_pauses(clips, names=("en_hello", "es_numbers"), pause=1.0)
    wave[16000 * 3 : 16000 * 3 + 100] = np.nan  # inside the fourth 1 s chunk
    result = stream_pcm(
        triton_server.grpc_url, wave, sequence_id=1320, chunk_seconds=1.0, start_inputs=ENDPOINTING, stop_on_error=False
    )
    assert len(result.errors) == 1 and "NaN" in result.errors[0], result.errors
    assert result.final is not None and len(result.utterances) == 2
    time.sleep(0.3)
    assert _active_streams(triton_server) == 0
