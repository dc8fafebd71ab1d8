"""diarizer: audio -> speaker turns (who spoke when), qwen3_asr_triton.diarization on ONNX Runtime.

Takes the same audio inputs as ``preprocess`` and enforces the same limits; the speaker-count hints
are validated by ``DiarizationOptions``. Requests are diarized one at a time per instance, each
stopping at its next batch of windows when its client cancels.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from qwen3_asr_triton.artifacts import SPEAKER_FILENAME, VAD_FILENAME
from qwen3_asr_triton.audio import AudioLimits
from qwen3_asr_triton.diarization.diarizer import Diarizer
from qwen3_asr_triton.diarization.options import DiarizationOptions
from qwen3_asr_triton.serving import (
    RequestInputs,
    error_response,
    model_parameters,
    request_waveform,
    setup_worker,
    version_dir,
)


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        setup_worker(params.get("log_level", "INFO"))
        folder = version_dir(args)
        self.audio_limits = AudioLimits.from_parameters(params)
        self.diarizer = Diarizer.from_files(
            folder / SPEAKER_FILENAME, folder / VAD_FILENAME, threads=int(params["threads"])
        )

    def execute(self, requests):
        return [self._one(request) for request in requests]

    def _one(self, request):
        try:
            inputs = RequestInputs(pb_utils, request)
            options = DiarizationOptions.from_request(
                inputs.integer("NUM_SPEAKERS"), inputs.integer("MIN_SPEAKERS"), inputs.integer("MAX_SPEAKERS")
            )
            waveform = request_waveform(inputs, self.audio_limits)
            turns = self.diarizer.diarize(waveform, options, cancelled=request.is_cancelled)
            return pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("TURN_START", np.array([t.start for t in turns], np.float32)),
                    pb_utils.Tensor("TURN_END", np.array([t.end for t in turns], np.float32)),
                    pb_utils.Tensor("TURN_SPEAKER", np.array([t.speaker for t in turns], np.int32)),
                ]
            )
        except Exception as exc:  # per-request isolation: one bad request never fails the others
            return error_response(pb_utils, exc)
