"""What the unary entry models share: request validation, the preprocess call, client cancellation.

``qwen3_asr`` answers a request with the whole transcript; ``qwen3_asr_deltas`` (decoupled) also sends
the transcript's text as the decoder generates it. Both run :meth:`EntryRequests.transcribe` under
:func:`until_cancelled`; their ``model.py`` files only turn the result into responses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import numpy as np

from .audio import AudioLimits, check_payload_size
from .bls import recognizer_from_parameters
from .errors import RequestCancelledError
from .pipeline import PreparedAudio, Transcript
from .serving import RequestInputs, raise_for_bls_error

T = TypeVar("T")

AUDIO_INPUTS = ("AUDIO", "WAVEFORM", "SAMPLE_RATE")
# How often a running request checks whether its client went away: a cancelled request stops within
# this plus one decoder step (it has no effect on requests that finish sooner).
CANCEL_POLL_S = 0.05


async def until_cancelled(work: Awaitable[T], is_cancelled: Callable[[], bool]) -> T:
    """Await ``work``; once ``is_cancelled()`` is true, cancel it and raise :class:`RequestCancelledError`.

    Cancelling runs the work's clean-up (the decoder's stop request) before the error is raised.
    """
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=CANCEL_POLL_S)
        if done:
            return task.result()
        if is_cancelled():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise RequestCancelledError("the client cancelled the request")


class EntryRequests:
    """One entry model's recogniser and limits.

    Parameters
    ----------
    pb_utils : module
        ``triton_python_backend_utils``.
    params : dict of str
        The model's config parameters.
    folder : Path
        The model's version folder (model_spec.json, tokenizer.json).
    """

    def __init__(self, pb_utils: ModuleType, params: dict[str, str], folder: Path) -> None:
        self.pb = pb_utils
        self.recognizer = recognizer_from_parameters(pb_utils, params, folder)
        self.audio_limits = AudioLimits(
            max_bytes=int(params["max_audio_bytes"]), max_seconds=float(params["max_audio_seconds"])
        )

    async def transcribe(self, request, on_delta: Callable[[str], None] | None = None) -> Transcript:
        """Validate ``request``, preprocess its audio and recognise it (``on_delta``: see Recognizer)."""
        pb = self.pb
        inputs = RequestInputs(pb, request)
        options = self.recognizer.options(
            inputs.text("LANGUAGE"),
            inputs.text("CONTEXT"),
            inputs.flag("RETURN_TIMESTAMPS"),
            inputs.integer("MAX_NEW_TOKENS"),
            inputs.integer("MIN_NEW_TOKENS"),
        )
        arrays = {name: value for name in AUDIO_INPUTS if (value := inputs.array(name)) is not None}
        # Refuse an over-limit payload here, before it is copied to preprocess.
        audio, wave, rate = arrays.get("AUDIO"), arrays.get("WAVEFORM"), arrays.get("SAMPLE_RATE")
        check_payload_size(
            self.audio_limits,
            audio_bytes=None if audio is None else sum(len(item) for item in audio.reshape(-1)),
            samples=None if wave is None else wave.shape[0],
            sample_rate=None if rate is None or rate.size != 1 else int(rate.reshape(-1)[0]),
        )
        # preprocess batches requests: each input gets a leading batch dimension of 1.
        forwarded = [pb.Tensor(name, value[None]) for name, value in arrays.items()]
        forwarded.append(pb.Tensor("RETURN_TIMESTAMPS", np.array([[options.return_timestamps]])))
        pre = await pb.InferenceRequest(
            model_name="preprocess", inputs=forwarded, requested_output_names=["MEL", "SEGMENTS"]
        ).async_exec()
        raise_for_bls_error(pre, "preprocess")
        prepared = PreparedAudio.from_wire(
            pb.get_output_tensor_by_name(pre, "MEL").as_numpy()[0],
            pb.get_output_tensor_by_name(pre, "SEGMENTS").as_numpy()[0],
            self.recognizer.spec.features,
        )
        return await self.recognizer.transcribe(prepared, options, on_delta)
