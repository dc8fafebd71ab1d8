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
    speaker : int or None
        Who said it, when the request asked for diarization: 0, 1, ... in order of first appearance
        (shown as "Speaker 1", "Speaker 2", ...); None otherwise, or where no speaker was found.
    """

    text: str
    start: float
    end: float
    speaker: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "start": self.start, "end": self.end}
        if self.speaker is not None:
            out["speaker"] = self.speaker
        return out


@dataclass(frozen=True)
class Segment:
    """A stretch of the audio recognised in one decoder pass (long audio is cut into several).

    Attributes
    ----------
    text : str
        Transcript of this stretch.
    start, end : float
        Seconds from the start of the audio; segments tile the audio without gaps.
    token_ids : tuple of int
        The generated ids of this stretch (end token excluded); a slice of ``Transcription.token_ids``.
    avg_logprob : float or None
        Mean natural-log probability of the generated tokens (end token included); None when the
        server did not report it.
    speaker : int or None
        Who spoke, when the request asked for diarization (segments are then split where the speaker
        changes): 0, 1, ... in order of first appearance; None otherwise, or where no speaker was found.
    """

    text: str
    start: float
    end: float
    token_ids: tuple[int, ...] = ()
    avg_logprob: float | None = None
    speaker: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "token_ids": list(self.token_ids),
            "avg_logprob": self.avg_logprob,
        }
        if self.speaker is not None:
            out["speaker"] = self.speaker
        return out


def speaker_name(speaker: int) -> str:
    """How a speaker number is shown to people: 0 -> "Speaker 1"."""
    return f"Speaker {speaker + 1}"


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
class TextDelta:
    """More transcript text, sent while the decoder generates it (``transcribe_stream``).

    Attributes
    ----------
    text : str
        Text to append to what earlier deltas gave; the deltas join to the final ``Transcription.text``
        unless the server's repetition fix rewrote text already sent.
    """

    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text}


@dataclass(frozen=True)
class Partial:
    """A partial hypothesis of a stream: the server's best guess for the audio received so far.

    Attributes
    ----------
    text : str
        Transcript so far; later partials may rewrite its last words.
    language : str or None
        Detected (or forced) language; None while the model hears no speech.
    token_ids : tuple of int
        Generated token ids.
    audio_seconds : float
        Audio the hypothesis covers, from the start of the stream.
    chunk : int
        0-based index of the chunk it answers (the newest chunk it covers).
    latency : float
        Seconds from sending that chunk to receiving this partial.
    request_id : str
        Id of that chunk's request (it appears in the server's log).
    utterance : int
        0-based index of the utterance it belongs to (always 0 without endpointing).
    utterance_start : float
        Where that utterance starts, in seconds from the start of the stream (0.0 without endpointing).
    """

    text: str
    language: str | None
    token_ids: tuple[int, ...]
    audio_seconds: float
    chunk: int
    latency: float
    request_id: str = ""
    utterance: int = 0
    utterance_start: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "language": self.language,
            "audio_seconds": self.audio_seconds,
            "chunk": self.chunk,
            "latency": round(self.latency, 4),
            "token_ids": list(self.token_ids),
            "request_id": self.request_id,
            "utterance": self.utterance,
            "utterance_start": self.utterance_start,
        }


@dataclass(frozen=True)
class Utterance:
    """One utterance of an endpointing stream, recognised once the speaker paused (or the stream ended).

    Attributes
    ----------
    index : int
        0-based position of the utterance in the stream.
    start, end : float
        Its span, in seconds from the start of the stream (speech padding included).
    transcription : Transcription
        What the server recognised in that span: the same as a unary request of those
        samples, with word and segment times in seconds from the start of the stream.
    chunk : int
        0-based index of the chunk whose request this result answered.
    latency : float
        Seconds from sending that chunk to receiving this result.
    request_id : str
        Id of that chunk's request.
    last : bool
        True for the stream's last event (the utterance that ended with the stream).
    """

    index: int
    start: float
    end: float
    transcription: Transcription
    chunk: int
    latency: float
    request_id: str = ""
    last: bool = False

    @property
    def text(self) -> str:
        """The utterance's transcript (``transcription.text``)."""
        return self.transcription.text

    @property
    def speaker(self) -> int | None:
        """Who spoke the utterance, in a stream started with ``diarize`` (None otherwise)."""
        return next((s.speaker for s in self.transcription.segments if s.speaker is not None), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "start": self.start,
            "end": self.end,
            "chunk": self.chunk,
            "latency": round(self.latency, 4),
            "request_id": self.request_id,
            "last": self.last,
            "transcription": self.transcription.to_dict(),
        }


@dataclass(frozen=True)
class StreamStats:
    """What one stream sent and received so far.

    Attributes
    ----------
    sequence_id : int
        The stream's correlation id on the server.
    chunk_offsets : tuple of float
        When each chunk was sent, in seconds from the start of the stream.
    partials : int
        Partial hypotheses received (the server skips a chunk's partial when a
        newer chunk of the stream arrived while it waited).
    audio_seconds : float
        Audio sent, in seconds.
    final_latency : float or None
        Seconds from sending the last chunk (END) to receiving the final result;
        None until it arrived.
    utterances : int
        Utterance results received (endpointing streams only; 0 otherwise).
    """

    sequence_id: int
    chunk_offsets: tuple[float, ...] = ()
    partials: int = 0
    audio_seconds: float = 0.0
    final_latency: float | None = None
    utterances: int = 0

    @property
    def chunks(self) -> int:
        """Chunks sent, the END chunk included."""
        return len(self.chunk_offsets)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sequence_id": self.sequence_id,
            "chunks": self.chunks,
            "partials": self.partials,
            "audio_seconds": round(self.audio_seconds, 3),
            "final_latency": None if self.final_latency is None else round(self.final_latency, 4),
            "utterances": self.utterances,
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
