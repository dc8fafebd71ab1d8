"""Calls to Triton on behalf of one HTTP request: cancelled when the HTTP client goes away.

Subtitles ask for word timestamps, so cues follow the words, when the deployment has a forced
aligner (its repository index lists a ready ``aligner`` model; asked once) and a forced language is
one the aligner covers; otherwise cues are timed by segments.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any, TypeVar

from starlette.types import Receive

from qwen3_asr_triton.client import Transcription
from qwen3_asr_triton.languages import ALIGNER_LANGUAGES

from .params import TranscriptionParams

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Formats whose cues are timed by words when the deployment can align them.
SUBTITLE_FORMATS = ("srt", "vtt")
# The forced aligner's model in a repository built with --aligner, the diarizer's with --diarizer.
ALIGNER_MODEL = "aligner"
DIARIZER_MODEL = "diarizer"


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


class OptionalModel:
    """Whether the deployment has an optional model (the aligner, the diarizer), read from its index once."""

    def __init__(self, name: str, missing: str) -> None:
        self.name = name
        self.missing = missing  # logged when the model is absent
        self.present: bool | None = None

    async def available(self, client: Any) -> bool:
        if self.present is None:
            models = await client.models()
            self.present = any(m.name == self.name and m.state == "READY" for m in models)
            if not self.present:
                logger.info("the deployment has no %s: %s", self.name, self.missing)
        return self.present


def aligner_state() -> OptionalModel:
    return OptionalModel(ALIGNER_MODEL, "subtitles are timed by segments")


def diarizer_state() -> OptionalModel:
    return OptionalModel(DIARIZER_MODEL, "speaker labels are refused")


async def transcribe(
    client: Any, audio: bytes, params: TranscriptionParams, aligner: OptionalModel, receive: Receive
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
    wants_words = (
        params.response_format in SUBTITLE_FORMATS
        and not options.timestamps
        and (options.language is None or options.language in ALIGNER_LANGUAGES)
        and await cancel_on_disconnect(aligner.available(client), receive)
    )
    if wants_words:
        options = replace(options, timestamps=True)
    return await cancel_on_disconnect(client.transcribe(audio, options), receive)
