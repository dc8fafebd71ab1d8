"""Self-healing: SIGKILL of any python worker, or of tritonserver, and the deployment answers again.

Triton 2.51 never restarts a dead python stub (the model then fails every request while the server
still says ready). serve_cpu.sh's watchdog notices within a second and restarts the server; with
--max-restarts 0 (the containers) the script exits 1 for its orchestrator to restart it. Each test
measures the time from the kill to the next correct answer.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from qwen3_asr_triton.supervision import children, group_regions, python_workers
from tests.harness import start_server, stop_server
from tests.triton_requests import transcribe

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def own_server(model_repository, tmp_path_factory):
    """A server of our own: these tests kill its processes."""
    # Every test here restarts the server at least once: room for all of them.
    log = tmp_path_factory.mktemp("recovery") / "server.log"
    server = start_server(model_repository, log, ("--max-restarts", "20"))
    yield server
    stop_server(server)


def _tritonserver_pid(server) -> int:
    # From /proc, not ps: ps cuts the command line at $COLUMNS where that is set.
    for pid, argv in children(server.process.pid).items():
        if argv and Path(argv[0]).name == "tritonserver":
            return pid
    raise AssertionError("no tritonserver under serve_cpu.sh")


def _answer_after(server, data: bytes, expected: list[int], killed_at: float, timeout: float = 120) -> float:
    """Seconds from the kill until a request is answered correctly again."""
    last = None
    while time.monotonic() - killed_at < timeout:
        try:
            out = transcribe(server.grpc_url, audio=data, max_new_tokens=12)
            if out["TOKEN_IDS"].tolist() == expected:
                return time.monotonic() - killed_at
            last = "wrong answer"
        except Exception as exc:  # refused or UNAVAILABLE while the server restarts
            last = str(exc)[:200]
        time.sleep(0.25)
    raise AssertionError(f"no correct answer {timeout:.0f} s after the kill; last: {last}")


class _Load:
    """Requests sent one after another on two threads while a test kills something: each one's outcome."""

    def __init__(self, url: str, data: bytes, expected: list[int]) -> None:
        self.url, self.data, self.expected = url, data, expected
        self.outcomes: list[tuple[float, float, str]] = []  # (sent, seconds, "ok" | "wrong" | error text)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                out = transcribe(self.url, audio=self.data, max_new_tokens=12, client_timeout=LOAD_TIMEOUT)
                outcome = "ok" if out["TOKEN_IDS"].tolist() == self.expected else "wrong"
            except Exception as exc:  # what a request meets while a worker is dead or the server restarts
                outcome = str(exc)[:300]
            self.outcomes.append((sent, time.monotonic() - sent, outcome))
            if outcome != "ok":
                time.sleep(0.2)

    def __enter__(self) -> _Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(LOAD_TIMEOUT + 10)


# A request under load waits at most this long: one that is caught by the kill must fail, not hang.
LOAD_TIMEOUT = 30.0
# Every python model of the test repository (its instances are named <model>_<instance>_<device>).
PYTHON_MODELS = (
    "decoder",
    "preprocess",
    "encoder",
    "postprocess",
    "aligner",
    "diarizer",
    "qwen3_asr",
    "qwen3_asr_deltas",
    "qwen3_asr_streaming",
)


@pytest.mark.parametrize("victim", [*PYTHON_MODELS, "tritonserver"])
def test_the_deployment_answers_again_after_a_kill_under_load(own_server, clips, victim):
    """SIGKILL of any worker while two clients keep sending: no request hangs or gets a wrong answer, the
    ones caught by the kill fail with a clear error, and correct answers come back after the restart."""
    data = clips[0].path.read_bytes()
    expected = transcribe(own_server.grpc_url, audio=data, max_new_tokens=12)["TOKEN_IDS"].tolist()
    server_pid = _tritonserver_pid(own_server)
    if victim == "tritonserver":
        pid = server_pid
    else:
        pid = next(p for p, name in python_workers(server_pid).items() if name.startswith(f"{victim}_"))
    restarts = own_server.log_path.read_text().count("serve_cpu.sh: restarting Triton")
    regions = group_regions(server_pid)
    assert regions, "the server's python workers have shared-memory regions"
    with _Load(own_server.grpc_url, data, expected) as load:
        started = time.monotonic()
        while not any(outcome == "ok" for _, _, outcome in load.outcomes):
            assert time.monotonic() - started < LOAD_TIMEOUT, ("no correct answer before the kill", load.outcomes[-3:])
            time.sleep(0.05)
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        # The watchdog notices (a second preprocess instance may still answer meanwhile), then the restart.
        while own_server.log_path.read_text().count("serve_cpu.sh: restarting Triton") == restarts:
            assert time.monotonic() - killed_at < 10, "the watchdog did not notice the kill"
            time.sleep(0.1)
        noticed = time.monotonic() - killed_at
        seconds = _answer_after(own_server, data, expected, killed_at)
        # Load goes on until a request sent after the restart is answered correctly.
        while not any(sent > killed_at + seconds and outcome == "ok" for sent, _, outcome in load.outcomes):
            assert time.monotonic() - killed_at < seconds + LOAD_TIMEOUT + 10, load.outcomes[-3:]
            time.sleep(0.1)
    assert _tritonserver_pid(own_server) != server_pid
    left = [name for name in regions if (Path("/dev/shm") / name).exists()]
    assert not left, f"the killed server's shared memory was not freed: {left[:3]}"
    caught = [(round(took, 2), outcome) for sent, took, outcome in load.outcomes if outcome != "ok"]
    assert all(outcome != "wrong" for _, outcome in caught), caught
    assert all(took < LOAD_TIMEOUT for took, _ in caught), f"a request hung: {caught}"
    unclear = sorted({outcome for _, outcome in caught if not _clear(outcome)})
    assert not unclear, unclear
    kinds = sorted({_status(outcome) for _, outcome in caught})
    longest = max([0.0, *[took for took, _ in caught]])
    print(
        f"SIGKILL of {victim} under load: restart began after {noticed:.1f} s, correct answers again after "
        f"{seconds:.1f} s; {len(caught)} of {len(load.outcomes)} requests failed, longest {longest:.1f} s: {kinds}"
    )


def _status(outcome: str) -> str:
    return outcome.split("]", 1)[0].lstrip("[") if outcome.startswith("[StatusCode.") else outcome[:60]


def _clear(outcome: str) -> bool:
    """A failure a client can act on: UNAVAILABLE (retry), or a connection refused while the guard restarts."""
    return outcome.startswith("[StatusCode.UNAVAILABLE]") or "failed to connect" in outcome.lower()


def test_without_restarts_the_script_exits_for_its_supervisor(model_repository, tmp_path):
    server = start_server(model_repository, tmp_path / "server.log", ("--max-restarts", "0"))
    try:
        server_pid = _tritonserver_pid(server)
        pid = next(p for p, name in python_workers(server_pid).items() if name.startswith("decoder_"))
        os.kill(pid, signal.SIGKILL)
        assert server.process.wait(60) == 1
    finally:
        if server.process.poll() is None:
            stop_server(server)
    log = server.log_path.read_text()
    assert "python worker(s) decoder_0_0 died" in log
    assert "--max-restarts 0 is used up" in log
    assert not python_workers(server_pid), "no orphan worker is left behind"


def test_the_known_http_crash_is_recovered_too(own_server, clips):
    """Triton 2.51's HTTP server segfaults on JSON nested 100,000 deep (a known upstream bug). Deployments keep
    that port on loopback; if it is reached anyway, the watchdog restarts the server."""
    import contextlib
    import socket

    from tests.test_parser_attacks import NESTED, _request

    data = clips[0].path.read_bytes()
    expected = transcribe(own_server.grpc_url, audio=data, max_new_tokens=12)["TOKEN_IDS"].tolist()
    restarts = own_server.log_path.read_text().count("serve_cpu.sh: restarting Triton")
    port = int(own_server.http_url.rsplit(":", 1)[1])
    sent_at = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(_request(NESTED))
        conn.settimeout(30)
        with contextlib.suppress(OSError):
            conn.recv(4096)
    seconds = _answer_after(own_server, data, expected, sent_at)
    crashed = own_server.log_path.read_text().count("serve_cpu.sh: restarting Triton") > restarts
    print(f"nested JSON on the HTTP port: {'crashed, ' if crashed else ''}answering again after {seconds:.1f} s")


def test_the_client_library_rides_out_a_server_restart(own_server, clips):
    """The project's client retries UNAVAILABLE (safe: a transcription has no side effects) until the
    restarted server answers, with the same tokens as before the kill."""
    from qwen3_asr_triton.client import ClientOptions, Qwen3ASRClient, TranscribeOptions
    from qwen3_asr_triton.client.options import RetryPolicy

    data = clips[0].path.read_bytes()
    options = TranscribeOptions(max_new_tokens=12)
    retry = RetryPolicy(max_attempts=40, initial_backoff=0.25, max_backoff=2.0)
    with Qwen3ASRClient(ClientOptions(url=own_server.grpc_url, timeout=180, retry=retry)) as client:
        before = client.transcribe(data, options)
        os.kill(_tritonserver_pid(own_server), signal.SIGKILL)
        killed_at = time.monotonic()
        after = client.transcribe(data, options)
    assert after.token_ids == before.token_ids
    print(f"client answered {time.monotonic() - killed_at:.1f} s after the server was killed")
