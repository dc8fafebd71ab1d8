"""Blocking client for ``qwen3_asr`` over gRPC.

>>> from qwen3_asr_triton.client import Qwen3ASRClient, TranscribeOptions
>>> with Qwen3ASRClient("127.0.0.1:8001") as client:  # doctest: +SKIP
...     result = client.transcribe("meeting.m4a", TranscribeOptions(language="en", timestamps=True))
...     print(result.text, [(w.text, w.start) for w in result.words])

One client holds one gRPC channel and is safe to share between threads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from .connection import channel_kwargs, describe, infer_call
from .options import ClientOptions, StreamOptions, TranscribeOptions
from .retry import CallBudget
from .stream_source import StreamInput, StreamSource
from .sync_stream import TranscriptionStream
from .types import ModelMetadata, ModelState, ServerHealth, Transcription
from .wire import AudioInput, parse_model_metadata, parse_repository_index, parse_result

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Qwen3ASRClient:
    """Synchronous client.

    Parameters
    ----------
    options : ClientOptions or str, optional
        Connection options, or just the ``host:port`` URL.

    Notes
    -----
    Every call is bounded by ``options.timeout`` (retries included) and retried on
    UNAVAILABLE per ``options.retry``. Failures raise
    :class:`~qwen3_asr_triton.client.errors.Qwen3ASRError` subclasses.
    """

    def __init__(self, options: ClientOptions | str | None = None) -> None:
        if options is None:
            options = ClientOptions()
        elif isinstance(options, str):
            options = ClientOptions(url=options)
        self.options = options
        self._client = grpcclient.InferenceServerClient(**channel_kwargs(options))

    # ------------------------------------------------------------------ plumbing
    def _call(
        self, action: str, method: Callable[..., T], *args: Any, deadline: float | None = None, **kwargs: Any
    ) -> T:
        timeout = self.options.timeout if deadline is None else deadline
        budget = CallBudget(self.options.retry, timeout, describe(self.options, action))
        headers = self.options.header_dict or None
        while True:
            timeout = budget.start_attempt()
            if timeout is not None and timeout <= 0:
                raise budget.expired_error()
            try:
                return method(*args, headers=headers, client_timeout=timeout, **kwargs)
            except InferenceServerException as exc:
                delay = budget.after_failure(exc)
            time.sleep(delay)

    # ------------------------------------------------------------------ API
    def transcribe(
        self,
        audio: AudioInput,
        options: TranscribeOptions | None = None,
        *,
        sample_rate: int | None = None,
    ) -> Transcription:
        """Recognise one audio input.

        Parameters
        ----------
        audio : path, bytes or numpy.ndarray
            An audio file (path or its bytes, any format FFmpeg reads), or PCM samples
            ``[samples]`` / ``[samples, channels]`` (float, int16 or int32).
        options : TranscribeOptions, optional
            Language, context, timestamps, token cap.
        sample_rate : int, optional
            Rate of a numpy waveform in Hz (required for one, rejected otherwise).

        Returns
        -------
        Transcription

        Raises
        ------
        InvalidRequestError
            The server rejected the input (undecodable audio, unknown language...).
        ServerUnavailableError
            Unreachable or overloaded, still after every retry.
        DeadlineExceededError
            No answer within ``ClientOptions.timeout``.
        """
        request_id, args, kwargs = infer_call(self.options, audio, options, sample_rate)
        logger.debug("infer %s request %s", self.options.model, request_id)
        result = self._call(f"infer {self.options.model}", self._client.infer, *args, **kwargs)
        return parse_result(result, request_id)

    def stream(
        self,
        audio: StreamInput,
        options: TranscribeOptions | None = None,
        stream_options: StreamOptions | None = None,
        *,
        sample_rate: int | None = None,
    ) -> TranscriptionStream:
        """Recognise audio as a stream: partial hypotheses while it plays, then the final result.

        >>> with client.stream("call.wav", TranscribeOptions(language="en")) as events:  # doctest: +SKIP
        ...     for event in events:
        ...         print(event.text)  # Partial ..., then the final Transcription

        Parameters
        ----------
        audio : path, bytes, numpy.ndarray or iterable of numpy.ndarray
            An audio file (decoded here to 16 kHz mono), PCM samples ``[samples]`` /
            ``[samples, channels]`` (float, int16 or int32), or a live source: an
            iterable of PCM frames of any length, sent as it yields.
        options : TranscribeOptions, optional
            Language, context, timestamps (of the final result), token cap.
        stream_options : StreamOptions, optional
            Chunk length and, for a file or waveform, the playback speed.
        sample_rate : int, optional
            Rate of PCM samples or frames in Hz (required for them, rejected for a file).

        Returns
        -------
        TranscriptionStream
            Iterator of :class:`~.types.Partial` events and, last, the final
            :class:`~.types.Transcription`, which equals :meth:`transcribe` of the same PCM.
            With ``stream_options.endpointing``: partials and an :class:`~.types.Utterance`
            per utterance, each equal to :meth:`transcribe` of its span of the PCM.
            Errors surface while iterating (see :class:`TranscriptionStream`).

        Notes
        -----
        ``ClientOptions.timeout`` bounds the wait for each chunk's answer (and for the
        final after the last chunk), not the whole stream. Streams are not retried:
        the server holds their state.
        """
        source = StreamSource(audio, sample_rate)
        if source.live and not isinstance(source.frames, Iterable):
            raise ValueError("an async iterable of frames needs AsyncQwen3ASRClient")
        request, pacing = options or TranscribeOptions(), stream_options or StreamOptions()
        return TranscriptionStream(self.options, source, request, pacing)

    def health(self, timeout: float | None = None, model: str | None = None) -> ServerHealth:
        """Liveness and readiness of the server and of a model.

        Parameters
        ----------
        timeout : float, optional
            Deadline of each of the four calls; default: ``ClientOptions.timeout``.
        model : str, optional
            Model whose readiness is checked; default: the entry model.

        Raises
        ------
        ServerUnavailableError
            The server cannot be reached.
        """
        live = self._call("server live", self._client.is_server_live, deadline=timeout)
        ready = self._call("server ready", self._client.is_server_ready, deadline=timeout)
        model = model or self.options.model
        model_ready = self._call(
            "model ready", self._client.is_model_ready, model, self.options.model_version, deadline=timeout
        )
        meta = self._call("server metadata", self._client.get_server_metadata, as_json=True, deadline=timeout)
        return ServerHealth(
            live=bool(live),
            ready=bool(ready),
            model_ready=bool(model_ready),
            model=model,
            server_version=str(meta.get("version", "")),
        )

    def model_metadata(self, model: str | None = None) -> ModelMetadata:
        """Inputs, outputs and versions of ``model`` (default: the entry model)."""
        name = model or self.options.model
        data = self._call(f"metadata of {name}", self._client.get_model_metadata, name, as_json=True)
        return parse_model_metadata(data)

    def models(self) -> list[ModelState]:
        """Every model in the server's repository with its state (READY, UNAVAILABLE...)."""
        return parse_repository_index(
            self._call("repository index", self._client.get_model_repository_index, as_json=True)
        )

    def close(self) -> None:
        """Close the gRPC channel."""
        self._client.close()

    def __enter__(self) -> Qwen3ASRClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
