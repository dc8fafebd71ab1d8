"""preprocess: audio bytes or PCM -> segmented 128-bin log-mel (see qwen3_asr_triton.pipeline.prepare_audio).

Dynamically batched: requests that arrive together are answered together, so a burst reaches the
encoder at once and is encoded as one batch. Every input and output has a leading batch
dimension of 1 (one clip per request).
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from qwen3_asr_triton.audio import AudioLimits
from qwen3_asr_triton.features import LogMel
from qwen3_asr_triton.model_spec import ModelSpec
from qwen3_asr_triton.pipeline import RecognizerLimits, prepare_audio
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
        spec = ModelSpec.load(version_dir(args))
        self.features = spec.features
        self.log_mel = LogMel(spec.features)
        self.audio_limits = AudioLimits.from_parameters(params)
        self.limits = RecognizerLimits(
            max_segment_seconds=float(params["max_segment_seconds"]),
            max_align_segment_seconds=float(params["max_align_segment_seconds"]),
        )

    def execute(self, requests):
        return [self._one(request) for request in requests]

    def _one(self, request):
        try:
            inputs = RequestInputs(pb_utils, request)
            waveform = request_waveform(inputs, self.audio_limits)
            seconds = self.limits.segment_seconds(inputs.flag("RETURN_TIMESTAMPS"))
            mel, segments = prepare_audio(waveform, self.features, seconds, self.log_mel).wire()
            return pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("MEL", np.ascontiguousarray(mel[None], dtype=np.float32)),
                    pb_utils.Tensor("SEGMENTS", segments[None]),
                ]
            )
        except Exception as exc:  # per-request isolation: one bad file never fails the others
            return error_response(pb_utils, exc)
