"""scripts/serve_cpu.sh starts on loopback only and stops its whole process group."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from tests.conftest import start_server, stop_server

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
    finally:
        code = stop_server(server)
    assert code in (0, 143)
    deadline = time.monotonic() + 20
    while _processes_mentioning(str(mini)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_mentioning(str(mini)) == [], "server or stub survived SIGTERM"
    assert "serve_cpu.sh: Triton ready" in server.log_path.read_text()
