"""Transcribing many files concurrently, where one failure never stops the others."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .async_client import AsyncQwen3ASRClient
from .errors import Qwen3ASRError
from .options import TranscribeOptions
from .types import Transcription

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one input file.

    Attributes
    ----------
    index : int
        Position of the file in the batch.
    path : Path
        The input.
    result : Transcription or None
        None when the file failed.
    error : str or None
        Why it failed ("INVALID_ARGUMENT: could not decode AUDIO ...").
    wall_seconds : float
        Time from sending the file to handling its result.
    """

    index: int
    path: Path
    result: Transcription | None = None
    error: str | None = None
    wall_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class BatchSummary:
    """Totals of a batch: counts, audio and wall time, speed."""

    files: int
    failed: int
    audio_seconds: float
    wall_seconds: float

    @property
    def succeeded(self) -> int:
        return self.files - self.failed

    @property
    def real_time_factor(self) -> float | None:
        """Wall seconds per audio second (below 1 is faster than real time); None without audio."""
        return self.wall_seconds / self.audio_seconds if self.audio_seconds > 0 else None

    @classmethod
    def of(cls, outcomes: list[FileOutcome], wall_seconds: float, extra_failures: int = 0) -> BatchSummary:
        return cls(
            files=len(outcomes) + extra_failures,
            failed=sum(1 for o in outcomes if not o.ok) + extra_failures,
            audio_seconds=sum(o.result.audio_seconds for o in outcomes if o.result is not None),
            wall_seconds=wall_seconds,
        )

    def describe(self) -> str:
        rtf = self.real_time_factor
        speed = f"RTF {rtf:.3f} ({1 / rtf:.1f}x real time)" if rtf else "RTF n/a"
        return (
            f"{self.files} file{'' if self.files == 1 else 's'}: {self.succeeded} ok, {self.failed} failed | "
            f"audio {self.audio_seconds:.1f} s | wall {self.wall_seconds:.1f} s | {speed}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "files": self.files,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "audio_seconds": round(self.audio_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "real_time_factor": self.real_time_factor,
        }


def describe_error(exc: BaseException) -> str:
    """One-line reason for a failed file."""
    if isinstance(exc, Qwen3ASRError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"cannot read or write: {exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc)
    return f"{type(exc).__name__}: {exc}"


async def transcribe_files(
    client: AsyncQwen3ASRClient,
    files: list[Path],
    options: TranscribeOptions,
    concurrency: int,
    handle: Callable[[int, Path, Transcription], None],
    on_done: Callable[[FileOutcome], None] | None = None,
) -> list[FileOutcome]:
    """Transcribe ``files`` with at most ``concurrency`` requests in flight.

    Parameters
    ----------
    client : AsyncQwen3ASRClient
        Open client.
    files : list of Path
        Inputs.
    options : TranscribeOptions
        The same options for every file.
    concurrency : int
        Maximum requests in flight (and files held in memory).
    handle : callable
        ``handle(index, path, result)`` stores or prints a result; an exception it
        raises (a full disk...) fails that file only.
    on_done : callable, optional
        Called with each outcome as it completes (progress reporting).

    Returns
    -------
    list of FileOutcome
        In the order of ``files``.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, path: Path) -> FileOutcome:
        async with gate:
            began = time.perf_counter()
            try:
                result = await client.transcribe(path, options)
                handle(index, path, result)
                outcome = FileOutcome(index, path, result, None, time.perf_counter() - began)
            except Exception as exc:  # one file's failure, whatever it is, must not stop the batch
                logger.debug("%s failed", path, exc_info=True)
                outcome = FileOutcome(index, path, None, describe_error(exc), time.perf_counter() - began)
        if on_done is not None:
            on_done(outcome)
        return outcome

    return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(files))))
