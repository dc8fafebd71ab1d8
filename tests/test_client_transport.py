"""Retries, deadlines, metadata and TLS, against an in-process gRPC server speaking Triton's protocol.

A real Triton cannot be made to answer UNAVAILABLE on cue or to stall, so these
tests script a small ``GRPCInferenceService`` whose answers they control.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import serialize_byte_tensor

from qwen3_asr_triton.client import (
    AsyncQwen3ASRClient,
    ClientOptions,
    DeadlineExceededError,
    InvalidRequestError,
    Qwen3ASRClient,
    Qwen3ASRError,
    RetryPolicy,
    ServerUnavailableError,
    TlsOptions,
    TranscribeOptions,
)

FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff=0.05, max_backoff=0.2)
CLI = str(Path(sys.executable).with_name("qwen3-asr"))


def _bytes_output(name: str, values: list[str]):
    array = np.array([v.encode() for v in values], dtype=np.object_)
    raw = serialize_byte_tensor(array).item() if values else b""
    return service_pb2.ModelInferResponse.InferOutputTensor(name=name, datatype="BYTES", shape=[len(values)]), raw


def _numeric_output(name: str, values: list, dtype, datatype: str):
    array = np.array(values, dtype=dtype)
    return service_pb2.ModelInferResponse.InferOutputTensor(name=name, datatype=datatype, shape=[len(values)]), (
        array.tobytes()
    )


def infer_response(text: str = "hello world") -> service_pb2.ModelInferResponse:
    outputs = [
        _bytes_output("TEXT", [text]),
        _bytes_output("DETECTED_LANGUAGE", ["English"]),
        _numeric_output("TOKEN_IDS", [11, 12], np.int32, "INT32"),
        _numeric_output("CONFIDENCE", [0.75], np.float32, "FP32"),
        _bytes_output("WORDS", ["hello", "world"]),
        _numeric_output("WORD_START", [0.1, 0.6], np.float32, "FP32"),
        _numeric_output("WORD_END", [0.5, 1.0], np.float32, "FP32"),
        _bytes_output("SEGMENT_TEXT", [text]),
        _numeric_output("SEGMENT_START", [0.0], np.float32, "FP32"),
        _numeric_output("SEGMENT_END", [1.5], np.float32, "FP32"),
    ]
    return service_pb2.ModelInferResponse(
        model_name="qwen3_asr",
        model_version="1",
        outputs=[tensor for tensor, _ in outputs],
        raw_output_contents=[raw for _, raw in outputs],
    )


@dataclass
class Script:
    """What the fake server answers: queued failures first, then successes after ``delay`` seconds."""

    failures: deque = field(default_factory=deque)
    always: grpc.StatusCode | None = None
    delay: float = 0.0
    calls: list[float] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)
    requests: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeTriton(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    def _record(self, context, request=None) -> None:
        with self.script.lock:
            self.script.calls.append(time.monotonic())
            self.script.metadata.append(dict(context.invocation_metadata()))
            if request is not None:
                self.script.requests.append(request)

    def _maybe_fail(self, context) -> None:
        with self.script.lock:
            failure = self.script.failures.popleft() if self.script.failures else None
        if failure is None and self.script.always is not None:
            failure = self.script.always
        if failure is not None:
            context.abort(failure, f"scripted {failure.name}")

    def ModelInfer(self, request, context):  # noqa: N802 - gRPC method name
        self._record(context, request)
        self._maybe_fail(context)
        time.sleep(self.script.delay)
        return infer_response()

    def ServerLive(self, request, context):  # noqa: N802 - gRPC method name
        self._record(context)
        self._maybe_fail(context)
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):  # noqa: N802 - gRPC method name
        self._record(context)
        return service_pb2.ServerReadyResponse(ready=True)

    def ModelReady(self, request, context):  # noqa: N802 - gRPC method name
        self._record(context)
        return service_pb2.ModelReadyResponse(ready=request.name == "qwen3_asr")

    def ServerMetadata(self, request, context):  # noqa: N802 - gRPC method name
        self._record(context)
        return service_pb2.ServerMetadataResponse(name="fake", version="0.0-test")


@dataclass(frozen=True)
class Certs:
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make test certificates (scripts/test.sh installs it)")
    out = tmp_path_factory.mktemp("certs")

    def make(name: str, subject: str, san: str) -> tuple[Path, Path]:
        cert, key = out / f"{name}.pem", out / f"{name}.key"
        key_args = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key)]
        cert_args = ["-out", str(cert), "-days", "2", "-subj", subject, "-addext", san]
        subprocess.run(["openssl", "req", "-x509", *key_args, *cert_args], check=True, capture_output=True)
        return cert, key

    server_cert, server_key = make("server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1")
    client_cert, client_key = make("client", "/CN=qwen3-asr-client", "subjectAltName=DNS:client")
    return Certs(server_cert, server_key, client_cert, client_key)


@contextmanager
def fake_server(script: Script, certs: Certs | None = None, require_client_cert: bool = False):
    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(FakeTriton(script), server)
    if certs is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        credentials = grpc.ssl_server_credentials(
            [(certs.server_key.read_bytes(), certs.server_cert.read_bytes())],
            root_certificates=certs.client_cert.read_bytes() if require_client_cert else None,
            require_client_auth=require_client_cert,
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


# ----------------------------------------------------------------------------- retries and deadlines
def test_unavailable_is_retried_until_the_server_answers():
    script = Script(failures=deque([grpc.StatusCode.UNAVAILABLE] * 2))
    with fake_server(script) as url, Qwen3ASRClient(ClientOptions(url=url, retry=FAST_RETRY)) as client:
        result = client.transcribe(b"RIFF", TranscribeOptions(language="en", timestamps=True))
    assert len(script.calls) == 3
    waits = np.diff(script.calls)
    assert waits[0] >= 0.025 and waits[1] >= 0.05  # half of each backoff bound at least
    assert result.text == "hello world" and result.language == "English" and result.confidence == 0.75
    assert [(w.text, w.start, w.end) for w in result.words] == [("hello", 0.1, 0.5), ("world", 0.6, 1.0)]
    assert result.audio_seconds == 1.5
    # Every attempt carried the same inputs, and the same request id.
    names = {tuple(sorted(i.name for i in r.inputs)) for r in script.requests}
    assert names == {("AUDIO", "LANGUAGE", "RETURN_TIMESTAMPS")}
    assert {r.id for r in script.requests} == {result.request_id}


def test_async_client_retries_the_same_way():
    script = Script(failures=deque([grpc.StatusCode.UNAVAILABLE] * 2))

    async def run(url: str):
        async with AsyncQwen3ASRClient(ClientOptions(url=url, retry=FAST_RETRY)) as client:
            return await asyncio.gather(
                *(client.transcribe(np.zeros(1600, np.float32), sample_rate=16000) for _ in range(3))
            )

    with fake_server(script) as url:
        results = asyncio.run(run(url))
    assert [r.text for r in results] == ["hello world"] * 3
    assert len(script.calls) == 5
    assert {tuple(sorted(i.name for i in r.inputs)) for r in script.requests} == {("SAMPLE_RATE", "WAVEFORM")}


@pytest.mark.parametrize("status", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL])
def test_other_errors_are_not_retried(status):
    script = Script(always=status)
    with (
        fake_server(script) as url,
        Qwen3ASRClient(ClientOptions(url=url, retry=FAST_RETRY)) as client,
        pytest.raises(Qwen3ASRError) as info,
    ):
        client.transcribe(b"RIFF")
    assert len(script.calls) == 1
    assert info.value.status == status.name
    assert isinstance(info.value, InvalidRequestError) == (status == grpc.StatusCode.INVALID_ARGUMENT)
    assert "scripted" in info.value.message


def test_retries_stop_after_max_attempts():
    script = Script(always=grpc.StatusCode.UNAVAILABLE)
    with (
        fake_server(script) as url,
        Qwen3ASRClient(ClientOptions(url=url, retry=FAST_RETRY)) as client,
        pytest.raises(ServerUnavailableError, match="gave up after 4 attempts"),
    ):
        client.transcribe(b"RIFF")
    assert len(script.calls) == 4


def test_retries_stop_at_the_deadline():
    script = Script(always=grpc.StatusCode.UNAVAILABLE)
    patient = RetryPolicy(max_attempts=1000, initial_backoff=0.3, max_backoff=0.3)
    with fake_server(script) as url, Qwen3ASRClient(ClientOptions(url=url, retry=patient, timeout=1.0)) as client:
        began = time.monotonic()
        with pytest.raises(ServerUnavailableError, match="1 s deadline"):
            client.transcribe(b"RIFF")
        elapsed = time.monotonic() - began
    assert elapsed < 1.0
    assert 3 <= len(script.calls) <= 7


@pytest.mark.parametrize("use_async", [False, True])
def test_a_slow_server_hits_the_deadline_without_retry(use_async):
    script = Script(delay=3.0)
    with fake_server(script) as url:
        options = ClientOptions(url=url, timeout=0.5, retry=FAST_RETRY)
        began = time.monotonic()
        with pytest.raises(DeadlineExceededError, match=r"0\.5 s deadline"):
            if use_async:

                async def run():
                    async with AsyncQwen3ASRClient(options) as client:
                        await client.transcribe(b"RIFF")

                asyncio.run(run())
            else:
                with Qwen3ASRClient(options) as client:
                    client.transcribe(b"RIFF")
        assert time.monotonic() - began < 2.0
    assert len(script.calls) == 1


# ----------------------------------------------------------------------------- metadata and TLS
def test_headers_reach_the_server_on_every_call():
    script = Script()
    headers = {"Authorization": "Bearer s3cret", "x-tenant": "blue"}
    with fake_server(script) as url, Qwen3ASRClient(ClientOptions(url=url, headers=headers)) as client:
        assert client.health().ok
        client.transcribe(b"RIFF")
    assert len(script.metadata) == 5
    for metadata in script.metadata:
        assert metadata["authorization"] == "Bearer s3cret" and metadata["x-tenant"] == "blue"


def test_tls_with_a_private_ca(certs):
    script = Script()
    with fake_server(script, certs) as url:
        tls = TlsOptions(root_certificates=certs.server_cert)
        with Qwen3ASRClient(ClientOptions(url=url, tls=tls)) as client:
            health = client.health()
            assert health.ok and health.server_version == "0.0-test"
        fast_fail = ClientOptions(url=url, retry=RetryPolicy(max_attempts=1), timeout=5)
        with Qwen3ASRClient(fast_fail) as client, pytest.raises(ServerUnavailableError):
            client.health()  # plaintext to a TLS port
        untrusted = ClientOptions(url=url, retry=RetryPolicy(max_attempts=1), timeout=5, tls=TlsOptions())
        with Qwen3ASRClient(untrusted) as client, pytest.raises(ServerUnavailableError):
            client.health()  # the system roots do not know the test CA


def test_mutual_tls(certs):
    script = Script()
    with fake_server(script, certs, require_client_cert=True) as url:
        mutual = TlsOptions(certs.server_cert, private_key=certs.client_key, certificate_chain=certs.client_cert)

        async def run(tls: TlsOptions):
            options = ClientOptions(url=url, tls=tls, retry=RetryPolicy(max_attempts=1), timeout=5)
            async with AsyncQwen3ASRClient(options) as client:
                return await client.transcribe(b"RIFF")

        assert asyncio.run(run(mutual)).text == "hello world"
        with pytest.raises(ServerUnavailableError):
            asyncio.run(run(TlsOptions(certs.server_cert)))  # no client certificate


def test_cli_health_sends_tls_and_headers(certs):
    script = Script()
    with fake_server(script, certs) as url:
        args = [
            CLI,
            "health",
            "--url",
            url,
            "--tls-ca",
            str(certs.server_cert),
            "--header",
            "authorization: Bearer t0k",
        ]
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "model qwen3_asr ready: yes" in done.stdout and "0.0-test" in done.stdout
    assert script.metadata and all(m.get("authorization") == "Bearer t0k" for m in script.metadata)
