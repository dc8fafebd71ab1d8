"""Bookkeeping of one stream, shared by the sync and asyncio drivers (no I/O here).

A session numbers the chunks, builds their requests, remembers when each was
sent, and turns responses into events: a :class:`Partial` for the newest chunk
answered so far, the final :class:`Transcription` for END. Responses are matched
to chunks by request id (Triton copies it into the response). The server answers
a stream's chunks in order and skips the partial of a chunk that a newer one
superseded, so a response to chunk ``k`` also settles every chunk before it;
that is what the per-chunk deadline is measured against.

With endpointing a chunk gets zero or several responses: the :class:`Utterance`
results of the utterances that ended, then at most one :class:`Partial` of the
one still open; chunks of silence get none. An unanswered chunk then says
nothing about the server, so the deadline of an endpointing stream covers the
END chunk only: once END is sent, the last response (IS_FINAL) must come within
the timeout of sending it. Before END, a server that hangs without breaking the
stream is not noticed (a broken stream is, at once, as without endpointing).
"""

from __future__ import annotations

import enum
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tritonclient.utils import InferenceServerException

from .errors import DeadlineExceededError, MalformedResponseError, Qwen3ASRError, from_stream_error
from .options import ClientOptions, EndpointingOptions, StreamOptions, TranscribeOptions
from .stream_source import PcmChunk, StreamSource
from .stream_wire import chunk_inputs, is_final, make_utterance, parse_partial, response_id, utterance_info
from .types import Partial, StreamStats, Transcription, Utterance
from .wire import parse_result

logger = logging.getLogger(__name__)

# Triton takes correlation ids as uint64 and tritonclient sends them as int64:
# 63 random bits fit both, and make a clash between live streams negligible.
SEQUENCE_ID_BITS = 63

StreamEvent = Partial | Utterance | Transcription


def new_sequence_id() -> int:
    """A random non-zero correlation id (0 means "no sequence" to Triton)."""
    return secrets.randbits(SEQUENCE_ID_BITS) or 1


def check_stream_request(request: TranscribeOptions, endpointing: EndpointingOptions | None) -> None:
    """Refuse what a stream cannot do: it labels speakers utterance by utterance (online), so diarization
    needs endpointing and takes no speaker count but ``max_speakers``.

    Raises
    ------
    ValueError
        ``diarize`` without endpointing, or ``num_speakers`` / ``min_speakers`` on a stream.
    """
    if not request.diarize:
        return
    if endpointing is None:
        raise ValueError("a stream labels speakers per utterance: diarize needs endpointing")
    for name in ("num_speakers", "min_speakers"):
        if getattr(request, name) is not None:
            raise ValueError(f"{name} does not apply to streams (speakers are found online); use max_speakers")


class Kind(enum.Enum):
    """What a driver's inbox item reports."""

    SENT = "a chunk was handed to gRPC (only wakes the waiting consumer up)"
    RESPONSE = "a response or a per-request error arrived"
    FAILED = "sending failed (the source raised, or the stream broke)"
    CLOSED = "the server closed the stream"


@dataclass(frozen=True)
class InboxItem:
    """One item of the queue between a driver's gRPC side and the consumer of events.

    Attributes
    ----------
    kind : Kind
        What happened.
    at : float
        Clock time of a response's arrival.
    result : InferResult, optional
        The response.
    error : BaseException, optional
        A response's error (tritonclient's), or the failure that stopped the stream.
    """

    kind: Kind
    at: float = 0.0
    result: Any = None
    error: BaseException | None = None


@dataclass(frozen=True)
class _SentChunk:
    index: int
    request_id: str
    sent_at: float


class StreamSession:
    """One stream's requests and responses.

    Parameters
    ----------
    options : ClientOptions
        Model, version and URL (for messages).
    request : TranscribeOptions
        Sent with the START chunk.
    clock : callable
        Monotonic clock in seconds, injected for tests.
    endpointing : EndpointingOptions, optional
        Ask the server to cut the stream into utterances (sent with the START chunk).

    Notes
    -----
    Thread-safe: a sender thread may build requests while another thread handles responses.
    """

    def __init__(
        self,
        options: ClientOptions,
        request: TranscribeOptions,
        clock: Callable[[], float] = time.perf_counter,
        endpointing: EndpointingOptions | None = None,
    ) -> None:
        check_stream_request(request, endpointing)
        self.options = options
        self.request = request
        self.endpointing = endpointing
        self.sequence_id = new_sequence_id()
        self._clock = clock
        self._id_prefix = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._sent: list[_SentChunk] = []
        self._by_id: dict[str, _SentChunk] = {}
        self._answered = -1  # every chunk up to this index is settled
        self._last_partial = -1
        self._partials = 0
        self._audio_seconds = 0.0
        self._started_at = clock()
        self._final_latency: float | None = None
        self._end: _SentChunk | None = None  # the END chunk, once sent
        self._utterances = 0
        self._last_utterance = -1  # highest utterance index whose result arrived

    @property
    def finished(self) -> bool:
        """True once the final result arrived."""
        return self._final_latency is not None

    def describe(self) -> str:
        """Short description for messages ("stream 123 of qwen3_asr_streaming at host:port")."""
        return f"stream {self.sequence_id} of {self.options.stream_model} at {self.options.url}"

    def request_for(self, chunk: PcmChunk, sample_rate: int) -> dict[str, Any]:
        """Keyword arguments of ``async_stream_infer`` (and the dict ``stream_infer`` takes) for the next chunk."""
        with self._lock:
            index = len(self._sent)
            start = index == 0
            inputs = chunk_inputs(
                chunk.samples,
                sample_rate,
                self.request if start else None,
                self.endpointing if start else None,
            )
            sent = _SentChunk(index, f"{self._id_prefix}-{index}", self._clock())
            self._sent.append(sent)
            self._by_id[sent.request_id] = sent
            if chunk.last:
                self._end = sent
            self._audio_seconds = chunk.end_seconds
        logger.debug("%s: chunk %d (%d samples, end=%s)", self.describe(), index, chunk.samples.size, chunk.last)
        return {
            "model_name": self.options.stream_model,
            "model_version": self.options.model_version,
            "inputs": inputs,
            "request_id": sent.request_id,
            "sequence_id": self.sequence_id,
            "sequence_start": index == 0,
            "sequence_end": chunk.last,
        }

    def on_result(self, result, received_at: float) -> StreamEvent | None:
        """The event for one response, or None for a partial that is stale (older than one already seen).

        Raises
        ------
        MalformedResponseError
            The response answers no chunk of this stream, or lacks its outputs.
        """
        request_id = response_id(result)
        with self._lock:
            sent = self._by_id.get(request_id)
            if sent is None:
                raise MalformedResponseError(f"a response to unknown request {request_id!r} ({self.describe()})")
            final = is_final(result, request_id)
            latency = received_at - sent.sent_at
            if self.endpointing is not None:
                return self._on_endpointing_result(result, sent, final, latency, request_id)
            if final:
                self._answered = len(self._sent) - 1
                self._final_latency = latency
                return parse_result(result, request_id)
            self._answered = max(self._answered, sent.index)
            if sent.index <= self._last_partial or self.finished:
                logger.debug("%s: stale partial of chunk %d dropped", self.describe(), sent.index)
                return None
            self._last_partial = sent.index
            self._partials += 1
        return parse_partial(result, sent.index, latency, request_id)

    def _on_endpointing_result(
        self, result, sent: _SentChunk, final: bool, latency: float, request_id: str
    ) -> Partial | Utterance | None:
        """``on_result`` of an endpointing stream (the lock held): an utterance's result, a partial, or None.

        The IS_FINAL response ends the stream: it is the last utterance's result
        (``last=True``) or, when no utterance was open, an empty response (None).
        """
        if self.finished:
            logger.debug("%s: response after the final dropped (chunk %d)", self.describe(), sent.index)
            return None
        info = utterance_info(result, request_id)
        utterance_final = final if info.final is None else info.final
        event: Partial | Utterance | None = None
        if utterance_final:
            event = make_utterance(info, parse_result(result, request_id), sent.index, latency, request_id, final)
            self._utterances += 1
            self._last_utterance = max(self._last_utterance, info.index)
        elif not final:
            if sent.index <= self._last_partial or info.index <= self._last_utterance:
                logger.debug("%s: stale partial of chunk %d dropped", self.describe(), sent.index)
            else:
                event = parse_partial(result, sent.index, latency, request_id)
                self._last_partial = sent.index
                self._partials += 1
        self._answered = max(self._answered, sent.index)
        if final:
            self._answered = len(self._sent) - 1
            self._final_latency = latency
        return event

    def handle(self, item: InboxItem) -> StreamEvent | None:
        """The event an inbox item yields, if any.

        Raises
        ------
        Qwen3ASRError
            The item is an error of the stream or of one of its requests, or the
            stream closed before the final result.
        Exception
            Whatever the source raised while the stream was being sent.
        """
        if item.kind is Kind.SENT:
            return None
        if item.kind is Kind.FAILED:
            raise item.error
        if item.kind is Kind.CLOSED:
            if self.finished:
                return None
            raise Qwen3ASRError(f"{self.describe()}: the server closed the stream before the final result")
        if item.error is not None:
            raise self.error(item.error)
        return self.on_result(item.result, item.at)

    def begin(self) -> float:
        """Mark the start of sending (the origin of :attr:`StreamStats.chunk_offsets`); returns the clock time."""
        with self._lock:
            self._started_at = self._clock()
            return self._started_at

    def now(self) -> float:
        """The session's clock (the time base of deadlines and latencies)."""
        return self._clock()

    def error(self, exc: InferenceServerException) -> Qwen3ASRError:
        """The client's exception for an error received on the stream."""
        return from_stream_error(exc, self.describe())

    def _waiting(self) -> _SentChunk | None:
        """The chunk whose answer is owed (the lock held): the oldest unanswered one; with endpointing, END."""
        if self.finished:
            return None
        if self.endpointing is not None:
            return self._end
        waiting = self._answered + 1
        return self._sent[waiting] if waiting < len(self._sent) else None

    def deadline(self, timeout: float | None) -> float | None:
        """Clock time by which the chunk owed an answer must get it; None when none is waiting.

        Without endpointing every chunk is owed one (a partial, or a newer chunk's answer that
        settles it); with endpointing only END is (the final), since chunks of silence get none.
        """
        if timeout is None:
            return None
        with self._lock:
            waiting = self._waiting()
            return None if waiting is None else waiting.sent_at + timeout

    def timeout_error(self, timeout: float | None) -> DeadlineExceededError:
        """Error for a chunk left unanswered past the deadline."""
        with self._lock:
            waiting = self._waiting()
            index = self._answered + 1 if waiting is None else waiting.index
        return DeadlineExceededError(
            f"{self.describe()}: chunk {index} not answered within the {timeout:g} s deadline", "DEADLINE_EXCEEDED"
        )

    def stats(self) -> StreamStats:
        """What was sent and received so far."""
        with self._lock:
            return StreamStats(
                sequence_id=self.sequence_id,
                chunk_offsets=tuple(round(s.sent_at - self._started_at, 6) for s in self._sent),
                partials=self._partials,
                audio_seconds=self._audio_seconds,
                final_latency=self._final_latency,
                utterances=self._utterances,
            )


class StreamHandleBase:
    """What the sync and asyncio stream objects share: their options, session, source and event generator.

    Subclasses define ``_run``, the (sync or async) generator of their events; creating it sends nothing.
    """

    def __init__(
        self,
        options: ClientOptions,
        source: StreamSource,
        request: TranscribeOptions,
        stream_options: StreamOptions,
    ) -> None:
        self.options = options
        self.stream_options = stream_options
        self.session = StreamSession(options, request, endpointing=stream_options.endpointing)
        self._source = source
        self._events = self._run()

    @property
    def sequence_id(self) -> int:
        """Correlation id of the stream on the server."""
        return self.session.sequence_id

    @property
    def stats(self) -> StreamStats:
        """Chunks sent, partials received and the final's latency so far."""
        return self.session.stats()
