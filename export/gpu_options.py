"""Knobs of the gpu target and the engine limits derived from them.

:class:`GpuOptions` holds what only the gpu target needs (TensorRT precision,
optimisation-profile sizes, TensorRT-LLM runtime settings, where Triton sees
the repository). :func:`decoder_limits` and :func:`encoder_profile` turn them,
the checkpoint's :class:`~qwen3_asr_triton.model_spec.ModelSpec` and the shared
:class:`~.build_options.BuildOptions` into the exact numbers the engine
builds use, so the engines and the filled configs can never disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from qwen3_asr_triton.model_spec import ModelSpec
from qwen3_asr_triton.segmentation import SEARCH_EXPAND_SECONDS

from .build_options import BuildOptions
from .layout import ENGINE_DIRNAME, VERSION

TRT_PRECISIONS = ("fp16", "bf16", "fp32")
SCHEDULER_POLICIES = ("guaranteed_no_evict", "max_utilization")
# Upper bound on the chat-template tokens around the audio and the context
# (system/user/assistant turns, audio start/end, "language X<asr_text>");
# tests/test_gpu_limits.py measures the real overhead against it.
PROMPT_OVERHEAD_TOKENS = 64
# numpy dtype of the TensorRT-LLM decoder engine (its weights, plugins and prompt embedding table).
DECODER_DTYPE = "float16"
# Bytes per element of the fp16 prompt embedding table.
PROMPT_TABLE_BYTES = 2


@dataclass(frozen=True)
class GpuOptions:
    """Knobs of the gpu target (each maps to an engine build flag or a config value).

    Attributes
    ----------
    trt_precision : str
        Reduced precision allowed in the encoder and aligner TensorRT plans
        (``fp16``, ``bf16`` or ``fp32``); normalisation, softmax and the
        RMSNorm arithmetic stay in fp32 whatever is chosen.
    encoder_opt_batch : int
        Windows per encoder call the optimisation profile is tuned for.
    aligner_opt_tokens, aligner_max_tokens : int
        Sequence lengths of the aligner body's optimisation profile; the
        aligner model refuses longer inputs with a clear error.
    workspace_mb : int
        TensorRT builder workspace.
    builder_optimization_level : int
        TensorRT builder optimisation level (0-5).
    trt_atol, trt_rtol : float
        Tolerances of the TensorRT-vs-ONNX-Runtime comparison (mean error per output).
    max_num_tokens : int
        TensorRT-LLM tokens per engine step (prefill chunks and decode tokens together).
    prompt_table_rows : int
        Engine ``max_prompt_embedding_table_size``; 0 = the decoder batch times
        the audio tokens of the longest segment.
    kv_cache_free_gpu_mem_fraction : float
        Share of free GPU memory (after the engines are loaded) given to the paged KV cache.
    batch_scheduler_policy : str
        TensorRT-LLM scheduler policy (``guaranteed_no_evict`` or ``max_utilization``).
    enable_chunked_context : bool
        Prefill long prompts in chunks of ``max_num_tokens`` (paged context FMHA).
    model_root : str
        Absolute path under which Triton sees the model repository (the engine
        path in the decoder config is written against it; ``/models`` in the images).
    """

    trt_precision: str = "fp16"
    encoder_opt_batch: int = 8
    aligner_opt_tokens: int = 1024
    aligner_max_tokens: int = 6144
    workspace_mb: int = 4096
    builder_optimization_level: int = 3
    trt_atol: float = 0.02
    trt_rtol: float = 0.02
    max_num_tokens: int = 8192
    prompt_table_rows: int = 0
    kv_cache_free_gpu_mem_fraction: float = 0.7
    batch_scheduler_policy: str = "guaranteed_no_evict"
    enable_chunked_context: bool = True
    model_root: str = "/models"

    def __post_init__(self) -> None:
        if self.trt_precision not in TRT_PRECISIONS:
            raise ValueError(f"trt_precision must be one of {TRT_PRECISIONS}, got {self.trt_precision!r}")
        if self.batch_scheduler_policy not in SCHEDULER_POLICIES:
            raise ValueError(f"batch_scheduler_policy must be one of {SCHEDULER_POLICIES}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                minimum = 0 if f.name in ("prompt_table_rows", "builder_optimization_level") else 1
                if f.name in ("trt_atol", "trt_rtol", "kv_cache_free_gpu_mem_fraction"):
                    if not 0 < value <= 1:
                        raise ValueError(f"{f.name} must be in (0, 1], got {value}")
                elif value < minimum:
                    raise ValueError(f"{f.name} must be >= {minimum}, got {value}")
        if self.builder_optimization_level > 5:
            raise ValueError("builder_optimization_level must be 0-5")
        if self.aligner_opt_tokens > self.aligner_max_tokens:
            raise ValueError("aligner_opt_tokens must not exceed aligner_max_tokens")
        if not self.model_root.startswith("/") or any(c in self.model_root for c in ' "\\\n$'):
            raise ValueError(f"model_root must be an absolute path without spaces or quotes, got {self.model_root!r}")

    def decoder_engine_dir(self) -> str:
        """The engine folder as Triton sees it (``gpt_model_path`` of the decoder config)."""
        return f"{self.model_root.rstrip('/')}/decoder/{VERSION}/{ENGINE_DIRNAME}"


@dataclass(frozen=True)
class DecoderLimits:
    """Sizes of the TensorRT-LLM decoder engine (``trtllm-build`` flags)."""

    max_batch_size: int
    max_audio_tokens: int
    max_input_len: int
    max_seq_len: int
    max_num_tokens: int
    prompt_table_rows: int

    def prompt_table_gib(self, hidden_size: int) -> float:
        """Size of the engine's prompt-table buffer."""
        return self.prompt_table_rows * hidden_size * PROMPT_TABLE_BYTES / 2**30


def max_audio_tokens(spec: ModelSpec, segment_seconds: float) -> int:
    """Audio tokens of the longest segment (the segmenter may overrun the limit by its search width)."""
    cfg = spec.features
    chunks = math.ceil((segment_seconds + SEARCH_EXPAND_SECONDS) * cfg.frames_per_second / cfg.chunk_frames)
    return chunks * cfg.tokens_per_chunk


def decoder_limits(spec: ModelSpec, opts: BuildOptions, gpu: GpuOptions) -> DecoderLimits:
    """Engine sizes for ``spec`` under ``opts`` (raises ValueError when they cannot work)."""
    audio = max_audio_tokens(spec, opts.max_segment_seconds)
    max_input = audio + opts.max_context_tokens + PROMPT_OVERHEAD_TOKENS
    max_seq = max_input + opts.max_new_tokens
    if max_seq > spec.text.max_position_embeddings:
        raise ValueError(
            f"prompt + generation can reach {max_seq} tokens, beyond the decoder's "
            f"{spec.text.max_position_embeddings} positions: lower max_segment_seconds or max_new_tokens"
        )
    if not gpu.enable_chunked_context and gpu.max_num_tokens < max_input:
        raise ValueError(
            f"without chunked context max_num_tokens ({gpu.max_num_tokens}) must cover the longest prompt ({max_input})"
        )
    rows = gpu.prompt_table_rows or opts.decoder_max_batch * audio
    if rows < audio:
        raise ValueError(f"prompt_table_rows ({rows}) must hold at least one full segment ({audio} audio tokens)")
    return DecoderLimits(opts.decoder_max_batch, audio, max_input, max_seq, gpu.max_num_tokens, rows)


@dataclass(frozen=True)
class Profile:
    """One TensorRT optimisation profile: input name -> (min, opt, max) shapes."""

    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]

    def flags(self) -> list[str]:
        """Polygraphy's ``--trt-min-shapes / --trt-opt-shapes / --trt-max-shapes`` arguments."""
        out: list[str] = []
        for i, flag in enumerate(("--trt-min-shapes", "--trt-opt-shapes", "--trt-max-shapes")):
            out.append(flag)
            out += [f"{name}:[{','.join(str(d) for d in dims[i])}]" for name, dims in self.shapes.items()]
        return out


def encoder_profile(spec: ModelSpec, opts: BuildOptions, gpu: GpuOptions) -> Profile:
    """Windows of 8 s (every window padded to full length on the gpu target), 1..encoder_max_batch at once."""
    mels, frames = spec.features.n_mels, spec.features.window_frames
    opt = min(gpu.encoder_opt_batch, opts.encoder_max_batch)
    return Profile(
        {
            "input_features": ((1, mels, frames), (opt, mels, frames), (opts.encoder_max_batch, mels, frames)),
            "feature_lens": ((1,), (opt,), (opts.encoder_max_batch,)),
        }
    )


def aligner_lm_profile(hidden_size: int, gpu: GpuOptions) -> Profile:
    """One aligner sequence of 1..aligner_max_tokens tokens."""
    lo, opt, hi = 1, gpu.aligner_opt_tokens, gpu.aligner_max_tokens
    return Profile(
        {
            "inputs_embeds": ((1, lo, hidden_size), (1, opt, hidden_size), (1, hi, hidden_size)),
            "attention_mask": ((1, lo), (1, opt), (1, hi)),
        }
    )
