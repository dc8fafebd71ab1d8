"""aligner: transcript + segment log-mel -> word start/end times (Qwen3-ForcedAligner).

The word splitting, prompt, argmax and monotonic fix-up are
qwen3_asr_triton.forced_aligner (ForcedAligner) on both targets. Where its two graphs
(the aligner's audio encoder; its Qwen3 body with the timestamp classifier)
run is the model parameter ``runtime``:

- ``onnxruntime`` (cpu target; the default when the parameter is absent): both
  graphs in this process on ONNX Runtime;
- ``bls`` (gpu target): through BLS on two other Triton models, ``encoder_model``
  (TensorRT plan; windows padded to ``pad_windows_to`` frames, at most
  ``encoder_max_batch`` per call) and ``lm_model`` (TensorRT plan; prompts longer
  than ``max_tokens``, the plan's optimisation-profile limit, are refused).
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from qwen3_asr_triton.artifacts import ALIGNER_FILENAME, EMBED_FILENAME, ENCODER_FILENAME
from qwen3_asr_triton.errors import InputError
from qwen3_asr_triton.forced_aligner import ForcedAligner
from qwen3_asr_triton.model_spec import ModelSpec
from qwen3_asr_triton.serving import (
    RequestInputs,
    error_response,
    model_parameters,
    raise_for_bls_error,
    setup_worker,
    string_tensor,
    version_dir,
)
from qwen3_asr_triton.tokenizer import TextTokenizer

RUNTIMES = ("onnxruntime", "bls")


def _ort_graphs(folder, params):
    from qwen3_asr_triton.sessions import AlignerRunner, EncoderRunner, OrtOptions

    options = OrtOptions.from_parameters(params)
    encoder = EncoderRunner(folder / ENCODER_FILENAME, options)
    return (
        lambda windows: encoder.encode_windows(windows.features, windows.frames),
        AlignerRunner(folder / ALIGNER_FILENAME, options),
    )


class _BlsGraphs:
    """The two graphs as BLS calls to the gpu target's TensorRT plan models."""

    def __init__(self, params):
        self.encoder_model = params["encoder_model"]
        self.lm_model = params["lm_model"]
        self.pad_to = int(params["pad_windows_to"])
        self.encoder_max_batch = int(params["encoder_max_batch"])
        self.max_tokens = int(params["max_tokens"])

    def _call(self, model, inputs, outputs):
        request = pb_utils.InferenceRequest(model_name=model, inputs=inputs, requested_output_names=outputs)
        response = request.exec()
        raise_for_bls_error(response, model)
        return [pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs]

    def encode(self, windows):
        parts = []
        for start in range(0, len(windows.features), self.encoder_max_batch):
            feats = windows.features[start : start + self.encoder_max_batch]
            frames = np.asarray(windows.frames[start : start + self.encoder_max_batch], dtype=np.int64)
            batch = np.zeros((len(feats), feats[0].shape[0], self.pad_to), dtype=np.float32)
            for i, f in enumerate(feats):
                batch[i, :, : f.shape[1]] = f
            embeds, lens = self._call(
                self.encoder_model,
                [pb_utils.Tensor("input_features", batch), pb_utils.Tensor("feature_lens", frames.reshape(-1, 1))],
                ["audio_embeds", "embed_lens"],
            )
            parts += [embeds[i, : int(n)] for i, n in enumerate(lens.reshape(-1))]
        return np.concatenate(parts, axis=0)

    def classify(self, inputs_embeds, attention_mask):
        tokens = inputs_embeds.shape[1]
        if tokens > self.max_tokens:
            raise InputError(
                f"the transcript and audio make {tokens} aligner tokens; this deployment aligns at most "
                f"{self.max_tokens} per segment (shorter segments or a rebuilt aligner plan)"
            )
        (logits,) = self._call(
            self.lm_model,
            [
                pb_utils.Tensor("inputs_embeds", np.ascontiguousarray(inputs_embeds, dtype=np.float32)),
                pb_utils.Tensor("attention_mask", np.asarray(attention_mask, dtype=np.int64)),
            ],
            ["logits"],
        )
        return logits


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        setup_worker(params.get("log_level", "INFO"))
        folder = version_dir(args)
        runtime = params.get("runtime", "onnxruntime")
        if runtime not in RUNTIMES:
            raise ValueError(f"aligner parameter runtime must be one of {RUNTIMES}, got {runtime!r}")
        if runtime == "bls":
            graphs = _BlsGraphs(params)
            encode, classify = graphs.encode, graphs.classify
        else:
            encode, classify = _ort_graphs(folder, params)
        self.runtime = runtime
        self.spec = ModelSpec.load(folder)
        self.aligner = ForcedAligner(
            self.spec,
            TextTokenizer.from_file(folder),
            np.load(folder / EMBED_FILENAME, mmap_mode="r"),
            encode,
            classify,
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
