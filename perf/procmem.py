"""Peak memory of a whole process tree (a server and every worker / stub it started), sampled."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import psutil

logger = logging.getLogger(__name__)

# Sampling period: short enough to catch a load spike of a few seconds, cheap enough
# (one /proc read per process) not to disturb a 2-core machine.
SAMPLE_SECONDS = 0.25
MIB = 1024 * 1024


@dataclass
class MemoryPeak:
    """Peaks over the sampled lifetime of a tree, in MiB.

    ``rss`` sums each process's resident set (shared pages count once per process that maps
    them: an upper bound); ``pss`` sums proportional set sizes (shared pages split between
    their users), which is what the tree really costs. ``processes`` is the largest tree seen.
    """

    rss_mib: float = 0.0
    pss_mib: float = 0.0
    processes: int = 0
    samples: int = 0


def tree_memory(root_pid: int) -> tuple[float, float, int]:
    """(sum of RSS MiB, sum of PSS MiB, process count) of ``root_pid`` and all its descendants now."""
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0, 0.0, 0
    rss = pss = 0
    count = 0
    for proc in procs:
        try:
            info = proc.memory_full_info()
        except psutil.AccessDenied:
            try:
                info = proc.memory_info()
            except psutil.Error:
                continue
        except psutil.Error:
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
        count += 1
    return rss / MIB, pss / MIB, count


class TreeSampler:
    """Samples a process tree's memory in a background thread; ``peak`` holds the maxima so far."""

    def __init__(self, root_pid: int, period: float = SAMPLE_SECONDS) -> None:
        self.root_pid = root_pid
        self.period = period
        self.peak = MemoryPeak()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mem-{root_pid}", daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> MemoryPeak:
        """Stop sampling (one last sample first) and return the peaks."""
        if not self._stop.is_set():
            self._stop.set()
            if self._thread.is_alive():
                self._thread.join()
        return self.peak

    def sample(self) -> None:
        """Take one sample now."""
        rss, pss, count = tree_memory(self.root_pid)
        peak = self.peak
        peak.rss_mib = max(peak.rss_mib, rss)
        peak.pss_mib = max(peak.pss_mib, pss)
        peak.processes = max(peak.processes, count)
        peak.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.sample()
        self.sample()
        logger.debug("memory sampler of %s: %s", self.root_pid, self.peak)
