"""encoder (cpu target): batches of 8 s mel windows -> audio embeddings, on ONNX Runtime (or torch for bf16).

Triton's dynamic batcher groups windows from concurrent requests (ragged
lengths allowed); this model pads them to the longest, runs the exported
AudioEncoder graph once and hands every request its own rows back.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from qwen3_asr_triton.errors import InputError
from qwen3_asr_triton.features import stack_windows
from qwen3_asr_triton.model_spec import ModelSpec
from qwen3_asr_triton.runners import encoder_runner
from qwen3_asr_triton.serving import RequestInputs, error_response, model_parameters, setup_worker, version_dir


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        setup_worker(params.get("log_level", "INFO"))
        folder = version_dir(args)
        self.features = ModelSpec.load(folder).features
        self.runner = encoder_runner(folder, params)

    def _validate(self, feats, lens):
        cfg = self.features
        if feats.ndim != 3 or feats.shape[1] != cfg.n_mels:
            raise InputError(f"input_features must be [windows, {cfg.n_mels}, frames], got {list(feats.shape)}")
        frames = feats.shape[2]
        if frames == 0 or frames % cfg.chunk_frames or frames > cfg.window_frames:
            raise InputError(
                f"window length {frames} must be a positive multiple of {cfg.chunk_frames}"
                f" and at most {cfg.window_frames}"
            )
        if lens.size != feats.shape[0] or np.any(lens < 1) or np.any(lens > frames):
            raise InputError("feature_lens must give 1..frames valid frames per window")
        if not np.all(np.isfinite(feats)):
            raise InputError("input_features contains NaN or infinite values")

    def execute(self, requests):
        responses = [None] * len(requests)
        good = []
        for i, request in enumerate(requests):
            try:
                inputs = RequestInputs(pb_utils, request)
                feats = inputs.required("input_features")
                lens = inputs.required("feature_lens").reshape(-1)
                self._validate(feats, lens)
                good.append((i, feats, lens.astype(np.int64)))
            except Exception as exc:  # per-request isolation
                responses[i] = error_response(pb_utils, exc)
        if good:
            try:
                windows = [w for _, feats, _ in good for w in feats]
                lens = np.concatenate([lens for _, _, lens in good])
                embeds, embed_lens = self.runner(stack_windows(windows), lens)
                row = 0
                for i, feats, _ in good:
                    n, tokens = feats.shape[0], self.features.num_audio_tokens(feats.shape[2])
                    responses[i] = pb_utils.InferenceResponse(
                        output_tensors=[
                            pb_utils.Tensor("audio_embeds", np.ascontiguousarray(embeds[row : row + n, :tokens])),
                            pb_utils.Tensor("embed_lens", embed_lens[row : row + n].astype(np.int64)),
                        ]
                    )
                    row += n
            except Exception as exc:  # the batch failed as a whole: every member gets the error
                for i, _, _ in good:
                    responses[i] = error_response(pb_utils, exc)
        return responses
