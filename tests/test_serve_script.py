"""scripts/serve_cpu.sh starts on loopback only, keeps its gateway and gRPC guard running and stops all it started."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests.harness import start_server, stop_server

pytestmark = pytest.mark.server


def _processes_mentioning(text: str) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if text in line and "ps -ww" not in line]


def test_serve_script_binds_loopback_and_stops_cleanly(model_repository, tmp_path):
    mini = tmp_path / "mini-repo"
    shutil.copytree(model_repository / "postprocess", mini / "postprocess")
    server = start_server(mini, tmp_path / "server.log")
    try:
        assert server.grpc_url.startswith("127.0.0.1:")
        listening = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
        port = server.http_url.rsplit(":", 1)[1]
        lines = [line for line in listening.splitlines() if f":{port} " in line]
        assert lines and all("127.0.0.1:" in line for line in lines), lines
        assert len(_processes_mentioning(str(mini))) >= 2  # server + python stub
        # The gateway listens on loopback too; without a qwen3_asr model its health is 503.
        gateway_port = server.openai_url.rsplit(":", 1)[1]
        lines = [line for line in listening.splitlines() if f":{gateway_port} " in line]
        assert lines and all("127.0.0.1:" in line for line in lines), lines
        assert _health(server.openai_url) == 503
        # A dead gateway is started again (Triton keeps running).
        gateway = _gateway_pids(gateway_port)
        assert len(gateway) == 1, gateway
        os.kill(gateway[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _health(server.openai_url) is None or _gateway_pids(gateway_port) in ([], gateway):
            assert time.monotonic() < deadline, "the gateway was not restarted"
            time.sleep(0.3)
        assert "the OpenAI-compatible gateway exited with status 137" in server.log_path.read_text()
        # The gRPC guard serves the clients' port on loopback; Triton's own gRPC port is loopback only
        # (gRPC listens on a dual-stack socket: ss shows the address as [::ffff:127.0.0.1]).
        for url in (server.grpc_url, server.triton_grpc_url):
            grpc_port = url.rsplit(":", 1)[1]
            lines = [line for line in listening.splitlines() if f":{grpc_port} " in line]
            assert lines and all(re.search(r"\s(\[::ffff:)?127\.0\.0\.1\]?:\d", line) for line in lines), lines
        # A dead guard is started again, and clients' calls reach Triton through it once more.
        guard = server.guard_pids()
        assert len(guard) == 1, guard
        assert _server_live(server.grpc_url)
        os.kill(guard[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not _server_live(server.grpc_url) or server.guard_pids() in ([], guard):
            assert time.monotonic() < deadline, "the gRPC guard was not restarted"
            time.sleep(0.3)
        assert "the gRPC guard exited with status 137" in server.log_path.read_text()
    finally:
        code = stop_server(server)
    assert code in (0, 143)
    deadline = time.monotonic() + 20
    while (_processes_mentioning(str(mini)) or _gateway_pids(gateway_port)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_mentioning(str(mini)) == [], "server or stub survived SIGTERM"
    assert _gateway_pids(gateway_port) == [], "the gateway survived SIGTERM"
    assert "serve_cpu.sh: Triton ready" in server.log_path.read_text()


def _health(base: str) -> int | None:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _server_live(url: str) -> bool:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    try:
        return grpcclient.InferenceServerClient(url).is_server_live(client_timeout=5)
    except InferenceServerException:
        return False


def _gateway_pids(port: str) -> list[int]:
    return [int(line.split()[0]) for line in _processes_mentioning("serve-openai") if f"--port {port}" in line]
