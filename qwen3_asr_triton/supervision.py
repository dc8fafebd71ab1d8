"""Supervision of a Triton server's python workers: a dead worker is found within a second.

Triton 2.51 never restarts a python-backend stub that died (killed, out of memory): the model
then fails every request with "Stub process ... is not healthy" while the server and the model
still report ready. This watchdog, started by ``scripts/serve_cpu.sh`` and ``docker/serve.sh``
once the server is ready, asks the server which python model instances it runs (the model
configurations, not the processes it happens to see: a worker killed before the watchdog's first
look is missed otherwise), and returns as soon as one of their stubs, or the server itself, is
gone; the script then restarts the server or exits non-zero so that its supervisor (Docker,
Kubernetes) restarts it.

    python -m qwen3_asr_triton.supervision watch --pid SERVER_PID --url http://127.0.0.1:8000 [--interval 1.0]
    python -m qwen3_asr_triton.supervision regions --pgid SERVER_PID > FILE
    python -m qwen3_asr_triton.supervision clean-shm [--names-file FILE [--wait SECONDS]] [--min-age SECONDS]

``clean-shm`` deletes the shared-memory regions that a killed server left in /dev/shm: those listed
by ``regions`` while it ran (waiting up to ``--wait`` seconds for the killed workers to unmap them),
or (at start-up) every unused one older than ``--min-age``.

Exit status: 3 a python worker died, 4 the server exited, 5 the server never listed its models. The
policy (:class:`WorkerWatch`, :func:`expected_workers`) is pure; :func:`python_workers` reads ``/proc``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("qwen3_asr_triton.supervision")

# Name of the python backend's worker binary, and the index in its argv of the model instance it
# serves ("decoder_0_0"): the stub is started as `stub model.py shm-region shm-size shm-growth
# parent-pid backend-dir ipc-handle instance-name runtime` (seen with Triton 2.51).
STUB_BINARY = "triton_python_backend_stub"
INSTANCE_ARG = 8
EXIT_WORKER_DIED = 3
EXIT_SERVER_EXITED = 4
EXIT_NO_CONFIG = 5
# How long the watchdog keeps asking a running server for its model configurations before it gives
# up (the server answered ready just before, so a few seconds is already a fault).
CONFIG_TIMEOUT_S = 60.0
# Shared-memory regions of the python backend (one per model instance, in /dev/shm). A server or stub
# killed with SIGKILL leaves its regions behind: tmpfs memory that nothing frees until reboot.
SHM_PREFIX = "triton_python_backend_shm_region_"
# How often clean-shm looks again for a killed worker that still maps its region, and the default
# bound on that wait: a stub unmaps its memory within a second of SIGKILL on the machines measured,
# ten times that covers a loaded host and still keeps a restart prompt.
KILLED_POLL_S = 0.1
KILLED_WAIT_S = 10.0


def _parent_pid(stat: str) -> int:
    """Parent pid from a ``/proc/<pid>/stat`` line (the command name may contain spaces and parentheses)."""
    return int(stat.rsplit(")", 1)[1].split()[1])


def children(parent_pid: int, proc: Path = Path("/proc")) -> dict[int, list[str]]:
    """``pid -> argv`` of the live processes whose parent is ``parent_pid`` (read from ``/proc``)."""
    found: dict[int, list[str]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if _parent_pid((entry / "stat").read_text()) != parent_pid:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
        found[int(entry.name)] = [arg.decode(errors="replace") for arg in argv]
    return found


def python_workers(server_pid: int, proc: Path = Path("/proc")) -> dict[int, str]:
    """``pid -> model instance name`` of the python stubs that ``server_pid`` started."""
    return {
        pid: argv[INSTANCE_ARG]
        for pid, argv in children(server_pid, proc).items()
        if argv and argv[0].endswith(STUB_BINARY) and len(argv) > INSTANCE_ARG
    }


def server_running(pid: int, proc: Path = Path("/proc")) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _region_names(text: str) -> set[str]:
    return {word.rsplit("/", 1)[-1] for word in text.split() if word.rsplit("/", 1)[-1].startswith(SHM_PREFIX)}


def _process_regions(entry: Path) -> set[str]:
    """Region names a process maps or was started with (empty when it is gone)."""
    try:
        text = (entry / "maps").read_text(errors="replace")
        text += " " + (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return set()
    return _region_names(text)


def regions_in_use(proc: Path = Path("/proc")) -> set[str]:
    """Names of the python-backend shared-memory regions that a live process maps or was started with."""
    used: set[str] = set()
    for entry in proc.iterdir():
        if entry.name.isdigit():
            used |= _process_regions(entry)
    return used


def group_regions(pgid: int, proc: Path = Path("/proc")) -> set[str]:
    """Regions of the processes in group ``pgid`` (a server started by setsid and its python workers)."""
    names: set[str] = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3]) != pgid:
                continue
        except (OSError, ValueError, IndexError):
            continue
        names |= _process_regions(entry)
    return names


def clean_stale_regions(
    shm: Path = Path("/dev/shm"),
    proc: Path = Path("/proc"),
    names: set[str] | None = None,
    min_age_s: float = 0.0,
) -> list[str]:
    """Delete python-backend regions that no live process uses; returns their names.

    ``names`` limits the candidates (the regions of a server that was just killed); without it every
    region is a candidate once older than ``min_age_s``, so that a server starting at the same moment,
    whose new region is not mapped yet, keeps it.
    """
    in_use = regions_in_use(proc)
    now = time.time()
    stale = []
    for path in sorted(shm.glob(f"{SHM_PREFIX}*")):
        if path.name in in_use or (names is not None and path.name not in names):
            continue
        try:
            if now - path.stat().st_mtime < min_age_s:
                continue
            path.unlink()
        except OSError:
            continue
        stale.append(path.name)
    return stale


def clean_killed_regions(
    names: set[str],
    wait_s: float,
    shm: Path = Path("/dev/shm"),
    proc: Path = Path("/proc"),
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[list[str], list[str]]:
    """Delete a killed server's regions ``names`` once no live process uses them, waiting up to ``wait_s``.

    SIGKILL of a process group returns before its workers are gone: a stub tearing down gigabytes of
    mappings still maps its region for a moment, and a region deleted only when unused would be left
    behind for good. Returns ``(deleted, still in use after the wait)``.
    """
    deleted: list[str] = []
    deadline = clock() + wait_s
    remaining = {name for name in names if (shm / name).exists()}
    while True:
        removed = clean_stale_regions(shm, proc, names=remaining)
        deleted += removed
        remaining = {name for name in remaining - set(removed) if (shm / name).exists()}
        if not remaining or clock() >= deadline:
            return deleted, sorted(remaining)
        sleep(KILLED_POLL_S)


@dataclass(frozen=True)
class WorkerWatch:
    """The decision, apart from reading processes: which expected worker is missing.

    Attributes
    ----------
    expected : frozenset of str
        Model instances whose workers ran when the server was ready.
    """

    expected: frozenset[str]

    def check(self, server_alive: bool, workers: Iterable[str]) -> tuple[int, str] | None:
        """``(exit status, reason)`` when the server or a worker is gone, else ``None``."""
        if not server_alive:
            return EXIT_SERVER_EXITED, "tritonserver exited"
        missing = sorted(self.expected - set(workers))
        if missing:
            return EXIT_WORKER_DIED, f"python worker(s) {', '.join(missing)} died"
        return None


def expected_workers(configs: Iterable[Mapping]) -> frozenset[str]:
    """Instance names (``decoder_0_0``) of the python-backend models in ``configs``.

    ``configs`` are model configurations as Triton's ``GET /v2/models/<name>/config`` returns them:
    Triton has filled in each instance group's name (``<model>_<group index>``), and a stub serves
    instance ``<group name>_<k>`` for k below the group's count (times its GPUs for ``KIND_GPU``).
    """
    names: set[str] = set()
    for config in configs:
        if config.get("backend") != "python":
            continue
        for group in config.get("instance_group", []):
            count = int(group.get("count", 1))
            if group.get("kind") == "KIND_GPU":
                count *= max(1, len(group.get("gpus", [])))
            names.update(f"{group['name']}_{k}" for k in range(count))
    return frozenset(names)


def _get_json(url: str, data: bytes | None = None) -> object:
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=5) as resp:
        return json.load(resp)


def server_configs(url: str) -> list[dict]:
    """Configurations of the models a server at ``url`` (``http://host:port``) has loaded."""
    index = _get_json(f"{url}/v2/repository/index", data=b"{}")
    return [_get_json(f"{url}/v2/models/{entry['name']}/config") for entry in index if entry.get("state") == "READY"]


def watch(pid: int, url: str, interval: float, proc: Path = Path("/proc")) -> tuple[int, str]:
    """Poll every ``interval`` seconds until :meth:`WorkerWatch.check` finds a failure; returns it."""
    deadline = time.monotonic() + CONFIG_TIMEOUT_S
    while True:
        if not server_running(pid, proc):
            return EXIT_SERVER_EXITED, "tritonserver exited"
        try:
            policy = WorkerWatch(expected_workers(server_configs(url)))
            break
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if time.monotonic() > deadline:
                return EXIT_NO_CONFIG, f"the server did not list its models at {url}: {exc}"
            time.sleep(interval)
    logger.info("watching %d python workers of tritonserver %d", len(policy.expected), pid)
    while True:
        verdict = policy.check(server_running(pid, proc), python_workers(pid, proc).values())
        if verdict is not None:
            return verdict
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qwen3_asr_triton.supervision", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("watch", help="return when tritonserver PID or one of its python workers is gone")
    run.add_argument("--pid", type=int, required=True, help="tritonserver's process id")
    run.add_argument("--url", required=True, help="the server's HTTP endpoint, e.g. http://127.0.0.1:8000")
    run.add_argument("--interval", type=float, default=1.0, help="seconds between checks (default 1)")
    regions = sub.add_parser("regions", help="print the shared-memory regions of process group PGID, one a line")
    regions.add_argument("--pgid", type=int, required=True)
    clean = sub.add_parser("clean-shm", help="delete python-backend shared-memory regions that no live process uses")
    clean.add_argument("--names-file", type=Path, help="only these regions (as printed by `regions`)")
    clean.add_argument(
        "--min-age", type=float, default=0.0, help="without --names-file: only regions older than this many seconds"
    )
    clean.add_argument(
        "--wait",
        type=float,
        default=KILLED_WAIT_S,
        help=f"with --names-file: seconds to wait for killed workers to unmap them (default {KILLED_WAIT_S:g})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s watchdog: %(message)s", stream=sys.stderr)
    if args.command == "regions":
        print("\n".join(sorted(group_regions(args.pgid))))
        return 0
    if args.command == "clean-shm":
        if args.wait < 0 or args.min_age < 0:
            parser.error("--wait and --min-age must be >= 0")
        if args.names_file is not None:
            names = set(args.names_file.read_text().split()) if args.names_file.is_file() else set()
            stale, kept = clean_killed_regions(names, args.wait)
            if kept:
                logger.warning("%d region(s) still in use after %.0f s: %s", len(kept), args.wait, kept[:3])
        else:
            stale = clean_stale_regions(min_age_s=args.min_age)
        if stale:
            logger.info("removed %d shared-memory region(s) left by a killed server", len(stale))
        return 0
    if args.interval <= 0:
        parser.error("--interval must be positive")
    if not server_running(args.pid):
        logger.error("no running process %d", args.pid)
        return EXIT_SERVER_EXITED
    status, reason = watch(args.pid, args.url, args.interval)
    logger.error("%s", reason)
    return status


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
