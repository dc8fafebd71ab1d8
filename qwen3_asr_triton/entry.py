"""What the unary entry models share: request validation, the preprocess call, client cancellation.

``qwen3_asr`` answers a request with the whole transcript; ``qwen3_asr_deltas`` (decoupled) also sends
the transcript's text as the decoder generates it. Both run :meth:`EntryRequests.transcribe` under
:func:`until_cancelled`; their ``model.py`` files only turn the result into responses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import numpy as np

from .audio import AudioLimits, check_payload_size
from .bls import recognizer_from_parameters, run_bls
from .diarization.labels import label_transcript, transcript_parser
from .diarization.options import DiarizationOptions
from .diarization.turns import SpeakerTurn
from .errors import InputError, RequestCancelledError
from .languages import ALIGNER_LANGUAGES
from .pipeline import PreparedAudio, RecognitionOptions, Transcript
from .serving import RequestInputs, raise_for_bls_error

T = TypeVar("T")

AUDIO_INPUTS = ("AUDIO", "WAVEFORM", "SAMPLE_RATE")
# The speaker-count hints of a DIARIZE request, in DiarizationOptions.from_request's order.
SPEAKER_INPUTS = ("NUM_SPEAKERS", "MIN_SPEAKERS", "MAX_SPEAKERS")
DIARIZER_MODEL = "diarizer"
TURN_OUTPUTS = ["TURN_START", "TURN_END", "TURN_SPEAKER"]
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
        self.audio_limits = AudioLimits.from_parameters(params)
        self.has_diarizer = params["diarizer_enabled"] == "true"

    def speaker_options(self, inputs: RequestInputs) -> DiarizationOptions | None:
        """The request's diarization hints when it asks for ``DIARIZE`` (None when it does not)."""
        if not inputs.flag("DIARIZE"):
            for name in SPEAKER_INPUTS:
                if inputs.array(name) is not None:
                    raise InputError(f"{name} applies only with DIARIZE")
            return None
        if not self.has_diarizer:
            raise InputError(
                "DIARIZE needs a diarizer, and this deployment has none (build the model repository with --diarizer)"
            )
        return DiarizationOptions.from_request(*(inputs.integer(name) for name in SPEAKER_INPUTS))

    async def diarize(self, forwarded: dict[str, np.ndarray], speakers: DiarizationOptions) -> list[SpeakerTurn]:
        """The ``diarizer`` model's speaker turns for the request's audio inputs."""
        pb = self.pb
        hints = {
            name: value
            for name, value in zip(
                SPEAKER_INPUTS, (speakers.num_speakers, speakers.min_speakers, speakers.max_speakers)
            )
            if value is not None
        }
        inputs = [pb.Tensor(name, value) for name, value in forwarded.items()]
        inputs += [pb.Tensor(name, np.array([value], np.int32)) for name, value in hints.items()]
        request = pb.InferenceRequest(model_name=DIARIZER_MODEL, inputs=inputs, requested_output_names=TURN_OUTPUTS)
        response = await run_bls(request.exec)
        raise_for_bls_error(response, DIARIZER_MODEL)
        start, end, speaker = (pb.get_output_tensor_by_name(response, n).as_numpy().reshape(-1) for n in TURN_OUTPUTS)
        return [SpeakerTurn(float(a), float(b), int(k)) for a, b, k in zip(start, end, speaker)]

    def label(self, transcript: Transcript, turns: list[SpeakerTurn], forced_language: str | None) -> Transcript:
        """``transcript`` with a speaker per segment and per word, its segments split at speaker changes."""
        transcript_of = transcript_parser(self.recognizer.prompts.tokenizer.decode, forced_language)
        segments, words = label_transcript(transcript.segments, transcript.words, turns, transcript_of)
        return replace(
            transcript,
            segments=[s for s, _ in segments],
            segment_speakers=[k for _, k in segments],
            words=[w for w, _ in words],
            word_speakers=[k for _, k in words],
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
        speakers = self.speaker_options(inputs)
        if speakers is not None and self.recognizer.has_aligner and options.language in (None, *ALIGNER_LANGUAGES):
            # Word times let segments split where the speaker changes.
            options = replace(options, return_timestamps=True)
        arrays = {name: value for name in AUDIO_INPUTS if (value := inputs.array(name)) is not None}
        # Refuse an over-limit payload here, before it is copied to preprocess.
        audio, wave, rate = arrays.get("AUDIO"), arrays.get("WAVEFORM"), arrays.get("SAMPLE_RATE")
        check_payload_size(
            self.audio_limits,
            audio_bytes=None if audio is None else sum(len(item) for item in audio.reshape(-1)),
            samples=None if wave is None else wave.shape[0],
            sample_rate=None if rate is None or rate.size != 1 else int(rate.reshape(-1)[0]),
        )
        # The diarizer runs beside the recognition, on the same audio inputs.
        diarizing = None if speakers is None else asyncio.ensure_future(self.diarize(arrays, speakers))
        try:
            transcript = await self._recognize(arrays, options, on_delta)
            if diarizing is None:
                return transcript
            return self.label(transcript, await diarizing, options.language)
        finally:
            if diarizing is not None and not diarizing.done():
                diarizing.cancel()

    async def _recognize(
        self, arrays: dict[str, np.ndarray], options: RecognitionOptions, on_delta: Callable[[str], None] | None
    ) -> Transcript:
        pb = self.pb
        # preprocess batches requests: each input gets a leading batch dimension of 1.
        forwarded = [pb.Tensor(name, value[None]) for name, value in arrays.items()]
        forwarded.append(pb.Tensor("RETURN_TIMESTAMPS", np.array([[options.return_timestamps]])))
        pre = await run_bls(
            pb.InferenceRequest(
                model_name="preprocess", inputs=forwarded, requested_output_names=["MEL", "SEGMENTS"]
            ).exec
        )
        raise_for_bls_error(pre, "preprocess")
        prepared = PreparedAudio.from_wire(
            pb.get_output_tensor_by_name(pre, "MEL").as_numpy()[0],
            pb.get_output_tensor_by_name(pre, "SEGMENTS").as_numpy()[0],
            self.recognizer.spec.features,
        )
        return await self.recognizer.transcribe(prepared, options, on_delta)
