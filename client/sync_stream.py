"""Streaming recognition for the blocking client: a stream is an iterator of events.

A sender thread paces and sends the chunks; tritonclient's stream thread
queues the responses; the iterating thread turns them into events. The thread
that iterates therefore sees partials as soon as they arrive, even while a
live source blocks waiting for audio. Each stream opens its own gRPC channel
(tritonclient's blocking client runs one stream per channel).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from .connection import channel_kwargs
from .errors import from_triton
from .stream_session import InboxItem, Kind, StreamEvent, StreamHandleBase
from .stream_source import PcmChunk

logger = logging.getLogger(__name__)


class TranscriptionStream(StreamHandleBase):
    """The events of one stream: :class:`~.types.Partial` hypotheses, then the final :class:`~.types.Transcription`.

    With ``StreamOptions.endpointing`` the events are :class:`~.types.Partial` hypotheses of the
    utterance being spoken and an :class:`~.types.Utterance` for each one that ended; the last
    utterance has ``last=True`` (a stream that ends in silence ends without one).

    Returned by :meth:`Qwen3ASRClient.stream`; nothing is sent before the first ``next()``.
    Iteration ends after the final result. Leaving early (``break``, an exception)
    should be followed by :meth:`close` (or use the stream as a context manager),
    which stops sending and cancels the gRPC stream.

    Notes
    -----
    Iterating raises :class:`~.errors.InvalidRequestError` when the file cannot be
    decoded or the server rejects a chunk (bad option, bad audio...),
    :class:`~.errors.ServerUnavailableError` when the server cannot be reached or
    the stream broke, :class:`~.errors.DeadlineExceededError` when a chunk is not
    answered within ``ClientOptions.timeout`` (with endpointing: the final, within that
    time after the last chunk), and whatever a live source raises.
    A stream that the server ends without an error and without a final result is
    only noticed at that deadline (tritonclient's blocking stream does not report it).
    """

    def __iter__(self) -> Iterator[StreamEvent]:
        return self

    def __next__(self) -> StreamEvent:
        return next(self._events)

    def close(self) -> None:
        """Stop the stream (a no-op once it finished)."""
        self._events.close()

    def __enter__(self) -> TranscriptionStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ sending
    def _chunks(self, stop: threading.Event) -> Iterator[PcmChunk]:
        source, chunk_samples = self._source, self.stream_options.chunk_samples(self._source.sample_rate)
        started = self.session.begin()
        if not source.live:
            for chunk in source.waveform_chunks(chunk_samples):
                wait = chunk.due(started, self.stream_options.speed) - self.session.now()
                if wait > 0 and stop.wait(wait):
                    return
                yield chunk
            return
        rechunker = source.rechunker(chunk_samples)
        for frame in source.frames:
            if stop.is_set():
                return
            yield from rechunker.push(frame)
        yield rechunker.finish()

    def _send_all(self, client: grpcclient.InferenceServerClient, inbox: queue.Queue, stop: threading.Event) -> None:
        try:
            for chunk in self._chunks(stop):
                if stop.is_set():
                    return
                client.async_stream_infer(**self.session.request_for(chunk, self._source.sample_rate))
                inbox.put(InboxItem(Kind.SENT))
        except InferenceServerException as exc:
            inbox.put(InboxItem(Kind.FAILED, error=from_triton(exc, self.session.describe())))
        except Exception as exc:  # the source's failure ends the stream; the consumer re-raises it
            inbox.put(InboxItem(Kind.FAILED, error=exc))

    # ------------------------------------------------------------------ receiving
    def _run(self) -> Iterator[StreamEvent]:
        session, timeout = self.session, self.options.timeout
        self._source.load()
        inbox: queue.Queue[InboxItem] = queue.Queue()
        stop = threading.Event()

        def on_response(result, error) -> None:
            inbox.put(InboxItem(Kind.RESPONSE, session.now(), result, error))

        client = grpcclient.InferenceServerClient(**channel_kwargs(self.options))
        try:
            client.start_stream(callback=on_response, headers=self.options.header_dict or None)
            sender = threading.Thread(
                target=self._send_all, args=(client, inbox, stop), name=f"stream-{session.sequence_id}", daemon=True
            )
            sender.start()
            while not session.finished:
                deadline = session.deadline(timeout)
                try:
                    item = inbox.get(timeout=None if deadline is None else max(0.0, deadline - session.now()))
                except queue.Empty:
                    raise session.timeout_error(timeout) from None
                event = session.handle(item)
                if event is not None:
                    yield event
        finally:
            stop.set()
            # Once the final arrived every chunk is answered and the stream closes at once;
            # otherwise cancel what the server still holds instead of waiting for it.
            client.stop_stream(cancel_requests=not session.finished)
            client.close()
            logger.debug("%s closed (%s)", session.describe(), "finished" if session.finished else "cancelled")
