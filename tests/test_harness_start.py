"""tests/harness.start_server: a start that is interrupted leaves no server behind.

The benchmark and the soak stop their system on SIGTERM; a signal that arrives while the server is
still starting has no server object to stop, so start_server itself must stop serve_cpu.sh.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.harness import REPO

# How long the workers may take to exit after serve_cpu.sh got SIGTERM (it waits up to 30 s for them).
GONE_WITHIN_S = 90
# Start-up milestones are polled this often.
POLL_S = 0.5


def _processes_naming(text: str) -> list[str]:
    """Command lines of the running processes that contain ``text`` (zombies have none)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline[:200])
    return found


def test_an_interrupted_start_stops_the_server(model_repository: Path, tmp_path: Path) -> None:
    # A path of its own, so that only this test's server names it (serve_cpu.sh keeps it as given).
    repository = tmp_path / "repository-under-interrupted-start"
    repository.symlink_to(model_repository, target_is_directory=True)
    log = tmp_path / "server.log"
    code = (
        "import sys; from pathlib import Path; from tests.harness import start_server; "
        "start_server(Path(sys.argv[1]), Path(sys.argv[2]))"
    )
    starter = subprocess.Popen([sys.executable, "-c", code, str(repository), str(log)], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        # Interrupt once Triton is loading the models: the server exists, its readiness does not yet.
        while not any("tritonserver " in c for c in _processes_naming(repository.name)):
            assert starter.poll() is None, f"the starter ended early: {log.read_text(errors='replace')[-2000:]}"
            assert time.monotonic() < deadline, "tritonserver never started"
            time.sleep(POLL_S)
        os.kill(starter.pid, signal.SIGINT)
        assert starter.wait(GONE_WITHIN_S) != 0
        deadline = time.monotonic() + GONE_WITHIN_S
        while (left := _processes_naming(repository.name)) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        assert not left, f"left running after the interrupted start: {left}"
    finally:
        if starter.poll() is None:
            starter.kill()
