"""The watchdog's policy and its reading of /proc, without a server (a fake /proc tree)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from qwen3_asr_triton.supervision import (
    EXIT_SERVER_EXITED,
    EXIT_WORKER_DIED,
    SHM_PREFIX,
    WorkerWatch,
    clean_killed_regions,
    clean_stale_regions,
    expected_workers,
    group_regions,
    main,
    python_workers,
    server_running,
    watch,
)


def _process(
    proc: Path, pid: int, ppid: int, argv: list[str], state: str = "S", comm: str = "x", pgid: int | None = None
) -> None:
    folder = proc / str(pid)
    folder.mkdir(parents=True)
    group = pid if pgid is None else pgid
    (folder / "stat").write_text(f"{pid} ({comm}) {state} {ppid} {group} {group} 0 -1 4194560 0 0\n")
    (folder / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


def _stub(instance: str) -> list[str]:
    head = ["/x/backends/python/triton_python_backend_stub", "/repo/m/1/model.py", "shm", "1", "1", "100", "/x", "7"]
    return [*head, instance, "DEFAULT"]


def test_workers_are_the_stubs_the_server_started(tmp_path):
    proc = tmp_path / "proc"
    _process(proc, 100, 1, ["tritonserver", "--model-repository=/repo"], comm="tritonserver")
    _process(proc, 101, 100, _stub("decoder_0_0"))
    _process(proc, 102, 100, _stub("preprocess_0_1"), comm="a (weird) name")
    _process(proc, 103, 999, _stub("other_server_0_0"))  # another server's worker
    _process(proc, 104, 100, ["/bin/sh", "-c", "true"])  # not a stub
    (proc / "self").mkdir()
    assert python_workers(100, proc) == {101: "decoder_0_0", 102: "preprocess_0_1"}
    assert server_running(100, proc)
    _process(proc, 105, 1, ["zombie"], state="Z")
    assert not server_running(105, proc) and not server_running(4242, proc)


def test_the_policy_reports_a_missing_worker_or_server():
    watch = WorkerWatch(frozenset({"decoder_0_0", "preprocess_0_0", "preprocess_0_1"}))
    assert watch.check(True, ["decoder_0_0", "preprocess_0_0", "preprocess_0_1"]) is None
    assert watch.check(True, ["decoder_0_0", "preprocess_0_0", "preprocess_0_1", "new_0_0"]) is None
    status, reason = watch.check(True, ["decoder_0_0", "preprocess_0_0"])
    assert status == EXIT_WORKER_DIED and "preprocess_0_1" in reason
    assert watch.check(False, [])[0] == EXIT_SERVER_EXITED


def test_only_regions_no_live_process_uses_are_deleted(tmp_path):
    proc, shm = tmp_path / "proc", tmp_path / "shm"
    shm.mkdir()
    for name in ("mapped", "argument", "stale1", "stale2"):
        (shm / f"{SHM_PREFIX}{name}").write_bytes(b"x")
    (shm / "someone_elses_file").write_bytes(b"x")
    _process(proc, 100, 1, ["tritonserver"])
    (proc / "100" / "maps").write_text(f"7f00-7f10 rw-s 00000000 00:1a 5 /dev/shm/{SHM_PREFIX}mapped\n")
    _process(proc, 101, 100, _stub("decoder_0_0"), pgid=100)
    stub_argv = _stub("decoder_0_0")
    stub_argv[2] = f"{SHM_PREFIX}argument"
    (proc / "101" / "cmdline").write_bytes(b"\0".join(a.encode() for a in stub_argv))
    (proc / "101" / "maps").write_text("")
    # Only the named ones (a killed server's), then only the old ones (a new server's are young).
    assert clean_stale_regions(shm, proc, names={f"{SHM_PREFIX}stale1", f"{SHM_PREFIX}mapped"}) == [
        f"{SHM_PREFIX}stale1"
    ]
    assert clean_stale_regions(shm, proc, min_age_s=3600) == []
    assert clean_stale_regions(shm, proc) == [f"{SHM_PREFIX}stale2"]
    kept = sorted(p.name for p in shm.iterdir())
    assert kept == ["someone_elses_file", f"{SHM_PREFIX}argument", f"{SHM_PREFIX}mapped"]
    assert group_regions(100, proc) == {f"{SHM_PREFIX}mapped", f"{SHM_PREFIX}argument"}


def test_a_killed_workers_region_is_deleted_once_it_unmaps_it_and_the_wait_is_bounded(tmp_path):
    """SIGKILL returns before the stub is gone: its region is still mapped for a moment (the race that
    left a region behind after a restart), so the killed server's regions are retried, not skipped."""
    proc, shm = tmp_path / "proc", tmp_path / "shm"
    shm.mkdir()
    for name in ("dying", "gone", "stuck"):
        (shm / f"{SHM_PREFIX}{name}").write_bytes(b"x")
    _process(proc, 101, 1, ["stub"])
    maps = proc / "101" / "maps"
    maps.write_text(f"7f00-7f10 rw-s 00000000 00:1a 5 /dev/shm/{SHM_PREFIX}dying\n")
    now = [0.0]

    def sleep(seconds: float) -> None:  # the killed stub finishes exiting during the first wait
        now[0] += seconds
        maps.write_text("")

    deleted, kept = clean_killed_regions(
        {f"{SHM_PREFIX}dying", f"{SHM_PREFIX}gone"}, 5.0, shm, proc, sleep=sleep, clock=lambda: now[0]
    )
    assert sorted(deleted) == [f"{SHM_PREFIX}dying", f"{SHM_PREFIX}gone"] and kept == []
    assert now[0] > 0, "the mapped region was retried after a wait"
    # A region some live process keeps mapping is kept, and the wait ends at its bound.
    _process(proc, 102, 1, ["other"])
    (proc / "102" / "maps").write_text(f"7f00-7f10 rw-s 00000000 00:1a 5 /dev/shm/{SHM_PREFIX}stuck\n")
    now[0] = 0.0
    deleted, kept = clean_killed_regions({f"{SHM_PREFIX}stuck"}, 2.0, shm, proc, sleep=sleep, clock=lambda: now[0])
    assert deleted == [] and kept == [f"{SHM_PREFIX}stuck"]
    assert 2.0 <= now[0] < 2.5
    assert (shm / f"{SHM_PREFIX}stuck").exists()


@pytest.mark.parametrize("flag", ["--wait", "--min-age"])
def test_clean_shm_refuses_a_negative_bound(flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["clean-shm", flag, "-1"])
    assert exit_info.value.code == 2 and "must be >= 0" in capsys.readouterr().err


# Model configurations as Triton 2.51 returns them (instance group names filled in by the server).
_CONFIGS = {
    "decoder": {"backend": "python", "instance_group": [{"name": "decoder_0", "kind": "KIND_CPU", "count": 1}]},
    "preprocess": {
        "backend": "python",
        "instance_group": [
            {"name": "preprocess_0", "kind": "KIND_CPU", "count": 2},
            {"name": "preprocess_1", "kind": "KIND_GPU", "count": 1, "gpus": [0, 1]},
        ],
    },
    "encoder": {"backend": "tensorrt", "instance_group": [{"name": "encoder_0", "kind": "KIND_GPU", "count": 1}]},
}


def test_expected_workers_come_from_the_python_models_configurations():
    assert expected_workers(_CONFIGS.values()) == {
        "decoder_0_0",
        "preprocess_0_0",
        "preprocess_0_1",
        "preprocess_1_0",
        "preprocess_1_1",
    }


@pytest.fixture
def fake_triton():
    """An HTTP server answering Triton's repository index and model-config requests."""

    class Handler(BaseHTTPRequestHandler):
        def _send(self, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            assert self.path == "/v2/repository/index"
            self._send([{"name": name, "version": "1", "state": "READY"} for name in _CONFIGS])

        def do_GET(self):
            self._send(_CONFIGS[self.path.split("/")[3]])

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


def test_a_worker_killed_before_the_watchdog_looked_is_found(tmp_path, fake_triton):
    # The expected workers come from the server's configurations, not from the processes the
    # watchdog happens to see when it starts: preprocess_0_1 is already gone then.
    proc = tmp_path / "proc"
    _process(proc, 100, 1, ["tritonserver"], comm="tritonserver")
    for pid, instance in enumerate(["decoder_0_0", "preprocess_0_0", "preprocess_1_0", "preprocess_1_1"], 101):
        _process(proc, pid, 100, _stub(instance))
    status, reason = watch(100, fake_triton, interval=0.01, proc=proc)
    assert status == EXIT_WORKER_DIED and reason == "python worker(s) preprocess_0_1 died"
