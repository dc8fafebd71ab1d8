"""One recognition request: prepared audio in; text, language, ids and timestamps out.

:func:`prepare_audio` is the preprocessing every deployment shares: long-audio
segmentation and a log-mel per segment. :class:`Recognizer` holds the rest of
the orchestration that does not depend on where the neural stages run: 8 s
windows, prompt construction, joining segments, offsets, confidence. The
stages come through the :class:`Stages` protocol:

- :class:`OrtStages` runs them in-process with ONNX Runtime (tests, offline use);
- the Triton entry model implements them as BLS calls to the ``encoder``,
  ``decoder``, ``postprocess`` and ``aligner`` models, so batching happens there.

Everything is ``async`` so the Triton model can keep many stage calls in flight.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np

from .alignment import WordTime
from .artifacts import ALIGNER_FILENAME, DECODER_GRAPH, EMBED_FILENAME, ENCODER_FILENAME, ENCODER_GRAPH, onnx_filename
from .errors import InputError
from .features import EncoderWindows, FeatureConfig, GrowingLogMel, LogMel, split_windows
from .languages import ALIGNER_LANGUAGES, canonical_language_name, normalize_language
from .model_spec import ModelSpec
from .output import (
    ParsedOutput,
    TranscriptDeltas,
    join_segment_texts,
    merge_languages,
    parse_asr_output,
    partial_transcript,
)
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

    def segment_seconds(self, timestamps: bool) -> float:
        return self.max_align_segment_seconds if timestamps else self.max_segment_seconds


@dataclass(frozen=True)
class PreparedSegment:
    """One segment of a request, ready for the encoder and the aligner.

    Attributes
    ----------
    start, stop : int
        Sample bounds at 16 kHz within the request's audio.
    mel : np.ndarray
        ``[n_mels, frames]`` float32 log-mel of the segment (normalised on its own); the aligner's input.
    cfg : FeatureConfig
        The front end that made it (sample rate, window layout).
    """

    start: int
    stop: int
    mel: np.ndarray
    cfg: FeatureConfig

    @cached_property
    def windows(self) -> EncoderWindows:
        """The same frames cut into the encoder's 8 s windows (the encoder's input), made on first use:
        preprocess only sends the mel, so it never pays for the copy."""
        return split_windows(self.mel, self.cfg)

    def seconds(self) -> tuple[float, float]:
        """``(offset, duration)`` in seconds."""
        rate = self.cfg.sampling_rate
        return self.start / rate, (self.stop - self.start) / rate


def prepare_segment(
    waveform: np.ndarray, start: int, stop: int, cfg: FeatureConfig, log_mel: LogMel | GrowingLogMel
) -> PreparedSegment:
    """``waveform[start:stop]``'s log-mel and encoder windows: the one route from samples to features.

    ``log_mel``: a :class:`LogMel`, or a stream's :class:`GrowingLogMel` (same values, computed
    incrementally as the utterance grows).
    """
    mel = log_mel(waveform[start:stop])
    return PreparedSegment(start, stop, mel, cfg)


@dataclass(frozen=True)
class PreparedAudio:
    """Segmented features of one request (:func:`prepare_audio`; preprocess sends it to the entry model)."""

    segments: list[PreparedSegment]

    def wire(self) -> tuple[np.ndarray, np.ndarray]:
        """``MEL`` ``[n_mels, sum(frames)]`` (the segments' log-mels, concatenated) and ``SEGMENTS``
        ``[S, 3]`` int64 rows ``(start, stop, frames)``: what preprocess hands the entry model."""
        mel = np.concatenate([s.mel for s in self.segments], axis=1)
        rows = np.array([[s.start, s.stop, s.mel.shape[1]] for s in self.segments], dtype=np.int64)
        return mel, rows

    @classmethod
    def from_wire(cls, mel: np.ndarray, segments: np.ndarray, cfg: FeatureConfig) -> PreparedAudio:
        """The inverse of :meth:`wire`: each segment's frames as preprocess counted them."""
        segments = np.asarray(segments, dtype=np.int64).reshape(-1, 3)
        bounds = np.cumsum([0, *segments[:, 2].tolist()])
        if bounds[-1] != mel.shape[1]:
            raise InputError(f"MEL has {mel.shape[1]} frames but SEGMENTS counts {bounds[-1]}")
        parts = []
        for (start, stop, _), a, b in zip(segments.tolist(), bounds[:-1], bounds[1:]):
            part = mel[:, a:b]
            parts.append(PreparedSegment(start, stop, part, cfg))
        return cls(parts)


def prepare_audio(
    waveform: np.ndarray, cfg: FeatureConfig, max_segment_seconds: float, log_mel: LogMel | None = None
) -> PreparedAudio:
    """Segment a mono 16 kHz waveform and prepare each segment (:func:`prepare_segment`)."""
    log_mel = log_mel or LogMel(cfg)
    return PreparedAudio(
        [
            prepare_segment(waveform, s.start, s.stop, cfg, log_mel)
            for s in split_segments(waveform, cfg.sampling_rate, max_segment_seconds)
        ]
    )


@dataclass(frozen=True)
class RecognitionOptions:
    """Per-request options as the server applies them (validated by :meth:`Recognizer.options`).

    The client library's ``TranscribeOptions`` are what a caller asks for; these are what it gets.
    """

    language: str | None = None
    context: str = ""
    return_timestamps: bool = False
    max_new_tokens: int | None = None
    min_new_tokens: int = 0


@dataclass(frozen=True)
class Generation:
    """What a decoder returns for one prompt (``tokens`` include a final EOS if one was generated)."""

    tokens: list[int]
    logprobs: list[float]


@dataclass(frozen=True)
class DecodedSegment:
    """One decoder pass over a segment: ids (end tokens dropped), their log-probabilities, parsed output.

    ``token_ids`` start with the prefix the pass was given (a stream's stable partial), and ``logprobs``
    cover the generated tokens only.
    """

    token_ids: list[int]
    logprobs: list[float]
    text: str
    language: str | None


@dataclass(frozen=True)
class SegmentResult:
    start: float
    end: float
    text: str
    language: str | None
    token_ids: list[int]
    logprobs: list[float]

    @property
    def avg_logprob(self) -> float:
        """Mean log-probability of the generated tokens (end token included); 0.0 when none."""
        return float(sum(self.logprobs) / len(self.logprobs)) if self.logprobs else 0.0


@dataclass(frozen=True)
class Transcript:
    """The result of one request; ``token_ids`` exclude end-of-sequence tokens.

    A diarized transcript also has a speaker per segment and per word (0, 1, ... in order of first
    appearance; -1 where no speaker was found); both lists are empty otherwise.
    """

    text: str
    language: str
    token_ids: list[int]
    confidence: float
    words: list[WordTime]
    segments: list[SegmentResult]
    segment_speakers: list[int] = field(default_factory=list)
    word_speakers: list[int] = field(default_factory=list)


# Called with the ids a decoder step generated (streaming generation).
TokenCallback = Callable[[list[int]], None]


class _DeltaRelay:
    """Turns the ids each segment generates into text deltas of the whole transcript (see TranscriptDeltas)."""

    def __init__(
        self, segments: int, tokenizer: TextTokenizer, forced_language: str | None, send: Callable[[str], None]
    ) -> None:
        self.deltas = TranscriptDeltas(segments)
        self.ids: list[list[int]] = [[] for _ in range(segments)]
        self.tokenizer = tokenizer
        self.forced_language = forced_language
        self.send = send

    def _send(self, text: str) -> None:
        if text:
            self.send(text)

    def tokens(self, segment: int, ids: list[int]) -> None:
        self.ids[segment].extend(ids)
        partial = partial_transcript(self.tokenizer.decode(self.ids[segment]), self.forced_language)
        self._send(self.deltas.update(segment, partial))

    def finish(self, segment: int, text: str) -> None:
        self._send(self.deltas.finish(segment, text))


class Stages(Protocol):
    """The neural stages, wherever they run."""

    async def encode(self, windows: EncoderWindows) -> np.ndarray:
        """``[total_tokens, D]`` audio embeddings of an utterance's windows, in order."""

    async def generate(
        self,
        prompt_ids: np.ndarray,
        prompt_table: np.ndarray,
        max_new_tokens: int,
        min_new_tokens: int = 0,
        on_token: TokenCallback | None = None,
        want_logprobs: bool = True,
    ) -> Generation:
        """Greedy generation for ``[S]`` prompt-table ids and ``[N, H]`` audio embeddings;
        end tokens are suppressed until ``min_new_tokens`` tokens were generated. ``on_token``, when
        given, is called on the event loop with each step's new ids while the generation runs.
        Without ``want_logprobs`` the generation's log-probabilities are not computed (left empty)."""

    async def postprocess(self, tokens: list[int], forced_language: str | None) -> ParsedOutput:
        """Detokenise and parse generated ids."""

    async def align(self, mel: np.ndarray, text: str, language: str | None) -> list[WordTime]:
        """Word times (seconds from the segment start) of ``text`` against ``[n_mels, T]``."""


class Recognizer:
    """Request orchestration shared by the offline pipeline and the Triton entry model."""

    def __init__(
        self,
        spec: ModelSpec,
        tokenizer: TextTokenizer,
        stages: Stages,
        has_aligner: bool = False,
        limits: RecognizerLimits | None = None,
    ) -> None:
        if spec.kind != "asr":
            raise ValueError("Recognizer needs a recogniser (asr) checkpoint")
        self.spec = spec
        self.limits = limits or RecognizerLimits()
        self.prompts = PromptBuilder(tokenizer, spec.audio_token_id, self.limits.prompt)
        self.stages = stages
        self.has_aligner = has_aligner
        self.eos_ids = frozenset(spec.eos_token_ids)

    def options(
        self,
        language: str | None,
        context: str | None,
        return_timestamps: bool,
        max_new_tokens: int | None,
        min_new_tokens: int | None = None,
    ) -> RecognitionOptions:
        """Validate request options (raises :class:`InputError` with a client-facing message).

        ``min_new_tokens`` keeps end tokens from being chosen before that many tokens per segment;
        benchmarks use it to make every system generate the same number of tokens.
        """
        lang = normalize_language(language)
        self.prompts.context_ids(context or "")
        if return_timestamps:
            if not self.has_aligner:
                raise InputError(
                    "RETURN_TIMESTAMPS needs a forced aligner, and this deployment has none"
                    " (build the model repository with --aligner)"
                )
            if lang is not None and lang not in ALIGNER_LANGUAGES:
                raise InputError(
                    f"the forced aligner does not support {lang}; supported: " + ", ".join(sorted(ALIGNER_LANGUAGES))
                )
        if max_new_tokens is not None and not 1 <= max_new_tokens <= self.limits.max_new_tokens:
            raise InputError(f"MAX_NEW_TOKENS must be between 1 and {self.limits.max_new_tokens}, got {max_new_tokens}")
        minimum = min_new_tokens or 0
        upper = max_new_tokens if max_new_tokens is not None else self.limits.max_new_tokens
        if not 0 <= minimum <= upper:
            raise InputError(f"MIN_NEW_TOKENS must be between 0 and {upper} (MAX_NEW_TOKENS), got {minimum}")
        return RecognitionOptions(lang, context or "", bool(return_timestamps), max_new_tokens, minimum)

    def budget(self, seconds: float, options: RecognitionOptions) -> int:
        """Generation budget for a segment: the request's MAX_NEW_TOKENS or a duration-based default."""
        if options.max_new_tokens is not None:
            return options.max_new_tokens
        default = DEFAULT_TOKENS_BASE + math.ceil(DEFAULT_TOKENS_PER_SECOND * seconds)
        return min(self.limits.max_new_tokens, default)

    async def transcribe(
        self, audio: PreparedAudio, options: RecognitionOptions, on_delta: Callable[[str], None] | None = None
    ) -> Transcript:
        """Recognise prepared audio; its segments are decoded concurrently.

        ``on_delta``, when given, receives the transcript's text as it is generated, token by token
        (see :class:`~.output.TranscriptDeltas`); the decoder then streams its steps.
        """
        relay = None
        if on_delta is not None:
            relay = _DeltaRelay(len(audio.segments), self.prompts.tokenizer, options.language, on_delta)
        results = await asyncio.gather(
            *(self._segment(segment, options, relay, k) for k, segment in enumerate(audio.segments))
        )
        segments = [r[0] for r in results]
        logprobs = [lp for s in segments for lp in s.logprobs]
        return Transcript(
            text=join_segment_texts([s.text for s in segments]),
            language=merge_languages([s.language for s in segments]),
            token_ids=[t for s in segments for t in s.token_ids],
            confidence=float(math.exp(sum(logprobs) / len(logprobs))) if logprobs else 0.0,
            words=[w for r in results for w in r[1]],
            segments=segments,
        )

    async def decode_segment(
        self,
        windows: EncoderWindows,
        audio: np.ndarray,
        seconds: float,
        options: RecognitionOptions,
        prefix: list[int] | None = None,
        min_new_tokens: int = 0,
        on_token: TokenCallback | None = None,
        want_logprobs: bool = True,
        max_tokens: int | None = None,
    ) -> DecodedSegment:
        """Prompt, generate and parse one segment: the one decode both requests and stream partials use.

        Parameters
        ----------
        windows : EncoderWindows
            The segment's encoder windows (their token count sizes the prompt's audio span).
        audio : np.ndarray
            ``[windows.total_tokens, D]`` audio embeddings of those windows.
        seconds : float
            The segment's duration, for the default generation budget.
        options : RecognitionOptions
            Language, context and token limits.
        prefix : list of int, optional
            Ids that start the answer (a stream's stable partial); the budget shrinks by their count.
        min_new_tokens : int
            End tokens are suppressed until this many were generated (capped at the budget).
        on_token : callable, optional
            Receives each step's new ids while the decoder streams them.
        want_logprobs : bool
            Whether the generated tokens' log-probabilities are computed (empty otherwise).
        max_tokens : int, optional
            A cap on the answer's length, prefix included, below the request's budget (partials).
        """
        prefix = list(prefix or [])
        prompt = self.prompts.asr_prompt(windows.total_tokens, options.context, options.language) + prefix
        table_ids = to_prompt_table_ids(prompt, self.spec.audio_token_id, self.spec.text.vocab_size)
        limit = self.budget(seconds, options)
        if max_tokens is not None:
            limit = min(limit, max_tokens)
        budget = max(1, limit - len(prefix))
        gen = await self.stages.generate(
            table_ids, audio, budget, min(min_new_tokens, budget), on_token=on_token, want_logprobs=want_logprobs
        )
        tokens = prefix + list(gen.tokens)
        while tokens and tokens[-1] in self.eos_ids:
            tokens.pop()
        parsed = await self.stages.postprocess(tokens, options.language)
        language = canonical_language_name(parsed.language) if parsed.language else None
        return DecodedSegment(tokens, list(gen.logprobs), parsed.text, language)

    async def _segment(
        self,
        segment: PreparedSegment,
        options: RecognitionOptions,
        relay: _DeltaRelay | None = None,
        index: int = 0,
    ) -> tuple[SegmentResult, list[WordTime]]:
        offset, seconds = segment.seconds()
        audio = await self.stages.encode(segment.windows)
        on_token = None if relay is None else (lambda ids: relay.tokens(index, ids))
        decoded = await self.decode_segment(
            segment.windows, audio, seconds, options, min_new_tokens=options.min_new_tokens, on_token=on_token
        )
        if relay is not None:
            relay.finish(index, decoded.text)
        result = SegmentResult(
            offset, offset + seconds, decoded.text, decoded.language, decoded.token_ids, decoded.logprobs
        )
        words: list[WordTime] = []
        if options.return_timestamps and decoded.text:
            words = [
                replace(w, start=round(w.start + offset, 3), end=round(w.end + offset, 3))
                for w in await self.stages.align(segment.mel, decoded.text, decoded.language)
            ]
        return result, words


class OrtStages:
    """The neural stages in-process on ONNX Runtime (exact fp32)."""

    def __init__(
        self, asr_dir: str | Path, aligner_dir: str | Path | None = None, options=None, graph_suffix: str = ""
    ) -> None:
        """``graph_suffix`` picks other copies of the graphs, e.g. ``"-int8"`` for the fast mode."""
        from .decoding.decoder import DecoderRunner
        from .decoding.prefix_cache import PrefixCache
        from .sessions import AlignerRunner, EncoderRunner

        asr_dir = Path(asr_dir)
        self.encoder = EncoderRunner(asr_dir / onnx_filename(ENCODER_GRAPH + graph_suffix), options)
        self.decoder = DecoderRunner(asr_dir, options, graph=onnx_filename(DECODER_GRAPH + graph_suffix))
        self.prefix_cache = PrefixCache()  # the prompts' shared text prefixes, across generations
        self.tokenizer = TextTokenizer.from_file(asr_dir)
        self.aligner = None
        if aligner_dir is not None:
            from .forced_aligner import ForcedAligner

            aligner_dir = Path(aligner_dir)
            encoder = EncoderRunner(aligner_dir / ENCODER_FILENAME, options)
            self.aligner = ForcedAligner(
                ModelSpec.load(aligner_dir),
                TextTokenizer.from_file(aligner_dir),
                np.load(aligner_dir / EMBED_FILENAME, mmap_mode="r"),
                lambda w: encoder.encode_windows(w.features, w.frames),
                AlignerRunner(aligner_dir / ALIGNER_FILENAME, options),
            )

    async def encode(self, windows: EncoderWindows) -> np.ndarray:
        return self.encoder.encode_windows(windows.features, windows.frames)

    async def generate(
        self,
        prompt_ids: np.ndarray,
        prompt_table: np.ndarray,
        max_new_tokens: int,
        min_new_tokens: int = 0,
        on_token: TokenCallback | None = None,
        want_logprobs: bool = True,
    ) -> Generation:
        from .decoding.decoder import greedy_decode

        out = greedy_decode(
            self.decoder,
            prompt_ids,
            prompt_table,
            max_new_tokens,
            min_new_tokens=min_new_tokens,
            prefix_cache=self.prefix_cache,
            want_logprobs=want_logprobs,
        )
        if on_token is not None:  # offline: the whole generation at once
            on_token(list(out.tokens))
        return Generation(out.tokens, out.logprobs)

    async def postprocess(self, tokens: list[int], forced_language: str | None) -> ParsedOutput:
        return parse_asr_output(self.tokenizer.decode(tokens), forced_language)

    async def align(self, mel: np.ndarray, text: str, language: str | None) -> list[WordTime]:
        if self.aligner is None:
            raise RuntimeError("no aligner loaded")
        return self.aligner.align(mel, text, language)


class OfflineRecognizer:
    """Recognition in this process over exported graphs (no server): ``transcribe(waveform)``."""

    def __init__(
        self,
        asr_dir: str | Path,
        aligner_dir: str | Path | None = None,
        limits: RecognizerLimits | None = None,
        options=None,
        graph_suffix: str = "",
    ) -> None:
        self.stages = OrtStages(asr_dir, aligner_dir, options, graph_suffix)
        spec = ModelSpec.load(asr_dir)
        self.recognizer = Recognizer(
            spec, TextTokenizer.from_file(asr_dir), self.stages, has_aligner=aligner_dir is not None, limits=limits
        )
        self.log_mel = LogMel(spec.features)

    def transcribe(
        self,
        waveform: np.ndarray,
        language: str | None = None,
        context: str = "",
        return_timestamps: bool = False,
        max_new_tokens: int | None = None,
        min_new_tokens: int | None = None,
    ) -> Transcript:
        """Recognise a mono 16 kHz float32 waveform."""
        rec = self.recognizer
        options = rec.options(language, context, return_timestamps, max_new_tokens, min_new_tokens)
        audio = prepare_audio(waveform, rec.spec.features, rec.limits.segment_seconds(return_timestamps), self.log_mel)
        return asyncio.run(rec.transcribe(audio, options))
