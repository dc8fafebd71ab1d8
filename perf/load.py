"""Closed-loop load: N requests at a fixed concurrency, timed on the client.

Each of C worker threads takes the next request index, sends it, waits for the
answer and takes the next, until N requests are done (so C requests are in flight
until the tail). The clip of request i is ``clips[i % len(clips)]``. Systems are
plain callables ``send(clip) -> Reply``; they block on I/O, so threads are enough.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from perf.clips import BenchClip

logger = logging.getLogger(__name__)

PERCENTILES = (50, 95)


@dataclass(frozen=True)
class Reply:
    """What a system answered for one request.

    ``first_chunk_s`` is the time from sending to the first streamed piece of output, for systems
    that were asked to stream (None otherwise).
    """

    token_ids: tuple[int, ...]
    num_tokens: int
    first_chunk_s: float | None = None


Send = Callable[[BenchClip], Reply]


@dataclass
class LoadResult:
    """One load run: its settings, client-side latencies and derived rates."""

    concurrency: int
    requests: int
    wall_s: float
    audio_s: float
    latencies_s: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    first_chunk_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def audio_per_wall(self) -> float:
        """Seconds of audio recognised per wall-clock second (successful requests only)."""
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0

    def latency(self, pct: float) -> float | None:
        """Latency percentile in seconds (None without successful requests)."""
        return float(np.percentile(self.latencies_s, pct)) if self.latencies_s else None

    def first_chunk(self, pct: float) -> float | None:
        """Streamed first-chunk time percentile in seconds (None when not streamed)."""
        return float(np.percentile(self.first_chunk_s, pct)) if self.first_chunk_s else None

    def summary(self) -> dict[str, object]:
        """JSON-ready numbers (raw lists included)."""
        out = asdict(self)
        out["audio_per_wall"] = self.audio_per_wall
        out["tokens_per_s"] = sum(self.tokens) / self.wall_s if self.wall_s > 0 else 0.0
        for pct in PERCENTILES:
            out[f"p{pct}_s"] = self.latency(pct)
            out[f"first_chunk_p{pct}_s"] = self.first_chunk(pct)
        out["mean_s"] = float(np.mean(self.latencies_s)) if self.latencies_s else None
        return out


def run_load(
    send: Send, clips: Sequence[BenchClip], concurrency: int, requests: int, expect_tokens: int | None = None
) -> LoadResult:
    """Send ``requests`` requests, ``concurrency`` at a time; check each answer's length if ``expect_tokens``."""
    if concurrency < 1 or requests < 1:
        raise ValueError("concurrency and requests must be >= 1")
    lock = threading.Lock()
    next_index = iter(range(requests))
    result = LoadResult(concurrency, requests, 0.0, 0.0)

    def worker() -> None:
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            clip = clips[i % len(clips)]
            t0 = time.perf_counter()
            try:
                reply = send(clip)
            except Exception as exc:  # a failed request is a result, not a crash
                with lock:
                    result.errors.append(f"{type(exc).__name__}: {exc}"[:500])
                continue
            elapsed = time.perf_counter() - t0
            problem = None
            if expect_tokens is not None and reply.num_tokens != expect_tokens:
                problem = f"expected {expect_tokens} tokens, got {reply.num_tokens}"
            with lock:
                if problem:
                    result.errors.append(problem)
                result.latencies_s.append(elapsed)
                result.tokens.append(reply.num_tokens)
                result.audio_s += clip.seconds
                if reply.first_chunk_s is not None:
                    result.first_chunk_s.append(reply.first_chunk_s)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"load-c{concurrency}") as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    result.wall_s = time.perf_counter() - start
    if result.errors:
        logger.warning(
            "c=%s: %s of %s requests had problems; first: %s",
            concurrency,
            len(result.errors),
            requests,
            result.errors[0],
        )
    return result
