"""Streaming recognition for the asyncio client: a stream is an async iterator of events.

Many streams share the client's channel. gRPC consumes the request generator
(which paces the chunks) in its own task, a reader task queues the responses,
and the consumer turns them into events, so partials arrive as soon as the
server sends them, whatever the source is doing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import grpc
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from .errors import from_status, from_triton
from .options import ClientOptions, StreamOptions, TranscribeOptions
from .stream_session import InboxItem, Kind, StreamEvent, StreamHandleBase
from .stream_source import PcmChunk, StreamSource

logger = logging.getLogger(__name__)

# The server ends a stream right after its final response; give it this long to
# do so before cancelling (a cancelled stream is logged as such on the server).
CLOSE_GRACE_SECONDS = 1.0
_EXHAUSTED = object()


class AsyncTranscriptionStream(StreamHandleBase):
    """The events of one stream, for ``async for``; see :class:`~.sync_stream.TranscriptionStream`.

    Returned by :meth:`AsyncQwen3ASRClient.stream`; nothing is sent before the first
    ``__anext__``. Leaving early should be followed by ``await stream.aclose()``
    (or use ``async with``), which stops sending and cancels the gRPC stream.
    """

    def __init__(
        self,
        client: aioclient.InferenceServerClient,
        options: ClientOptions,
        source: StreamSource,
        request: TranscribeOptions,
        stream_options: StreamOptions,
    ) -> None:
        self._client = client  # before the base creates the event generator that uses it
        super().__init__(options, source, request, stream_options)

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self

    async def __anext__(self) -> StreamEvent:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        """Stop the stream (a no-op once it finished)."""
        await self._events.aclose()

    async def __aenter__(self) -> AsyncTranscriptionStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ sending
    async def _chunks(self) -> AsyncIterator[PcmChunk]:
        source, chunk_samples = self._source, self.stream_options.chunk_samples(self._source.sample_rate)
        started = self.session.begin()
        if not source.live:
            for chunk in source.waveform_chunks(chunk_samples):
                wait = chunk.due(started, self.stream_options.speed) - self.session.now()
                if wait > 0:
                    await asyncio.sleep(wait)
                yield chunk
            return
        rechunker = source.rechunker(chunk_samples)
        if isinstance(source.frames, AsyncIterable):
            async for frame in source.frames:
                for chunk in rechunker.push(frame):
                    yield chunk
        else:
            # A blocking iterator (a microphone...) is read in a worker thread, off the event loop.
            frames = iter(source.frames)
            while (frame := await asyncio.to_thread(next, frames, _EXHAUSTED)) is not _EXHAUSTED:
                for chunk in rechunker.push(frame):
                    yield chunk
        yield rechunker.finish()

    async def _requests(self, inbox: asyncio.Queue[InboxItem]) -> AsyncIterator[dict[str, Any]]:
        try:
            async for chunk in self._chunks():
                yield self.session.request_for(chunk, self._source.sample_rate)
                inbox.put_nowait(InboxItem(Kind.SENT))
        except Exception as exc:  # the source's failure ends the stream; the consumer re-raises it
            inbox.put_nowait(InboxItem(Kind.FAILED, error=exc))

    # ------------------------------------------------------------------ receiving
    async def _read(self, responses: AsyncIterator, inbox: asyncio.Queue[InboxItem]) -> None:
        try:
            async for result, error in responses:
                inbox.put_nowait(InboxItem(Kind.RESPONSE, self.session.now(), result, error))
        except grpc.RpcError as exc:
            code = exc.code() if callable(getattr(exc, "code", None)) else None
            details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
            error = from_status(code.name if code else None, details or str(exc), self.session.describe())
            inbox.put_nowait(InboxItem(Kind.FAILED, error=error))
            return
        inbox.put_nowait(InboxItem(Kind.CLOSED))

    async def _run(self) -> AsyncIterator[StreamEvent]:
        session, timeout = self.session, self.options.timeout
        await asyncio.to_thread(self._source.load)
        inbox: asyncio.Queue[InboxItem] = asyncio.Queue()
        try:
            responses = self._client.stream_infer(self._requests(inbox), headers=self.options.header_dict or None)
        except InferenceServerException as exc:
            raise from_triton(exc, session.describe()) from exc
        reader = asyncio.create_task(self._read(responses, inbox), name=f"stream-{session.sequence_id}")
        try:
            while not session.finished:
                deadline = session.deadline(timeout)
                wait = None if deadline is None else max(0.0, deadline - session.now())
                try:
                    item = await asyncio.wait_for(inbox.get(), wait)
                except asyncio.TimeoutError:
                    raise session.timeout_error(timeout) from None
                event = session.handle(item)
                if event is not None:
                    yield event
        finally:
            if session.finished:
                await asyncio.wait([reader], timeout=CLOSE_GRACE_SECONDS)
            responses.cancel()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            logger.debug("%s closed (%s)", session.describe(), "finished" if session.finished else "cancelled")
