"""The OpenAI-compatible gateway end to end: a real Triton server, ``qwen3-asr serve-openai`` and the ``openai`` SDK.

Every answer is compared with what ``qwen3_asr`` itself returns over gRPC for
the same file and options (the served model has random weights, so the words
mean nothing: only agreement counts).
"""

from __future__ import annotations

import html
import itertools
import json
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import srt
import webvtt

from qwen3_asr_triton.client import ClientOptions, Qwen3ASRClient, TranscribeOptions
from qwen3_asr_triton.client.subtitles import build_cues, to_srt, to_vtt
from tests.harness import GATEWAY_API_KEY, GATEWAY_MAX_FILE_BYTES, free_ports
from tests.test_faults import _decoder, _wait_until_quiet
from tests.triton_requests import transcribe

pytestmark = pytest.mark.server

CLI = str(Path(sys.executable).with_name("qwen3-asr"))
API_KEY = GATEWAY_API_KEY
MODEL = "qwen3-asr"
MAX_FILE_BYTES = GATEWAY_MAX_FILE_BYTES
# Bytes no decoder reads as audio.
NOISE = b"\x00\x01not audio at all" * 64
CONTEXT = "Glossary: Triton, Kubernetes, Qwen3-ASR, perf_analyzer."
# Word and segment times travel as float32 from Triton and are rounded to the millisecond by the client.
TIME_TOLERANCE = 6e-4
# Two deltas this far apart came from different decoder steps (a step of the tiny model takes 5-20 ms
# on the CPUs this suite runs on; pieces of one finished result arrive well under 1 ms apart).
STEP_GAP_SECONDS = 1e-3
# Languages whose words the aligner splits without optional server packages (as in test_client_server).
ALIGNED = ("English", "German", "French", "Spanish", "Chinese", "Russian", "Italian", "Portuguese")


@dataclass
class Gateway:
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def gateway(triton_server):
    """The gateway ``serve_cpu.sh --openai-port`` started next to the session's Triton.

    The tests' server script runs it with ``QWEN3_ASR_API_KEY`` set and the options in
    ``tests.harness.GATEWAY_ARGS``; its log is the server's log.
    """
    port = int(triton_server.openai_url.rsplit(":", 1)[1])
    with urllib.request.urlopen(f"{triton_server.openai_url}/health", timeout=10) as response:
        assert response.status == 200
    pids = triton_server.gateway_pids()
    assert len(pids) == 1, pids
    yield Gateway(triton_server.process, port, triton_server.log_path)
    assert triton_server.gateway_pids() == pids, "the gateway was restarted during the tests"
    assert "qwen3_asr_triton.gateway" in triton_server.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def sdk(gateway):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=API_KEY, max_retries=0, timeout=180)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_client(triton_server):
    with Qwen3ASRClient(ClientOptions(url=triton_server.grpc_url, timeout=180)) as client:
        yield client


def clip_named(clips, name: str):
    return next(c for c in clips if c.name == name)


def upload(clip) -> tuple[str, bytes]:
    return (clip.path.name, clip.path.read_bytes())


def unspaced(text: str) -> str:
    return "".join(text.split())


# ----------------------------------------------------------------------------- formats
def test_json_and_text_equal_triton(sdk, triton_server, clips):
    chosen = [c for c in clips if c.name in ("en_hello", "de_greeting", "fr_weather", "zh_park", "ru_hello")]
    assert {c.spec.fmt for c in chosen} == {"wav", "flac", "mp3", "m4a", "opus"}
    for clip in chosen:
        expected = transcribe(triton_server.grpc_url, audio=clip.path.read_bytes())
        text = str(expected["TEXT"][0])
        result = sdk.audio.transcriptions.create(file=upload(clip), model=MODEL)
        assert isinstance(result, openai.types.audio.Transcription)
        assert result.text == text, clip.name
        assert result.usage.type == "duration"
        assert result.usage.seconds == pytest.approx(float(expected["SEGMENT_END"][-1]), abs=TIME_TOLERANCE)
        plain = sdk.audio.transcriptions.create(file=upload(clip), model=MODEL, response_format="text")
        assert plain == text + "\n", clip.name


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_equal_the_cli_rendering_of_triton_result(sdk, grpc_client, clips, fmt):
    for name in ("en_hello", "en_long"):
        clip = clip_named(clips, name)
        # The gateway asks for word timestamps when the deployment has an aligner (the test repository has one).
        expected = grpc_client.transcribe(clip.path, TranscribeOptions(timestamps=True))
        assert expected.words
        body = sdk.audio.transcriptions.create(file=upload(clip), model=MODEL, response_format=fmt)
        assert isinstance(body, str)
        if fmt == "srt":
            assert body == to_srt(build_cues(expected))
            cues = [c.content for c in srt.parse(body)]
        else:
            assert body == to_vtt(build_cues(expected))
            # WebVTT escapes &, < and > in cue text; webvtt-py keeps the escapes.
            cues = [html.unescape(c.text) for c in webvtt.from_string(body)]
        assert cues
        # Cues keep the transcript's characters in order (only line breaks and spaces between cues differ).
        assert unspaced("".join(cues)) == unspaced(expected.text)


def test_verbose_json_words_and_segments_equal_triton(sdk, triton_server, clips):
    checked = 0
    for clip in clips:
        if clip.spec.language not in ALIGNED or clip.name == "en_long":
            continue
        expected = transcribe(triton_server.grpc_url, audio=clip.path.read_bytes(), timestamps=True)
        result = sdk.audio.transcriptions.create(
            file=upload(clip),
            model=MODEL,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )
        assert isinstance(result, openai.types.audio.TranscriptionVerbose)
        assert result.text == str(expected["TEXT"][0]), clip.name
        detected = str(expected["DETECTED_LANGUAGE"][0])
        assert result.language == (detected.lower() or None)
        assert [w.word for w in result.words] == [str(w) for w in expected["WORDS"]], clip.name
        assert len(result.words) > 0
        for word, start, end in zip(result.words, expected["WORD_START"], expected["WORD_END"]):
            assert word.start == pytest.approx(float(start), abs=TIME_TOLERANCE)
            assert word.end == pytest.approx(float(end), abs=TIME_TOLERANCE)
        assert [s.text for s in result.segments] == [str(t) for t in expected["SEGMENT_TEXT"]]
        for index, (segment, start, end) in enumerate(
            zip(result.segments, expected["SEGMENT_START"], expected["SEGMENT_END"])
        ):
            assert segment.id == index and segment.seek == 0 and segment.temperature == 0.0
            assert segment.start == pytest.approx(float(start), abs=TIME_TOLERANCE)
            assert segment.end == pytest.approx(float(end), abs=TIME_TOLERANCE)
            assert segment.compression_ratio > 0 or not segment.text
            assert segment.no_speech_prob is None
        assert result.duration == pytest.approx(float(expected["SEGMENT_END"][-1]), abs=TIME_TOLERANCE)
        assert result.usage.seconds == result.duration
        checked += 1
    assert checked >= 6


def test_verbose_json_segments_carry_the_generated_tokens(sdk, grpc_client, clips):
    clip = clip_named(clips, "en_long")  # long enough for several segments
    expected = grpc_client.transcribe(clip.path)
    result = sdk.audio.transcriptions.create(file=upload(clip), model=MODEL, response_format="verbose_json")
    assert result.words is None  # only asked for with the word granularity
    assert [s.text for s in result.segments] == [s.text for s in expected.segments]
    assert [s.tokens for s in result.segments] == [list(s.token_ids) for s in expected.segments]
    # Log-probabilities carry float32 noise from which other sequences shared the decoder's batch.
    assert [s.avg_logprob for s in result.segments] == pytest.approx(
        [s.avg_logprob for s in expected.segments], rel=1e-5
    )
    assert [t for s in result.segments for t in s.tokens] == list(expected.token_ids)
    assert all(s.avg_logprob is not None and s.avg_logprob <= 0.0 for s in result.segments)


def test_language_and_prompt_equal_language_and_context_on_triton(sdk, triton_server, clips):
    for name, code in (("de_greeting", "de"), ("es_numbers", "Spanish"), ("en_hello", "en")):
        clip = clip_named(clips, name)
        expected = transcribe(
            triton_server.grpc_url, audio=clip.path.read_bytes(), language=clip.spec.language, context=CONTEXT
        )
        result = sdk.audio.transcriptions.create(
            file=upload(clip), model=MODEL, language=code, prompt=CONTEXT, response_format="verbose_json"
        )
        assert result.text == str(expected["TEXT"][0]), name
        assert result.language == clip.spec.language.lower()


# ----------------------------------------------------------------------------- streaming
def stream_events(sdk, clip, **kwargs) -> list[tuple[float, object]]:
    """The SDK's events of a streamed transcription, each with its arrival time (seconds from the request)."""
    began = time.monotonic()
    stream = sdk.audio.transcriptions.create(file=upload(clip), model=MODEL, stream=True, **kwargs)
    return [(time.monotonic() - began, event) for event in stream]


@pytest.mark.parametrize("forced", [False, True], ids=["auto", "forced-language"])
def test_stream_deltas_join_to_the_unary_text(sdk, triton_server, clips, forced):
    for name in ("en_hello", "zh_park", "es_numbers"):
        clip = clip_named(clips, name)
        language = clip.spec.language if forced else None
        unary = str(transcribe(triton_server.grpc_url, audio=clip.path.read_bytes(), language=language)["TEXT"][0])
        events = [e for _, e in stream_events(sdk, clip, **({"language": language} if forced else {}))]
        deltas = [e for e in events if e.type == "transcript.text.delta"]
        done = [e for e in events if e.type == "transcript.text.done"]
        assert len(done) == 1 and events[-1] is done[0], name
        assert done[0].text == unary, name
        assert "".join(d.delta for d in deltas) == unary, name
        assert all(d.delta for d in deltas)
        assert done[0].usage.seconds == pytest.approx(clip.waveform().size / 16000, abs=2e-3)
        if forced:
            # With the language given, the transcript starts with the first token: it arrives piece by piece.
            assert len(deltas) >= 2, name


def test_stream_deltas_arrive_while_the_decoder_runs(sdk, clips):
    """Not the finished result cut into pieces: the deltas arrive one decoder step apart."""
    events = stream_events(sdk, clip_named(clips, "en_long"), language="en")
    deltas = [t for t, e in events if e.type == "transcript.text.delta"]
    assert events[-1][1].type == "transcript.text.done"
    # How many tokens the random weights generate before an end token depends on the CPU's float
    # rounding, and so does the ratio of decoding to prefill time: only the spacing is checked. A result
    # sent in pieces after it was finished arrives within a fraction of a millisecond per piece; a decoder
    # step of even the tiny model takes several milliseconds on these CPUs.
    assert len(deltas) >= 5, len(deltas)
    gaps = [later - earlier for earlier, later in itertools.pairwise(deltas)]
    assert sum(gap > STEP_GAP_SECONDS for gap in gaps) >= 4, [round(gap, 4) for gap in gaps]


def test_stream_with_text_format_and_its_errors(sdk, gateway, clips):
    clip = clip_named(clips, "en_yes")
    events = list(sdk.audio.transcriptions.create(file=upload(clip), model=MODEL, stream=True, response_format="text"))
    assert events[-1].type == "transcript.text.done"
    with pytest.raises(openai.BadRequestError) as info:
        sdk.audio.transcriptions.create(file=upload(clip), model=MODEL, stream=True, response_format="srt")
    assert info.value.param == "stream"
    with pytest.raises(openai.BadRequestError) as info:
        list(sdk.audio.transcriptions.create(file=("x.wav", b"not audio" * 50), model=MODEL, stream=True))
    assert info.value.type == "invalid_request_error"


def test_leaving_the_stream_cancels_the_request_on_triton(gateway, triton_server, clips):
    """A client that disconnects after the first delta: the gateway closes its gRPC stream and the decoder stops."""
    before = _decoder(triton_server)
    clip = clip_named(clips, "en_long")  # about a second of decoding on the CPU target, forced English
    with httpx.Client(base_url=gateway.url, timeout=60) as http:
        request = {"model": MODEL, "stream": "true", "language": "en"}
        with http.stream(
            "POST",
            "/v1/audio/transcriptions",
            files={"file": upload(clip)},
            data=request,
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as response:
            assert response.status_code == 200
            first = next(line for line in response.iter_lines() if line.startswith("data: "))
            assert json.loads(first[len("data: ") :])["type"] == "transcript.text.delta"
    # Leaving the with-blocks closed the connection mid-stream.
    assert _wait_until_quiet(triton_server) < 5
    after = _decoder(triton_server)
    assert after["cancelled"] - before["cancelled"] == 1
    assert after["completed"] == before["completed"], "the abandoned generation ran to its end"


# ----------------------------------------------------------------------------- errors
def check_error(exc: openai.APIStatusError, status: int, param: str | None, code: str | None) -> None:
    assert exc.status_code == status
    assert set(exc.body) == {"message", "type", "param", "code"}
    assert exc.body["message"]
    assert (exc.body["param"], exc.body["code"]) == (param, code)
    assert exc.body["type"] == ("invalid_request_error" if status < 500 else "server_error")


@pytest.mark.parametrize(
    ("kwargs", "exc_type", "status", "param", "code"),
    [
        (
            {"file": ("noise.wav", b"\x00\x01not audio at all" * 64)},
            openai.BadRequestError,
            400,
            None,
            "invalid_request",
        ),
        ({"file": ("empty.wav", b"")}, openai.BadRequestError, 400, None, "invalid_request"),
        ({"language": "tlh"}, openai.BadRequestError, 400, "language", "invalid_value"),
        ({"response_format": "tsv"}, openai.BadRequestError, 400, "response_format", "invalid_value"),
        ({"temperature": 0.7}, openai.BadRequestError, 400, "temperature", "unsupported_value"),
        ({"include": ["logprobs"]}, openai.BadRequestError, 400, "include", "unsupported_value"),
        (
            {"timestamp_granularities": ["word"]},
            openai.BadRequestError,
            400,
            "timestamp_granularities",
            "invalid_value",
        ),
        ({"file": ("big.wav", b"\0" * (MAX_FILE_BYTES + 1))}, openai.BadRequestError, 400, "file", "file_too_large"),
        ({"model": "whisper-1"}, openai.NotFoundError, 404, "model", "model_not_found"),
    ],
)
def test_errors_reach_the_sdk_as_typed_exceptions(sdk, clips, kwargs, exc_type, status, param, code):
    request = {"file": upload(clip_named(clips, "en_yes")), "model": MODEL, **kwargs}
    with pytest.raises(exc_type) as info:
        sdk.audio.transcriptions.create(**request)
    check_error(info.value, status, param, code)


def test_bad_audio_message_is_the_servers(sdk, triton_server):
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as direct:
        transcribe(triton_server.grpc_url, audio=NOISE)
    with pytest.raises(openai.BadRequestError) as info:
        sdk.audio.transcriptions.create(file=("noise.wav", NOISE), model=MODEL)
    assert info.value.body["message"] == direct.value.message()
    assert triton_server.grpc_url not in json.dumps(info.value.body)


def test_api_key_and_translations(gateway, sdk, clips):
    clip = clip_named(clips, "en_yes")
    wrong = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        wrong.audio.transcriptions.create(file=upload(clip), model=MODEL)
    check_error(info.value, 401, None, "invalid_api_key")
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    # No key at all: the SDK leaves the Authorization header out when told to.
    with pytest.raises(openai.AuthenticationError) as info:
        sdk.audio.transcriptions.create(file=upload(clip), model=MODEL, extra_headers={"Authorization": openai.omit})
    check_error(info.value, 401, None, "missing_api_key")
    with pytest.raises(openai.BadRequestError) as info:
        sdk.audio.translations.create(file=upload(clip), model=MODEL)
    check_error(info.value, 400, None, "unsupported")


def test_models_health_and_metrics(gateway, sdk, clips):
    # The test deployment has a diarizer: its diarizing name is listed too.
    assert [m.id for m in sdk.models.list()] == [MODEL, f"{MODEL}-diarize"]
    model = sdk.models.retrieve(MODEL)
    assert (model.id, model.owned_by) == (MODEL, "qwen3-asr-triton")
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("whisper-1")
    # Health and metrics need no key.
    health = httpx.get(f"{gateway.url}/health", timeout=10)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    sdk.audio.transcriptions.create(file=upload(clip_named(clips, "en_yes")), model=MODEL)
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=10)
    assert metrics.status_code == 200
    counts = {}
    for line in metrics.text.splitlines():
        if line.startswith("qwen3_asr_gateway_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels] = float(value)
    assert counts['qwen3_asr_gateway_requests_total{route="/v1/audio/transcriptions",status="200"}'] >= 1
    assert counts['qwen3_asr_gateway_requests_total{route="/v1/models",status="200"}'] >= 1
    assert "qwen3_asr_gateway_requests_in_flight 0.0" in metrics.text


def test_health_follows_triton(tmp_path):
    """A gateway in front of a closed port answers 503 on /health (and on transcriptions), and keeps running."""
    (port, dead) = free_ports(2)
    log_path = tmp_path / "gateway.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [CLI, "serve-openai", "--triton-url", f"127.0.0.1:{dead}", "--port", str(port), "--timeout", "5"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    health = httpx.get(f"{url}/health", timeout=10)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.2)
            assert health.status_code == 503 and health.json() == {"status": "unavailable"}
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            with pytest.raises(openai.InternalServerError) as info:
                client.audio.transcriptions.create(file=("a.wav", b"RIFF"), model=MODEL)
            check_error(info.value, 503, None, "service_unavailable")
            assert f"127.0.0.1:{dead}" not in json.dumps(info.value.body)
            assert process.poll() is None
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) in (0, -signal.SIGTERM)


# ----------------------------------------------------------------------------- load and limits
def test_concurrent_requests_get_their_own_answers(gateway, triton_server, clips):
    chosen = [c for c in clips if c.name != "en_long"][:8]
    expected = [str(transcribe(triton_server.grpc_url, audio=c.path.read_bytes())["TEXT"][0]) for c in chosen]

    def run(clip):
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=API_KEY, max_retries=0, timeout=180)
        try:
            return client.audio.transcriptions.create(file=upload(clip), model=MODEL).text
        finally:
            client.close()

    with ThreadPoolExecutor(len(chosen)) as pool:
        got = list(pool.map(run, chosen * 2))
    assert got == expected * 2


def test_chunked_upload_over_the_limit_is_refused_before_it_is_all_sent(gateway):
    """A chunked upload (no Content-Length) is answered 400 file_too_large while it is still being sent."""
    boundary = "chunkedboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{MODEL}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    chunk = b"\0" * 65536
    planned = 4 * MAX_FILE_BYTES  # what the client would send if nobody stopped it
    request = (
        "POST /v1/audio/transcriptions HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{gateway.port}\r\n"
        f"Authorization: Bearer {API_KEY}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()

    def framed(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    sent = 0
    reply = b""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(request + framed(head))
        while sent < planned:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            sock.sendall(framed(chunk))
            sent += len(chunk)
            time.sleep(0.002)  # let the gateway read and answer as the body streams in
        deadline = time.monotonic() + 30
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            assert time.monotonic() < deadline, reply
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 400"), reply[:300]
    body = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "file_too_large" and body["error"]["param"] == "file"
    # Refused soon after the limit, long before the planned body was sent.
    assert MAX_FILE_BYTES <= sent < planned // 2, sent


def test_bad_http_does_not_take_the_gateway_down(gateway, sdk, clips):
    for garbage in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 64, b"GET / HTTP/9.9\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
            sock.sendall(garbage)
            sock.recv(1024)
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "multipart/form-data; boundary=x"}
    truncated = httpx.post(f"{gateway.url}/v1/audio/transcriptions", content=b"--x\r\nContent-Dis", headers=headers)
    assert truncated.status_code == 400
    assert sdk.audio.transcriptions.create(file=upload(clip_named(clips, "en_yes")), model=MODEL).text is not None
    assert gateway.process.poll() is None


def test_console_script_help_mentions_the_gateway():
    out = subprocess.run([CLI, "--help"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "serve-openai" in out and "transcribe" in out
    out = subprocess.run([CLI, "serve-openai", "--help"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "--triton-url" in out and "--api-key" in out
