"""Endpointing: cutting an endless stream into utterances from per-frame speech probabilities.

Pure policy, no model and no clock: :class:`Endpointer` takes the VAD's
probabilities frame by frame (:mod:`.vad`, 512 samples at 16 kHz each) and
returns the utterances that ended. The rule is Silero VAD's own streaming one
(its ``VADIterator``): speech starts at a frame scoring at least the threshold
and ends after ``vad_min_silence_ms`` of frames scoring below ``threshold - 0.15``;
the utterance's audio is padded by ``vad_speech_pad_ms`` on both sides (never
reaching into the utterance before). Two additions for live captions:

- an utterance is only opened (partials, ``speech_started``) once it has lasted
  ``min_speech_ms``, so a click or a breath never becomes one;
- an utterance reaching ``max_utterance_seconds`` is cut at the quietest frame
  of its second half (lowest speech probability, the latest of equals), and
  the rest of the speech goes on as the next utterance, so the audio and the
  decoder work a stream holds stay bounded however long someone talks.

All positions are 16 kHz sample indexes from the start of the stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .vad import FRAME_SAMPLES, VAD_SAMPLE_RATE

# Silero's hysteresis: speech goes on until a frame scores this much below the start threshold.
NEGATIVE_THRESHOLD_GAP = 0.15
# Its floor for the lower threshold (a start threshold of 0.1 still ends on clear silence).
NEGATIVE_THRESHOLD_FLOOR = 0.01
# Upper bounds of the per-stream knobs a client may set (10 s of silence or padding is already extreme).
MAX_VAD_MS = 10_000


def _samples(ms: float) -> int:
    return round(ms * VAD_SAMPLE_RATE / 1000)


@dataclass(frozen=True)
class EndpointingOptions:
    """How a stream is cut into utterances (the same names from the build flags to the gRPC inputs).

    Attributes
    ----------
    vad_threshold : float
        Speech probability at which speech starts, in (0, 1) (Silero's and OpenAI's default: 0.5).
    vad_min_silence_ms : int
        Silence that ends an utterance (OpenAI's ``silence_duration_ms``, default 500).
    vad_speech_pad_ms : int
        Audio kept before speech starts and after it ends (OpenAI's ``prefix_padding_ms``, 300).
    max_utterance_seconds : float
        Longest utterance; longer speech is cut at its quietest point (bounds a stream's state).
    min_speech_ms : int
        Speech shorter than this is not an utterance (Silero's default, 250).
    """

    vad_threshold: float = 0.5
    vad_min_silence_ms: int = 500
    vad_speech_pad_ms: int = 300
    max_utterance_seconds: float = 30.0
    min_speech_ms: int = 250

    def __post_init__(self) -> None:
        if not (isinstance(self.vad_threshold, (int, float)) and 0.0 < self.vad_threshold < 1.0):
            raise ValueError(f"vad_threshold must be between 0 and 1 (exclusive), got {self.vad_threshold!r}")
        for name in ("vad_min_silence_ms", "vad_speech_pad_ms", "min_speech_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_VAD_MS:
                raise ValueError(f"{name} must be an integer between 0 and {MAX_VAD_MS}, got {value!r}")
        seconds = self.max_utterance_seconds
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds)):
            raise ValueError(f"max_utterance_seconds must be a number, got {seconds!r}")
        shortest = 2 * (self.vad_speech_pad_ms + self.min_speech_ms) / 1000 + 1.0
        if seconds < shortest:
            raise ValueError(
                f"max_utterance_seconds must be at least {shortest:g} (twice the padding and the shortest"
                f" speech, plus 1 s), got {seconds:g}"
            )

    def with_overrides(
        self, vad_threshold: float | None, vad_min_silence_ms: int | None, vad_speech_pad_ms: int | None
    ) -> EndpointingOptions:
        """These options with a stream's own knobs (``None`` keeps the default); validated."""
        changes = {
            name: value
            for name, value in (
                ("vad_threshold", vad_threshold),
                ("vad_min_silence_ms", vad_min_silence_ms),
                ("vad_speech_pad_ms", vad_speech_pad_ms),
            )
            if value is not None
        }
        return replace(self, **changes) if changes else self


@dataclass(frozen=True)
class Cut:
    """An utterance that ended: samples ``[start, end)`` of the stream, padding included."""

    start: int
    end: int
    forced: bool = False  # cut at the length limit, not at a silence


class Endpointer:
    """Silero's streaming rule plus a shortest utterance and a forced cut; see the module docstring."""

    def __init__(self, options: EndpointingOptions) -> None:
        self.options = options
        self.negative = max(options.vad_threshold - NEGATIVE_THRESHOLD_GAP, NEGATIVE_THRESHOLD_FLOOR)
        self.pad = _samples(options.vad_speech_pad_ms)
        self.min_silence = _samples(options.vad_min_silence_ms)
        self.min_speech = _samples(options.min_speech_ms)
        self.max_length = int(options.max_utterance_seconds * VAD_SAMPLE_RATE)
        self.frames = 0  # frames seen
        self.last_end = 0  # where the last utterance ended: the next never reaches before it
        self._speech_frame: int | None = None  # first frame of the current speech
        self._start = 0  # sample where the current utterance's audio starts (padding included)
        self._silence_frame: int | None = None  # first quiet frame of the silence that may end it
        self._confirmed = False
        self._probs: list[float] = []  # the current utterance's frames, for a forced cut

    @property
    def open(self) -> bool:
        """An utterance is being spoken (and has lasted ``min_speech_ms``)."""
        return self._speech_frame is not None and self._confirmed

    @property
    def start(self) -> int:
        """Where the open utterance's audio starts (meaningful while :attr:`open`)."""
        return self._start

    def keep_from(self, received: int) -> int:
        """The earliest sample a future utterance can still need, with ``received`` samples in."""
        if self._speech_frame is not None:
            return self._start
        return max(self.last_end, min(received, self.frames * FRAME_SAMPLES) - self.pad)

    def push(self, probs: np.ndarray) -> list[Cut]:
        """Feed the next frames' probabilities; returns the utterances they ended, in order."""
        cuts = []
        for prob in np.asarray(probs, np.float32).reshape(-1).tolist():
            cut = self._frame(self.frames, prob)
            self.frames += 1
            if cut is not None:
                cuts.append(cut)
        return cuts

    def finish(self, received: int) -> Cut | None:
        """The stream ended after ``received`` samples: the open utterance ends with it."""
        if self._speech_frame is None:
            return None
        speech_end = received if self._silence_frame is None else self._silence_frame * FRAME_SAMPLES
        return self._close(min(received, speech_end + self.pad), speech_end)

    # ------------------------------------------------------------------ the rule
    def _frame(self, index: int, prob: float) -> Cut | None:
        if self._speech_frame is None:
            if prob >= self.options.vad_threshold:
                self._speech_frame = index
                self._start = max(self.last_end, index * FRAME_SAMPLES - self.pad)
                self._silence_frame = None
                self._confirmed = False
                self._probs = [prob]
                self._confirm(index)
            return None
        self._probs.append(prob)
        if prob >= self.options.vad_threshold:
            self._silence_frame = None
        elif prob < self.negative and self._silence_frame is None:
            self._silence_frame = index
        if self._silence_frame is None:
            self._confirm(index)
        elif (index + 1 - self._silence_frame) * FRAME_SAMPLES >= self.min_silence:
            speech_end = self._silence_frame * FRAME_SAMPLES
            return self._close(min((index + 1) * FRAME_SAMPLES, speech_end + self.pad), speech_end)
        if (index + 1) * FRAME_SAMPLES - self._start >= self.max_length:
            return self._forced_cut(index)
        return None

    def _confirm(self, index: int) -> None:
        if (index + 1 - self._speech_frame) * FRAME_SAMPLES >= self.min_speech:
            self._confirmed = True

    def _close(self, end: int, speech_end: int) -> Cut | None:
        """End the current speech at ``end``: a :class:`Cut` if it was long enough, else nothing."""
        long_enough = self._confirmed or speech_end - self._speech_frame * FRAME_SAMPLES >= self.min_speech
        cut = Cut(self._start, end) if long_enough else None
        if cut is not None:
            self.last_end = end
        self._speech_frame = None
        self._silence_frame = None
        self._confirmed = False
        self._probs = []
        return cut

    def _forced_cut(self, index: int) -> Cut:
        """Cut the over-long utterance at the quietest frame of its second half; the rest goes on."""
        first = self._speech_frame
        half = len(self._probs) // 2
        tail = np.asarray(self._probs[half:], np.float32)
        quietest = half + int(len(tail) - 1 - np.argmin(tail[::-1]))  # the latest of equals
        cut_frame = first + quietest
        cut = Cut(self._start, cut_frame * FRAME_SAMPLES, forced=True)
        self.last_end = cut.end
        self._speech_frame = cut_frame
        self._start = cut.end
        self._probs = self._probs[quietest:]
        self._confirmed = True
        if self._silence_frame is not None and self._silence_frame < cut_frame:
            self._silence_frame = cut_frame
        return cut
