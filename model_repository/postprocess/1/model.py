"""postprocess: generated ids -> transcript and language (repetition fix, "language X<asr_text>" parsing)."""

import triton_python_backend_utils as pb_utils

from qwen3_asr_triton.output import parse_asr_output
from qwen3_asr_triton.serving import (
    RequestInputs,
    error_response,
    model_parameters,
    setup_worker,
    string_tensor,
    version_dir,
)
from qwen3_asr_triton.tokenizer import TextTokenizer


class TritonPythonModel:
    def initialize(self, args):
        setup_worker(model_parameters(args).get("log_level", "INFO"))
        self.tokenizer = TextTokenizer.from_file(version_dir(args))

    def execute(self, requests):
        return [self._one(request) for request in requests]

    def _one(self, request):
        try:
            inputs = RequestInputs(pb_utils, request)
            ids = inputs.required("TOKEN_IDS")
            forced = inputs.text("FORCED_LANGUAGE") or None
            parsed = parse_asr_output(self.tokenizer.decode(ids.reshape(-1).tolist()), forced)
            return pb_utils.InferenceResponse(
                output_tensors=[
                    string_tensor(pb_utils, "TEXT", [parsed.text]),
                    string_tensor(pb_utils, "LANGUAGE", [parsed.language or ""]),
                ]
            )
        except Exception as exc:  # per-request isolation
            return error_response(pb_utils, exc)
