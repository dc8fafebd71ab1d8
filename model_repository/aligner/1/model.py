"""aligner: transcript + segment log-mel -> word start/end times (Qwen3-ForcedAligner).

On the cpu target both graphs (the aligner's audio encoder and its Qwen3 body
with the timestamp classifier) run in this process on ONNX Runtime; the word
splitting, prompt, argmax and monotonic fix-up are qwen3_asr_triton.aligner.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from qwen3_asr_triton.aligner import ForcedAligner
from qwen3_asr_triton.decoding.session import AlignerRunner, EncoderRunner, OrtOptions
from qwen3_asr_triton.errors import InputError
from qwen3_asr_triton.model_spec import ModelSpec
from qwen3_asr_triton.serving import (
    RequestInputs,
    error_response,
    model_parameters,
    setup_logging,
    string_tensor,
    version_dir,
)
from qwen3_asr_triton.tokenizer import TextTokenizer


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        setup_logging(params.get("log_level", "INFO"))
        folder = version_dir(args)
        options = OrtOptions(int(params.get("intra_op_threads", "0")))
        encoder = EncoderRunner(folder / "encoder.onnx", options)
        self.spec = ModelSpec.load(folder)
        self.aligner = ForcedAligner(
            self.spec,
            TextTokenizer.from_file(folder),
            np.load(folder / "embed_tokens.npy", mmap_mode="r"),
            lambda windows: encoder.encode_windows(windows.features, windows.frames),
            AlignerRunner(folder / "aligner.onnx", options),
        )

    def execute(self, requests):
        return [self._one(request) for request in requests]

    def _one(self, request):
        try:
            inputs = RequestInputs(pb_utils, request)
            mel = inputs.array("MEL")
            if mel is None or mel.ndim != 2 or mel.shape[0] != self.spec.features.n_mels or mel.shape[1] == 0:
                raise InputError(f"MEL must be [{self.spec.features.n_mels}, frames]")
            words = self.aligner.align(mel.astype(np.float32), inputs.text("TEXT"), inputs.text("LANGUAGE") or None)
            return pb_utils.InferenceResponse(
                output_tensors=[
                    string_tensor(pb_utils, "WORDS", [w.word for w in words]),
                    pb_utils.Tensor("WORD_START", np.array([w.start for w in words], np.float32)),
                    pb_utils.Tensor("WORD_END", np.array([w.end for w in words], np.float32)),
                ]
            )
        except Exception as exc:  # per-request isolation
            return error_response(pb_utils, exc)
