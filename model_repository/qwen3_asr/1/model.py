"""qwen3_asr: the public entry model (BLS).

Validates the request, calls ``preprocess`` for segmented features, then runs
qwen3_asr_triton.pipeline.Recognizer with BLS stages: encoder windows fan out
to ``encoder``, each segment's prompt goes to ``decoder`` (in-flight batching),
ids to ``postprocess`` and, when timestamps are asked for, the transcript to
``aligner``. BLS rather than an ensemble: the graph has per-window fan-out,
a per-segment loop for long audio and a conditional aligner step. The shared
request handling is qwen3_asr_triton.entry.
"""

import asyncio

import triton_python_backend_utils as pb_utils

from qwen3_asr_triton.entry import EntryRequests, until_cancelled
from qwen3_asr_triton.serving import error_response, model_parameters, setup_worker, transcript_outputs, version_dir


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        setup_worker(params.get("log_level", "INFO"))
        self.entry = EntryRequests(pb_utils, params, version_dir(args))

    async def execute(self, requests):
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    async def _one(self, request):
        """One request; when its client cancels (or its deadline passes), the work stops: CANCELLED."""
        try:
            result = await until_cancelled(self.entry.transcribe(request), request.is_cancelled)
            return pb_utils.InferenceResponse(output_tensors=transcript_outputs(pb_utils, result))
        except Exception as exc:  # per-request isolation
            return error_response(pb_utils, exc, marked=False)
