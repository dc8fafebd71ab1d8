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
  to the new audio while the utterance's loudest frame stays put. The
  log-mel itself is kept the same way (:class:`~.features.GrowingLogMel`):
  frames whose samples are all in are computed once per utterance.
- **exact final**: chunks are resampled as they arrive by one streaming
  resampler whose output equals the one-shot resampling of the whole stream,
  and at the end of a stream that audio is recognised from scratch, exactly as
  a unary ``qwen3_asr`` request with the same PCM would be (same samples,
  normalisation, segmentation), so the final hypothesis equals the offline one.

Partials are produced through the same :class:`~.pipeline.Stages` as unary
requests, so concurrent streams share the decoder's in-flight batch.

With **endpointing** (:mod:`.endpointing`, Silero VAD from :mod:`.vad`) a
stream is a sequence of utterances and may run for hours: partials re-decode
only the open utterance, each utterance that ends is recognised from scratch
like a unary request of its samples (its final), and the stream keeps only the
audio the open utterance (or the padding of the next) can still need.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from .audio import TARGET_SAMPLE_RATE, AudioLimits, StreamResampler, check_waveform, limit_peak
from .diarization.online import OnlineSpeakers
from .endpointing import Cut, Endpointer, EndpointingOptions
from .errors import CapacityError, InputError
from .features import EncoderWindows, GrowingLogMel, LogMel
from .pipeline import RecognitionOptions, Recognizer, Transcript, prepare_audio, prepare_segment
from .vad import SileroVad, VadStream

# A partial's answer (prefix included) has at most PARTIAL_BASE_TOKENS + PARTIAL_TOKENS_PER_SECOND
# tokens per second of its utterance (and never more than the request's budget). The answer's header
# ("language English<asr_text>") is 3-4 tokens and dense speech about 5 tokens/s in English or
# Chinese, so a trained model's partial stops on its own well inside it; the cap only binds on a
# model that loops (or random weights, which ramble until a budget), whose partials then cost
# decoder steps in proportion to the audio, not the request's budget. Finals are never capped.
PARTIAL_BASE_TOKENS = 8
PARTIAL_TOKENS_PER_SECOND = 8.0


def partial_budget(seconds: float) -> int:
    """Most tokens a partial's answer (prefix included) may hold for ``seconds`` of utterance."""
    return PARTIAL_BASE_TOKENS + math.ceil(PARTIAL_TOKENS_PER_SECOND * seconds)


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
        Longest stream without endpointing (its partials re-read all audio); more audio gets an
        error. Streams with endpointing hold one utterance at a time and have no length limit.
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
    """A partial hypothesis of the open utterance (of the whole stream without endpointing)."""

    text: str
    language: str | None
    token_ids: list[int]
    audio_seconds: float  # stream audio the hypothesis covers (resampled so far), from the stream's start
    utterance: int = 0
    start_seconds: float = 0.0  # where the utterance starts in the stream


@dataclass(frozen=True)
class UtteranceFinal:
    """An utterance that ended, recognised like a unary request of its samples; times in stream seconds."""

    index: int
    start_seconds: float
    end_seconds: float
    transcript: Transcript
    forced: bool = False


class AudioWindow:
    """The 16 kHz audio a stream still holds: samples ``[first, total)`` of the stream, in pieces."""

    def __init__(self) -> None:
        self.first = 0
        self.total = 0
        self._pieces: list[np.ndarray] = []

    def append(self, samples: np.ndarray) -> None:
        if samples.size:
            self._pieces.append(samples)
            self.total += samples.size

    def slice(self, start: int, end: int) -> np.ndarray:
        """``[end - start]`` float32 samples of the stream (``first <= start <= end <= total``)."""
        if not self.first <= start <= end <= self.total:
            raise ValueError(f"samples [{start}, {end}) are not held (holding [{self.first}, {self.total}))")
        whole = np.concatenate(self._pieces) if len(self._pieces) > 1 else self._whole()
        self._pieces = [whole] if whole.size else []
        return whole[start - self.first : end - self.first]

    def drop_before(self, sample: int) -> None:
        """Forget the samples before ``sample`` (kept: everything from it on)."""
        sample = min(max(sample, self.first), self.total)
        if sample > self.first:
            self._pieces = [self.slice(sample, self.total).copy()] if sample < self.total else []
            self.first = sample

    def _whole(self) -> np.ndarray:
        return self._pieces[0] if self._pieces else np.zeros(0, np.float32)


@dataclass
class StreamState:
    """Everything one stream holds between chunks (bounded by the policy)."""

    key: object
    options: RecognitionOptions
    sample_rate: int
    endpointing: EndpointingOptions | None = None  # None: the whole stream is one utterance
    resampler: StreamResampler = field(init=False)  # one filter over the whole stream (made in __post_init__)
    audio: AudioWindow = field(default_factory=AudioWindow)  # the resampler's output still held
    chunks: int = 0
    utterance_chunks: int = 0  # chunks since the open utterance began (the prefix rule counts these)
    utterance: int = 0  # index of the open (or next) utterance
    previous_tokens: list[int] = field(default_factory=list)
    windows: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # index -> (input, embeds)
    mel: GrowingLogMel | None = None  # the open utterance's log-mel frames that later partials reuse
    last_activity: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock | None = None
    encoded_windows: int = 0
    reused_windows: int = 0
    endpointer: Endpointer | None = field(init=False, default=None)
    vad: VadStream | None = field(init=False, default=None)
    scored: int = 0  # samples the VAD has seen
    decoded_from: int = 0  # start of the audio that previous_tokens and windows describe
    # With DIARIZE at START: the stream's speakers so far, each utterance final labelled with one of them.
    speakers: OnlineSpeakers | None = None

    def __post_init__(self) -> None:
        self.resampler = StreamResampler(self.sample_rate)
        if self.endpointing is not None:
            self.endpointer = Endpointer(self.endpointing)
            self.vad = VadStream()

    @property
    def raw_samples(self) -> int:
        """Samples received so far, at the stream's own rate."""
        return self.resampler.samples_in

    @property
    def seconds(self) -> float:
        return self.raw_samples / float(self.sample_rate)

    def waveform16k(self) -> np.ndarray:
        """``[n]`` float32: the 16 kHz audio held, resampled so far (before the peak limit)."""
        return self.audio.slice(self.audio.first, self.audio.total)

    @property
    def speaking(self) -> bool:
        """An utterance is open: without endpointing always (every chunk gets a partial, even an empty one)."""
        return self.endpointer.open if self.endpointer is not None else True

    def utterance_start(self) -> int:
        """First sample of the open utterance's audio (0 without endpointing)."""
        return self.endpointer.start if self.endpointer is not None else 0

    def new_utterance(self, start: int) -> None:
        """Forget the hypothesis and encoder windows of audio that no longer starts the utterance."""
        if start != self.decoded_from:
            self.previous_tokens = []
            self.windows.clear()
            if self.mel is not None:
                self.mel.reset()
            self.decoded_from = start


class StreamRegistry:
    """Active streams by correlation id, with a bound and idle expiry (thread-safe)."""

    def __init__(self, policy: StreamingPolicy) -> None:
        self.policy = policy
        self._streams: dict[object, StreamState] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._streams)

    def open(
        self,
        key: object,
        options: RecognitionOptions,
        sample_rate: int,
        endpointing: EndpointingOptions | None = None,
    ) -> StreamState:
        with self._lock:
            if key in self._streams:
                raise InputError(f"stream {key} was started twice (START on a running sequence)")
            if len(self._streams) >= self.policy.max_streams:
                raise CapacityError(f"too many concurrent streams ({self.policy.max_streams})")
            state = StreamState(key, options, sample_rate, endpointing)
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
    """Partials and finals for streams, on top of a :class:`~.pipeline.Recognizer`.

    ``vad`` scores the audio of streams opened with endpointing (none: such streams are refused);
    ``embed_speaker`` (one utterance's 16 kHz samples -> its ``[d]`` speaker embedding) labels the
    utterance finals of streams that track speakers (none: such streams are refused).
    """

    def __init__(
        self,
        recognizer: Recognizer,
        policy: StreamingPolicy | None = None,
        audio_limits: AudioLimits | None = None,
        vad: SileroVad | None = None,
        embed_speaker: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.recognizer = recognizer
        self.policy = policy or StreamingPolicy()
        cfg = recognizer.spec.features
        self.audio_limits = audio_limits or AudioLimits(max_seconds=self.policy.max_stream_seconds)
        self.log_mel = LogMel(cfg)
        self.vad = vad
        self.embed_speaker = embed_speaker

    def add_chunk(self, state: StreamState, samples: np.ndarray, sample_rate: int) -> None:
        """Validate and append one chunk of PCM (any rate, but constant within a stream)."""
        if sample_rate != state.sample_rate:
            raise InputError(f"SAMPLE_RATE changed within the stream ({state.sample_rate} -> {sample_rate})")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if samples.size:
            total = (state.raw_samples + samples.size) / float(sample_rate)
            if state.endpointing is None and total > self.policy.max_stream_seconds:
                raise InputError(
                    f"stream exceeds {self.policy.max_stream_seconds:.0f} s of audio; end it and start a new one"
                    " (or start it with ENDPOINTING, which has no length limit)"
                )
            mono = check_waveform(samples, sample_rate, self.audio_limits)  # may raise: state untouched
            state.audio.append(state.resampler.push(mono))
        state.chunks += 1
        state.utterance_chunks += 1
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
        if state.utterance_chunks <= self.policy.prefix_after_chunks or not state.previous_tokens:
            return []
        keep = len(state.previous_tokens) - self.policy.rollback_tokens
        return state.previous_tokens[:keep] if keep > 0 else []

    async def partial(self, state: StreamState) -> Partial:
        """Hypothesis for the open utterance so far, decoded as a request's segments are."""
        rec = self.recognizer
        start = state.utterance_start()
        state.new_utterance(start)
        wave = limit_peak(state.audio.slice(start, state.audio.total))
        covered = state.audio.total / TARGET_SAMPLE_RATE  # what the resampler has finished, from the stream's start
        if wave.size == 0:
            return Partial("", None, [], covered, state.utterance, start / TARGET_SAMPLE_RATE)
        if state.mel is None:
            state.mel = GrowingLogMel(self.log_mel)
        # The utterance only grows between partials: its settled log-mel frames are computed once.
        segment = prepare_segment(wave, 0, wave.size, rec.spec.features, state.mel)
        audio = await self._encode(state, segment.windows)
        _, seconds = segment.seconds()
        # A partial shows text only: its tokens' log-probabilities are not computed.
        decoded = await rec.decode_segment(
            segment.windows,
            audio,
            seconds,
            state.options,
            prefix=self.prefix(state),
            want_logprobs=False,
            max_tokens=partial_budget(seconds),
        )
        state.previous_tokens = decoded.token_ids
        text, language, ids = decoded.text, decoded.language, decoded.token_ids
        return Partial(text, language, ids, covered, state.utterance, start / TARGET_SAMPLE_RATE)

    async def advance(self, state: StreamState, end: bool = False) -> list[UtteranceFinal]:
        """Score the audio that arrived with the VAD; the finals of the utterances it ended, in order.

        ``end``: the stream ends here (flushes the resampler and closes the open utterance).
        Without endpointing there are no utterance finals (the stream's final is :meth:`final`).
        """
        if state.endpointer is None or state.vad is None:
            return []
        if self.vad is None:
            raise InputError("this model has no VAD; start the stream without ENDPOINTING")
        if end:
            state.audio.append(state.resampler.finish())
        # Later chunks may arrive while the VAD runs: this call scores the audio that is in now.
        received = state.audio.total
        fresh = state.audio.slice(state.scored, received)
        probs = await asyncio.to_thread(self.vad.score, state.vad, fresh, end)
        state.scored = received
        cuts: list[Cut] = state.endpointer.push(probs)
        if end and (last := state.endpointer.finish(received)) is not None:
            cuts.append(last)
        waves = [state.audio.slice(cut.start, cut.end).copy() for cut in cuts]
        state.audio.drop_before(state.endpointer.keep_from(received))
        if cuts or not state.endpointer.open:
            state.utterance_chunks = 0
        finals = []
        for cut, wave in zip(cuts, waves, strict=True):
            index = state.utterance
            state.utterance += 1
            offset = cut.start / TARGET_SAMPLE_RATE
            transcript = shift_times(await self._recognise(wave, state.options), offset)
            if state.speakers is not None:
                transcript = await self._label_speaker(state.speakers, wave, transcript)
            finals.append(UtteranceFinal(index, offset, cut.end / TARGET_SAMPLE_RATE, transcript, cut.forced))
        return finals

    async def _label_speaker(self, speakers: OnlineSpeakers, wave16k: np.ndarray, transcript: Transcript) -> Transcript:
        """``transcript`` with every segment and word given the utterance's speaker (online assignment)."""
        if self.embed_speaker is None:
            raise InputError("speaker labels need the diarizer's speaker graph, which this repository lacks")
        embedding = await asyncio.to_thread(self.embed_speaker, wave16k)
        speaker = speakers.assign(embedding)
        return replace(
            transcript,
            segment_speakers=[speaker] * len(transcript.segments),
            word_speakers=[speaker] * len(transcript.words),
        )

    async def _recognise(self, wave16k: np.ndarray, options: RecognitionOptions) -> Transcript:
        """Recognise 16 kHz audio exactly as a unary request with the same samples is."""
        rec = self.recognizer
        seconds = rec.limits.segment_seconds(options.return_timestamps)
        audio = prepare_audio(limit_peak(wave16k), rec.spec.features, seconds, self.log_mel)
        return await rec.transcribe(audio, options)

    async def final(self, state: StreamState) -> Transcript:
        """The whole stream recognised from scratch, exactly like a unary request with the same PCM.

        Flushes the stream's resampler: call it once, at the stream's end (streams without endpointing).
        """
        if state.raw_samples == 0:
            raise InputError("the stream ended without any audio")
        state.audio.append(state.resampler.finish())
        return await self._recognise(state.waveform16k(), state.options)


def shift_times(transcript: Transcript, seconds: float) -> Transcript:
    """``transcript`` with its word and segment times moved ``seconds`` later (utterance -> stream time)."""
    if seconds == 0.0:
        return transcript
    words = [replace(w, start=w.start + seconds, end=w.end + seconds) for w in transcript.words]
    segments = [replace(s, start=s.start + seconds, end=s.end + seconds) for s in transcript.segments]
    return replace(transcript, words=words, segments=segments)
