"""Calls to Triton on behalf of one HTTP request: cancelled when the HTTP client goes away.

Subtitles ask for word timestamps, so cues follow the words; a deployment
without the forced aligner (or a language it does not cover) is answered
without them, and a deployment known to have no aligner is not asked again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any, TypeVar

from starlette.types import Receive

from qwen3_asr_triton.client import InvalidRequestError, Transcription

from .params import TranscriptionParams

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Formats whose cues are timed by words when the deployment can align them.
SUBTITLE_FORMATS = ("srt", "vtt")
# How the server words a refusal of RETURN_TIMESTAMPS (qwen3_asr_triton.pipeline): no aligner in this
# deployment, or a forced language the aligner does not cover.
_NO_ALIGNER = "needs a forced aligner"
_ALIGNER_LANGUAGE = "the forced aligner does not support"


class ClientGoneError(Exception):
    """The HTTP client disconnected before its answer was ready."""


async def cancel_on_disconnect(awaitable: Awaitable[T], receive: Receive) -> T:
    """Await ``awaitable``, cancelling it if the HTTP client disconnects first.

    Call it once the request body has been read: from then on, the only message
    ``receive`` gives is ``http.disconnect``.

    Raises
    ------
    ClientGoneError
        The client went away; ``awaitable`` was cancelled (which cancels its gRPC call).
    """
    work = asyncio.ensure_future(awaitable)

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            return work.result()
        raise ClientGoneError
    finally:
        for task in (work, watcher):
            if not task.done():
                task.cancel()
        await asyncio.gather(work, watcher, return_exceptions=True)


class AlignerState:
    """Whether the deployment showed it has no forced aligner (then subtitles stop asking for one)."""

    def __init__(self) -> None:
        self.missing = False


async def transcribe(
    client: Any, audio: bytes, params: TranscriptionParams, aligner: AlignerState, receive: Receive
) -> Transcription:
    """One unary transcription for ``params``; subtitles try word timestamps first.

    Raises
    ------
    Qwen3ASRError
        The client's errors (the caller maps them to HTTP).
    ClientGoneError
        The HTTP client disconnected; the call was cancelled.
    """
    options = params.options
    wants_words = params.response_format in SUBTITLE_FORMATS and not options.timestamps and not aligner.missing
    if not wants_words:
        return await cancel_on_disconnect(client.transcribe(audio, options), receive)
    try:
        return await cancel_on_disconnect(client.transcribe(audio, replace(options, timestamps=True)), receive)
    except InvalidRequestError as exc:
        if _NO_ALIGNER in exc.message:
            logger.info("the deployment has no forced aligner: subtitles are timed by segments")
            aligner.missing = True
        elif _ALIGNER_LANGUAGE not in exc.message:
            raise
    return await cancel_on_disconnect(client.transcribe(audio, options), receive)
