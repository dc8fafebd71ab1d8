"""qwen3_asr: the public entry model (BLS).

Validates the request, calls ``preprocess`` for segmented features, then runs
qwen3_asr_triton.pipeline.Recognizer with BLS stages: encoder windows fan out
to ``encoder``, each segment's prompt goes to ``decoder`` (in-flight batching),
ids to ``postprocess`` and, when timestamps are asked for, the transcript to
``aligner``. BLS rather than an ensemble: the graph has per-window fan-out,
a per-segment loop for long audio and a conditional aligner step.
"""

import asyncio
import contextlib

import numpy as np
import triton_python_backend_utils as pb_utils

from qwen3_asr_triton.audio import AudioLimits, check_payload_size
from qwen3_asr_triton.bls import recognizer_from_parameters
from qwen3_asr_triton.errors import RequestCancelledError
from qwen3_asr_triton.pipeline import PreparedAudio
from qwen3_asr_triton.serving import (
    RequestInputs,
    error_response,
    model_parameters,
    raise_for_bls_error,
    setup_logging,
    transcript_outputs,
    version_dir,
)

AUDIO_INPUTS = ("AUDIO", "WAVEFORM", "SAMPLE_RATE")
# How often a running request checks whether its client went away: a cancelled request stops within
# this plus one decoder step (it has no effect on requests that finish sooner).
CANCEL_POLL_S = 0.05


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        setup_logging(params.get("log_level", "INFO"))
        self.recognizer = recognizer_from_parameters(pb_utils, params, version_dir(args))
        self.audio_limits = AudioLimits(
            max_bytes=int(params["max_audio_bytes"]), max_seconds=float(params["max_audio_seconds"])
        )

    async def execute(self, requests):
        return list(await asyncio.gather(*(self._watched(r) for r in requests)))

    async def _watched(self, request):
        """Run one request; when its client cancels (or its deadline passes), stop the work and answer CANCELLED."""
        task = asyncio.ensure_future(self._one(request))
        while True:
            done, _ = await asyncio.wait({task}, timeout=CANCEL_POLL_S)
            if done:
                return task.result()
            if request.is_cancelled():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task  # runs the stages' clean-up (the decoder's stop request)
                return error_response(pb_utils, RequestCancelledError("the client cancelled the request"), marked=False)

    async def _one(self, request):
        try:
            inputs = RequestInputs(pb_utils, request)
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
            forwarded = [pb_utils.Tensor(name, value[None]) for name, value in arrays.items()]
            forwarded.append(pb_utils.Tensor("RETURN_TIMESTAMPS", np.array([[options.return_timestamps]])))
            pre = await pb_utils.InferenceRequest(
                model_name="preprocess", inputs=forwarded, requested_output_names=["MEL", "SEGMENTS"]
            ).async_exec()
            raise_for_bls_error(pre, "preprocess")
            audio = PreparedAudio(
                pb_utils.get_output_tensor_by_name(pre, "MEL").as_numpy()[0],
                pb_utils.get_output_tensor_by_name(pre, "SEGMENTS").as_numpy()[0],
            )
            result = await self.recognizer.transcribe(audio, options)
            return pb_utils.InferenceResponse(output_tensors=transcript_outputs(pb_utils, result))
        except Exception as exc:  # per-request isolation
            return error_response(pb_utils, exc, marked=False)
