"""Streaming in the client without a Triton server: options, chunking, requests, and the protocol
against an in-process gRPC server that scripts ``ModelStreamInfer`` (silence, stale partials, bad ids).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException, serialize_byte_tensor

from qwen3_asr_triton.audio import TARGET_SAMPLE_RATE
from qwen3_asr_triton.client import (
    AsyncQwen3ASRClient,
    ClientOptions,
    DeadlineExceededError,
    InvalidRequestError,
    MalformedResponseError,
    Partial,
    Qwen3ASRClient,
    Qwen3ASRError,
    ServerUnavailableError,
    StreamOptions,
    TranscribeOptions,
    Transcription,
)
from qwen3_asr_triton.client.errors import from_stream_error, stream_status
from qwen3_asr_triton.client.stream_command import fit_tail
from qwen3_asr_triton.client.stream_source import DECODED_SAMPLE_RATE, Rechunker, StreamSource, split_waveform
from qwen3_asr_triton.client.stream_wire import chunk_inputs
from qwen3_asr_triton.client.subtitles import display_width

RATE = 16000


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunk_seconds": 0}, "positive"),
        ({"chunk_seconds": 0.01}, "between 0.02 and 30"),
        ({"chunk_seconds": 31}, "between 0.02 and 30"),
        ({"chunk_seconds": "1"}, "number of seconds"),
        ({"speed": -1}, ">= 0"),
        ({"speed": float("inf")}, ">= 0 and finite"),
        ({"speed": True}, "must be a number"),
    ],
)
def test_stream_options_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StreamOptions(**kwargs)


def test_stream_options_defaults_and_chunk_samples():
    options = StreamOptions()
    assert (options.chunk_seconds, options.speed) == (1.0, 1.0)
    assert StreamOptions(chunk_seconds=0.5).chunk_samples(22050) == 11025
    assert StreamOptions(speed=0).speed == 0.0
    assert ClientOptions().stream_model == "qwen3_asr_streaming"
    with pytest.raises(ValueError, match="stream_model must be a Triton model name"):
        ClientOptions(stream_model="bad name")


# ----------------------------------------------------------------------------- chunking
def test_split_waveform_marks_the_last_chunk_and_its_end():
    wave = np.arange(25, dtype=np.float32)
    chunks = list(split_waveform(wave, 10, 10))
    assert [c.samples.size for c in chunks] == [10, 10, 5]
    assert [c.end_seconds for c in chunks] == [1.0, 2.0, 2.5]
    assert [c.last for c in chunks] == [False, False, True]
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), wave)
    (empty,) = split_waveform(np.zeros(0, np.float32), 10, 10)
    assert empty.samples.size == 0 and empty.last
    assert chunks[1].due(started_at=100.0, speed=2.0) == 101.0
    assert chunks[1].due(started_at=100.0, speed=0.0) == 100.0


def test_rechunker_gathers_frames_of_any_size():
    rechunker = Rechunker(chunk_samples=4, sample_rate=4)
    out = []
    for size in (3, 0, 2, 7, 1):
        out += rechunker.push(np.arange(size, dtype=np.int16).reshape(-1, 1).repeat(2, axis=1))
    last = rechunker.finish()
    assert [c.samples.size for c in out] == [4, 4, 4] and not any(c.last for c in out)
    assert last.last and last.samples.size == 1 and last.end_seconds == 13 / 4
    assert all(c.samples.dtype == np.float32 for c in [*out, last])
    # int16 stereo frames become mono float32 in [-1, 1].
    assert out[0].samples[1] == pytest.approx(1 / 32768)
    exact = Rechunker(4, 4)
    assert len(exact.push(np.zeros(8, np.float32))) == 2
    assert exact.finish().samples.size == 0


def test_stream_source_checks_its_arguments(tmp_path):
    with pytest.raises(ValueError, match="needs its sample_rate"):
        StreamSource(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="needs its sample_rate"):
        StreamSource(iter([np.zeros(10, np.float32)]))
    with pytest.raises(ValueError, match="only applies to PCM"):
        StreamSource(b"RIFF", sample_rate=RATE)
    with pytest.raises(ValueError, match="positive integer"):
        StreamSource(np.zeros(10, np.float32), sample_rate=0)
    with pytest.raises(ValueError, match="audio must be"):
        StreamSource(123)
    assert DECODED_SAMPLE_RATE == TARGET_SAMPLE_RATE
    assert StreamSource(tmp_path / "a.wav").sample_rate == DECODED_SAMPLE_RATE and not StreamSource(b"x").live
    assert StreamSource([np.zeros(4, np.float32)], sample_rate=8000).live
    bad = StreamSource(b"not audio at all")
    with pytest.raises(InvalidRequestError, match="could not decode"):
        bad.load()
    with pytest.raises(OSError):
        StreamSource(tmp_path / "missing.wav").load()
    with pytest.raises(ValueError, match="async iterable"):
        Qwen3ASRClient("127.0.0.1:1").stream(_async_frames([np.zeros(4, np.float32)]), sample_rate=RATE)


async def _async_frames(frames):
    for frame in frames:
        yield frame


def test_chunk_inputs_carry_a_batch_dimension_and_options_on_start_only():
    options = TranscribeOptions(language="de", context="Berlin", timestamps=True, max_new_tokens=9)
    start = chunk_inputs(np.zeros(160, np.float32), 8000, options)
    assert [(t.name(), t.datatype(), t.shape()) for t in start] == [
        ("WAVEFORM", "FP32", [1, 160]),
        ("SAMPLE_RATE", "INT32", [1, 1]),
        ("LANGUAGE", "BYTES", [1, 1]),
        ("CONTEXT", "BYTES", [1, 1]),
        ("RETURN_TIMESTAMPS", "BOOL", [1, 1]),
        ("MAX_NEW_TOKENS", "INT32", [1, 1]),
    ]
    later = chunk_inputs(np.zeros(0, np.float32), 8000)
    assert [(t.name(), t.shape()) for t in later] == [("WAVEFORM", [1, 0]), ("SAMPLE_RATE", [1, 1])]


@pytest.mark.parametrize(
    ("message", "status", "error"),
    [
        ("WAVEFORM contains NaN or infinite samples", "INVALID_ARGUMENT", InvalidRequestError),
        ("Request for unknown model: 'x' is not found", "INVALID_ARGUMENT", InvalidRequestError),
        ("internal error: RuntimeError: boom", "INTERNAL", Qwen3ASRError),
        ("too many concurrent streams (256)", "UNAVAILABLE", ServerUnavailableError),
    ],
)
def test_stream_errors_get_a_status_from_their_message(message, status, error):
    assert stream_status(message) == status
    exc = from_stream_error(InferenceServerException(msg=message), "stream 1")
    assert type(exc) is error and exc.status == status and exc.message == f"{message} (stream 1)"
    # A failure of the stream itself keeps the status gRPC reported.
    broken = from_stream_error(InferenceServerException(msg="connection refused", status="StatusCode.UNAVAILABLE"))
    assert isinstance(broken, ServerUnavailableError)


def test_fit_tail_keeps_the_newest_words_within_the_columns():
    assert fit_tail("hello world", 20) == "hello world"
    assert fit_tail("hello world", 6) == "…world"
    cut = fit_tail("今天天气很好我们去公园", 9)
    assert display_width(cut) <= 9 and cut.endswith("公园")


# ----------------------------------------------------------------------------- a scripted stream server
def _output(name: str, array: np.ndarray, datatype: str):
    raw = serialize_byte_tensor(array).item() if datatype == "BYTES" else array.tobytes()
    tensor = service_pb2.ModelInferResponse.InferOutputTensor(name=name, datatype=datatype, shape=list(array.shape))
    return tensor, raw


def _text(value: str) -> np.ndarray:
    return np.array([[value.encode()]], dtype=np.object_)


def stream_response(request_id: str, final: bool, seconds: float) -> service_pb2.ModelStreamInferResponse:
    outputs = [
        _output("TEXT", _text(f"up to {seconds:g} s"), "BYTES"),
        _output("DETECTED_LANGUAGE", _text("English"), "BYTES"),
        _output("TOKEN_IDS", np.array([[7, 8]], np.int32), "INT32"),
        _output("IS_FINAL", np.array([[final]]), "BOOL"),
        _output("AUDIO_SECONDS", np.array([[seconds]], np.float32), "FP32"),
    ]
    if final:
        outputs += [
            _output("CONFIDENCE", np.array([[0.5]], np.float32), "FP32"),
            _output("SEGMENT_TEXT", _text(f"up to {seconds:g} s"), "BYTES"),
            _output("SEGMENT_START", np.array([[0.0]], np.float32), "FP32"),
            _output("SEGMENT_END", np.array([[seconds]], np.float32), "FP32"),
        ]
    response = service_pb2.ModelInferResponse(
        model_name="qwen3_asr_streaming",
        id=request_id,
        outputs=[t for t, _ in outputs],
        raw_output_contents=[raw for _, raw in outputs],
    )
    return service_pb2.ModelStreamInferResponse(infer_response=response)


@dataclass
class StreamScript:
    """How the fake server answers: "each" (a partial per chunk, the final at END), "silent",
    "reversed" (every answer held until END, then the partials newest first), "unknown-id", "error",
    "close" (read every chunk, answer nothing, end the stream; ending it while the client is still
    writing can reach the client as gRPC's INTERNAL instead of an end of stream)."""

    mode: str = "each"
    requests: list = field(default_factory=list)
    metadata: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _samples(request) -> int:
    return next(int(np.prod(i.shape)) for i in request.inputs if i.name == "WAVEFORM")


class FakeStreamingTriton(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, script: StreamScript) -> None:
        self.script = script

    def ModelStreamInfer(self, request_iterator, context):  # noqa: N802 - gRPC method name
        self.script.metadata.append(dict(context.invocation_metadata()))
        mode, held, samples = self.script.mode, [], 0
        for request in request_iterator:
            with self.script.lock:
                self.script.requests.append(request)
            samples += _samples(request)
            end = request.parameters["sequence_end"].bool_param
            if mode in ("close", "silent"):
                continue
            if mode == "error":
                yield service_pb2.ModelStreamInferResponse(error_message="WAVEFORM contains NaN or infinite samples")
                continue
            if mode == "unknown-id":
                yield stream_response("not-a-request-of-this-stream", end, samples / RATE)
                continue
            response = stream_response(request.id, end, samples / RATE)
            if mode == "each":
                yield response
            elif end:
                yield from reversed(held)
                yield response
            else:
                held.append(response)
        while mode == "silent" and context.is_active():  # a hung server: keep the stream open, answer nothing
            time.sleep(0.05)


@contextmanager
def stream_server(script: StreamScript):
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(FakeStreamingTriton(script), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def _run_sync(url: str, source, client_options: ClientOptions | None = None, **kwargs):
    with Qwen3ASRClient(client_options or ClientOptions(url=url, timeout=10)) as client:
        stream = client.stream(source, **kwargs)
        with stream:
            return list(stream), stream.stats


def _run_async(url: str, source, client_options: ClientOptions | None = None, **kwargs):
    async def run():
        async with AsyncQwen3ASRClient(client_options or ClientOptions(url=url, timeout=10)) as client:
            stream = client.stream(source, **kwargs)
            async with stream:
                return [event async for event in stream], stream.stats

    return asyncio.run(run())


RUNNERS = {"sync": _run_sync, "async": _run_async}


@pytest.mark.parametrize("runner", ["sync", "async"])
def test_requests_follow_the_sequence_protocol(runner):
    script = StreamScript()
    wave = np.zeros(int(2.5 * RATE), np.float32)
    options = TranscribeOptions(language="English", max_new_tokens=5)
    with stream_server(script) as url:
        events, stats = RUNNERS[runner](
            url, wave, sample_rate=RATE, options=options, stream_options=StreamOptions(chunk_seconds=1.0, speed=0)
        )
    requests = script.requests
    assert [_samples(r) for r in requests] == [RATE, RATE, RATE // 2]
    assert [r.parameters["sequence_start"].bool_param for r in requests] == [True, False, False]
    assert [r.parameters["sequence_end"].bool_param for r in requests] == [False, False, True]
    ids = {r.parameters["sequence_id"].int64_param for r in requests}
    assert len(ids) == 1 and 0 < ids.pop() < 2**63
    assert len({r.id for r in requests}) == 3
    assert [sorted(i.name for i in r.inputs) for r in requests] == [
        ["LANGUAGE", "MAX_NEW_TOKENS", "SAMPLE_RATE", "WAVEFORM"],
        ["SAMPLE_RATE", "WAVEFORM"],
        ["SAMPLE_RATE", "WAVEFORM"],
    ]
    assert [type(e) for e in events] == [Partial, Partial, Transcription]
    assert [(e.chunk, e.audio_seconds) for e in events[:2]] == [(0, 1.0), (1, 2.0)]
    assert all(e.latency >= 0 for e in events[:2]) and events[0].request_id == requests[0].id
    assert events[-1].request_id == requests[-1].id and events[-1].audio_seconds == 2.5
    assert (stats.chunks, stats.partials, stats.audio_seconds) == (3, 2, 2.5)
    assert stats.final_latency is not None and stats.final_latency >= 0


@pytest.mark.parametrize("runner", ["sync", "async"])
def test_files_are_paced_at_the_requested_speed(runner, tmp_path):
    script = StreamScript()
    wave = np.zeros(RATE, np.float32)
    with stream_server(script) as url:
        _, paced = RUNNERS[runner](
            url, wave, sample_rate=RATE, stream_options=StreamOptions(chunk_seconds=0.25, speed=2.0)
        )
        _, burst = RUNNERS[runner](
            url, wave, sample_rate=RATE, stream_options=StreamOptions(chunk_seconds=0.25, speed=0)
        )
    # Chunk i is due when its last sample would have been heard: (i + 1) * 0.25 s / 2.
    due = [0.125, 0.25, 0.375, 0.5]
    assert all(due[i] - 0.005 <= offset <= due[i] + 0.2 for i, offset in enumerate(paced.chunk_offsets))
    assert burst.chunks == 4 and burst.chunk_offsets[-1] < 0.1


@pytest.mark.parametrize("runner", ["sync", "async"])
def test_live_frames_are_gathered_and_sent_as_they_come(runner):
    script = StreamScript()
    frames = [np.full(1000, 0.1, np.float32)] * 13  # 13000 samples in uneven 1000-sample frames

    def slow_frames():
        for frame in frames:
            time.sleep(0.01)
            yield frame

    source = slow_frames() if runner == "sync" else _async_frames(frames)
    with stream_server(script) as url:
        events, stats = RUNNERS[runner](
            url, source, sample_rate=RATE, stream_options=StreamOptions(chunk_seconds=0.25, speed=1.0)
        )
    assert [_samples(r) for r in script.requests] == [4000, 4000, 4000, 1000]
    assert stats.chunks == 4 and stats.audio_seconds == 13000 / RATE
    assert isinstance(events[-1], Transcription)


@pytest.mark.parametrize("runner", ["sync", "async"])
def test_stale_partials_are_dropped(runner):
    script = StreamScript(mode="reversed")
    with stream_server(script) as url:
        events, stats = RUNNERS[runner](
            url, np.zeros(4 * 1600, np.float32), sample_rate=RATE, stream_options=StreamOptions(0.1, speed=0)
        )
    # Held partials arrive newest first: only the newest is news, the older ones are dropped.
    assert [(type(e), getattr(e, "chunk", None)) for e in events] == [(Partial, 2), (Transcription, None)]
    assert stats.partials == 1


@pytest.mark.parametrize("runner", ["sync", "async"])
def test_an_unanswered_chunk_hits_the_deadline(runner):
    script = StreamScript(mode="silent")
    with stream_server(script) as url:
        options = ClientOptions(url=url, timeout=0.5)
        began = time.monotonic()
        with pytest.raises(DeadlineExceededError, match=r"chunk 0 not answered within the 0\.5 s deadline"):
            RUNNERS[runner](url, np.zeros(RATE, np.float32), options, sample_rate=RATE)
        assert time.monotonic() - began < 5


@pytest.mark.parametrize("runner", ["sync", "async"])
@pytest.mark.parametrize(
    ("mode", "error", "message"),
    [("unknown-id", MalformedResponseError, "unknown request"), ("error", InvalidRequestError, "NaN")],
)
def test_bad_and_failed_responses_raise(runner, mode, error, message):
    script = StreamScript(mode=mode)
    with stream_server(script) as url, pytest.raises(error, match=message) as info:
        RUNNERS[runner](url, np.zeros(RATE, np.float32), sample_rate=RATE, stream_options=StreamOptions(speed=0))
    assert "qwen3_asr_streaming at 127.0.0.1:" in str(info.value)


def test_a_stream_closed_before_the_final_is_an_error():
    # (The blocking client cannot see a stream end without an error: there the deadline catches it.)
    script = StreamScript(mode="close")
    with stream_server(script) as url, pytest.raises(Qwen3ASRError, match="closed the stream before the final"):
        _run_async(url, np.zeros(RATE, np.float32), sample_rate=RATE, stream_options=StreamOptions(0.5, speed=0))


@pytest.mark.parametrize("runner", ["sync", "async"])
def test_headers_reach_the_stream(runner):
    script = StreamScript()
    with stream_server(script) as url:
        options = ClientOptions(url=url, headers={"Authorization": "Bearer s3cret", "x-tenant": "blue"})
        RUNNERS[runner](
            url, np.zeros(RATE, np.float32), options, sample_rate=RATE, stream_options=StreamOptions(speed=0)
        )
    assert script.metadata and script.metadata[0]["authorization"] == "Bearer s3cret"
    assert script.metadata[0]["x-tenant"] == "blue"


@pytest.mark.parametrize("runner", ["sync", "async"])
def test_a_failing_source_stops_the_stream(runner):
    script = StreamScript()

    def broken():
        yield np.zeros(RATE, np.float32)
        raise OSError("microphone unplugged")

    with stream_server(script) as url, pytest.raises(OSError, match="microphone unplugged"):
        RUNNERS[runner](url, broken(), sample_rate=RATE, stream_options=StreamOptions(chunk_seconds=0.5))
    assert not any(r.parameters["sequence_end"].bool_param for r in script.requests)


def test_leaving_early_stops_sending():
    script = StreamScript()
    with stream_server(script) as url, Qwen3ASRClient(ClientOptions(url=url, timeout=10)) as client:
        stream = client.stream(np.zeros(10 * RATE, np.float32), sample_rate=RATE, stream_options=StreamOptions(speed=4))
        with stream:
            first = next(stream)
        sent = stream.stats.chunks
        time.sleep(0.6)  # two more chunks would have been due
    assert isinstance(first, Partial) and first.chunk == 0
    assert stream.stats.chunks == sent == len(script.requests) < 10
