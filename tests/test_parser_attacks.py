"""Parser attacks on every port a deployment exposes: the server stays live and keeps answering.

Deployments expose Triton's gRPC port, its metrics port and the OpenAI-compatible gateway; Triton's
HTTP port listens on the pod's loopback, because one JSON body nested 100,000 deep crashes Triton
2.51's HTTP server (tests/test_recovery.py shows the watchdog bringing it back when it is reached
anyway). The gateway gets the attacks on its transcription route, and must survive them itself (not
be restarted by serve_cpu.sh).
"""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.request

import pytest

from tests.triton_requests import transcribe

pytestmark = pytest.mark.server

NESTED = b'{"inputs":[{"name":"AUDIO","shape":[1],"datatype":"BYTES","data":' + b"[" * 100_000 + b"]" * 100_000 + b"}]}"


def _request(body: bytes, declared: int | None = None, extra_headers: bytes = b"", path: bytes = b"") -> bytes:
    length = len(body) if declared is None else declared
    head = (
        b"POST " + (path or b"/v2/models/qwen3_asr/infer") + b" HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\n" + extra_headers + f"Content-Length: {length}\r\n\r\n".encode()
    )
    return head + body


ATTACKS = {
    "nested JSON": lambda path: (_request(NESTED, path=path), 0.0),
    "100 kB header": lambda path: (
        _request(b"{}", extra_headers=b"X-Big: " + b"a" * 100_000 + b"\r\n", path=path),
        0.0,
    ),
    "slow body": lambda path: (_request(b'{"inputs"', declared=1000, path=path), 3.0),
    "body longer than declared": lambda path: (_request(b'{"inputs":[]}' + b" " * 5000, declared=10, path=path), 0.0),
    "body shorter than declared": lambda path: (_request(b'{"inputs":[]}', declared=50_000, path=path), 1.0),
    "not HTTP at all": lambda path: (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 4096, 0.0),
}


def _send(port: int, payload: bytes, linger: float) -> None:
    # A port that drops the connection is fine; one that dies is not.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn, contextlib.suppress(OSError):
        conn.sendall(payload)
        time.sleep(linger)
        conn.settimeout(2)
        conn.recv(4096)


@pytest.mark.parametrize("port_name", ["grpc", "metrics", "openai"])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_every_exposed_port_survives_parser_attacks(triton_server, clips, port_name, attack):
    address = {
        "grpc": triton_server.grpc_url,
        "metrics": triton_server.metrics_url.split("/")[2],
        "openai": triton_server.openai_url.split("/")[2],
    }[port_name]
    port = int(address.rsplit(":", 1)[1])
    gateway = triton_server.gateway_pids()
    payload, linger = ATTACKS[attack](b"/v1/audio/transcriptions" if port_name == "openai" else b"")
    _send(port, payload, linger)
    assert triton_server.process.poll() is None
    assert triton_server.gateway_pids() == gateway, "the gateway died"
    with urllib.request.urlopen(f"{triton_server.openai_url}/health", timeout=10) as response:
        assert response.status == 200
    out = transcribe(triton_server.grpc_url, audio=clips[0].path.read_bytes(), max_new_tokens=4)
    assert out["TOKEN_IDS"].size >= 1
    assert triton_server.metrics(), "the metrics port still answers"
