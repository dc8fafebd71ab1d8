"""Long-audio segmentation, following the official Qwen3-ASR recipe.

Audio longer than the segment limit (1200 s for transcription, 180 s when
word timestamps are asked for) is cut near each limit at the quietest
100 ms stretch found within +-5 s, at its quietest sample. Segments do not
overlap and concatenate back to the input exactly; each is then recognised on
its own and the texts are joined, with word timestamps shifted by the
segment's offset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Official limits (qwen_asr.inference.utils): one decoder pass handles at most
# 20 minutes; the forced aligner was trained on at most 3 minutes.
MAX_ASR_SEGMENT_SECONDS = 1200.0
MAX_ALIGN_SEGMENT_SECONDS = 180.0
# Half-width of the region searched for a quiet cut point.
SEARCH_EXPAND_SECONDS = 5.0
# Width of the energy window used to find the quiet stretch.
ENERGY_WINDOW_SECONDS = 0.1


@dataclass(frozen=True)
class Segment:
    """A ``[start, stop)`` sample range of the 16 kHz waveform."""

    start: int
    stop: int

    @property
    def num_samples(self) -> int:
        return self.stop - self.start


def split_segments(
    waveform: np.ndarray,
    sample_rate: int,
    max_segment_seconds: float,
    search_expand_seconds: float = SEARCH_EXPAND_SECONDS,
    energy_window_seconds: float = ENERGY_WINDOW_SECONDS,
) -> list[Segment]:
    """Cut ``[num_samples]`` audio into segments of at most about ``max_segment_seconds``.

    A segment can exceed the limit by up to ``search_expand_seconds`` when the
    quietest point lies after it, exactly as in the official implementation.
    """
    if max_segment_seconds <= 0:
        raise ValueError("max_segment_seconds must be positive")
    total = int(waveform.shape[0])
    max_len = int(max_segment_seconds * sample_rate)
    if total <= max_len:
        return [Segment(0, total)]
    expand = int(search_expand_seconds * sample_rate)
    win = max(4, int(energy_window_seconds * sample_rate))
    magnitude = np.abs(np.asarray(waveform, dtype=np.float64))
    segments: list[Segment] = []
    start = 0
    while total - start > max_len:
        cut = start + max_len
        left, right = max(start, cut - expand), min(total, cut + expand)
        if right - left <= win:
            boundary = cut
        else:
            region = magnitude[left:right]
            csum = np.concatenate(([0.0], np.cumsum(region)))
            window_energy = csum[win:] - csum[:-win]  # sum over every win-sample window
            quiet = int(np.argmin(window_energy))
            boundary = left + quiet + int(np.argmin(region[quiet : quiet + win]))
        boundary = min(max(boundary, start + 1), total)
        segments.append(Segment(start, boundary))
        start = boundary
    segments.append(Segment(start, total))
    return segments
