"""qwen3_asr_deltas: a qwen3_asr request whose transcript also arrives as it is generated (decoupled).

The same inputs and recognition as ``qwen3_asr`` (qwen3_asr_triton.entry), with the decoder streaming
its steps: every step that extends the transcript gives a response with that text in TEXT_DELTA
(IS_FINAL false); the last response holds every qwen3_asr output, TEXT equal to what qwen3_asr
answers, and IS_FINAL true. The OpenAI-compatible gateway's ``stream=true`` is built on it.
"""

import asyncio

import numpy as np
import triton_python_backend_utils as pb_utils

from qwen3_asr_triton.entry import EntryRequests, until_cancelled
from qwen3_asr_triton.serving import (
    error_response,
    model_parameters,
    setup_worker,
    string_tensor,
    transcript_outputs,
    version_dir,
)

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _marks(delta, final):
    return [string_tensor(pb_utils, "TEXT_DELTA", [delta]), pb_utils.Tensor("IS_FINAL", np.array([final]))]


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        setup_worker(params.get("log_level", "INFO"))
        self.entry = EntryRequests(pb_utils, params, version_dir(args))

    async def execute(self, requests):
        await asyncio.gather(*(self._one(r) for r in requests))

    async def _one(self, request):
        sender = request.get_response_sender()

        def send_delta(text):
            if not sender.is_cancelled():
                sender.send(pb_utils.InferenceResponse(output_tensors=_marks(text, False)))

        try:
            result = await until_cancelled(self.entry.transcribe(request, send_delta), sender.is_cancelled)
            response = pb_utils.InferenceResponse(
                output_tensors=transcript_outputs(pb_utils, result) + _marks("", True)
            )
        except Exception as exc:  # per-request isolation
            response = error_response(pb_utils, exc, marked=False)
        try:
            sender.send(response, flags=FINAL)
        except pb_utils.TritonModelException as exc:  # the client is gone
            pb_utils.Logger.log_warn(f"qwen3_asr_deltas: final response not sent: {exc}")
