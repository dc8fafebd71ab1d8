"""Peak memory of a whole process tree (a server and every worker / stub it started), sampled."""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

# Sampling period of the resident set: short enough to catch a load spike of a few seconds, cheap
# enough (one /proc/<pid>/statm read per process, ~0.1 ms) not to disturb a 2-core machine.
# PSS is not sampled in the background: reading it walks every mapped page (measured 0.23 s of CPU
# for a 4.7 GB vLLM worker), which at this period would take most of a core from the system under
# test. It is read only on request (``sample(pss=True)``, between load levels) and at the end.
SAMPLE_SECONDS = 0.25
MIB = 1024 * 1024


@dataclass
class MemoryPeak:
    """Peaks over the sampled lifetime of a tree, in MiB.

    ``rss`` sums each process's resident set (shared pages count once per process that maps
    them: an upper bound), sampled every period; ``pss`` sums proportional set sizes (shared
    pages split between their users), which is what the tree really costs, read only at the
    explicit samples. ``processes`` is the largest tree seen.
    """

    rss_mib: float = 0.0
    pss_mib: float = 0.0
    processes: int = 0
    samples: int = 0


def tree_processes(root_pid: int) -> list[psutil.Process]:
    """``root_pid`` and all its descendants now (empty when it is gone)."""
    try:
        root = psutil.Process(root_pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_memory(root_pid: int, pss: bool = True) -> tuple[float, float, int]:
    """(sum of RSS MiB, sum of PSS MiB, process count) of ``root_pid`` and all its descendants now.

    With ``pss=False`` only the cheap resident-set read is done and the PSS sum is 0.
    """
    rss = pss_total = 0
    count = 0
    for proc in tree_processes(root_pid):
        try:
            info = proc.memory_full_info() if pss else proc.memory_info()
        except psutil.AccessDenied:
            try:
                info = proc.memory_info()
            except psutil.Error:
                continue
        except psutil.Error:
            continue
        rss += info.rss
        pss_total += getattr(info, "pss", info.rss) if pss else 0
        count += 1
    return rss / MIB, pss_total / MIB, count


# A python backend stub's command line names its model instance ("decoder_0_0": model, group, index).
_INSTANCE = re.compile(r"^(?P<model>.+)_\d+_\d+$")


def process_label(cmdline: list[str]) -> str:
    """A short name for a server process: the model of a Triton python stub, else its program or module."""
    if not cmdline:
        return "?"
    if "triton_python_backend_stub" in cmdline[0]:
        for arg in cmdline[1:]:
            if match := _INSTANCE.match(arg):
                return match["model"]
        return "python-stub"
    if "-m" in cmdline[:-1]:
        return cmdline[cmdline.index("-m") + 1].rsplit(".", 1)[-1]
    return Path(cmdline[0]).name


def tree_cpu_seconds(root_pid: int) -> dict[str, float]:
    """User + system CPU seconds used so far by ``root_pid`` and its live descendants, per :func:`process_label`."""
    totals: dict[str, float] = {}
    for proc in tree_processes(root_pid):
        try:
            times, label = proc.cpu_times(), process_label(proc.cmdline())
        except psutil.Error:
            continue
        totals[label] = totals.get(label, 0.0) + times.user + times.system
    return totals


class TreeSampler:
    """Samples a process tree's memory in a background thread; ``peak`` holds the maxima so far.

    ``history`` keeps every sample as ``(seconds since start, RSS MiB, PSS MiB or None)``; with
    ``pss_period`` the background thread also reads PSS that often (it is costly; see above).
    """

    def __init__(self, root_pid: int, period: float = SAMPLE_SECONDS, pss_period: float | None = None) -> None:
        self.root_pid = root_pid
        self.period = period
        self.pss_period = pss_period
        self.peak = MemoryPeak()
        self.history: list[tuple[float, float, float | None]] = []
        self._began = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mem-{root_pid}", daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> MemoryPeak:
        """Stop sampling (one last sample, with PSS, first) and return the peaks."""
        if not self._stop.is_set():
            self._stop.set()
            if self._thread.is_alive():
                self._thread.join()
        return self.peak

    def sample(self, pss: bool = False) -> None:
        """Take one sample now (``pss``: also the costly proportional set size)."""
        rss, proportional, count = tree_memory(self.root_pid, pss)
        self.history.append((time.monotonic() - self._began, rss, proportional if pss else None))
        peak = self.peak
        peak.rss_mib = max(peak.rss_mib, rss)
        peak.pss_mib = max(peak.pss_mib, proportional)
        peak.processes = max(peak.processes, count)
        peak.samples += 1

    def _run(self) -> None:
        last_pss = None
        while not self._stop.wait(self.period):
            now = time.monotonic()
            due = self.pss_period is not None and (last_pss is None or now - last_pss >= self.pss_period)
            self.sample(pss=due)
            last_pss = now if due else last_pss
        self.sample(pss=True)
        logger.debug("memory sampler of %s: %s", self.root_pid, self.peak)
