"""Endpointing streams in the client: options, START inputs, utterance parsing, several or no responses per
chunk, the END-only deadline, the CLI flags and output; without a server (fake results, a scripted gRPC server).
"""

from __future__ import annotations

import io
import itertools
import json
import re
import subprocess
import sys
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from qwen3_asr_triton.client import (
    ClientOptions,
    DeadlineExceededError,
    EndpointingOptions,
    MalformedResponseError,
    Partial,
    Qwen3ASRClient,
    StreamOptions,
    StreamStats,
    TranscribeOptions,
    Transcription,
    Utterance,
    Word,
)
from qwen3_asr_triton.client.cli import build_parser, main, stream_options
from qwen3_asr_triton.client.stream_command import EventPrinter, describe
from qwen3_asr_triton.client.stream_session import StreamSession
from qwen3_asr_triton.client.stream_source import PcmChunk
from qwen3_asr_triton.client.stream_wire import chunk_inputs
from tests.harness import speech_with_pauses
from tests.test_client_stream_unit import RUNNERS, _text

RATE = 16000


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vad_threshold": 0}, "between 0 and 1"),
        ({"vad_threshold": 1.0}, "between 0 and 1"),
        ({"vad_threshold": float("nan")}, "between 0 and 1"),
        ({"vad_threshold": "0.5"}, "must be a number"),
        ({"vad_threshold": True}, "must be a number"),
        ({"vad_min_silence_ms": -1}, "between 0 and 10000"),
        ({"vad_min_silence_ms": 10001}, "between 0 and 10000"),
        ({"vad_min_silence_ms": 500.0}, "integer number of milliseconds"),
        ({"vad_speech_pad_ms": True}, "integer number of milliseconds"),
        ({"vad_speech_pad_ms": 20000}, "between 0 and 10000"),
    ],
)
def test_endpointing_options_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EndpointingOptions(**kwargs)


def test_endpointing_options_defaults_and_stream_options():
    assert EndpointingOptions() == EndpointingOptions(None, None, None)
    edge = EndpointingOptions(vad_threshold=0.5, vad_min_silence_ms=0, vad_speech_pad_ms=10000)
    assert isinstance(edge.vad_threshold, float) and edge.vad_min_silence_ms == 0
    assert StreamOptions().endpointing is None
    assert StreamOptions(endpointing=edge).endpointing is edge
    with pytest.raises(ValueError, match="endpointing must be EndpointingOptions"):
        StreamOptions(endpointing=True)
    with pytest.raises(AttributeError):
        edge.vad_threshold = 0.1  # frozen


def _described(tensors) -> list[tuple]:
    return [(t.name(), t.datatype(), t.shape()) for t in tensors]


def test_start_inputs_carry_endpointing_and_its_knobs():
    wave = np.zeros(160, np.float32)
    bare = chunk_inputs(wave, RATE, TranscribeOptions(), EndpointingOptions())
    assert _described(bare) == [
        ("WAVEFORM", "FP32", [1, 160]),
        ("SAMPLE_RATE", "INT32", [1, 1]),
        ("ENDPOINTING", "BOOL", [1, 1]),
    ]
    knobs = EndpointingOptions(vad_threshold=0.35, vad_min_silence_ms=700, vad_speech_pad_ms=120)
    full = chunk_inputs(wave, RATE, TranscribeOptions(language="en"), knobs)
    assert _described(full)[2:] == [
        ("LANGUAGE", "BYTES", [1, 1]),
        ("ENDPOINTING", "BOOL", [1, 1]),
        ("VAD_THRESHOLD", "FP32", [1, 1]),
        ("VAD_MIN_SILENCE_MS", "INT32", [1, 1]),
        ("VAD_SPEECH_PAD_MS", "INT32", [1, 1]),
    ]
    assert [n for n, _, _ in _described(chunk_inputs(wave, RATE, TranscribeOptions()))] == ["WAVEFORM", "SAMPLE_RATE"]


# ----------------------------------------------------------------------------- fake results
class FakeResult:
    """What the session reads of tritonclient's InferResult: the response id and outputs by name."""

    def __init__(self, request_id: str, outputs: dict[str, np.ndarray]) -> None:
        self._id, self._outputs = request_id, outputs

    def get_response(self):
        return SimpleNamespace(id=self._id)

    def as_numpy(self, name: str):
        return self._outputs.get(name)


@dataclass
class Spec:
    """One response: a partial, an utterance final, or the bare IS_FINAL; ``index=None`` sends no utterance outputs."""

    text: str = ""
    final: bool = False  # IS_FINAL
    utterance_final: bool = False
    index: int | None = 0
    start: float = 0.0
    end: float = 0.0
    words: tuple = ()  # (text, start, end)
    seconds: float = 0.0  # AUDIO_SECONDS of a partial


def outputs(spec: Spec) -> dict[str, tuple[np.ndarray, str]]:
    out = {
        "TEXT": (_text(spec.text), "BYTES"),
        "DETECTED_LANGUAGE": (_text("English" if spec.text else ""), "BYTES"),
        "TOKEN_IDS": (np.array([[len(spec.text), 3]], np.int32), "INT32"),
        "IS_FINAL": (np.array([[spec.final]]), "BOOL"),
    }
    if spec.index is not None:
        out |= {
            "UTTERANCE_INDEX": (np.array([[spec.index]], np.int32), "INT32"),
            "UTTERANCE_FINAL": (np.array([[spec.utterance_final]]), "BOOL"),
            "UTTERANCE_START": (np.array([[spec.start]], np.float32), "FP32"),
            "UTTERANCE_END": (np.array([[spec.end]], np.float32), "FP32"),
        }
    if spec.utterance_final or spec.final:
        words = spec.words
        out |= {
            "CONFIDENCE": (np.array([[0.25]], np.float32), "FP32"),
            "WORDS": (np.array([[w[0].encode() for w in words]], dtype=np.object_).reshape(1, -1), "BYTES"),
            "WORD_START": (np.array([[w[1] for w in words]], np.float32).reshape(1, -1), "FP32"),
            "WORD_END": (np.array([[w[2] for w in words]], np.float32).reshape(1, -1), "FP32"),
            "SEGMENT_TEXT": (_text(spec.text), "BYTES"),
            "SEGMENT_START": (np.array([[spec.start]], np.float32), "FP32"),
            "SEGMENT_END": (np.array([[spec.end]], np.float32), "FP32"),
        }
    else:
        out["AUDIO_SECONDS"] = (np.array([[spec.seconds]], np.float32), "FP32")
    return out


def fake(request_id: str, spec: Spec) -> FakeResult:
    return FakeResult(request_id, {name: array for name, (array, _) in outputs(spec).items()})


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def session_with_chunks(count: int, endpointing: EndpointingOptions | None, end: bool = True):
    clock = Clock()
    session = StreamSession(ClientOptions(), TranscribeOptions(), clock, endpointing=endpointing)
    ids = []
    for i in range(count):
        clock.now = 100.0 + i
        chunk = PcmChunk(np.zeros(RATE, np.float32), float(i + 1), end and i == count - 1)
        ids.append(session.request_for(chunk, RATE)["request_id"])
    return session, ids, clock


ON = EndpointingOptions()


def test_several_responses_for_one_chunk_and_none_for_silence():
    session, ids, clock = session_with_chunks(5, ON)
    clock.now = 110.0
    events = [
        # chunk 0: speech starts; chunk 1: silence, no response at all.
        session.on_result(fake(ids[0], Spec("hel", index=0, start=0.2, seconds=1.0)), 100.5),
        # chunk 2 ends utterance 0 and utterance 1 (a short one), then utterance 2 starts.
        session.on_result(fake(ids[2], Spec("hello", utterance_final=True, index=0, start=0.2, end=1.4)), 102.5),
        session.on_result(fake(ids[2], Spec("hi", utterance_final=True, index=1, start=1.9, end=2.3)), 102.5),
        session.on_result(fake(ids[2], Spec("wor", index=2, start=2.6, seconds=3.0)), 102.6),
    ]
    assert [type(e) for e in events] == [Partial, Utterance, Utterance, Partial]
    first, u0, u1, p2 = events
    assert (first.utterance, first.utterance_start, first.chunk, first.audio_seconds) == (0, 0.2, 0, 1.0)
    assert (u0.index, u0.start, u0.end, u0.text, u0.chunk, u0.last) == (0, 0.2, 1.4, "hello", 2, False)
    assert (u1.index, u1.start, u1.end, u1.text, u1.request_id) == (1, 1.9, 2.3, "hi", ids[2])
    assert u0.latency == pytest.approx(0.5) and isinstance(u0.transcription, Transcription)
    assert (p2.utterance, p2.utterance_start, p2.chunk, p2.text) == (2, 2.6, 2, "wor")
    assert not session.finished
    stats = session.stats()
    assert (stats.partials, stats.utterances, stats.final_latency) == (2, 2, None)


def test_utterance_parsing_keeps_times_and_words():
    session, ids, _ = session_with_chunks(3, ON)
    words = (("good", 1.24, 1.5), ("morning", 1.52, 2.08))
    spec = Spec("good morning", utterance_final=True, index=3, start=1.1, end=2.25, words=words)
    event = session.on_result(fake(ids[1], spec), 101.25)
    assert isinstance(event, Utterance) and not event.last
    assert (event.index, event.start, event.end) == (3, 1.1, 2.25)
    result = event.transcription
    assert result.words == (Word("good", 1.24, 1.5), Word("morning", 1.52, 2.08))
    assert (result.language, result.confidence, result.token_ids) == ("English", 0.25, (12, 3))
    assert [(s.text, s.start, s.end) for s in result.segments] == [("good morning", 1.1, 2.25)]
    data = event.to_dict()
    assert data["transcription"] == result.to_dict() and data["latency"] == 0.25
    assert {k: data[k] for k in ("index", "start", "end", "chunk", "last", "request_id")} == {
        "index": 3,
        "start": 1.1,
        "end": 2.25,
        "chunk": 1,
        "last": False,
        "request_id": ids[1],
    }
    json.dumps(data)


def test_is_final_with_an_utterance_ends_the_stream_with_it():
    session, ids, _ = session_with_chunks(3, ON)
    spec = Spec("bye", final=True, utterance_final=True, index=1, start=1.5, end=3.0)
    event = session.on_result(fake(ids[2], spec), 103.0)
    assert isinstance(event, Utterance) and event.last and event.index == 1 and event.text == "bye"
    assert session.finished and session.stats().final_latency == pytest.approx(1.0)
    # Anything after the final is ignored.
    assert session.on_result(fake(ids[2], Spec("late", index=2, start=3.0)), 103.1) is None


def test_is_final_without_an_utterance_ends_the_stream_silently():
    session, ids, _ = session_with_chunks(4, ON)
    assert session.on_result(fake(ids[1], Spec("x", utterance_final=True, index=0, start=0, end=1)), 102) is not None
    event = session.on_result(fake(ids[3], Spec("", final=True, utterance_final=False, index=1)), 103.5)
    assert event is None and session.finished
    assert session.stats().final_latency == pytest.approx(0.5) and session.stats().utterances == 1


def test_stale_partials_and_partials_of_finished_utterances_are_dropped():
    session, ids, _ = session_with_chunks(4, ON, end=False)
    assert session.on_result(fake(ids[2], Spec("new", index=0, seconds=3)), 103) is not None
    assert session.on_result(fake(ids[1], Spec("old", index=0, seconds=2)), 103) is None  # older chunk
    assert session.on_result(fake(ids[3], Spec("done", utterance_final=True, index=0, end=3.5)), 104) is not None
    assert session.on_result(fake(ids[3], Spec("again", index=0, seconds=4)), 104) is None  # utterance 0 ended
    assert session.stats().partials == 1


def test_old_responses_without_utterance_outputs():
    # Without endpointing: exactly today's events.
    session, ids, _ = session_with_chunks(2, None)
    partial = session.on_result(fake(ids[0], Spec("a", index=None, seconds=1.0)), 100.5)
    final = session.on_result(fake(ids[1], Spec("ab", final=True, index=None, end=2.0)), 101.5)
    assert type(partial) is Partial and (partial.utterance, partial.utterance_start) == (0, 0.0)
    assert type(final) is Transcription and final.text == "ab" and session.finished
    # The new outputs of a server with endpointing off change nothing either.
    session, ids, _ = session_with_chunks(2, None)
    final = session.on_result(fake(ids[1], Spec("ab", final=True, utterance_final=True, index=0, end=2.0)), 101.5)
    assert type(final) is Transcription and session.stats().utterances == 0
    # With endpointing, an old server's final is utterance 0, spanning the audio.
    session, ids, _ = session_with_chunks(2, ON)
    partial = session.on_result(fake(ids[0], Spec("a", index=None, seconds=1.0)), 100.5)
    last = session.on_result(fake(ids[1], Spec("ab", final=True, index=None, end=2.0)), 101.5)
    assert type(partial) is Partial and partial.utterance == 0
    assert isinstance(last, Utterance) and (last.index, last.start, last.end, last.last) == (0, 0.0, 2.0, True)


def test_malformed_utterance_outputs_raise():
    session, ids, _ = session_with_chunks(2, ON)
    with pytest.raises(MalformedResponseError, match="utterance 0 spans"):
        session.on_result(fake(ids[0], Spec("x", utterance_final=True, index=0, start=2.0, end=1.0)), 101)
    with pytest.raises(MalformedResponseError, match="unknown request"):
        session.on_result(fake("nope", Spec("x", index=0)), 101)


def test_the_deadline_of_an_endpointing_stream_waits_for_end_only():
    timeout = 5.0
    # Without endpointing: the oldest unanswered chunk, and an answer to chunk k settles every chunk before it.
    session, ids, _ = session_with_chunks(4, None)
    assert session.deadline(timeout) == 100.0 + timeout
    session.on_result(fake(ids[2], Spec("p", index=None, seconds=3)), 103)
    assert session.deadline(timeout) == 103.0 + timeout
    assert "chunk 3 not answered" in str(session.timeout_error(timeout))
    # With endpointing: silent chunks owe nothing; before END there is no deadline at all.
    session, ids, _ = session_with_chunks(4, ON, end=False)
    assert session.deadline(timeout) is None
    session.on_result(fake(ids[1], Spec("p", index=0, seconds=2)), 102)
    assert session.deadline(timeout) is None
    session.request_for(PcmChunk(np.zeros(0, np.float32), 4.0, True), RATE)  # END, sent at 103.0
    assert session.deadline(timeout) == 103.0 + timeout
    assert "chunk 4 not answered within the 5 s deadline" in str(session.timeout_error(timeout))
    # Utterance finals to END do not settle it; only IS_FINAL does.
    session.on_result(fake(ids[3], Spec("u", utterance_final=True, index=0, end=3.0)), 104)
    assert session.deadline(timeout) == 103.0 + timeout
    session.on_result(fake(ids[3], Spec("", final=True, index=1)), 104)
    assert session.deadline(timeout) is None and session.deadline(None) is None


# ----------------------------------------------------------------------------- a scripted gRPC server
def _output(name: str, array: np.ndarray, datatype: str):
    """An output tensor and its raw contents (BYTES as 4-byte little-endian lengths and the bytes)."""
    if datatype == "BYTES":
        raw = b"".join(len(v).to_bytes(4, "little") + v for v in array.reshape(-1))
    else:
        raw = array.tobytes()
    tensor = service_pb2.ModelInferResponse.InferOutputTensor(name=name, datatype=datatype, shape=list(array.shape))
    return tensor, raw


def stream_response(request_id: str, spec: Spec) -> service_pb2.ModelStreamInferResponse:
    tensors = [_output(name, array, datatype) for name, (array, datatype) in outputs(spec).items()]
    response = service_pb2.ModelInferResponse(
        model_name="qwen3_asr_streaming",
        id=request_id,
        outputs=[t for t, _ in tensors],
        raw_output_contents=[raw for _, raw in tensors],
    )
    return service_pb2.ModelStreamInferResponse(infer_response=response)


@dataclass
class Script:
    """Responses per chunk index (missing = none); ``hang`` answers nothing, END included."""

    answers: dict[int, list[Spec]] = field(default_factory=dict)
    hang: bool = False
    requests: list = field(default_factory=list)


class FakeEndpointingTriton(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    def ModelStreamInfer(self, request_iterator, context):  # noqa: N802 - gRPC method name
        for index, request in enumerate(request_iterator):
            self.script.requests.append(request)
            if self.script.hang:
                continue
            for spec in self.script.answers.get(index, []):
                yield stream_response(request.id, spec)
        while self.script.hang and context.is_active():
            time.sleep(0.05)


@contextmanager
def endpointing_server(script: Script):
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(FakeEndpointingTriton(script), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def _inputs(request) -> dict[str, np.ndarray]:
    out = {}
    for tensor, raw in zip(request.inputs, request.raw_input_contents):
        dtype = {"BOOL": np.bool_, "FP32": np.float32, "INT32": np.int32}.get(tensor.datatype)
        if dtype is not None:
            out[tensor.name] = np.frombuffer(raw, dtype=dtype).reshape(list(tensor.shape))
    return out


# Ten chunks of 0.1 s, sent every 0.2 s: speech in chunks 0-2 and 6-8, silence between (chunks 3 and 4 wait
# 0.4 s for an answer), END answered last.
TEN_CHUNKS = {
    0: [Spec("a", index=0, start=0.05, seconds=0.1)],
    2: [Spec("ab", index=0, start=0.05, seconds=0.3)],
    5: [Spec("ab c", utterance_final=True, index=0, start=0.05, end=0.35, words=(("ab", 0.05, 0.2),))],
    6: [Spec("d", index=1, start=0.6, seconds=0.7)],
    9: [
        Spec("de", utterance_final=True, index=1, start=0.6, end=0.9),
        Spec("", final=True, index=2),
    ],
}


@pytest.mark.parametrize("runner", ["sync", "async"])
def test_an_endpointing_stream_through_grpc(runner):
    script = Script(TEN_CHUNKS)
    endpointing = EndpointingOptions(vad_threshold=0.25, vad_min_silence_ms=300)
    with endpointing_server(script) as url:
        # Silent stretches last longer than the deadline: with endpointing that is no timeout.
        events, stats = RUNNERS[runner](
            url,
            np.zeros(RATE, np.float32),
            ClientOptions(url=url, timeout=0.3),
            sample_rate=RATE,
            stream_options=StreamOptions(chunk_seconds=0.1, speed=0.5, endpointing=endpointing),
        )
    assert [(type(e).__name__, e.chunk) for e in events] == [
        ("Partial", 0),
        ("Partial", 2),
        ("Utterance", 5),
        ("Partial", 6),
        ("Utterance", 9),
    ]
    utterances = [e for e in events if isinstance(e, Utterance)]
    assert [(u.index, u.start, u.end, u.text, u.last) for u in utterances] == [
        (0, 0.05, 0.35, "ab c", False),
        (1, 0.6, 0.9, "de", False),
    ]
    assert utterances[0].transcription.words == (Word("ab", 0.05, 0.2),)
    assert (stats.chunks, stats.partials, stats.utterances) == (10, 3, 2) and stats.final_latency is not None
    start = _inputs(script.requests[0])
    assert start["ENDPOINTING"].tolist() == [[True]] and start["VAD_MIN_SILENCE_MS"].tolist() == [[300]]
    assert start["VAD_THRESHOLD"].tolist() == [[pytest.approx(0.25)]] and "VAD_SPEECH_PAD_MS" not in start
    assert all("ENDPOINTING" not in _inputs(r) for r in script.requests[1:])


@pytest.mark.parametrize("runner", ["sync", "async"])
def test_the_last_utterance_ends_the_stream(runner):
    script = Script({1: [Spec("x", final=True, utterance_final=True, index=0, start=0.0, end=0.2)]})
    with endpointing_server(script) as url:
        events, stats = RUNNERS[runner](
            url,
            np.zeros(int(0.2 * RATE), np.float32),
            sample_rate=RATE,
            stream_options=StreamOptions(chunk_seconds=0.1, speed=0, endpointing=EndpointingOptions()),
        )
    assert len(events) == 1 and isinstance(events[0], Utterance) and events[0].last and events[0].chunk == 1
    assert stats.utterances == 1


@pytest.mark.parametrize("runner", ["sync", "async"])
def test_an_endpointing_stream_without_the_final_hits_the_deadline_after_end(runner):
    script = Script(hang=True)
    with endpointing_server(script) as url:
        began = time.monotonic()
        with pytest.raises(DeadlineExceededError, match=r"chunk 3 not answered within the 0\.3 s deadline"):
            RUNNERS[runner](
                url,
                np.zeros(int(0.4 * RATE), np.float32),
                ClientOptions(url=url, timeout=0.3),
                sample_rate=RATE,
                stream_options=StreamOptions(chunk_seconds=0.1, speed=0.5, endpointing=EndpointingOptions()),
            )
        # The four chunks take 0.8 s to send: the deadline counts from END, not from the first silent chunk.
        assert 1.0 <= time.monotonic() - began < 5


@pytest.mark.parametrize("runner", ["sync", "async"])
def test_without_endpointing_nothing_is_sent_and_the_final_is_a_transcription(runner):
    script = Script({0: [Spec("a", index=0, seconds=0.1)], 1: [Spec("ab", final=True, utterance_final=True, end=0.2)]})
    with endpointing_server(script) as url:
        events, _ = RUNNERS[runner](
            url, np.zeros(int(0.2 * RATE), np.float32), sample_rate=RATE, stream_options=StreamOptions(0.1, speed=0)
        )
    assert [type(e) for e in events] == [Partial, Transcription]
    assert all("ENDPOINTING" not in _inputs(r) for r in script.requests)


# ----------------------------------------------------------------------------- CLI
def test_cli_endpointing_flags():
    parser = build_parser()
    args = parser.parse_args(
        ["stream", "a.wav", "--endpointing", "--vad-threshold", "0.4", "--vad-min-silence-ms", "600"]
    )
    options = stream_options(args)
    assert options.endpointing == EndpointingOptions(vad_threshold=0.4, vad_min_silence_ms=600)
    args = parser.parse_args(["stream", "a.wav", "--endpointing", "--vad-speech-pad-ms", "50", "--speed", "0"])
    assert stream_options(args) == StreamOptions(speed=0, endpointing=EndpointingOptions(vad_speech_pad_ms=50))
    assert stream_options(parser.parse_args(["stream", "a.wav"])).endpointing is None
    with pytest.raises(ValueError, match="--vad-threshold only apply with --endpointing"):
        stream_options(parser.parse_args(["stream", "a.wav", "--vad-threshold", "0.4"]))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--endpointing", "--vad-threshold", "1.5"], "vad_threshold must be between 0 and 1"),
        (["--endpointing", "--vad-min-silence-ms", "-5"], "vad_min_silence_ms must be between 0 and 10000"),
        (["--vad-speech-pad-ms", "10"], "only apply with --endpointing"),
    ],
)
def test_cli_rejects_bad_endpointing_flags(flags, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["stream", "a.wav", "--url", "127.0.0.1:1", *flags])
    assert info.value.code == 2 and message in capsys.readouterr().err


def _utterance(index: int, start: float, end: float, text: str, last: bool = False) -> Utterance:
    result = Transcription(text=text, language="English", confidence=0.5)
    return Utterance(index, start, end, result, chunk=3, latency=0.125, request_id="r-3", last=last)


def test_printer_writes_a_line_per_utterance():
    out = io.StringIO()
    printer = EventPrinter(out, "txt", rewrite=False, source="a.wav")
    printer.partial(Partial("hel", "English", (), 1.0, 0, 0.1, utterance=0, utterance_start=0.2))
    printer.utterance(_utterance(0, 0.2, 1.456, "hello  there"))
    printer.utterance(_utterance(1, 12.34, 15.67, "bye", last=True))
    assert out.getvalue().splitlines() == ["[   1.0 s] hel", "[0.20-1.46] hello there", "[12.34-15.67] bye"]
    # On a terminal the partial's line is erased before the utterance's line.
    tty = io.StringIO()
    printer = EventPrinter(tty, "txt", rewrite=True, source="a.wav")
    printer.partial(Partial("hel", "English", (), 1.0, 0, 0.1))
    printer.utterance(_utterance(0, 0.2, 1.4, "hello"))
    assert tty.getvalue().endswith("\r\x1b[K[0.20-1.40] hello\n")


def test_printer_writes_json_per_utterance():
    out = io.StringIO()
    printer = EventPrinter(out, "json", rewrite=False, source="a.wav")
    printer.partial(Partial("hel", "English", (), 1.0, 0, 0.1, utterance=2, utterance_start=0.2))
    printer.utterance(_utterance(2, 0.2, 1.4, "hello", last=True))
    partial, utterance = (json.loads(line) for line in out.getvalue().splitlines())
    assert (partial["is_final"], partial["utterance"], partial["utterance_start"]) == (False, 2, 0.2)
    assert utterance["is_final"] is True and utterance["utterance"] == 2 and utterance["file"] == "a.wav"
    assert (utterance["start"], utterance["end"], utterance["transcription"]["text"]) == (0.2, 1.4, "hello")


def test_summary_counts_utterances():
    stats = StreamStats(sequence_id=1, chunk_offsets=(0.0, 0.1), partials=1, audio_seconds=2.0, utterances=3)
    line = describe(stats, [0.1], 1.0)
    assert line.startswith("2 chunks, 1 partials | audio 2.0 s | 3 utterances |")
    assert "utterances" not in describe(StreamStats(sequence_id=1), [], 1.0)


# ----------------------------------------------------------------------------- against a real server
# Three espeak-ng clips joined by 1.5 s of silence: well past the VAD's default 0.5 s that ends an utterance.
DIALOGUE = ("en_hello", "fr_weather", "es_numbers")
GAP_SECONDS = 1.5
MAX_NEW_TOKENS = 24  # random weights ramble: a cap keeps every request short
CLI = str(Path(sys.executable).with_name("qwen3-asr"))
UTTERANCE_LINE = r"^\[(\d+\.\d\d)-(\d+\.\d\d)\] "


@pytest.fixture(scope="module")
def dialogue(clips) -> np.ndarray:
    """16 kHz float32: 0.5 s of silence, then the clips with GAP_SECONDS of silence between them.

    The audio ends with the last clip, so its utterance is still open at END and ends with the stream.
    """
    return speech_with_pauses(clips, DIALOGUE, GAP_SECONDS, lead=0.5, trailing=False)


@pytest.fixture(scope="module")
def dialogue_file(dialogue, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("endpointing") / "dialogue.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes((np.clip(dialogue, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def server_client(triton_server):
    with Qwen3ASRClient(ClientOptions(url=triton_server.grpc_url, timeout=120)) as c:
        yield c


@pytest.mark.server
def test_utterances_of_a_stream_equal_unary_requests_of_their_spans(server_client, dialogue):
    options = TranscribeOptions(max_new_tokens=MAX_NEW_TOKENS)
    stream = server_client.stream(
        dialogue, options, StreamOptions(speed=0, endpointing=EndpointingOptions()), sample_rate=RATE
    )
    with stream:
        events = list(stream)
    assert all(isinstance(e, (Partial, Utterance)) for e in events), [type(e) for e in events]
    utterances = [e for e in events if isinstance(e, Utterance)]
    assert len(utterances) >= 2, [(u.index, u.start, u.end) for u in utterances]
    assert events[-1] is utterances[-1] and utterances[-1].last
    assert not any(u.last for u in utterances[:-1])
    assert [u.index for u in utterances] == list(range(len(utterances)))
    seconds = dialogue.size / RATE
    previous_end = 0.0
    for u in utterances:
        assert previous_end <= u.start < u.end <= seconds + 1e-6, (previous_end, u.start, u.end)
        previous_end = u.end
    # Partials belong to the utterance being spoken: never one that already ended.
    done = -1
    for event in events:
        if isinstance(event, Utterance):
            done = event.index
        else:
            assert event.utterance > done, (event.utterance, done)
    stats = stream.stats
    assert stats.utterances == len(utterances) and stats.final_latency is not None
    for u in utterances:
        span = dialogue[round(u.start * RATE) : round(u.end * RATE)]
        unary = server_client.transcribe(span, options, sample_rate=RATE)
        assert (u.transcription.text, u.transcription.token_ids, u.transcription.language) == (
            unary.text,
            unary.token_ids,
            unary.language,
        ), (u.index, u.start, u.end)
        # Segment times: the unary request's, moved to stream seconds.
        got = [(s.text, s.start, s.end) for s in u.transcription.segments]
        want = [(s.text, s.start + u.start, s.end + u.start) for s in unary.segments]
        assert [g[0] for g in got] == [w[0] for w in want]
        for g, w in zip(got, want):
            assert g[1:] == pytest.approx(w[1:], abs=2e-3)


@pytest.mark.server
def test_cli_prints_a_line_per_utterance(triton_server, dialogue_file):
    done = subprocess.run(
        [
            CLI,
            "stream",
            str(dialogue_file),
            "--url",
            triton_server.grpc_url,
            "--endpointing",
            "--speed",
            "0",
            "--max-new-tokens",
            str(MAX_NEW_TOKENS),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if re.match(UTTERANCE_LINE, line)]
    assert len(lines) >= 2, done.stdout
    spans = [tuple(float(x) for x in re.match(UTTERANCE_LINE, line).groups()) for line in lines]
    assert all(a < b for a, b in spans) and all(p[1] <= n[0] for p, n in itertools.pairwise(spans)), spans
    assert f"{len(lines)} utterances" in done.stderr
