"""``stream=true``: OpenAI's transcription events as server-sent events, token by token from Triton.

The deltas come from :meth:`AsyncQwen3ASRClient.transcribe_stream`, an async
iterator that yields text deltas while the decoder generates and then one
:class:`Transcription` (the same result as the unary call). The first event is
awaited before the response starts, so a request Triton refuses (bad audio)
still gets its HTTP error status; a failure after that arrives as an
``{"error": {...}}`` event, which OpenAI's SDKs raise. When the HTTP client
disconnects, the iteration stops and the iterator is closed, which cancels
the request on the server. OpenAI ends these streams with the done event, not ``[DONE]``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from qwen3_asr_triton.client import Qwen3ASRError, Transcription

from .calls import cancel_on_disconnect
from .errors import SERVER_ERROR, ApiError, from_client_error
from .responses import delta_event, done_event, error_event

logger = logging.getLogger(__name__)

# Headers of an event stream: no caching, and no buffering by a proxy in front (nginx honours this).
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _ended_early() -> ApiError:
    return ApiError(
        502, "the speech recognition server ended the stream without a result", SERVER_ERROR, None, "upstream_error"
    )


async def _close(events: AsyncIterator[Any]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        with anyio.CancelScope(shield=True):
            await aclose()


class EventStreamResponse(StreamingResponse):
    """A ``text/event-stream`` response that closes its events and calls ``on_close`` however it ends."""

    def __init__(self, body: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(body, media_type="text/event-stream", headers=SSE_HEADERS)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await _close(self.body_iterator)
            finally:
                self._on_close()


async def _body(first: Any, events: AsyncIterator[Any], triton_url: str) -> AsyncIterator[bytes]:
    """SSE bytes from the first event on; ends after the done event or an error event.

    The events are awaited in this task itself (never in a helper task), so that a disconnect's
    cancellation reaches the gRPC stream directly and closing the iterator never races a pending step.
    """
    item = first
    try:
        while True:
            if isinstance(item, Transcription):
                yield done_event(item)
                return
            text = getattr(item, "text", "")
            if text:
                yield delta_event(text)
            try:
                item = await anext(events)
            except StopAsyncIteration:
                logger.error("transcribe_stream ended without a Transcription")
                yield error_event(_ended_early().body())
                return
            except Qwen3ASRError as exc:
                yield error_event(from_client_error(exc, triton_url).body())
                return
    finally:
        await _close(events)


async def start_stream(
    client: Any,
    audio: bytes,
    options: Any,
    triton_url: str,
    receive: Receive,
    on_close: Callable[[], None],
) -> EventStreamResponse:
    """Begin a streamed transcription and return its response once the first event arrived.

    Raises
    ------
    ApiError
        502 when the stream ended at once.
    Qwen3ASRError
        Triton refused or failed the request before its first event (its deadline, the client's
        ``ClientOptions.timeout``, bounds the whole stream: DeadlineExceededError).
    ClientGoneError
        The HTTP client went away meanwhile (the stream is closed).
    """
    events = client.transcribe_stream(audio, options)
    try:
        first = await cancel_on_disconnect(anext(events), receive)
    except StopAsyncIteration:
        await _close(events)
        raise _ended_early() from None
    except BaseException:
        await _close(events)
        raise
    return EventStreamResponse(_body(first, events, triton_url), on_close)
