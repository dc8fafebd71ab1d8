"""qwen3_asr: the public entry model (BLS).

Validates the request, calls ``preprocess`` for segmented features, then runs
qwen3_asr_triton.pipeline.Recognizer with BLS stages: encoder windows fan out
to ``encoder``, each segment's prompt goes to ``decoder`` (in-flight batching),
ids to ``postprocess`` and, when timestamps are asked for, the transcript to
``aligner``. BLS rather than an ensemble: the graph has per-window fan-out,
a per-segment loop for long audio and a conditional aligner step.
"""

import asyncio

import numpy as np
import triton_python_backend_utils as pb_utils

from qwen3_asr_triton.bls import BlsConfig, BlsStages
from qwen3_asr_triton.model_spec import ModelSpec
from qwen3_asr_triton.pipeline import PreparedAudio, Recognizer, RecognizerLimits
from qwen3_asr_triton.prompt import PromptLimits
from qwen3_asr_triton.serving import (
    RequestInputs,
    error_response,
    model_parameters,
    raise_for_bls_error,
    setup_logging,
    string_tensor,
    version_dir,
)
from qwen3_asr_triton.tokenizer import TextTokenizer

AUDIO_INPUTS = ("AUDIO", "WAVEFORM", "SAMPLE_RATE")


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        setup_logging(params.get("log_level", "INFO"))
        folder = version_dir(args)
        spec = ModelSpec.load(folder)
        limits = RecognizerLimits(
            max_new_tokens=int(params["max_new_tokens"]),
            max_segment_seconds=float(params["max_segment_seconds"]),
            max_align_segment_seconds=float(params["max_align_segment_seconds"]),
            prompt=PromptLimits(max_context_tokens=int(params["max_context_tokens"])),
        )
        eos = list(spec.eos_token_ids)
        end_id = spec.pad_token_id if spec.pad_token_id in eos else eos[0]
        stages = BlsStages(
            pb_utils,
            BlsConfig(
                end_id=end_id,
                stop_ids=tuple(e for e in eos if e != end_id),
                pad_windows_to=int(params["pad_windows_to"]),
                prompt_table_dtype=params["prompt_table_dtype"],
            ),
        )
        self.recognizer = Recognizer(
            spec,
            TextTokenizer.from_file(folder),
            stages,
            has_aligner=params["aligner_enabled"] == "true",
            limits=limits,
        )

    async def execute(self, requests):
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    async def _one(self, request):
        try:
            inputs = RequestInputs(pb_utils, request)
            options = self.recognizer.options(
                inputs.text("LANGUAGE"),
                inputs.text("CONTEXT"),
                inputs.flag("RETURN_TIMESTAMPS"),
                inputs.integer("MAX_NEW_TOKENS"),
            )
            forwarded = [pb_utils.get_input_tensor_by_name(request, n) for n in AUDIO_INPUTS]
            forwarded = [t for t in forwarded if t is not None]
            forwarded.append(pb_utils.Tensor("RETURN_TIMESTAMPS", np.array([options.return_timestamps])))
            pre = await pb_utils.InferenceRequest(
                model_name="preprocess", inputs=forwarded, requested_output_names=["MEL", "SEGMENTS"]
            ).async_exec()
            raise_for_bls_error(pre, "preprocess")
            audio = PreparedAudio(
                pb_utils.get_output_tensor_by_name(pre, "MEL").as_numpy(),
                pb_utils.get_output_tensor_by_name(pre, "SEGMENTS").as_numpy(),
            )
            result = await self.recognizer.transcribe(audio, options)
            return pb_utils.InferenceResponse(
                output_tensors=[
                    string_tensor(pb_utils, "TEXT", [result.text]),
                    string_tensor(pb_utils, "DETECTED_LANGUAGE", [result.language]),
                    pb_utils.Tensor("TOKEN_IDS", np.asarray(result.token_ids, dtype=np.int32)),
                    pb_utils.Tensor("CONFIDENCE", np.array([result.confidence], np.float32)),
                    string_tensor(pb_utils, "WORDS", [w.word for w in result.words]),
                    pb_utils.Tensor("WORD_START", np.array([w.start for w in result.words], np.float32)),
                    pb_utils.Tensor("WORD_END", np.array([w.end for w in result.words], np.float32)),
                    string_tensor(pb_utils, "SEGMENT_TEXT", [s.text for s in result.segments]),
                    pb_utils.Tensor("SEGMENT_START", np.array([s.start for s in result.segments], np.float32)),
                    pb_utils.Tensor("SEGMENT_END", np.array([s.end for s in result.segments], np.float32)),
                ]
            )
        except Exception as exc:  # per-request isolation
            return error_response(pb_utils, exc, marked=False)
