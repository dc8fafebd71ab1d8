"""One recognition request from a 16 kHz waveform to text, language, ids and timestamps.

:class:`Recognizer` holds the orchestration that does not depend on where the
neural stages run: long-audio segmentation, features and 8 s windows, prompt
construction, output parsing, word splitting and timestamp offsets. The stages
themselves are supplied through the :class:`Stages` protocol:

- :class:`OrtStages` runs them in-process with ONNX Runtime (tests, offline use);
- the Triton entry model implements them as BLS calls to the ``encoder``,
  ``decoder`` and ``aligner`` models, so batching happens there.

Everything is ``async`` so the Triton model can keep many stage calls in flight.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from .alignment import WordTime, split_words, word_times
from .errors import InputError
from .features import EncoderWindows, LogMel, split_windows
from .languages import ALIGNER_LANGUAGES, canonical_language_name
from .model_spec import ModelSpec
from .output import join_segment_texts, merge_languages, parse_asr_output
from .prompt import PromptBuilder, PromptLimits, to_prompt_table_ids
from .segmentation import MAX_ALIGN_SEGMENT_SECONDS, MAX_ASR_SEGMENT_SECONDS, split_segments
from .tokenizer import TextTokenizer

# Default generation budget: generous for dense speech (about 5 tokens/s in
# English or Chinese) yet stops a degenerate loop early on short clips.
DEFAULT_TOKENS_PER_SECOND = 10.0
DEFAULT_TOKENS_BASE = 64


@dataclass(frozen=True)
class RecognizerLimits:
    """Server-side bounds applied to every request."""

    max_new_tokens: int = 4096
    max_segment_seconds: float = MAX_ASR_SEGMENT_SECONDS
    max_align_segment_seconds: float = MAX_ALIGN_SEGMENT_SECONDS
    prompt: PromptLimits = field(default_factory=PromptLimits)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if not 0 < self.max_align_segment_seconds <= self.max_segment_seconds:
            raise ValueError("need 0 < max_align_segment_seconds <= max_segment_seconds")


@dataclass(frozen=True)
class TranscribeOptions:
    """Per-request options (already validated by :meth:`Recognizer.options`)."""

    language: str | None = None
    context: str = ""
    return_timestamps: bool = False
    max_new_tokens: int | None = None


@dataclass(frozen=True)
class Generation:
    """What a decoder returns for one prompt."""

    tokens: list[int]
    logprobs: list[float]
    finish_reason: str


@dataclass(frozen=True)
class SegmentResult:
    start: float
    end: float
    text: str
    language: str | None
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str


@dataclass(frozen=True)
class Transcript:
    """The result of one request."""

    text: str
    language: str
    token_ids: list[int]
    confidence: float
    words: list[WordTime]
    segments: list[SegmentResult]


class Stages(Protocol):
    """The neural stages, wherever they run."""

    async def encode(self, windows: EncoderWindows) -> np.ndarray:
        """``[total_tokens, D]`` audio embeddings of an utterance's windows, in order."""

    async def generate(self, prompt_ids: np.ndarray, prompt_table: np.ndarray, max_new_tokens: int) -> Generation:
        """Greedy generation for ``[S]`` prompt-table ids and ``[N, H]`` audio embeddings."""

    async def align(self, windows: EncoderWindows, prompt_ids: np.ndarray) -> np.ndarray:
        """``[2 * words]`` timestamp classes for an aligner prompt (audio ids as plain pads)."""


class Recognizer:
    """Request orchestration shared by the offline pipeline and the Triton entry model."""

    def __init__(
        self,
        spec: ModelSpec,
        tokenizer: TextTokenizer,
        stages: Stages,
        aligner_spec: ModelSpec | None = None,
        aligner_tokenizer: TextTokenizer | None = None,
        limits: RecognizerLimits | None = None,
    ) -> None:
        if spec.kind != "asr":
            raise ValueError("Recognizer needs a recogniser (asr) checkpoint")
        self.spec = spec
        self.limits = limits or RecognizerLimits()
        self.tokenizer = tokenizer
        self.prompts = PromptBuilder(tokenizer, spec.audio_token_id, self.limits.prompt)
        self.log_mel = LogMel(spec.features)
        self.stages = stages
        self.aligner_spec = aligner_spec
        self.aligner_prompts = (
            PromptBuilder(aligner_tokenizer or tokenizer, aligner_spec.audio_token_id, self.limits.prompt)
            if aligner_spec is not None
            else None
        )
        self.aligner_log_mel = (
            self.log_mel
            if aligner_spec is None or aligner_spec.features == spec.features
            else LogMel(aligner_spec.features)
        )

    # ------------------------------------------------------------------ options
    def options(
        self, language: str | None, context: str, return_timestamps: bool, max_new_tokens: int | None
    ) -> TranscribeOptions:
        """Validate request options (raises :class:`InputError`)."""
        from .languages import normalize_language

        lang = normalize_language(language)
        self.prompts.context_ids(context or "")
        if return_timestamps:
            if self.aligner_spec is None:
                raise InputError(
                    "timestamps were requested but this server has no forced aligner"
                    " (build the repository with --aligner)"
                )
            if lang is not None and lang not in ALIGNER_LANGUAGES:
                raise InputError(
                    f"the forced aligner does not support {lang}; supported: " + ", ".join(sorted(ALIGNER_LANGUAGES))
                )
        if max_new_tokens is not None and not 1 <= max_new_tokens <= self.limits.max_new_tokens:
            raise InputError(f"MAX_NEW_TOKENS must be between 1 and {self.limits.max_new_tokens}, got {max_new_tokens}")
        return TranscribeOptions(lang, context or "", bool(return_timestamps), max_new_tokens)

    def budget(self, seconds: float, options: TranscribeOptions) -> int:
        if options.max_new_tokens is not None:
            return options.max_new_tokens
        default = DEFAULT_TOKENS_BASE + math.ceil(DEFAULT_TOKENS_PER_SECOND * seconds)
        return min(self.limits.max_new_tokens, default)

    # ------------------------------------------------------------------ running
    async def transcribe(self, waveform: np.ndarray, options: TranscribeOptions) -> Transcript:
        """Recognise a mono 16 kHz float32 waveform."""
        rate = self.spec.features.sampling_rate
        max_seconds = (
            self.limits.max_align_segment_seconds if options.return_timestamps else self.limits.max_segment_seconds
        )
        segments = split_segments(waveform, rate, max_seconds)
        results = await asyncio.gather(
            *(self._segment(waveform[s.start : s.stop], s.start / rate, options) for s in segments)
        )
        texts = [r[0].text for r in results]
        tokens = [t for r in results for t in r[0].token_ids]
        logprobs = [lp for r in results for lp in r[0].logprobs]
        confidence = float(math.exp(sum(logprobs) / len(logprobs))) if logprobs else 0.0
        return Transcript(
            text=join_segment_texts(texts),
            language=merge_languages([r[0].language for r in results]),
            token_ids=tokens,
            confidence=confidence,
            words=[w for r in results for w in r[1]],
            segments=[r[0] for r in results],
        )

    async def _segment(self, wave: np.ndarray, offset: float, options: TranscribeOptions):
        seconds = wave.size / self.spec.features.sampling_rate
        windows = split_windows(self.log_mel(wave), self.spec.features)
        audio = await self.stages.encode(windows)
        prompt = self.prompts.asr_prompt(windows.total_tokens, options.context, options.language)
        table_ids = to_prompt_table_ids(prompt, self.spec.audio_token_id, self.spec.text.vocab_size)
        gen = await self.stages.generate(table_ids, audio, self.budget(seconds, options))
        parsed = parse_asr_output(self.tokenizer.decode(gen.tokens), options.language)
        language = canonical_language_name(parsed.language) if parsed.language else None
        result = SegmentResult(
            offset, offset + seconds, parsed.text, language, list(gen.tokens), list(gen.logprobs), gen.finish_reason
        )
        words: list[WordTime] = []
        if options.return_timestamps and parsed.text:
            words = await self._align(wave, parsed.text, language, offset)
        return result, words

    async def _align(self, wave: np.ndarray, text: str, language: str | None, offset: float) -> list[WordTime]:
        if self.aligner_spec is None or self.aligner_prompts is None:
            raise RuntimeError("no aligner configured")  # options() rejects such requests earlier
        # Languages outside the aligner's set fall back to the generic CJK / whitespace splitter.
        split_language = language if language in ALIGNER_LANGUAGES else None
        words = split_words(text, split_language)
        if not words:
            return []
        windows = split_windows(self.aligner_log_mel(wave), self.aligner_spec.features)
        prompt = np.asarray(self.aligner_prompts.aligner_prompt(windows.total_tokens, words), dtype=np.int64)
        classes = await self.stages.align(windows, prompt)
        return word_times(words, classes, self.aligner_spec.timestamp_segment_ms, offset)


class OrtStages:
    """The neural stages in-process on ONNX Runtime (exact fp32)."""

    def __init__(self, asr_dir: str | Path, aligner_dir: str | Path | None = None, options=None) -> None:
        from .decoding.decoder import DecoderRunner
        from .decoding.session import AlignerRunner, EncoderRunner

        asr_dir = Path(asr_dir)
        self.encoder = EncoderRunner(asr_dir / "encoder.onnx", options)
        self.decoder = DecoderRunner(asr_dir, options)
        self.aligner_dir = Path(aligner_dir) if aligner_dir else None
        if self.aligner_dir is not None:
            self.aligner_spec = ModelSpec.load(self.aligner_dir)
            self.aligner_encoder = EncoderRunner(self.aligner_dir / "encoder.onnx", options)
            self.aligner = AlignerRunner(self.aligner_dir / "aligner.onnx", options)
            self.aligner_embed = np.load(self.aligner_dir / "embed_tokens.npy", mmap_mode="r")

    async def encode(self, windows: EncoderWindows) -> np.ndarray:
        return self.encoder.encode_windows(windows.features, windows.frames)

    async def generate(self, prompt_ids: np.ndarray, prompt_table: np.ndarray, max_new_tokens: int) -> Generation:
        from .decoding.decoder import greedy_decode

        out = greedy_decode(self.decoder, prompt_ids, prompt_table, max_new_tokens)
        return Generation(out.tokens, out.logprobs, out.finish_reason)

    async def align(self, windows: EncoderWindows, prompt_ids: np.ndarray) -> np.ndarray:
        return align_classes(
            self.aligner_spec,
            self.aligner_encoder.encode_windows(windows.features, windows.frames),
            prompt_ids,
            self.aligner_embed,
            self.aligner,
        )


def align_classes(spec: ModelSpec, audio: np.ndarray, prompt_ids: np.ndarray, embed: np.ndarray, run) -> np.ndarray:
    """Timestamp classes of an aligner prompt.

    Parameters
    ----------
    audio : ``[N, H]`` aligner-encoder embeddings
    prompt_ids : ``[S]`` aligner prompt with N audio placeholders
    embed : ``[vocab, H]`` aligner token embeddings
    run : callable ``(inputs_embeds [1, S, H], attention_mask [1, S]) -> logits [1, S, C]``

    Returns
    -------
    ``[2 * words]`` int64 argmax classes at the ``<timestamp>`` slots.
    """
    from .prompt import splice_prompt_embeddings

    table_ids = to_prompt_table_ids(prompt_ids, spec.audio_token_id, spec.text.vocab_size)
    embeds = splice_prompt_embeddings(table_ids, embed, audio, spec.text.vocab_size)
    logits = run(embeds[None], np.ones((1, embeds.shape[0]), np.int64))
    slots = np.flatnonzero(np.asarray(prompt_ids) == spec.timestamp_token_id)
    return np.argmax(logits[0, slots], axis=-1).astype(np.int64)


def load_recognizer(
    asr_dir: str | Path, aligner_dir: str | Path | None = None, limits: RecognizerLimits | None = None, options=None
) -> Recognizer:
    """An in-process recogniser over exported graphs (see :mod:`qwen3_asr_triton.export`)."""
    stages = OrtStages(asr_dir, aligner_dir, options)
    aligner_spec = ModelSpec.load(aligner_dir) if aligner_dir else None
    aligner_tok = TextTokenizer.from_file(aligner_dir) if aligner_dir else None
    return Recognizer(
        ModelSpec.load(asr_dir), TextTokenizer.from_file(asr_dir), stages, aligner_spec, aligner_tok, limits
    )
