"""What the benchmark needs from a system under test, and the tools the three systems share."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from perf.clips import BenchClip
from perf.load import Reply
from perf.machine import usable_cpus

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
BENCH_CACHE = REPO / ".cache" / "bench"
# Precisions of the benchmark: our exact mode and our fast mode (the peer's counterpart is per system).
PRECISIONS = ("fp32", "fast")


class SystemUnavailableError(RuntimeError):
    """The system cannot run in this configuration here (reported as "not available", not a crash)."""


@dataclass
class SystemConfig:
    """What every system gets: the checkpoint, the precision, the load it must carry, where to write logs."""

    checkpoint: Path
    size: str
    precision: str
    max_concurrency: int
    log_dir: Path
    options: dict[str, str] = field(default_factory=dict)


class BenchSystem(ABC):
    """One system under test: prepared (built), started, sent requests, stopped.

    ``root_pid`` is the process whose whole tree's memory is sampled. ``describe()`` says how
    the system was configured (command line, environment knobs, versions) for the report.
    """

    name = "system"

    def __init__(self, config: SystemConfig) -> None:
        self.config = config

    @property
    def label(self) -> str:
        """Name and precision as printed in tables, e.g. ``triton fp32``."""
        return f"{self.name} {self.precision_label}"

    @property
    def precision_label(self) -> str:
        """The precision this system really runs at for the requested benchmark precision."""
        return self.config.precision

    def max_concurrency(self) -> int | None:
        """Highest concurrency this system is run at (None: any)."""
        return None

    def prepare(self) -> None:  # noqa: B027 - optional step
        """Build what the system needs (not timed). Raises :class:`SystemUnavailableError`."""

    @abstractmethod
    def start(self) -> int:
        """Start serving; return the root pid of its process tree."""

    @abstractmethod
    def transcribe(self, clip: BenchClip, max_new_tokens: int, min_new_tokens: int) -> Reply:
        """One request; ``min_new_tokens == max_new_tokens`` forces the output length."""

    def stream_first_chunk(self, clip: BenchClip, max_new_tokens: int) -> Reply | None:
        """A streamed request with forced length; its ``first_chunk_s`` set. None: no streaming API."""
        return None

    def server_statistics(self) -> dict[str, dict[str, int]] | None:
        """Cumulative per-model server statistics (None when the system has none)."""
        return None

    @abstractmethod
    def stop(self) -> None:
        """Stop everything started (idempotent)."""

    def describe(self) -> dict[str, object]:
        """Configuration details for the report."""
        return {}


# ----------------------------------------------------------------------------- process helpers
def start_process_group(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own session/process group with stdout+stderr to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "wb")  # noqa: SIM115 - owned by the child for its lifetime
    try:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    finally:
        log.close()


def stop_process_group(proc: subprocess.Popen, timeout: float = 60.0) -> int | None:
    """SIGTERM the process group of ``proc`` (started by :func:`start_process_group`), then SIGKILL."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return proc.wait()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        logger.warning("process group %s did not stop in %.0f s; killing it", proc.pid, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(10)


def wait_http_ok(url: str, proc: subprocess.Popen, timeout: float, log_path: Path) -> float:
    """Poll ``url`` until it answers 200; seconds waited. Fails early if ``proc`` exits."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path.is_file() else ""
            raise SystemUnavailableError(f"server exited with {proc.returncode} during start-up:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemUnavailableError(f"{url} not ready after {timeout:.0f} s (log: {log_path})")


def cpu_list() -> str:
    """The CPUs this process may use, as a range list such as ``0-1`` (for OpenMP thread binding)."""
    cpus = usable_cpus()
    ranges, start, prev = [], cpus[0], cpus[0]
    for cpu in cpus[1:]:
        if cpu != prev + 1:
            ranges.append(f"{start}-{prev}" if start != prev else str(start))
            start = cpu
        prev = cpu
    ranges.append(f"{start}-{prev}" if start != prev else str(start))
    return ",".join(ranges)


def parse_knobs(items: list[str]) -> dict[str, str]:
    """``["a=1", "b-c=x"]`` -> ``{"a": "1", "b-c": "x"}`` (a system's extra options from the command line)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        out[key.strip().lstrip("-")] = value.strip()
    return out


@dataclass(frozen=True)
class Skips:
    """What a benchmark run leaves out (``--skip``).

    Attributes
    ----------
    runs : frozenset of (str, str)
        ``(system, precision)`` runs left out whole (``vllm:fast``).
    levels : frozenset of (str, str, int)
        ``(system, precision, concurrency)`` levels left out of a run that still runs at its other levels
        (``vllm:fast@16``: vLLM's emulated bf16 at 16 clients would take longer than the rest of a run).
    """

    runs: frozenset[tuple[str, str]] = frozenset()
    levels: frozenset[tuple[str, str, int]] = frozenset()

    def run_levels(self, system: str, precision: str, levels: Sequence[int], cap: int | None = None) -> list[int]:
        """The concurrency levels a run measures: ``levels`` up to the system's ``cap`` (only ``cap`` where
        every level exceeds it), less those left out (all of them where the whole run is)."""
        if (system, precision) in self.runs:
            return []
        capped = [c for c in levels if cap is None or c <= cap] or ([cap] if cap else [])
        return [c for c in capped if (system, precision, c) not in self.levels]

    def check_levels(self, concurrency: Sequence[int]) -> None:
        """Refuse a level skip at a concurrency the run does not have (a typo would leave nothing out).

        Raises
        ------
        ValueError
            Naming the first such concurrency.
        """
        stray = sorted({c for _, _, c in self.levels} - set(concurrency))
        if stray:
            raise ValueError(f"--skip names concurrency {stray[0]}, which is not one of --concurrency")

    def labels(self) -> list[str]:
        """The values as given on the command line, sorted (the report's "left out" line)."""
        whole = [f"{system}:{precision}" for system, precision in self.runs]
        return sorted(whole + [f"{system}:{precision}@{c}" for system, precision, c in self.levels])


def parse_skips(values: list[str], systems: Sequence[str]) -> Skips:
    """The benchmark's ``--skip`` values: ``system:precision`` (e.g. ``vllm:fast``) leaves a run out,
    ``system:precision@level`` (e.g. ``vllm:fast@16``) one concurrency level of it.

    Raises
    ------
    ValueError
        On a value that does not name one of ``systems``, one of :data:`PRECISIONS` and, after ``@``, a
        concurrency of at least 1.
    """
    runs: set[tuple[str, str]] = set()
    levels: set[tuple[str, str, int]] = set()
    for value in values:
        pair, at, level = value.partition("@")
        system, sep, precision = pair.partition(":")
        if (
            not sep
            or system not in systems
            or precision not in PRECISIONS
            or (at and not (level.isdigit() and int(level) >= 1))
        ):
            raise ValueError(
                f"--skip {value[:40]!r}: expected SYSTEM:PRECISION or SYSTEM:PRECISION@CONCURRENCY, SYSTEM one "
                f"of {', '.join(systems)}, PRECISION one of {', '.join(PRECISIONS)}, CONCURRENCY >= 1"
            )
        if at:
            levels.add((system, precision, int(level)))
        else:
            runs.add((system, precision))
    return Skips(frozenset(runs), frozenset(levels))
