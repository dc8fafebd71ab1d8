"""asyncio client for ``qwen3_asr`` over gRPC: the same API as the sync client, awaitable.

>>> import asyncio
>>> from qwen3_asr_triton.client import AsyncQwen3ASRClient
>>> async def main(paths):  # doctest: +SKIP
...     async with AsyncQwen3ASRClient("127.0.0.1:8001") as client:
...         return await asyncio.gather(*(client.transcribe(p) for p in paths))

Create it inside the running event loop that will use it (gRPC's asyncio
channel binds to that loop). Many concurrent calls share one channel.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from .async_stream import AsyncTranscriptionStream
from .connection import channel_kwargs, describe, infer_call
from .errors import DeadlineExceededError, MalformedResponseError, from_status, from_stream_error
from .options import ClientOptions, StreamOptions, TranscribeOptions
from .retry import CallBudget
from .stream_source import StreamInput, StreamSource
from .types import ModelMetadata, ModelState, ServerHealth, TextDelta, Transcription
from .wire import (
    DELTA_OUTPUTS,
    AudioInput,
    parse_delta,
    parse_model_metadata,
    parse_repository_index,
    parse_result,
    requested_outputs,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")


class AsyncQwen3ASRClient:
    """asyncio client; see :class:`~qwen3_asr_triton.client.sync_client.Qwen3ASRClient` for the semantics.

    Parameters
    ----------
    options : ClientOptions or str, optional
        Connection options, or just the ``host:port`` URL.
    """

    def __init__(self, options: ClientOptions | str | None = None) -> None:
        if options is None:
            options = ClientOptions()
        elif isinstance(options, str):
            options = ClientOptions(url=options)
        self.options = options
        self._client = aioclient.InferenceServerClient(**channel_kwargs(options))

    async def _call(
        self, action: str, method: Callable[..., Awaitable[T]], *args: Any, deadline: float | None = None, **kwargs: Any
    ) -> T:
        timeout = self.options.timeout if deadline is None else deadline
        budget = CallBudget(self.options.retry, timeout, describe(self.options, action))
        headers = self.options.header_dict or None
        while True:
            timeout = budget.start_attempt()
            if timeout is not None and timeout <= 0:
                raise budget.expired_error()
            try:
                return await method(*args, headers=headers, client_timeout=timeout, **kwargs)
            except InferenceServerException as exc:
                delay = budget.after_failure(exc)
            await asyncio.sleep(delay)

    async def transcribe(
        self,
        audio: AudioInput,
        options: TranscribeOptions | None = None,
        *,
        sample_rate: int | None = None,
    ) -> Transcription:
        """Recognise one audio input (a path is read in a worker thread, not on the event loop).

        See :meth:`Qwen3ASRClient.transcribe` for parameters and errors.
        """
        if isinstance(audio, (str, os.PathLike)):
            audio = await asyncio.to_thread(Path(audio).read_bytes)
        request_id, args, kwargs = infer_call(self.options, audio, options, sample_rate)
        logger.debug("infer %s request %s", self.options.model, request_id)
        result = await self._call(f"infer {self.options.model}", self._client.infer, *args, **kwargs)
        return parse_result(result, request_id)

    async def transcribe_stream(
        self,
        audio: AudioInput,
        options: TranscribeOptions | None = None,
        *,
        sample_rate: int | None = None,
    ) -> AsyncIterator[TextDelta | Transcription]:
        """Recognise one audio input, receiving the transcript as the decoder generates it.

        Yields :class:`TextDelta` pieces while the server decodes, then one :class:`Transcription`,
        the same as :meth:`transcribe` gives. The request goes to ``ClientOptions.deltas_model`` over
        a gRPC stream; leaving the loop early (or cancelling the task) cancels it on the server.
        ``ClientOptions.timeout`` bounds the whole call; there are no retries (text already
        yielded cannot be taken back).

        >>> async for event in client.transcribe_stream("call.wav"):  # doctest: +SKIP
        ...     print(event.text, end="" if isinstance(event, TextDelta) else "\n")

        Raises
        ------
        Qwen3ASRError
            As :meth:`transcribe`: InvalidRequestError, ServerUnavailableError, DeadlineExceededError.
        """
        if isinstance(audio, (str, os.PathLike)):
            audio = await asyncio.to_thread(Path(audio).read_bytes)
        request_id, (_, inputs), kwargs = infer_call(self.options, audio, options, sample_rate)
        context = describe(self.options, f"infer {self.options.deltas_model}")
        finished = asyncio.Event()

        async def requests() -> AsyncIterator[dict]:
            yield {
                "model_name": self.options.deltas_model,
                "inputs": inputs,
                "outputs": requested_outputs(DELTA_OUTPUTS),
                "model_version": kwargs["model_version"],
                "request_id": request_id,
            }
            await finished.wait()  # keep the stream open until the last response

        loop = asyncio.get_running_loop()
        deadline = None if self.options.timeout is None else loop.time() + self.options.timeout
        try:
            responses = self._client.stream_infer(requests(), headers=self.options.header_dict or None)
        except InferenceServerException as exc:
            raise from_stream_error(exc, context) from exc
        stream = responses.__aiter__()
        try:
            while True:
                wait = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    result, error = await asyncio.wait_for(stream.__anext__(), wait)
                except asyncio.TimeoutError:
                    raise DeadlineExceededError(f"no answer within {self.options.timeout:g} s ({context})") from None
                except StopAsyncIteration:
                    raise MalformedResponseError(f"the stream ended without a final response ({context})") from None
                except grpc.RpcError as exc:
                    code = exc.code() if callable(getattr(exc, "code", None)) else None
                    details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
                    raise from_status(code.name if code else None, details or str(exc), context) from exc
                if error is not None:
                    raise from_stream_error(error, context)
                delta = parse_delta(result, request_id)
                if delta is None:
                    yield parse_result(result, request_id)
                    return
                yield delta
        finally:
            finished.set()
            responses.cancel()

    def stream(
        self,
        audio: StreamInput,
        options: TranscribeOptions | None = None,
        stream_options: StreamOptions | None = None,
        *,
        sample_rate: int | None = None,
    ) -> AsyncTranscriptionStream:
        """Recognise audio as a stream; see :meth:`Qwen3ASRClient.stream`.

        >>> async with client.stream(wave, sample_rate=16000) as events:  # doctest: +SKIP
        ...     async for event in events:
        ...         print(event.text)

        Live frames may also come from an async iterable. A file is decoded in a
        worker thread, a blocking iterable is read in one: neither blocks the event loop.
        Many streams run concurrently on the client's one channel.
        """
        source = StreamSource(audio, sample_rate)
        return AsyncTranscriptionStream(
            self._client, self.options, source, options or TranscribeOptions(), stream_options or StreamOptions()
        )

    async def health(self, timeout: float | None = None, model: str | None = None) -> ServerHealth:
        """Liveness and readiness of the server and of a model.

        Parameters
        ----------
        timeout : float, optional
            Deadline of each of the four calls; default: ``ClientOptions.timeout``.
        model : str, optional
            Model whose readiness is checked; default: the entry model.
        """
        live = await self._call("server live", self._client.is_server_live, deadline=timeout)
        ready = await self._call("server ready", self._client.is_server_ready, deadline=timeout)
        model = model or self.options.model
        model_ready = await self._call(
            "model ready", self._client.is_model_ready, model, self.options.model_version, deadline=timeout
        )
        meta = await self._call("server metadata", self._client.get_server_metadata, as_json=True, deadline=timeout)
        return ServerHealth(
            live=bool(live),
            ready=bool(ready),
            model_ready=bool(model_ready),
            model=model,
            server_version=str(meta.get("version", "")),
        )

    async def model_metadata(self, model: str | None = None) -> ModelMetadata:
        """Inputs, outputs and versions of ``model`` (default: the entry model)."""
        name = model or self.options.model
        data = await self._call(f"metadata of {name}", self._client.get_model_metadata, name, as_json=True)
        return parse_model_metadata(data)

    async def models(self) -> list[ModelState]:
        """Every model in the server's repository with its state."""
        data = await self._call("repository index", self._client.get_model_repository_index, as_json=True)
        return parse_repository_index(data)

    async def close(self) -> None:
        """Close the gRPC channel."""
        await self._client.close()

    async def __aenter__(self) -> AsyncQwen3ASRClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
