"""Long-audio segmentation at quiet points."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from qwen3_asr_triton.segmentation import split_segments

RATE = 16000


def test_short_audio_is_one_segment():
    assert [(s.start, s.stop) for s in split_segments(np.ones(RATE * 10), RATE, 20.0)] == [(0, RATE * 10)]


def test_segments_tile_the_audio_and_cut_in_silence():
    rng = np.random.default_rng(0)
    wave = rng.uniform(-0.5, 0.5, RATE * 65).astype(np.float32)
    quiet = [int(RATE * 18.3), int(RATE * 41.0)]  # silent 300 ms stretches near the 20 s limits
    for q in quiet:
        wave[q : q + int(0.3 * RATE)] = 0.0
    segments = split_segments(wave, RATE, 20.0)
    assert segments[0].start == 0 and segments[-1].stop == wave.size
    assert all(a.stop == b.start for a, b in itertools.pairwise(segments))
    cuts = [s.stop for s in segments[:-1]]
    assert len(cuts) == 3
    for cut, q in zip(cuts, quiet):
        assert q <= cut < q + int(0.3 * RATE), "cut inside the silent stretch"
    assert all(s.num_samples <= RATE * 25 for s in segments), "at most limit + 5 s"


def test_invalid_limit():
    with pytest.raises(ValueError):
        split_segments(np.zeros(10), RATE, 0)
