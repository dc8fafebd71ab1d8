"""The official ``qwen-asr`` front end, as the reference input of front-end and parity tests.

The official package turns a file into model input with ``librosa.load(path, sr=16000)``
(libsndfile decodes, channels are averaged, soxr resamples at HQ quality) and then its
``float_range_normalize``: a peak above 1 is divided out and samples are clipped to [-1, 1].
This module does the same with librosa itself, independently of ``qwen3_asr_triton.audio``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

# Containers libsndfile cannot read: librosa would hand them to audioread (deprecated, FFmpeg's
# command line at 16-bit), which the served front end does not copy; see official_waveform.
NOT_LIBSNDFILE = frozenset({"m4a", "aac", "mp4", "webm", "mkv"})


def official_waveform(path: Path) -> np.ndarray:
    """``[n]`` float32 at 16 kHz, as the official package prepares the file at ``path``.

    For the containers in ``NOT_LIBSNDFILE`` there is no libsndfile reference to match, and the
    project's FFmpeg decoder is used instead (its output then only checks the rest of the pipeline).
    """
    if path.suffix.lstrip(".").lower() in NOT_LIBSNDFILE:
        from qwen3_asr_triton.audio import load_audio

        return load_audio(path.read_bytes())
    import librosa

    with warnings.catch_warnings():
        # Never let librosa fall back to audioread silently: that would be no libsndfile reference.
        warnings.filterwarnings("error", message="PySoundFile failed")
        wave, _ = librosa.load(str(path), sr=16000)
    wave = wave.astype(np.float32)
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak > 1.0:
        wave = wave / peak
    return np.clip(wave, -1.0, 1.0)
