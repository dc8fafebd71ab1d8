"""Streaming recognition: per-stream state and the re-decoding policy.

The model has no streaming mode of its own; the official recipe
re-encodes all audio received so far for every chunk and, after the first
chunks, feeds the previous output minus its last few tokens as the start of
the assistant's answer, so each partial only extends a stable prefix. This
module implements that recipe for many concurrent streams, with two changes:

- **window reuse**: encoder windows are independent 8 s units, so a window
  whose log-mel input is unchanged since the last chunk (same frames, same
  utterance maximum) reuses its cached embeddings instead of being encoded
  again. The comparison is on the exact input array, so reuse never changes
  a result; it turns the official O(n^2) re-encoding into work proportional
  to the new audio while the utterance's loudest frame stays put.
- **exact final**: chunks are resampled as they arrive by one streaming
  resampler whose output equals the one-shot resampling of the whole stream,
  and at the end of a stream that audio is recognised from scratch, exactly as
  a unary ``qwen3_asr`` request with the same PCM would be (same samples,
  normalisation, segmentation), so the final hypothesis equals the offline one.

Partials are produced through the same :class:`~.pipeline.Stages` as unary
requests, so concurrent streams share the decoder's in-flight batch.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .audio import AudioLimits, StreamResampler, check_waveform, limit_peak
from .errors import CapacityError, InputError
from .features import EncoderWindows, LogMel
from .pipeline import RecognitionOptions, Recognizer, Transcript, prepare_audio, prepare_segment


@dataclass(frozen=True)
class StreamingPolicy:
    """How partial hypotheses are made and how much state a stream may hold.

    Attributes
    ----------
    rollback_tokens : int
        Tokens dropped from the end of the previous partial before it is reused
        as the answer's prefix (official: 5).
    prefix_after_chunks : int
        Chunks received before the prefix is reused at all (official: 2).
    reuse_windows : bool
        Reuse encoder outputs of windows whose input did not change (exact).
    max_stream_seconds : float
        Longest stream accepted; more audio gets an error (partials re-read all audio).
    stream_idle_seconds : float
        A stream without a chunk for this long is dropped and its state freed (the same knob, under
        the same name, from ``--stream-idle-seconds`` on).
    max_streams : int
        Streams held at once by one model instance.
    """

    rollback_tokens: int = 5
    prefix_after_chunks: int = 2
    reuse_windows: bool = True
    max_stream_seconds: float = 300.0
    stream_idle_seconds: float = 30.0
    max_streams: int = 256

    def __post_init__(self) -> None:
        if self.rollback_tokens < 0 or self.prefix_after_chunks < 0:
            raise ValueError("rollback_tokens and prefix_after_chunks must be >= 0")
        if self.max_stream_seconds <= 0 or self.stream_idle_seconds <= 0 or self.max_streams < 1:
            raise ValueError("max_stream_seconds, stream_idle_seconds and max_streams must be positive")


@dataclass(frozen=True)
class Partial:
    """A partial hypothesis."""

    text: str
    language: str | None
    token_ids: list[int]
    audio_seconds: float


@dataclass
class StreamState:
    """Everything one stream holds between chunks (bounded by the policy)."""

    key: object
    options: RecognitionOptions
    sample_rate: int
    resampler: StreamResampler = field(init=False)  # one filter over the whole stream (made in __post_init__)
    wave16k: list[np.ndarray] = field(default_factory=list)  # the resampler's output so far, in order
    chunks: int = 0
    previous_tokens: list[int] = field(default_factory=list)
    windows: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # index -> (input, embeds)
    last_activity: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock | None = None
    encoded_windows: int = 0
    reused_windows: int = 0

    def __post_init__(self) -> None:
        self.resampler = StreamResampler(self.sample_rate)

    @property
    def raw_samples(self) -> int:
        """Samples received so far, at the stream's own rate."""
        return self.resampler.samples_in

    @property
    def seconds(self) -> float:
        return self.raw_samples / float(self.sample_rate)

    def waveform16k(self) -> np.ndarray:
        """``[n]`` float32: the 16 kHz audio resampled so far (before the peak limit)."""
        return np.concatenate(self.wave16k) if self.wave16k else np.zeros(0, np.float32)


class StreamRegistry:
    """Active streams by correlation id, with a bound and idle expiry (thread-safe)."""

    def __init__(self, policy: StreamingPolicy) -> None:
        self.policy = policy
        self._streams: dict[object, StreamState] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._streams)

    def open(self, key: object, options: RecognitionOptions, sample_rate: int) -> StreamState:
        with self._lock:
            if key in self._streams:
                raise InputError(f"stream {key} was started twice (START on a running sequence)")
            if len(self._streams) >= self.policy.max_streams:
                raise CapacityError(f"too many concurrent streams ({self.policy.max_streams})")
            state = StreamState(key, options, sample_rate)
            self._streams[key] = state
            return state

    def get(self, key: object) -> StreamState:
        with self._lock:
            state = self._streams.get(key)
        if state is None:
            raise InputError(
                f"stream {key} is unknown: send START first (or it expired after"
                f" {self.policy.stream_idle_seconds:.0f} s without audio)"
            )
        return state

    def close(self, key: object) -> StreamState | None:
        with self._lock:
            return self._streams.pop(key, None)

    def expire(self, now: float | None = None) -> list[object]:
        """Drop streams idle longer than the policy allows; returns their keys."""
        now = time.monotonic() if now is None else now
        with self._lock:
            stale = [k for k, s in self._streams.items() if now - s.last_activity > self.policy.stream_idle_seconds]
            for key in stale:
                del self._streams[key]
        return stale


class StreamRecognizer:
    """Partials and finals for streams, on top of a :class:`~.pipeline.Recognizer`."""

    def __init__(
        self, recognizer: Recognizer, policy: StreamingPolicy | None = None, audio_limits: AudioLimits | None = None
    ) -> None:
        self.recognizer = recognizer
        self.policy = policy or StreamingPolicy()
        cfg = recognizer.spec.features
        self.audio_limits = audio_limits or AudioLimits(max_seconds=self.policy.max_stream_seconds)
        self.log_mel = LogMel(cfg)

    def add_chunk(self, state: StreamState, samples: np.ndarray, sample_rate: int) -> None:
        """Validate and append one chunk of PCM (any rate, but constant within a stream)."""
        if sample_rate != state.sample_rate:
            raise InputError(f"SAMPLE_RATE changed within the stream ({state.sample_rate} -> {sample_rate})")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if samples.size:
            total = (state.raw_samples + samples.size) / float(sample_rate)
            if total > self.policy.max_stream_seconds:
                raise InputError(
                    f"stream exceeds {self.policy.max_stream_seconds:.0f} s of audio; end it and start a new one"
                )
            mono = check_waveform(samples, sample_rate, self.audio_limits)  # may raise: state untouched
            state.wave16k.append(state.resampler.push(mono))
        state.chunks += 1
        state.last_activity = time.monotonic()

    async def _encode(self, state: StreamState, windows: EncoderWindows) -> np.ndarray:
        parts: list[np.ndarray | None] = []
        missing = []
        for i, feats in enumerate(windows.features):
            cached = state.windows.get(i) if self.policy.reuse_windows else None
            if cached is not None and cached[0].shape == feats.shape and np.array_equal(cached[0], feats):
                parts.append(cached[1])
                state.reused_windows += 1
            else:
                parts.append(None)
                missing.append(i)
        if missing:
            subset = EncoderWindows(
                [windows.features[i] for i in missing], windows.frames[missing], windows.tokens[missing]
            )
            embeds = await self.recognizer.stages.encode(subset)
            offsets = np.cumsum([0, *subset.tokens.tolist()])
            for j, i in enumerate(missing):
                parts[i] = embeds[offsets[j] : offsets[j + 1]]
                state.windows[i] = (windows.features[i], parts[i])
            state.encoded_windows += len(missing)
        for stale in [k for k in state.windows if k >= len(windows.features)]:
            del state.windows[stale]
        return np.concatenate(parts, axis=0)

    def prefix(self, state: StreamState) -> list[int]:
        """The part of the previous partial reused as the answer's start (official rollback rule)."""
        if state.chunks <= self.policy.prefix_after_chunks or not state.previous_tokens:
            return []
        keep = len(state.previous_tokens) - self.policy.rollback_tokens
        return state.previous_tokens[:keep] if keep > 0 else []

    async def partial(self, state: StreamState) -> Partial:
        """Hypothesis for the audio received so far: the stream as one segment, decoded as a request's are."""
        rec = self.recognizer
        wave = limit_peak(state.waveform16k())
        if wave.size == 0:
            return Partial("", None, [], 0.0)
        segment = prepare_segment(wave, 0, wave.size, rec.spec.features, self.log_mel)
        audio = await self._encode(state, segment.windows)
        _, seconds = segment.seconds()
        decoded = await rec.decode_segment(segment.windows, audio, seconds, state.options, prefix=self.prefix(state))
        state.previous_tokens = decoded.token_ids
        return Partial(decoded.text, decoded.language, decoded.token_ids, seconds)

    async def final(self, state: StreamState) -> Transcript:
        """The whole stream recognised from scratch, exactly like a unary request with the same PCM.

        Flushes the stream's resampler: call it once, at the stream's end.
        """
        rec = self.recognizer
        if state.raw_samples == 0:
            raise InputError("the stream ended without any audio")
        state.wave16k.append(state.resampler.finish())
        wave = limit_peak(state.waveform16k())
        seconds = rec.limits.segment_seconds(state.options.return_timestamps)
        audio = prepare_audio(wave, rec.spec.features, seconds, self.log_mel)
        return await rec.transcribe(audio, state.options)
