"""The Realtime transcription protocol without a server: parsing, session updates, the event state
machine (gateway/realtime_events.py), and the WebSocket glue (gateway/realtime.py) over Starlette's
TestClient with a fake client library whose streams cut utterances at silent frames."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field

import numpy as np
import pytest
from starlette.testclient import TestClient

from qwen3_asr_triton.gateway.app import create_app
from qwen3_asr_triton.gateway.options import GatewayOptions
from qwen3_asr_triton.gateway.realtime_events import (
    INCLUDE_WORDS,
    ProtocolError,
    SessionConfig,
    StreamTranslator,
    apply_beta_update,
    apply_ga_update,
    final_delta,
    next_delta,
    parse_client_event,
    stable_prefix,
)

TRITON = "127.0.0.1:9"
KEY = "sk-unit"
DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"


# ----------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ('{"no": "type"}', "missing_required_parameter"),
        ('{"type": "response.create"}', "unknown_event"),
        ('{"type": "input_audio_buffer.append"}', "missing_required_parameter"),
        ('{"type": "input_audio_buffer.append", "audio": "!!notbase64!!"}', "invalid_audio"),
        ('{"type": "input_audio_buffer.append", "audio": "AA=="}', "invalid_audio"),  # one byte: half a sample
    ],
)
def test_bad_frames_are_refused_with_a_code(frame, code):
    with pytest.raises(ProtocolError) as info:
        parse_client_event(frame)
    assert info.value.code == code
    assert len(info.value.message) < 400


def test_error_messages_quote_a_short_excerpt_only():
    with pytest.raises(ProtocolError) as info:
        parse_client_event("x" * 100_000)
    assert len(info.value.message) < 200


def test_append_decodes_pcm16():
    pcm = np.arange(-5, 5, dtype="<i2").tobytes()
    event = parse_client_event(
        json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
    )
    assert event.audio == pcm


def test_ga_session_update():
    config = apply_ga_update(
        SessionConfig(),
        {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 16000},
                    "transcription": {"model": "gpt-4o-transcribe", "language": "en", "prompt": "Triton"},
                    "turn_detection": {"type": "server_vad", "threshold": 0.6, "silence_duration_ms": 700},
                }
            },
            "include": [INCLUDE_WORDS],
        },
    )
    assert (config.sample_rate, config.language, config.prompt, config.words) == (16000, "en", "Triton", True)
    assert config.turn_detection.threshold == 0.6
    assert config.turn_detection.silence_duration_ms == 700
    assert config.turn_detection.prefix_padding_ms == 300
    assert config.to_ga()["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 16000}
    manual = apply_ga_update(config, {"audio": {"input": {"turn_detection": None}}})
    assert manual.turn_detection is None and manual.sample_rate == 16000


def test_beta_session_update():
    config = apply_beta_update(
        SessionConfig(),
        {
            "input_audio_format": "pcm16",
            "input_audio_transcription": {"model": "whisper-1", "language": "de"},
            "turn_detection": None,
        },
    )
    assert (config.sample_rate, config.language, config.turn_detection) == (24000, "de", None)
    assert config.to_beta()["input_audio_format"] == "pcm16"


@pytest.mark.parametrize(
    "session",
    [
        {"type": "realtime"},
        {"audio": {"input": {"format": {"type": "audio/pcmu"}}}},
        {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 44100}}}},
        {"audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}},
        {"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 2}}}},
        {"audio": {"input": {"transcription": {"language": "klingon"}}}},
        {"audio": {"input": {"transcription": {"prompt": "p" * 5000}}}},
        {"include": ["nope"]},
        "not an object",
    ],
)
def test_bad_session_updates(session):
    with pytest.raises(ProtocolError):
        apply_ga_update(SessionConfig(), session)


# ----------------------------------------------------------------------------- deltas
def test_deltas_carry_only_words_that_stay():
    assert stable_prefix("hello wor") == "hello"
    assert next_delta("", "hello wor") == "hello"
    assert next_delta("hello", "hello world and") == " world"
    assert next_delta("hello world", "hello word is") == ""  # a revision: nothing until it extends again
    assert final_delta("hello world", "hello world again") == " again"
    assert final_delta("hello world", "yellow world") == ""
    assert stable_prefix("今天天气") == "今天天"
    # Local agreement: only words two consecutive partials share.
    assert next_delta("", "hello world and", "hello word") == "hello"
    assert next_delta("", "hello world and", None) == "hello world"


@dataclass
class P:  # a Partial
    text: str
    utterance: int = 0
    utterance_start: float = 0.0
    audio_seconds: float = 0.0
    language: str | None = "English"


@dataclass
class W:
    text: str
    start: float
    end: float


@dataclass
class T:  # a Transcription
    text: str
    language: str | None = "English"
    confidence: float = 0.9
    words: tuple = ()
    segments: tuple = ()

    @property
    def audio_seconds(self) -> float:  # as the real Transcription has
        return self.segments[-1].end if self.segments else 0.0


@dataclass
class U:  # an Utterance
    index: int
    start: float
    end: float
    transcription: T
    last: bool = False
    chunk: int = 0
    extra: dict = field(default_factory=dict)


def test_translator_one_item_per_utterance():
    translator = StreamTranslator(offset_s=10.0, vad=True, words=True)
    events = []
    for e in (
        P("", 0),
        P("hello wor", 0, 0.5),
        P("hello world and", 0, 0.5),
        P("hello world and m", 0, 0.5),
        U(0, 0.5, 2.0, T("hello world and more", words=(W("hello", 0.6, 0.9),))),
        P("second one", 1, 3.0),
        U(1, 3.0, 4.0, T("second one"), last=True),
    ):
        events += translator.handle(e)
    kinds = [e["type"] for e in events]
    assert kinds == [
        "input_audio_buffer.speech_started",
        DELTA,
        DELTA,
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        DELTA,
        COMPLETED,
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        DELTA,
        COMPLETED,
    ]
    first, second = events[0]["item_id"], events[7]["item_id"]
    assert first != second
    assert events[0]["audio_start_ms"] == 10500 and events[3]["audio_end_ms"] == 12000
    assert "".join(e["delta"] for e in events[:7] if e["type"] == DELTA) == "hello world and more"
    completed = events[6]
    assert completed["transcript"] == "hello world and more" and completed["item_id"] == first
    assert completed["usage"] == {"type": "duration", "seconds": 1.5}
    assert completed["words"] == [{"word": "hello", "start": 10.6, "end": 10.9}]
    assert events[10]["delta"] == "second one"  # one partial agrees with nothing: all comes with the final
    assert translator.open_items() == []


def test_translator_manual_item():
    translator = StreamTranslator(offset_s=0.0, vad=False, item_id="item_x")
    events = [e for x in (P("one t"), P("one two"), T("one two three")) for e in translator.handle(x)]
    assert [e["type"] for e in events] == [DELTA, DELTA, COMPLETED]
    assert [e.get("delta") for e in events[:2]] == ["one", " two three"]
    assert {e["item_id"] for e in events} == {"item_x"}


# ----------------------------------------------------------------------------- the WebSocket glue
class FakeStream:
    """Cuts the audio into utterances at silent frames: a partial per loud frame, an utterance after."""

    live_streams = 0

    def __init__(self, audio, stream_options, sample_rate):
        self.audio, self.rate, self.options = audio, sample_rate, stream_options
        self._gen = self._run()

    def __aiter__(self):
        return self

    async def __anext__(self):
        return await self._gen.__anext__()

    async def aclose(self):
        await self._gen.aclose()

    async def _frames(self):
        if isinstance(self.audio, np.ndarray):
            yield self.audio
            return
        async for frame in self.audio:
            yield frame

    async def _run(self):
        FakeStream.live_streams += 1
        try:
            index, start, words, pos = 0, None, 0, 0
            vad = self.options.endpointing is not None
            async for frame in self._frames():
                loud = bool(np.abs(frame).max() > 100)
                seconds = pos / self.rate
                pos += frame.size
                if loud:
                    if start is None:
                        start = seconds
                    words += 1
                    yield P(" ".join(f"w{i}" for i in range(words)) + " x", index, start)
                elif start is not None and vad:
                    yield U(index, start, pos / self.rate, T(" ".join(f"w{i}" for i in range(words))))
                    index, start, words = index + 1, None, 0
            if start is not None and vad:
                yield U(index, start, pos / self.rate, T(" ".join(f"w{i}" for i in range(words))), last=True)
            elif not vad:
                yield T(" ".join(f"w{i}" for i in range(words)))
        finally:
            FakeStream.live_streams -= 1


class FakeClient:
    def __init__(self, options):
        self.options = options

    def stream(self, audio, options=None, stream_options=None, *, sample_rate=None):
        return FakeStream(audio, stream_options, sample_rate)

    async def close(self):
        pass


@pytest.fixture
def app_client():
    FakeStream.live_streams = 0
    with TestClient(create_app(GatewayOptions(triton_url=TRITON, api_key=KEY), FakeClient)) as client:
        yield client


def _connect(client, **kwargs):
    return client.websocket_connect(
        "/v1/realtime?intent=transcription", headers={"Authorization": f"Bearer {KEY}"}, **kwargs
    )


def _append(ws, samples: np.ndarray):
    ws.send_text(
        json.dumps(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(samples.astype("<i2").tobytes()).decode()}
        )
    )


def _until(ws, kind):
    seen = []
    while True:
        event = ws.receive_json()
        seen.append(event)
        if event["type"] == kind:
            return seen


def _speech(rate=24000, seconds=0.1):
    return np.full(int(rate * seconds), 3000, np.int16)


def _silence(rate=24000, seconds=0.1):
    return np.zeros(int(rate * seconds), np.int16)


def test_realtime_session_server_vad(app_client):
    with _connect(app_client) as ws:
        created = ws.receive_json()
        assert created["type"] == "session.created"
        assert created["session"]["type"] == "transcription"
        ws.send_text(json.dumps({"type": "session.update", "session": {"type": "transcription"}}))
        assert ws.receive_json()["type"] == "session.updated"
        for _ in range(2):
            for _ in range(3):
                _append(ws, _speech())
            _append(ws, _silence())
        first = _until(ws, COMPLETED)
        second = _until(ws, COMPLETED)
    for events in (first, second):
        kinds = [e["type"] for e in events]
        assert kinds[0] == "input_audio_buffer.speech_started"
        assert "input_audio_buffer.speech_stopped" in kinds and DELTA in kinds
        assert events[-1]["transcript"] == "w0 w1 w2"
        assert "".join(e["delta"] for e in events if e["type"] == DELTA) == "w0 w1 w2"
    assert first[0]["audio_start_ms"] == 0 and second[0]["audio_start_ms"] == 400


def test_bad_frames_get_errors_and_the_socket_stays_usable(app_client):
    with _connect(app_client) as ws:
        ws.receive_json()
        ws.send_text("{oops")
        error = ws.receive_json()
        assert error["type"] == "error" and error["error"]["code"] == "invalid_json"
        ws.send_bytes(b"\x00\xff garbage")
        assert ws.receive_json()["error"]["code"] == "invalid_frame"
        ws.send_text(json.dumps({"type": "session.update", "event_id": "e1", "session": {"type": "realtime"}}))
        error = ws.receive_json()["error"]
        assert (error["code"], error["event_id"]) == ("unsupported_value", "e1")
        ws.send_text(json.dumps({"type": "session.update", "session": {}}))
        assert ws.receive_json()["type"] == "session.updated"


def test_manual_commit(app_client):
    with _connect(app_client) as ws:
        ws.receive_json()
        ws.send_text(json.dumps({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}}))
        assert ws.receive_json()["session"]["audio"]["input"]["turn_detection"] is None
        ws.send_text(json.dumps({"type": "input_audio_buffer.commit"}))
        assert ws.receive_json()["error"]["code"] == "input_audio_buffer_commit_empty"
        for _ in range(2):
            _append(ws, _speech())
        ws.send_text(json.dumps({"type": "input_audio_buffer.commit"}))
        events = _until(ws, COMPLETED)
        assert events[0]["type"] == "input_audio_buffer.committed"
        assert events[-1]["transcript"] == "w0"  # the fake hears one frame: the whole buffer


def test_beta_names(app_client):
    with _connect(app_client) as ws:
        ws.receive_json()
        ws.send_text(
            json.dumps({"type": "transcription_session.update", "session": {"input_audio_format": "pcm16_16khz"}})
        )
        updated = ws.receive_json()
        assert updated["type"] == "transcription_session.updated"
        assert updated["session"]["input_audio_format"] == "pcm16_16khz"
        ws.send_text(json.dumps({"type": "input_audio_buffer.clear"}))
        assert ws.receive_json()["type"] == "input_audio_buffer.cleared"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
def test_a_bad_key_is_refused(app_client, headers):
    from starlette.testclient import WebSocketDenialResponse

    with pytest.raises(WebSocketDenialResponse) as info, app_client.websocket_connect("/v1/realtime", headers=headers):
        pass
    assert info.value.status_code == 401
    assert info.value.json()["error"]["code"] in ("missing_api_key", "invalid_api_key")


def test_the_key_may_come_as_a_subprotocol(app_client):
    protocols = ["realtime", f"openai-insecure-api-key.{KEY}"]
    with app_client.websocket_connect("/v1/realtime?intent=transcription", subprotocols=protocols) as ws:
        assert ws.accepted_subprotocol == "realtime"
        assert ws.receive_json()["type"] == "session.created"


def test_a_vanished_client_frees_its_stream_at_once(app_client):
    import time

    with _connect(app_client) as ws:
        ws.receive_json()
        _append(ws, _speech())
        ws.receive_json()  # speech started: the stream is open
        assert FakeStream.live_streams == 1
        ws.send({"type": "websocket.disconnect", "code": 1006})  # the connection dropped, no close frame
        for _ in range(200):
            metrics = app_client.get("/metrics").text
            if "qwen3_asr_gateway_realtime_streams 0.0" in metrics and "realtime_sessions 0.0" in metrics:
                break
            time.sleep(0.01)
        assert "qwen3_asr_gateway_realtime_sessions 0.0" in metrics
        assert "qwen3_asr_gateway_realtime_streams 0.0" in metrics
        assert FakeStream.live_streams == 0


class SlowClosingStream(FakeStream):
    """A stream whose close outlasts the session's grace period: the shutdown cancels it mid-close."""

    async def aclose(self):
        await asyncio.sleep(30)


class SlowClosingClient(FakeClient):
    def stream(self, audio, options=None, stream_options=None, *, sample_rate=None):
        return SlowClosingStream(audio, stream_options, sample_rate)


def test_a_stream_cancelled_while_closing_leaves_the_gauges_at_zero(monkeypatch):
    import time

    import qwen3_asr_triton.gateway.realtime as realtime

    monkeypatch.setattr(realtime, "CLOSE_GRACE_SECONDS", 0.2)
    app = create_app(GatewayOptions(triton_url=TRITON, api_key=KEY), SlowClosingClient)
    with TestClient(app) as client:
        with _connect(client) as ws:
            ws.receive_json()
            _append(ws, _speech())
            ws.receive_json()  # speech started: the stream is open
            ws.send({"type": "websocket.disconnect", "code": 1006})
            for _ in range(300):
                metrics = client.get("/metrics").text
                if "realtime_sessions 0.0" in metrics:
                    break
                time.sleep(0.01)
        assert "qwen3_asr_gateway_realtime_sessions 0.0" in metrics
        assert "qwen3_asr_gateway_realtime_streams 0.0" in metrics


def test_the_page_is_served_without_a_key(app_client):
    page = app_client.get("/")
    assert page.status_code == 200 and "live captions" in page.text
    assert "/static/app.js" in page.text
    assert app_client.get("/static/app.js").status_code == 200
    assert app_client.get("/static/pcm-worklet.js").status_code == 200
    assert app_client.get("/static/..%2fapp.py").status_code == 404


def test_translator_tells_the_client_librarys_own_events_apart():
    """The real Partial, Transcription and Utterance (a Transcription has audio_seconds, as a Partial does)."""
    from qwen3_asr_triton.client import Partial, Segment, Transcription, Utterance, Word

    final = Transcription("one two", "English", 0.9, (Word("one", 0.1, 0.4),), (Segment("one two", 0.0, 1.0),))
    manual = StreamTranslator(vad=False, words=True)
    events = manual.handle(Partial("one t", "English", (), 0.5, 0, 0.01)) + manual.handle(final)
    assert [e["type"] for e in events] == [DELTA, COMPLETED]
    assert events[-1]["usage"]["seconds"] == 1.0 and events[-1]["words"][0]["word"] == "one"
    vad = StreamTranslator(vad=True)
    events = vad.handle(Partial("one t", "English", (), 0.5, 0, 0.01, utterance=2, utterance_start=0.2))
    events += vad.handle(Utterance(2, 0.2, 1.0, final, 3, 0.01, last=True))
    assert events[0]["type"] == "input_audio_buffer.speech_started"
    assert events[-1]["type"] == COMPLETED and events[-1]["transcript"] == "one two"
