"""The OpenAI-compatible gateway without a server: options, rendering, errors, uploads, routes.

Routes are exercised with Starlette's TestClient, with raw ASGI calls (to see how
much of a body is read) and with the official ``openai`` SDK over an in-process
ASGI transport; a fake gRPC client stands in for Triton.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import ClassVar

import httpx2
import openai
import pytest
import srt
import webvtt
from openai._streaming import SSEDecoder
from starlette.testclient import TestClient

from qwen3_asr_triton.client import (
    DeadlineExceededError,
    InvalidRequestError,
    MalformedResponseError,
    ServerUnavailableError,
    TranscribeOptions,
)
from qwen3_asr_triton.client.subtitles import build_cues, to_srt, to_vtt
from qwen3_asr_triton.client.types import ModelState, Segment, ServerHealth, Transcription, Word
from qwen3_asr_triton.gateway import GatewayOptions, create_app
from qwen3_asr_triton.gateway import cli as gateway_cli
from qwen3_asr_triton.gateway.calls import ClientGoneError, cancel_on_disconnect
from qwen3_asr_triton.gateway.errors import ApiError, from_client_error, public_message
from qwen3_asr_triton.gateway.params import parse_transcription_params
from qwen3_asr_triton.gateway.responses import (
    compression_ratio,
    delta_event,
    done_event,
    openai_language,
    render,
    render_json,
    render_verbose_json,
    speaker_label,
)
from qwen3_asr_triton.gateway.upload import FORM_OVERHEAD_BYTES, MAX_FIELD_BYTES, MAX_FIELDS, read_form

TRITON = "10.1.2.3:8001"
MODEL = "qwen3-asr"
KEY = "sk-test-key"
AUDIO = b"RIFF fake audio"

TEXT = "Hello world, this is a test."
WORDS = (
    Word("Hello", 0.10, 0.40),
    Word("world", 0.48, 0.90),
    Word("this", 1.20, 1.40),
    Word("is", 1.44, 1.52),
    Word("a", 1.56, 1.60),
    Word("test", 1.64, 2.00),
)
SEGMENTS = (Segment("Hello world,", 0.0, 1.1), Segment(" this is a test.", 1.1, 2.5))


def result(timestamps: bool = False, language: str | None = "English") -> Transcription:
    return Transcription(TEXT, language, 0.5, WORDS if timestamps else (), SEGMENTS, (11, 12, 13), "rid-1")


def diarized_result() -> Transcription:
    """``result()`` as a diarized answer: its two segments spoken by two speakers, a third with none."""
    words = tuple(replace(w, speaker=0 if w.start < 1.1 else 1) for w in WORDS)
    segments = (*(replace(s, speaker=k) for k, s in enumerate(SEGMENTS)), Segment("", 2.5, 3.0))
    return Transcription(TEXT, "English", 0.5, words, segments, (11, 12, 13), "rid-1")


# ----------------------------------------------------------------------------- a fake Triton client
@dataclass(frozen=True)
class Delta:
    """Stands in for the client's TextDelta (the gateway only reads ``.text``)."""

    text: str


class FakeClient:
    """What the gateway uses of AsyncQwen3ASRClient; behaviour is chosen by the audio bytes."""

    instances: ClassVar[list[FakeClient]] = []

    def __init__(self, options) -> None:
        self.options = options
        self.calls: list[tuple[bytes, TranscribeOptions]] = []
        self.closed = False
        self.healthy = True
        self.no_aligner = False
        self.no_diarizer = False
        self.index_calls = 0
        self.gate: asyncio.Event | None = None
        self.cancelled = 0
        self.stream_closed = 0
        FakeClient.instances.append(self)

    async def transcribe(self, audio, options=None, *, sample_rate=None):
        options = options or TranscribeOptions()
        self.calls.append((audio, options))
        if self.gate is not None:
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if audio == b"bad":
            raise InvalidRequestError(
                f"cannot decode AUDIO: not audio (infer qwen3_asr at {TRITON})", "INVALID_ARGUMENT"
            )
        if audio == b"down":
            raise ServerUnavailableError(f"connection refused (infer qwen3_asr at {TRITON})", "UNAVAILABLE")
        if audio == b"slow":
            raise DeadlineExceededError(f"infer qwen3_asr at {TRITON}: no response within 1 s", "DEADLINE_EXCEEDED")
        if audio == b"garbled":
            raise MalformedResponseError("expected one TEXT, got 0")
        if audio == b"bug":
            raise RuntimeError(f"secret internal state at {TRITON}")
        if options.timestamps and self.no_aligner:
            raise InvalidRequestError(
                "RETURN_TIMESTAMPS needs a forced aligner, and this deployment has none", "INVALID_ARGUMENT"
            )
        if options.diarize:
            return diarized_result()
        return result(options.timestamps)

    async def transcribe_stream(self, audio, options=None, *, sample_rate=None):
        self.calls.append((audio, options or TranscribeOptions()))
        try:
            if audio == b"bad":
                raise InvalidRequestError(f"cannot decode AUDIO (infer qwen3_asr at {TRITON})", "INVALID_ARGUMENT")
            for piece in ("Hello", " world,", "", " this is a test."):
                yield Delta(piece)
                if audio == b"breaks":
                    raise ServerUnavailableError("server went away", "UNAVAILABLE")
                if self.gate is not None:
                    await self.gate.wait()
            yield result()
        finally:
            self.stream_closed += 1

    async def health(self, timeout=None, model=None):
        return ServerHealth(True, self.healthy, self.healthy, "qwen3_asr", "2.51")

    async def models(self):
        self.index_calls += 1
        names = ["qwen3_asr", "decoder"] + ([] if self.no_aligner else ["aligner"])
        names += [] if self.no_diarizer else ["diarizer"]
        return [ModelState(name, "1", "READY") for name in names]

    async def close(self) -> None:
        self.closed = True


@pytest.fixture(autouse=True)
def _reset_fakes():
    FakeClient.instances = []
    yield
    FakeClient.instances = []


def make_app(**overrides):
    return create_app(GatewayOptions(triton_url=TRITON, **overrides), FakeClient)


@pytest.fixture
def client():
    with TestClient(make_app()) as test_client:
        yield test_client


def post(test_client, audio: bytes | None = AUDIO, headers=None, **fields):
    data = {"model": MODEL, **fields}
    # Without audio, another (binary) file keeps the body multipart; the gateway ignores it.
    files = {"file": ("clip.wav", audio, "audio/wav")} if audio is not None else {"notes": ("n.bin", b"\xff\x00")}
    return test_client.post("/v1/audio/transcriptions", data=data, files=files, headers=headers)


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# ----------------------------------------------------------------------------- options
def test_options_defaults_and_client_options():
    options = GatewayOptions(triton_url=" 127.0.0.1:8001 ")
    assert options.triton_url == "127.0.0.1:8001"
    assert (options.host, options.port, options.api_key, options.served_model_name) == ("127.0.0.1", 8080, None, MODEL)
    assert options.max_file_bytes == 25 * 1024 * 1024
    assert options.timeout == 300.0 and options.grpc_channels == 2
    assert options.client_options().url == "127.0.0.1:8001" and options.client_options().timeout == 300.0
    assert GatewayOptions(triton_url="h:1", api_key="").api_key is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"triton_url": "http://h:8001"}, "scheme"),
        ({"triton_url": "nohost"}, "host:port"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"port": True}, "port"),
        ({"host": " "}, "host"),
        ({"api_key": "has space"}, "api_key"),
        ({"api_key": 5}, "api_key"),
        ({"served_model_name": ""}, "served_model_name"),
        ({"served_model_name": "a b"}, "served_model_name"),
        ({"max_file_bytes": 0}, "max_file_bytes"),
        ({"max_file_bytes": 2**31}, "max_file_bytes"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": 1.5}, "max_concurrency"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"timeout": "5"}, "timeout"),
        ({"grpc_channels": 0}, "grpc_channels"),
        ({"grpc_channels": 65}, "grpc_channels"),
    ],
)
def test_options_are_validated_once(overrides, message):
    kwargs = {"triton_url": "127.0.0.1:8001", **overrides}
    with pytest.raises(ValueError, match=message):
        GatewayOptions(**kwargs)


def test_api_key_is_not_echoed_in_errors():
    with pytest.raises(ValueError) as info:
        GatewayOptions(triton_url="h:1", api_key="secret value")
    assert "secret" not in str(info.value)


# ----------------------------------------------------------------------------- rendering
def test_json_and_text():
    res = result()
    assert render_json(res) == {"text": TEXT, "usage": {"type": "duration", "seconds": 2.5}}
    assert json.loads(render(res, "json")) == render_json(res)
    assert render(res, "text") == TEXT + "\n"
    with pytest.raises(ValueError, match="response_format"):
        render(res, "xml_json")


@pytest.mark.parametrize("timestamps", [False, True])
def test_subtitles_are_the_cli_ones(timestamps):
    res = result(timestamps)
    body = render(res, "srt")
    assert body == to_srt(build_cues(res))
    assert render(res, "vtt") == to_vtt(build_cues(res))
    cues = list(srt.parse(body))
    assert " ".join(c.content.replace("\n", " ") for c in cues) == TEXT
    captions = webvtt.from_string(render(res, "vtt"))
    assert " ".join(c.text.replace("\n", " ") for c in captions) == TEXT


def test_verbose_json():
    res = result(timestamps=True)
    body = render_verbose_json(res, segments=True, words=True)
    assert body["task"] == "transcribe" and body["language"] == "english"
    assert body["duration"] == 2.5 and body["text"] == TEXT
    assert body["usage"] == {"type": "duration", "seconds": 2.5}
    assert body["words"] == [{"word": w.text, "start": w.start, "end": w.end} for w in WORDS]
    assert [s["id"] for s in body["segments"]] == [0, 1]
    first = body["segments"][0]
    data = SEGMENTS[0].text.encode()
    assert first["compression_ratio"] == len(data) / len(zlib.compress(data))
    assert (first["start"], first["end"], first["text"], first["seek"]) == (0.0, 1.1, "Hello world,", 0)
    assert first["temperature"] == 0.0 and first["no_speech_prob"] is None
    assert "words" not in render_verbose_json(res, segments=True, words=False)
    assert "segments" not in render_verbose_json(res, segments=False, words=True)


def test_verbose_json_segment_tokens_and_logprob_come_from_the_segment():
    plain = render_verbose_json(result())["segments"][0]
    assert plain["tokens"] == [] and plain["avg_logprob"] is None  # not reported: empty / null, never invented
    seg = SimpleNamespace(text="Hi", start=0.0, end=1.0, token_ids=(5, 6), avg_logprob=-0.25, speaker=None)
    res = SimpleNamespace(text="Hi", language="Chinese,English", audio_seconds=1.0, segments=(seg,), words=())
    body = render_verbose_json(res)
    assert body["segments"][0]["tokens"] == [5, 6] and body["segments"][0]["avg_logprob"] == -0.25
    assert body["language"] == "chinese,english"


def test_language_names_and_compression_ratio():
    assert openai_language("English") == "english"
    assert openai_language(None) is None and openai_language("") is None
    assert compression_ratio("") == 0.0
    repetitive = "la " * 200
    assert compression_ratio(repetitive) > 2.4 > compression_ratio("The quick brown fox.")


def test_sse_events_parse_as_the_sdk_parses_them():
    raw = delta_event("Hel") + delta_event("lo ✓") + done_event(result())
    events = [e.json() for e in SSEDecoder().iter_bytes(iter([raw]))]
    assert events == [
        {"type": "transcript.text.delta", "delta": "Hel"},
        {"type": "transcript.text.delta", "delta": "lo ✓"},
        {"type": "transcript.text.done", "text": TEXT, "usage": {"type": "duration", "seconds": 2.5}},
    ]


# ----------------------------------------------------------------------------- errors
def test_error_shape_and_client_error_mapping():
    err = ApiError(400, "x" * 5000, param="file", code="c")
    assert err.body() == {
        "error": {"message": err.message, "type": "invalid_request_error", "param": "file", "code": "c"}
    }
    assert len(err.message) <= 800
    cases = [
        (InvalidRequestError(f"bad audio (infer qwen3_asr at {TRITON})", "INVALID_ARGUMENT"), 400, "bad audio"),
        (ServerUnavailableError(f"refused (infer qwen3_asr at {TRITON}; gave up)", "UNAVAILABLE"), 503, None),
        (DeadlineExceededError(f"infer qwen3_asr at {TRITON}: late", "DEADLINE_EXCEEDED"), 504, None),
        (MalformedResponseError("no TEXT"), 502, None),
    ]
    for exc, status, message in cases:
        mapped = from_client_error(exc, TRITON)
        assert mapped.status == status
        assert TRITON not in mapped.message
        if message is not None:
            assert mapped.message == message
    assert public_message(InvalidRequestError(f"x at {TRITON}"), TRITON) == "x"


# ----------------------------------------------------------------------------- parameters
def fields(**values) -> dict[str, list[str]]:
    out = {"model": [MODEL]}
    for name, value in values.items():
        out[name.replace("__", "[]")] = value if isinstance(value, list) else [value]
    return out


def test_params_map_onto_transcribe_options():
    params = parse_transcription_params(fields(language="en", prompt="Triton, Qwen"), MODEL)
    assert params.options == TranscribeOptions(language="English", context="Triton, Qwen")
    assert (params.response_format, params.stream, params.words, params.segments) == ("json", False, False, True)
    params = parse_transcription_params(
        fields(response_format="verbose_json", timestamp_granularities__=["word"], temperature="0.0"), MODEL
    )
    assert params.options.timestamps and params.words and not params.segments
    params = parse_transcription_params(fields(stream="true", response_format="text", unknown_field="x"), MODEL)
    assert params.stream and params.response_format == "text"
    assert parse_transcription_params(fields(language="French"), MODEL).options.language == "French"


@pytest.mark.parametrize(
    ("values", "status", "param", "code"),
    [
        ({"model": []}, 400, "model", "missing_required_parameter"),
        ({"model": ["whisper-1"]}, 404, "model", "model_not_found"),
        ({"language": "klingon"}, 400, "language", "invalid_value"),
        ({"language": ["en", "fr"]}, 400, "language", "invalid_value"),
        ({"response_format": "xml_json"}, 400, "response_format", "invalid_value"),
        ({"num_speakers": "2"}, 400, "num_speakers", "invalid_value"),
        ({"num_speakers": "two", "response_format": "diarized_json"}, 400, "num_speakers", "invalid_value"),
        ({"min_speakers": "4", "max_speakers": "2", "response_format": "diarized_json"}, 400, "min_speakers", None),
        ({"num_speakers": "99", "response_format": "diarized_json"}, 400, "num_speakers", "invalid_value"),
        ({"known_speaker_names[]": ["agent"], "response_format": "diarized_json"}, 400, "known_speaker_names", None),
        ({"model": [MODEL + "-diarize"], "stream": "true"}, 400, "stream", "invalid_value"),
        ({"temperature": "0.7"}, 400, "temperature", "unsupported_value"),
        ({"temperature": "nan"}, 400, "temperature", "unsupported_value"),
        ({"temperature": "warm"}, 400, "temperature", "invalid_value"),
        ({"timestamp_granularities[]": ["word"]}, 400, "timestamp_granularities", "invalid_value"),
        (
            {"timestamp_granularities[]": ["char"], "response_format": "verbose_json"},
            400,
            "timestamp_granularities",
            "invalid_value",
        ),
        ({"include[]": ["logprobs"]}, 400, "include", "unsupported_value"),
        ({"stream": "true", "response_format": "srt"}, 400, "stream", "unsupported_value"),
        ({"stream": "maybe"}, 400, "stream", "invalid_value"),
    ],
)
def test_bad_params(values, status, param, code):
    form = {"model": [MODEL]}
    form.update({k: v if isinstance(v, list) else [v] for k, v in values.items()})
    with pytest.raises(ApiError) as info:
        parse_transcription_params(form, MODEL)
    assert (info.value.status, info.value.param) == (status, param)
    if code is not None:
        assert info.value.code == code


# ----------------------------------------------------------------------------- routes (TestClient)
@pytest.mark.parametrize("fmt", ["json", "text", "srt", "vtt", "verbose_json"])
def test_every_format_over_http(client, fmt):
    response = post(client, response_format=fmt)
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "rid-1"
    res = result(timestamps=fmt in ("srt", "vtt"))  # subtitles ask for word timestamps
    if fmt in ("json", "verbose_json"):
        assert response.headers["content-type"] == "application/json"
        assert response.json() == json.loads(render(res, fmt))
    else:
        assert response.text == render(res, fmt)
    calls = [call for fake in FakeClient.instances for call in fake.calls]
    assert [options.timestamps for _, options in calls] == [fmt in ("srt", "vtt")]


def test_subtitles_fall_back_without_an_aligner():
    with TestClient(make_app(grpc_channels=1)) as test_client:
        fake = FakeClient.instances[0]
        fake.no_aligner = True  # the repository index lists no aligner
        first = post(test_client, response_format="srt")
        assert first.status_code == 200 and first.text == render(result(False), "srt")
        assert [o.timestamps for _, o in fake.calls] == [False]
        assert post(test_client, response_format="vtt").status_code == 200
        assert [o.timestamps for _, o in fake.calls] == [False, False]
        assert fake.index_calls == 1  # asked once
        words = post(test_client, response_format="verbose_json", **{"timestamp_granularities[]": "word"})
        assert words.status_code == 400 and "forced aligner" in error_of(words)["message"]


def test_subtitles_in_a_language_the_aligner_lacks_are_timed_by_segments():
    with TestClient(make_app(grpc_channels=1)) as test_client:
        fake = FakeClient.instances[0]
        assert post(test_client, response_format="srt", language="th").status_code == 200
        assert post(test_client, response_format="srt", language="en").status_code == 200
        assert [(o.language, o.timestamps) for _, o in fake.calls] == [("Thai", False), ("English", True)]


def test_round_robin_over_the_channels():
    with TestClient(make_app(grpc_channels=3)) as test_client:
        for _ in range(6):
            assert post(test_client).status_code == 200
        assert [len(f.calls) for f in FakeClient.instances] == [2, 2, 2]
    assert all(f.closed for f in FakeClient.instances)


@pytest.mark.parametrize(
    ("audio", "status", "error_type", "code"),
    [
        (b"bad", 400, "invalid_request_error", "invalid_request"),
        (b"down", 503, "server_error", "service_unavailable"),
        (b"slow", 504, "server_error", "timeout"),
        (b"garbled", 502, "server_error", "upstream_error"),
        (b"bug", 500, "server_error", "internal_error"),
    ],
)
def test_triton_failures_become_openai_errors(client, audio, status, error_type, code):
    response = post(client, audio=audio)
    assert response.status_code == status
    error = error_of(response)
    assert (error["type"], error["code"]) == (error_type, code)
    assert TRITON not in response.text and "secret" not in response.text
    # The gateway keeps serving.
    assert post(client).status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "param", "code"),
    [
        ({"audio": None}, "file", "missing_required_parameter"),
        ({"language": "xx-unknown"}, "language", "invalid_value"),
        ({"response_format": "tsv"}, "response_format", "invalid_value"),
        ({"temperature": "0.7"}, "temperature", "unsupported_value"),
    ],
)
def test_bad_requests(client, kwargs, param, code):
    response = post(client, **kwargs)
    assert response.status_code == 400
    error = error_of(response)
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)


def test_not_multipart_and_malformed_bodies(client):
    url = "/v1/audio/transcriptions"
    response = client.post(url, json={"model": MODEL})
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_content_type"
    headers = {"content-type": "multipart/form-data"}
    response = client.post(url, content=b"x", headers=headers)
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_content_type"
    headers = {"content-type": "multipart/form-data; boundary=XYZ"}
    truncated = b'--XYZ\r\nContent-Disposition: form-data; name="model"\r\n\r\nqwen3-asr\r\n--XYZ\r\nContent-Disp'
    response = client.post(url, content=truncated, headers=headers)
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_multipart"
    garbage = b"--XYZ\r\nno colon here\r\n\r\n"
    response = client.post(url, content=garbage, headers=headers)
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_multipart"
    nameless = b"--XYZ\r\nContent-Disposition: form-data\r\n\r\nv\r\n--XYZ--\r\n"
    response = client.post(url, content=nameless, headers=headers)
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_multipart"
    two_files = b"".join(
        b'--XYZ\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nabc\r\n' for _ in range(2)
    )
    response = client.post(url, content=two_files + b"--XYZ--\r\n", headers=headers)
    assert response.status_code == 400 and error_of(response)["param"] == "file"
    bad_utf8 = b'--XYZ\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n\xff\xfe\r\n--XYZ--\r\n'
    response = client.post(url, content=bad_utf8, headers=headers)
    assert response.status_code == 400 and error_of(response)["param"] == "prompt"
    assert post(client).status_code == 200


def test_field_limits(client):
    too_many = {f"extra{i}": "x" for i in range(MAX_FIELDS + 1)}
    response = post(client, **too_many)
    assert response.status_code == 400 and error_of(response)["code"] == "too_many_fields"
    response = post(client, prompt="p" * (MAX_FIELD_BYTES + 1))
    assert response.status_code == 400 and error_of(response)["param"] == "prompt"
    assert post(client, unknown="ignored", chunking_strategy="auto").status_code == 200


def test_file_limit(client):
    with TestClient(make_app(max_file_bytes=1000)) as small:
        assert post(small, audio=b"a" * 1000).status_code == 200
        response = post(small, audio=b"a" * 1001)
        assert response.status_code == 400
        assert error_of(response)["code"] == "file_too_large" and error_of(response)["param"] == "file"


def test_api_key():
    with TestClient(make_app(api_key=KEY)) as test_client:
        for headers, code in [
            (None, "missing_api_key"),
            ({"Authorization": "Basic abc"}, "missing_api_key"),
            ({"Authorization": "Bearer wrong"}, "invalid_api_key"),
            ({"Authorization": f"Bearer {KEY}x"}, "invalid_api_key"),
        ]:
            for response in (
                post(test_client, headers=headers),
                test_client.get("/v1/models", headers=headers),
                test_client.post("/v1/audio/translations", headers=headers),
            ):
                assert response.status_code == 401
                assert error_of(response)["code"] == code
                assert response.headers["www-authenticate"].startswith("Bearer")
        good = {"Authorization": f"Bearer {KEY}"}
        assert post(test_client, headers=good).status_code == 200
        assert test_client.get("/v1/models", headers=good).status_code == 200
        assert test_client.get("/health").status_code == 200
        assert test_client.get("/metrics").status_code == 200


def test_models_translations_and_unknown_routes(client):
    listing = client.get("/v1/models").json()
    assert listing["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in listing["data"]] == [
        (MODEL, "model", "qwen3-asr-triton"),
        (MODEL + "-diarize", "model", "qwen3-asr-triton"),
    ]
    assert client.get(f"/v1/models/{MODEL}").json() == listing["data"][0]
    assert client.get(f"/v1/models/{MODEL}-diarize").json() == listing["data"][1]
    missing = client.get("/v1/models/whisper-1")
    assert missing.status_code == 404 and error_of(missing)["code"] == "model_not_found"
    assert client.get("/v1/models/org/model").status_code == 404
    translation = client.post("/v1/audio/translations", files={"file": ("a.wav", AUDIO)}, data={"model": MODEL})
    assert translation.status_code == 400
    error = error_of(translation)
    assert (error["type"], error["code"]) == ("invalid_request_error", "unsupported")
    unknown = client.get("/v1/chat/completions")
    assert unknown.status_code == 404 and error_of(unknown)["type"] == "invalid_request_error"
    wrong_method = client.get("/v1/audio/transcriptions")
    assert wrong_method.status_code == 405 and error_of(wrong_method)["message"]


def test_health_is_cached_and_follows_triton():
    with TestClient(make_app(grpc_channels=1)) as test_client:
        fake = FakeClient.instances[0]
        assert test_client.get("/health").json() == {"status": "ok"}
        fake.healthy = False
        assert test_client.get("/health").status_code == 200  # the cached answer (about a second)
        pool = test_client.app.state.gateway.pool
        pool._health._expires = -1.0  # age the cache
        response = test_client.get("/health")
        assert response.status_code == 503 and response.json() == {"status": "unavailable"}


def test_metrics_count_routes_and_statuses(client):
    post(client)
    post(client, audio=b"bad")
    client.get("/v1/models")
    client.get("/no/such/path")
    text = client.get("/metrics").text
    assert 'qwen3_asr_gateway_requests_total{route="/v1/audio/transcriptions",status="200"} 1.0' in text
    assert 'qwen3_asr_gateway_requests_total{route="/v1/audio/transcriptions",status="400"} 1.0' in text
    assert 'qwen3_asr_gateway_requests_total{route="/v1/models",status="200"} 1.0' in text
    assert 'qwen3_asr_gateway_requests_total{route="other",status="404"} 1.0' in text
    assert "/no/such/path" not in text
    assert 'qwen3_asr_gateway_request_seconds_count{route="/v1/audio/transcriptions"} 2.0' in text
    assert "qwen3_asr_gateway_requests_in_flight 0.0" in text


# ----------------------------------------------------------------------------- streaming (TestClient)
def sse_events(text: str) -> list[dict]:
    return [e.json() for e in SSEDecoder().iter_bytes(iter([text.encode()]))]


def test_stream_events(client):
    response = post(client, stream="true")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    deltas = [e["delta"] for e in events[:-1]]
    assert all(e["type"] == "transcript.text.delta" for e in events[:-1])
    assert deltas == ["Hello", " world,", " this is a test."]  # empty deltas are not sent
    assert events[-1] == {"type": "transcript.text.done", "text": TEXT, "usage": {"type": "duration", "seconds": 2.5}}
    assert "".join(deltas) == events[-1]["text"]
    assert "[DONE]" not in response.text


def test_stream_errors(client):
    before = post(client, audio=b"bad", stream="true")
    assert before.status_code == 400 and error_of(before)["type"] == "invalid_request_error"
    during = post(client, audio=b"breaks", stream="true")
    assert during.status_code == 200
    events = sse_events(during.text)
    assert events[0] == {"type": "transcript.text.delta", "delta": "Hello"}
    assert events[-1]["error"]["code"] == "service_unavailable"
    assert sum(f.stream_closed for f in FakeClient.instances) == 2
    assert client.app.state.gateway.limit.active == 0


# ----------------------------------------------------------------------------- the official SDK in-process
def sdk_call(app, call, api_key: str = KEY):
    async def run():
        async with app.router.lifespan_context(app):
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(transport=transport) as http:
                sdk = openai.AsyncOpenAI(base_url="http://gateway/v1", api_key=api_key, http_client=http, max_retries=0)
                return await call(sdk)

    return asyncio.run(run())


def test_sdk_types_and_exceptions():
    app = make_app(api_key=KEY)
    transcriptions = lambda sdk: sdk.audio.transcriptions  # noqa: E731

    verbose = sdk_call(
        app,
        lambda sdk: transcriptions(sdk).create(
            file=("a.wav", AUDIO), model=MODEL, response_format="verbose_json", timestamp_granularities=["word"]
        ),
    )
    assert isinstance(verbose, openai.types.audio.TranscriptionVerbose)
    assert [(w.word, w.start, w.end) for w in verbose.words] == [(w.text, w.start, w.end) for w in WORDS]

    async def collect(sdk):
        stream = await transcriptions(sdk).create(file=("a.wav", AUDIO), model=MODEL, stream=True)
        return [event async for event in stream]

    events = sdk_call(app, collect)
    assert [type(e).__name__ for e in events] == ["TranscriptionTextDeltaEvent"] * 3 + ["TranscriptionTextDoneEvent"]
    assert events[-1].text == TEXT

    for kwargs, exc_type, status in [
        ({"model": "whisper-1"}, openai.NotFoundError, 404),
        ({"temperature": 0.7}, openai.BadRequestError, 400),
        ({"file": ("a.wav", b"bad")}, openai.BadRequestError, 400),
        ({"file": ("a.wav", b"down")}, openai.InternalServerError, 503),
    ]:
        request = {"file": ("a.wav", AUDIO), "model": MODEL, **kwargs}
        with pytest.raises(exc_type) as info:
            sdk_call(app, lambda sdk, r=request: transcriptions(sdk).create(**r))
        assert info.value.status_code == status
        assert set(info.value.body) == {"message", "type", "param", "code"}
    with pytest.raises(openai.AuthenticationError):
        sdk_call(app, lambda sdk: sdk.models.list(), api_key="wrong")


# ----------------------------------------------------------------------------- raw ASGI: limits and disconnects
class RawCall:
    """Calls the app with an ASGI receive that counts the body messages pulled."""

    def __init__(self, chunks, disconnect: asyncio.Event | None = None) -> None:
        self.chunks = chunks  # an iterator of bytes
        self.pulled = 0
        self.body_done = False
        self.disconnect = disconnect or asyncio.Event()
        self.messages: list[dict] = []

    async def receive(self) -> dict:
        if not self.body_done:
            chunk = next(self.chunks, None)
            if chunk is not None:
                self.pulled += 1
                return {"type": "http.request", "body": chunk, "more_body": True}
            self.body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int | None:
        return next((m["status"] for m in self.messages if m["type"] == "http.response.start"), None)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")

    async def run(self, app, headers: list[tuple[str, str]]) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/audio/transcriptions",
            "raw_path": b"/v1/audio/transcriptions",
            "query_string": b"",
            "root_path": "",
            "headers": [(k.encode(), v.encode()) for k, v in headers],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8080),
        }
        await app(scope, self.receive, self.send)


BOUNDARY = "gatewayboundary"
MULTIPART = [("content-type", f"multipart/form-data; boundary={BOUNDARY}")]


def form_head(name: str = "file") -> bytes:
    model = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{MODEL}\r\n'
    return (model + f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="a.wav"\r\n\r\n').encode()


def endless_chunks(size: int = 4096):
    yield form_head()
    while True:
        yield b"\0" * size


def test_declared_oversize_body_is_refused_unread():
    app = make_app(max_file_bytes=10_000)
    call = RawCall(endless_chunks())
    headers = [*MULTIPART, ("content-length", str(10_000 + FORM_OVERHEAD_BYTES + 1))]
    asyncio.run(call.run(app, headers))
    assert call.status == 400 and json.loads(call.body)["error"]["code"] == "file_too_large"
    assert call.pulled == 0


def test_chunked_oversize_upload_is_cut_off_as_it_streams_in():
    limit = 40_000
    app = make_app(max_file_bytes=limit)
    call = RawCall(endless_chunks(4096))
    asyncio.run(call.run(app, MULTIPART))  # no Content-Length: a chunked upload
    assert call.status == 400 and json.loads(call.body)["error"]["code"] == "file_too_large"
    assert call.pulled <= 1 + limit // 4096 + 1  # the head, the allowed bytes, the chunk that passed the limit


def test_oversize_body_of_fields_is_cut_off():
    app = make_app(max_file_bytes=10_000)

    def chunks():
        field = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="x"\r\n\r\n{"v" * 1000}\r\n'.encode()
        while True:
            yield field

    call = RawCall(chunks())
    asyncio.run(call.run(app, MULTIPART))
    assert call.status == 400 and json.loads(call.body)["error"]["code"] == "too_many_fields"
    assert call.pulled == MAX_FIELDS + 1


def test_stalled_and_endless_uploads_time_out():
    headers = dict(MULTIPART)

    async def stalls():
        yield form_head()
        await asyncio.sleep(3600)
        yield b""

    async def drips():
        yield form_head()
        while True:
            await asyncio.sleep(0.01)
            yield b"\0"

    async def read(body, **timeouts):
        with pytest.raises(ApiError) as info:
            await asyncio.wait_for(read_form(headers, body, 10_000, **timeouts), 5)
        return info.value

    stalled = asyncio.run(read(stalls(), idle_timeout=0.1))
    assert (stalled.status, stalled.code) == (408, "upload_timeout") and "stalled" in stalled.message
    endless = asyncio.run(read(drips(), idle_timeout=1.0, total_timeout=0.3))
    assert (endless.status, endless.code) == (408, "upload_timeout") and "longer than" in endless.message


def complete_form(audio: bytes, **extra: str) -> bytes:
    parts = [form_head() + audio + b"\r\n"]
    for name, value in extra.items():
        parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize("stream", [False, True])
def test_disconnect_cancels_the_triton_call(stream):
    async def scenario():
        app = make_app(grpc_channels=1)
        async with app.router.lifespan_context(app):
            fake = FakeClient.instances[0]
            fake.gate = asyncio.Event()  # Triton never answers
            gone = asyncio.Event()
            extra = {"stream": "true"} if stream else {}
            call = RawCall(iter([complete_form(AUDIO, **extra)]), gone)
            task = asyncio.create_task(call.run(app, MULTIPART))
            for _ in range(100):
                await asyncio.sleep(0.01)
                if fake.calls and (not stream or call.status == 200):
                    break
            assert app.state.gateway.limit.active == 1
            gone.set()
            await asyncio.wait_for(task, 5)
            return fake, call, app.state.gateway.limit.active

    fake, call, active = asyncio.run(scenario())
    assert active == 0
    if stream:
        assert fake.stream_closed == 1 and call.status == 200
        assert b"transcript.text.done" not in call.body
    else:
        assert fake.cancelled == 1


def test_concurrency_limit_answers_503_at_once():
    async def scenario():
        app = make_app(grpc_channels=1, max_concurrency=2)
        async with app.router.lifespan_context(app):
            fake = FakeClient.instances[0]
            fake.gate = asyncio.Event()
            busy = [RawCall(iter([complete_form(AUDIO)])) for _ in range(2)]
            tasks = [asyncio.create_task(c.run(app, MULTIPART)) for c in busy]
            while len(fake.calls) < 2:
                await asyncio.sleep(0.01)
            refused = RawCall(iter([complete_form(AUDIO)]))
            await asyncio.wait_for(refused.run(app, MULTIPART), 2)
            fake.gate.set()
            await asyncio.gather(*tasks)
            return busy, refused, app.state.gateway.limit.active

    busy, refused, active = asyncio.run(scenario())
    assert [c.status for c in busy] == [200, 200]
    assert refused.status == 503 and refused.pulled == 0  # refused before its body was read
    error = json.loads(refused.body)["error"]
    assert (error["type"], error["code"]) == ("server_error", "server_busy")
    headers = dict(next(m for m in refused.messages if m["type"] == "http.response.start")["headers"])
    assert headers[b"retry-after"] == b"1"
    assert active == 0


def test_cancel_on_disconnect():
    async def scenario():
        gone = asyncio.Event()

        async def receive():
            await gone.wait()
            return {"type": "http.disconnect"}

        assert await cancel_on_disconnect(asyncio.sleep(0, "done"), receive) == "done"
        cancelled = asyncio.Event()

        async def forever():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        asyncio.get_running_loop().call_later(0.05, gone.set)
        with pytest.raises(ClientGoneError):
            await cancel_on_disconnect(forever(), receive)
        return cancelled.is_set()

    assert asyncio.run(scenario())


# ----------------------------------------------------------------------------- command line
def test_cli_dispatch(capsys, monkeypatch):
    assert gateway_cli.main(["--help"]) == 0
    assert "serve-openai" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        gateway_cli.main(["serve-openai", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--triton-url", "--host", "--port", "--api-key", "--served-model-name", "--max-file-bytes"):
        assert flag in out
    for flag in ("--max-concurrency", "--timeout", "--grpc-channels", "--log-level"):
        assert flag in out
    monkeypatch.delenv("QWEN3_ASR_URL", raising=False)
    with pytest.raises(SystemExit) as info:
        gateway_cli.main(["serve-openai", "--triton-url", "127.0.0.1:8001", "--served-model-name", "a b"])
    assert info.value.code == 2
    assert "served_model_name" in capsys.readouterr().err
    # Every other command goes to the client CLI unchanged.
    seen = []
    monkeypatch.setattr(gateway_cli, "client_main", lambda argv: seen.append(argv) or 7)
    assert gateway_cli.main(["-v", "health", "--url", "h:1"]) == 7
    assert seen == [["-v", "health", "--url", "h:1"]]


def test_cli_serve_configures_uvicorn(monkeypatch):
    import uvicorn

    captured = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: captured.update(app=app, **kwargs))
    monkeypatch.setenv("QWEN3_ASR_API_KEY", "from-env")
    argv = ["serve-openai", "--triton-url", "127.0.0.1:8001", "--port", "9999", "--max-concurrency", "8"]
    assert gateway_cli.main(argv) == 0
    assert captured["host"] == "127.0.0.1" and captured["port"] == 9999
    assert captured["limit_concurrency"] >= 8 and captured["h11_max_incomplete_event_size"] > 0
    assert captured["app"].state.gateway.options.api_key == "from-env"


# ----------------------------------------------------------------------------- speakers
def test_speakers_are_labelled_with_letters_as_openai_does():
    assert [speaker_label(k) for k in (0, 1, 25, 26, 27, 701, 702)] == ["A", "B", "Z", "AA", "AB", "ZZ", "AAA"]
    assert speaker_label(None) == "unknown"


def test_diarized_json_lists_the_segments_with_their_speakers():
    body = json.loads(render(diarized_result(), "diarized_json"))
    assert body == {
        "task": "transcribe",
        "duration": 3.0,
        "text": TEXT,
        "segments": [
            {"type": "transcript.text.segment", "id": "seg_0", "start": 0.0, "end": 1.1, "text": "Hello world,"}
            | {"speaker": "A"},
            {"type": "transcript.text.segment", "id": "seg_1", "start": 1.1, "end": 2.5, "text": " this is a test."}
            | {"speaker": "B"},
        ],
        "usage": {"type": "duration", "seconds": 3.0},
    }
    verbose = render_verbose_json(diarized_result(), words=True)
    assert [s.get("speaker") for s in verbose["segments"]] == ["A", "B", None]
    assert "speaker" not in render_verbose_json(result())["segments"][0]


def test_diarization_is_asked_for_by_format_or_by_model_name():
    assert parse_transcription_params(fields(response_format="diarized_json"), MODEL).options.diarize
    params = parse_transcription_params(fields(model=MODEL + "-diarize", response_format="srt"), MODEL)
    assert params.options.diarize and params.response_format == "srt"
    assert not parse_transcription_params(fields(response_format="verbose_json"), MODEL).options.diarize
    hinted = parse_transcription_params(
        fields(response_format="diarized_json", min_speakers="2", max_speakers="3"), MODEL
    ).options
    assert (hinted.num_speakers, hinted.min_speakers, hinted.max_speakers) == (None, 2, 3)


def test_diarized_json_over_http(client):
    response = post(client, response_format="diarized_json", num_speakers="2")
    assert response.status_code == 200, response.text
    assert response.json() == json.loads(render(diarized_result(), "diarized_json"))
    ((_, options),) = [call for fake in FakeClient.instances for call in fake.calls]
    assert options.diarize and options.num_speakers == 2


def test_the_diarizing_name_is_listed_only_with_a_diarizer():
    with TestClient(make_app()) as test_client:
        test_client.get("/health")
        for fake in FakeClient.instances:
            fake.no_diarizer = True
        assert [m["id"] for m in test_client.get("/v1/models").json()["data"]] == [MODEL]
        assert test_client.get(f"/v1/models/{MODEL}-diarize").status_code == 404
