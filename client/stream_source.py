"""What a stream plays, cut into chunks: a file decoded locally, a waveform, or frames of a live source.

The streaming model takes PCM, so files are decoded here (to 16 kHz mono float32,
exactly as the server decodes a unary request's AUDIO, so the final results of
both agree). Waveforms keep their own sample rate: the server resamples.
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from qwen3_asr_triton.errors import InputError

from .errors import InvalidRequestError
from .wire import waveform_to_float32

# Rate of the PCM that qwen3_asr_triton.audio.load_audio decodes files to (its TARGET_SAMPLE_RATE). That
# module is imported only when a file is decoded: it loads libsndfile and libsoxr, which the CLI's other
# commands do not need.
DECODED_SAMPLE_RATE = 16000

StreamInput = Union[
    str, "os.PathLike[str]", bytes, bytearray, memoryview, np.ndarray, Iterable[np.ndarray], AsyncIterable[np.ndarray]
]


@dataclass(frozen=True)
class PcmChunk:
    """One chunk to send.

    Attributes
    ----------
    samples : numpy.ndarray
        Mono float32 PCM.
    end_seconds : float
        Audio of the stream up to the end of this chunk, in seconds.
    last : bool
        The chunk that carries END.
    """

    samples: np.ndarray
    end_seconds: float
    last: bool

    def due(self, started_at: float, speed: float) -> float:
        """Clock time to send this chunk of a file played from ``started_at`` at ``speed`` (0: at once).

        A chunk is due when its last sample would have been captured live.
        """
        return started_at + self.end_seconds / speed if speed > 0 else started_at


def _check_rate(sample_rate: object) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    return int(sample_rate)


def split_waveform(wave: np.ndarray, sample_rate: int, chunk_samples: int) -> Iterator[PcmChunk]:
    """Chunks of ``chunk_samples`` (the last one shorter); one empty END chunk for an empty waveform."""
    count = max(1, math.ceil(wave.size / chunk_samples))
    for i in range(count):
        end = min((i + 1) * chunk_samples, wave.size)
        yield PcmChunk(wave[i * chunk_samples : end], end / sample_rate, i == count - 1)


class Rechunker:
    """Gathers frames of a live source into chunks of ``chunk_samples``.

    Parameters
    ----------
    chunk_samples : int
        Samples per chunk.
    sample_rate : int
        Rate of the frames, Hz.
    """

    def __init__(self, chunk_samples: int, sample_rate: int) -> None:
        self.chunk_samples = chunk_samples
        self.sample_rate = sample_rate
        self._held: list[np.ndarray] = []
        self._held_samples = 0
        self._sent_samples = 0

    def _chunk(self, samples: np.ndarray, last: bool) -> PcmChunk:
        self._sent_samples += samples.size
        return PcmChunk(samples, self._sent_samples / self.sample_rate, last)

    def push(self, frame: np.ndarray) -> list[PcmChunk]:
        """Take one frame (any length, mono or ``[samples, channels]``); return the chunks it completed."""
        samples = waveform_to_float32(frame)
        if samples.size == 0:
            return []
        self._held.append(samples)
        self._held_samples += samples.size
        if self._held_samples < self.chunk_samples:
            return []
        joined = np.concatenate(self._held)
        whole = joined.size - joined.size % self.chunk_samples
        rest = joined[whole:]
        self._held = [rest] if rest.size else []
        self._held_samples = rest.size
        return [self._chunk(joined[i : i + self.chunk_samples], False) for i in range(0, whole, self.chunk_samples)]

    def finish(self) -> PcmChunk:
        """The END chunk: whatever is held (possibly nothing)."""
        rest = np.concatenate(self._held) if self._held else np.zeros(0, np.float32)
        self._held, self._held_samples = [], 0
        return self._chunk(rest, True)


class StreamSource:
    """The audio of one stream.

    Parameters
    ----------
    source : path, bytes, numpy.ndarray or iterable of numpy.ndarray
        An audio file (path or bytes; decoded locally to 16 kHz mono), PCM samples
        ``[samples]`` / ``[samples, channels]`` (float, int16 or int32), or a live
        source: an iterable (or, for the asyncio client, an async iterable) of such
        PCM frames of any length.
    sample_rate : int, optional
        Rate of a waveform or of live frames in Hz (required for them, rejected for files).

    Raises
    ------
    ValueError
        A missing or superfluous sample rate, or a source of an unsupported type.
    """

    def __init__(self, source: StreamInput, sample_rate: int | None = None) -> None:
        self._encoded: Path | bytes | None = None
        self._wave: np.ndarray | None = None
        self.frames: Iterable[np.ndarray] | AsyncIterable[np.ndarray] | None = None
        if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
            if sample_rate is not None:
                raise ValueError("sample_rate only applies to PCM; an audio file carries its own")
            self._encoded = Path(source) if isinstance(source, (str, os.PathLike)) else bytes(source)
            self.sample_rate = DECODED_SAMPLE_RATE
            return
        if not isinstance(source, (np.ndarray, Iterable, AsyncIterable)):
            kind = type(source).__name__
            raise ValueError(f"audio must be a path, bytes, a numpy waveform or an iterable of PCM frames, got {kind}")
        if sample_rate is None:
            raise ValueError("PCM audio needs its sample_rate")
        self.sample_rate = _check_rate(sample_rate)
        if isinstance(source, np.ndarray):
            self._wave = waveform_to_float32(source)
        else:
            self.frames = source

    @property
    def live(self) -> bool:
        """True for a live source (frames sent as they come, never paced)."""
        return self.frames is not None

    def load(self) -> None:
        """Read and decode a file source (blocking); nothing to do for the others.

        Raises
        ------
        OSError
            The file cannot be read.
        InvalidRequestError
            The bytes are not audio that libsndfile or FFmpeg can decode.
        """
        if self._encoded is None or self._wave is not None:
            return
        from qwen3_asr_triton.audio import load_audio

        data = self._encoded.read_bytes() if isinstance(self._encoded, Path) else self._encoded
        try:
            self._wave = load_audio(data)
        except InputError as exc:
            where = f" {self._encoded}" if isinstance(self._encoded, Path) else ""
            raise InvalidRequestError(f"could not decode the audio{where}: {exc}") from exc

    def waveform_chunks(self, chunk_samples: int) -> Iterator[PcmChunk]:
        """Chunks of a file or waveform source (call :meth:`load` first for a file)."""
        if self._wave is None:
            raise RuntimeError("a live source has no waveform; a file source must be loaded first")
        return split_waveform(self._wave, self.sample_rate, chunk_samples)

    def rechunker(self, chunk_samples: int) -> Rechunker:
        """A :class:`Rechunker` for this source's live frames."""
        return Rechunker(chunk_samples, self.sample_rate)
