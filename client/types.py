"""Typed results returned by the client: transcriptions, server health and model metadata.

Every type is a frozen dataclass with a ``to_dict`` that gives plain JSON-ready
values, so callers never touch numpy arrays or tritonclient objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Word:
    """One aligned word (a CJK character counts as a word).

    Attributes
    ----------
    text : str
        The word as the aligner timed it (letters, digits and apostrophes only).
    start, end : float
        Seconds from the start of the audio.
    """

    text: str
    start: float
    end: float

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class Segment:
    """A stretch of the audio recognised in one decoder pass (long audio is cut into several).

    Attributes
    ----------
    text : str
        Transcript of this stretch.
    start, end : float
        Seconds from the start of the audio; segments tile the audio without gaps.
    """

    text: str
    start: float
    end: float

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class Transcription:
    """What the server recognised in one audio input.

    Attributes
    ----------
    text : str
        The whole transcript.
    language : str or None
        The language the model detected (or the forced one), as its English name
        ("English"); several names joined by commas when segments differ
        ("Chinese,English"); None when the model heard no speech.
    confidence : float
        Geometric mean of the generated tokens' probabilities, in (0, 1].
    words : tuple of Word
        Word timings; empty unless timestamps were requested.
    segments : tuple of Segment
        The decoder passes, in order; the last one ends at the end of the audio.
    token_ids : tuple of int
        Generated token ids (useful for debugging and parity checks).
    request_id : str
        The id this client sent with the request (it appears in the server's log).
    """

    text: str
    language: str | None
    confidence: float
    words: tuple[Word, ...] = ()
    segments: tuple[Segment, ...] = ()
    token_ids: tuple[int, ...] = ()
    request_id: str = ""

    @property
    def audio_seconds(self) -> float:
        """Duration of the audio the server decoded (0.0 if it reported no segment)."""
        return self.segments[-1].end if self.segments else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "language": self.language,
            "confidence": self.confidence,
            "audio_seconds": self.audio_seconds,
            "words": [w.to_dict() for w in self.words],
            "segments": [s.to_dict() for s in self.segments],
            "token_ids": list(self.token_ids),
            "request_id": self.request_id,
        }


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model: name, Triton datatype and shape (-1 = variable)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ModelMetadata:
    """What the server reports about one model."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": list(self.versions),
            "platform": self.platform,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


@dataclass(frozen=True)
class ModelState:
    """One entry of the server's model repository index."""

    name: str
    version: str
    state: str
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "state": self.state, "reason": self.reason}


@dataclass(frozen=True)
class ServerHealth:
    """Liveness and readiness of the server and of the entry model."""

    live: bool
    ready: bool
    model_ready: bool
    model: str
    server_version: str = ""

    @property
    def ok(self) -> bool:
        """True when requests to the entry model can be served."""
        return self.live and self.ready and self.model_ready

    def to_dict(self) -> dict[str, Any]:
        return {
            "live": self.live,
            "ready": self.ready,
            "model": self.model,
            "model_ready": self.model_ready,
            "server_version": self.server_version,
            "ok": self.ok,
        }
