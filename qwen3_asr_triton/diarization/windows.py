"""Speech regions from Silero VAD probabilities, and the fixed windows embedded over them.

The regions come from the streaming endpointer (:class:`~qwen3_asr_triton.endpointing.Endpointer`):
the same hysteresis, minimum speech and padding as live captions, with the diarizer's own settings
(shorter silences end a region, so that a change of speaker after a short pause splits it).
All positions are 16 kHz sample indexes.
"""

from __future__ import annotations

import numpy as np

from ..endpointing import Endpointer, EndpointingOptions
from ..vad import FRAME_SAMPLES, VAD_SAMPLE_RATE
from .options import DiarizerConfig


def speech_regions(probs: np.ndarray, total_samples: int, config: DiarizerConfig) -> np.ndarray:
    """Speech regions of a waveform from its VAD frame probabilities.

    Parameters
    ----------
    probs : np.ndarray
        ``[f]`` speech probabilities, one per 512-sample frame (the last frame may be zero-padded).
    total_samples : int
        Length of the waveform; regions never reach beyond it.
    config : DiarizerConfig
        The VAD threshold, minimum silence and speech, padding and longest region.

    Returns
    -------
    np.ndarray
        ``[r, 2]`` int64 ``[start, end)`` sample bounds, padding included, in order and disjoint.
    """
    options = EndpointingOptions(
        vad_threshold=config.vad_threshold,
        vad_min_silence_ms=config.vad_min_silence_ms,
        vad_speech_pad_ms=config.vad_speech_pad_ms,
        max_utterance_seconds=config.max_region_seconds,
        min_speech_ms=config.vad_min_speech_ms,
    )
    endpointer = Endpointer(options)
    cuts = endpointer.push(np.asarray(probs, np.float32)[: -(-total_samples // FRAME_SAMPLES)])
    last = endpointer.finish(total_samples)
    if last is not None:
        cuts.append(last)
    bounds = [(cut.start, min(cut.end, total_samples)) for cut in cuts]
    return np.asarray([b for b in bounds if b[1] > b[0]], np.int64).reshape(-1, 2)


def region_windows(regions: np.ndarray, total_samples: int, config: DiarizerConfig) -> np.ndarray:
    """Fixed-length windows over speech regions.

    A region longer than a window gets windows every hop from its start, the last one aligned to its
    end; a shorter region gets one window centred on it, reaching into the audio around it (clamped to
    the waveform), so that every window has the same length: ``min(window, total_samples)``.

    Parameters
    ----------
    regions : np.ndarray
        ``[r, 2]`` ``[start, end)`` sample bounds.
    total_samples : int
        Length of the waveform.
    config : DiarizerConfig
        Window length and hop.

    Returns
    -------
    np.ndarray
        ``[w, 2]`` int64 ``[start, end)`` window bounds, ordered by start.
    """
    length = min(round(config.window_seconds * VAD_SAMPLE_RATE), total_samples)
    hop = max(1, round(config.hop_seconds * VAD_SAMPLE_RATE))
    starts: list[np.ndarray] = []
    for start, end in np.asarray(regions, np.int64).reshape(-1, 2).tolist():
        if end - start <= length:
            centre = (start + end) // 2
            starts.append(np.asarray([min(max(centre - length // 2, 0), total_samples - length)]))
            continue
        inner = np.arange(start, end - length + 1, hop)
        if inner[-1] + length < end:
            inner = np.append(inner, end - length)
        starts.append(inner)
    if not starts or length <= 0:
        return np.zeros((0, 2), np.int64)
    first = np.concatenate(starts).astype(np.int64)
    return np.stack([first, first + length], axis=1)
