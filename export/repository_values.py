"""The values the config templates are filled from, for both targets, and the filled configs.

:func:`template_values` is the one value set of a repository (target-specific
keys included: the gpu target's come from :class:`~.gpu_options.GpuOptions` and
the engine limits, so configs and engines agree); :func:`fill_repository_configs`
fills every model's template with it and validates the result.
"""

from __future__ import annotations

from pathlib import Path

from qwen3_asr_triton.model_spec import ModelSpec

from .build_options import BuildOptions, check_target
from .fill_config import fill_templates, template_for
from .gpu_options import DECODER_DTYPE, GpuOptions, decoder_limits
from .layout import TEMPLATE_ROOT

# Models that exist on the gpu target only (TensorRT plans behind the aligner's BLS calls).
GPU_ALIGNER_MODELS = ("aligner_encoder", "aligner_lm")
# numpy dtype of the decoder's prompt embedding table -> Triton data type.
_TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}


def models_for(has_aligner: bool, target: str = "cpu", has_diarizer: bool = False) -> list[str]:
    """The models of a repository for ``target``."""
    check_target(target)
    models = ["qwen3_asr", "qwen3_asr_deltas", "qwen3_asr_streaming", "preprocess", "encoder", "decoder", "postprocess"]
    if has_aligner:
        models.append("aligner")
        if target == "gpu":
            models += GPU_ALIGNER_MODELS
    if has_diarizer:
        models.append("diarizer")
    return models


# Sequence-batcher candidate slots per stream the model admits (see "STREAM_CANDIDATES" below).
STREAM_CANDIDATE_FACTOR = 2


def template_values(
    spec: ModelSpec,
    opts: BuildOptions,
    target: str,
    has_aligner: bool,
    gpu: GpuOptions | None = None,
    has_diarizer: bool = False,
) -> dict[str, object]:
    """The one value set every template of the repository is filled from (target-specific keys included)."""
    check_target(target)
    prompt_dtype = "float32" if target == "cpu" else DECODER_DTYPE
    values: dict[str, object] = {
        "N_MELS": spec.features.n_mels,
        "AUDIO_DIM": spec.encoder.output_dim,
        "ENTRY_INSTANCES": opts.entry_instances,
        "PREPROCESS_INSTANCES": opts.preprocess_instances,
        "PREPROCESS_MAX_BATCH": opts.preprocess_max_batch,
        "PREPROCESS_QUEUE_DELAY_US": opts.preprocess_queue_delay_us,
        "POSTPROCESS_INSTANCES": opts.postprocess_instances,
        "ENCODER_INSTANCES": opts.encoder_instances,
        "ENCODER_MAX_BATCH": opts.encoder_max_batch,
        "ENCODER_QUEUE_DELAY_US": opts.encoder_queue_delay_us,
        "DECODER_MAX_BATCH": opts.decoder_max_batch,
        "MAX_QUEUE": opts.max_queue,
        "MAX_NEW_TOKENS": opts.max_new_tokens,
        "MAX_CONTEXT_TOKENS": opts.max_context_tokens,
        "MAX_AUDIO_BYTES": opts.max_audio_bytes,
        "MAX_AUDIO_SECONDS": opts.max_audio_seconds,
        "MAX_SEGMENT_SECONDS": opts.max_segment_seconds,
        "MAX_ALIGN_SEGMENT_SECONDS": opts.max_align_segment_seconds,
        "ALIGNER_ENABLED": "true" if has_aligner else "false",
        "DIARIZER_ENABLED": "true" if has_diarizer else "false",
        "PAD_WINDOWS_TO": 0 if target == "cpu" else spec.features.window_frames,
        "PROMPT_TABLE_DTYPE": prompt_dtype,
        "LOG_LEVEL": opts.log_level.upper(),
        "STREAM_MAX_BATCH": opts.stream_max_batch,
        "MAX_STREAMS": opts.max_streams,
        # Triton's sequence batcher queues a START beyond its candidate slots silently; with twice the
        # model's own bound, the model sees stream max_streams + 1 and refuses it at once (UNAVAILABLE),
        # and slots held by abandoned streams until the idle timeout never starve new ones.
        "STREAM_CANDIDATES": STREAM_CANDIDATE_FACTOR * opts.max_streams,
        "MAX_STREAM_SECONDS": opts.max_stream_seconds,
        "STREAM_IDLE_SECONDS": opts.stream_idle_seconds,
        # The same knob in the unit of Triton's sequence batcher (max_sequence_idle_microseconds).
        "STREAM_IDLE_US": int(opts.stream_idle_seconds * 1_000_000),
        "STREAM_ROLLBACK_TOKENS": opts.stream_rollback_tokens,
        "STREAM_REUSE_WINDOWS": "true" if opts.stream_reuse_windows else "false",
        "VAD_THRESHOLD": opts.vad_threshold,
        "VAD_MIN_SILENCE_MS": opts.vad_min_silence_ms,
        "VAD_SPEECH_PAD_MS": opts.vad_speech_pad_ms,
        "MAX_UTTERANCE_SECONDS": opts.max_utterance_seconds,
    }
    if has_aligner:
        values["ALIGNER_INSTANCES"] = opts.aligner_instances
    if has_diarizer:
        values["DIARIZER_INSTANCES"] = opts.diarizer_instances
        values["DIARIZER_THREADS"] = opts.diarizer_threads
    if target == "cpu":
        values.update(
            {
                "KV_CACHE_MB": opts.kv_cache_mb,
                "MAX_RUNNING_SEQUENCES": opts.max_running_sequences,
                "PREFILL_CHUNK": opts.prefill_chunk,
                "INTRA_OP_THREADS": opts.intra_op_threads,
                "ENCODER_THREADS": opts.encoder_threads or opts.intra_op_threads,
                "ORT_SPIN_WAIT": "true" if opts.ort_spin_wait else "false",
                "LOGIT_SCREEN": "true" if opts.logit_screen else "false",
                "PRECISION": opts.precision,
            }
        )
        return values
    gpu = gpu or GpuOptions()
    decoder_limits(spec, opts, gpu)  # refuses settings no engine can serve
    values.update(
        {
            "PROMPT_TABLE_TYPE": _TRITON_TYPES[prompt_dtype],
            "DECODER_ENGINE_DIR": gpu.decoder_engine_dir(),
            "KV_CACHE_FREE_GPU_MEM_FRACTION": gpu.kv_cache_free_gpu_mem_fraction,
            "BATCH_SCHEDULER_POLICY": gpu.batch_scheduler_policy,
            "ENABLE_CHUNKED_CONTEXT": gpu.enable_chunked_context,
        }
    )
    if has_aligner:
        values["ALIGNER_MAX_TOKENS"] = gpu.aligner_max_tokens
    return values


def fill_repository_configs(
    spec: ModelSpec,
    opts: BuildOptions,
    target: str,
    has_aligner: bool,
    template_root: Path = TEMPLATE_ROOT,
    gpu: GpuOptions | None = None,
    has_diarizer: bool = False,
) -> dict[str, str]:
    """Filled, proto-validated config text per model for ``target``."""
    check_target(target)
    templates = {}
    for model in models_for(has_aligner, target, has_diarizer):
        path = template_for(template_root / model, target)
        if path is None:
            raise FileNotFoundError(f"no config template for {model} ({target})")
        templates[model] = path
    return fill_templates(templates, template_values(spec, opts, target, has_aligner, gpu, has_diarizer))
