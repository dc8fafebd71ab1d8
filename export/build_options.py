"""Knobs of a model repository, shared by both targets, and each target's defaults.

:class:`BuildOptions` holds what every build needs (instances, batch sizes,
limits, streaming); :data:`TARGET_DEFAULTS` the values that differ on the gpu
target. The gpu target's own knobs are :class:`~.gpu_options.GpuOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from qwen3_asr_triton.cpu_precision import PRECISIONS
from qwen3_asr_triton.endpointing import EndpointingOptions

TARGETS = ("cpu", "gpu")


# Knobs for which 0 is meaningful (all threads; no batching delay; no rollback).
ZERO_ALLOWED = frozenset(
    {
        "intra_op_threads",
        "encoder_threads",
        "encoder_queue_delay_us",
        "preprocess_queue_delay_us",
        "stream_rollback_tokens",
        # Endpointing knobs: checked by EndpointingOptions (a threshold in (0, 1), no padding, ...).
        "vad_threshold",
        "vad_min_silence_ms",
        "vad_speech_pad_ms",
    }
)


@dataclass(frozen=True)
class BuildOptions:
    """Knobs of a model repository (each maps to a config value; see README "Building")."""

    entry_instances: int = 8
    preprocess_instances: int = 2
    # Requests per preprocess execution and how long a first request waits for others: a burst
    # is answered together and so reaches the encoder as one batch (its first request alone
    # otherwise; README, Performance). cpu value; gpu in TARGET_DEFAULTS.
    preprocess_max_batch: int = 8
    preprocess_queue_delay_us: int = 50000
    postprocess_instances: int = 1
    aligner_instances: int = 1
    # The diarizer (with --diarizer): requests diarized at once, and ONNX Runtime threads of each.
    # One thread: it runs beside the recognition of the same request, which keeps the cores busy.
    diarizer_instances: int = 1
    diarizer_threads: int = 1
    encoder_instances: int = 1
    encoder_max_batch: int = 16
    # cpu value; the gpu target's default is in TARGET_DEFAULTS.
    encoder_queue_delay_us: int = 20000
    decoder_max_batch: int = 64
    kv_cache_mb: int = 4096
    max_running_sequences: int = 16
    prefill_chunk: int = 512
    max_queue: int = 512
    max_new_tokens: int = 4096
    max_context_tokens: int = 2048
    max_audio_bytes: int = 256 * 1024 * 1024
    max_audio_seconds: float = 3600.0
    max_segment_seconds: float = 1200.0
    max_align_segment_seconds: float = 180.0
    intra_op_threads: int = 0
    # Threads of the encoder's sessions (0: as intra_op_threads). Live captions on few cores want 1: the
    # decoder runs almost all the time there, and an encoder call on every core waits for the core the
    # decoder holds (measured at 32 tiny-model streams on 2 cores, perf/results/live-captions/).
    encoder_threads: int = 0
    # ONNX Runtime workers spin between operators during a run and stop when it returns (see OrtOptions in
    # qwen3_asr_triton/sessions.py).
    ort_spin_wait: bool = True
    # The exact (fp32) decoder reads its output projection as an int8 screen and recomputes in fp32 only
    # the rows that can decide the greedy token (qwen3_asr_triton/decoding/logit_screen.py): the same
    # tokens, steps 1.03-1.16x as fast (perf/results/logit-screen-ab/). Off: every logit in fp32
    # (log-probabilities to the last bit).
    logit_screen: bool = True
    log_level: str = "INFO"
    # Streaming (qwen3_asr_streaming): chunks per execute, streams held, their length and idle timeout,
    # the official re-decoding rollback and the exact encoder-window reuse.
    stream_max_batch: int = 32
    max_streams: int = 256
    max_stream_seconds: float = 300.0
    stream_idle_seconds: float = 30.0
    stream_rollback_tokens: int = 5
    stream_reuse_windows: bool = True
    # Endpointing defaults of streams started with ENDPOINTING (Silero VAD; a stream may override the
    # first three): speech threshold, silence that ends an utterance, padding kept around speech, and
    # the longest utterance (cut at its quietest point; bounds what a stream holds).
    vad_threshold: float = 0.5
    vad_min_silence_ms: int = 500
    vad_speech_pad_ms: int = 300
    max_utterance_seconds: float = 30.0
    # cpu target: "fp32" serves the exact graphs (token parity with transformers); "int8" the int8-weight
    # copies of the encoder and decoder (export/quantize.py); "bf16" the export's torch modules in bf16
    # (qwen3_asr_triton/torch_runner.py; needs torch where the server runs); "fast" holds int8 and bf16 and picks
    # one where each model loads, from the CPU's flags (qwen3_asr_triton/cpu_precision.py).
    precision: str = "fp32"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                minimum = 0 if f.name in ZERO_ALLOWED else 1
                if value < minimum:
                    raise ValueError(f"{f.name} must be >= {minimum}, got {value}")
        EndpointingOptions(
            vad_threshold=self.vad_threshold,
            vad_min_silence_ms=self.vad_min_silence_ms,
            vad_speech_pad_ms=self.vad_speech_pad_ms,
            max_utterance_seconds=self.max_utterance_seconds,
        )  # raises ValueError on bad endpointing defaults
        if self.max_align_segment_seconds > self.max_segment_seconds:
            raise ValueError("max_align_segment_seconds must not exceed max_segment_seconds")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"unknown log level {self.log_level!r}")


# Defaults that differ on the gpu target. A cpu request takes seconds, so gathering a burst for
# 50 + 20 ms pays (measured at 0.6B: a wave of 8 requests encoded as one batch took 20.4-22.9 s
# against 25.9-28.1 s; README, Performance); a GPU request takes far less, and the same wait
# would be a large share of it.
TARGET_DEFAULTS: dict[str, dict[str, object]] = {
    "cpu": {},
    "gpu": {"preprocess_queue_delay_us": 5000, "encoder_queue_delay_us": 2000},
}


def check_target(target: str) -> None:
    """Refuse an unknown target."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}")


def default_options(target: str, **overrides: object) -> BuildOptions:
    """:class:`BuildOptions` with ``target``'s defaults, then ``overrides``."""
    check_target(target)
    return BuildOptions(**{**TARGET_DEFAULTS[target], **overrides})
