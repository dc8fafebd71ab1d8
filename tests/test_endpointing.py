"""The endpointing policy on made-up speech probabilities (no model, no audio)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from qwen3_asr_triton.endpointing import Cut, Endpointer, EndpointingOptions
from qwen3_asr_triton.vad import FRAME_SAMPLES

# Frames per second of Silero's 32 ms frames at 16 kHz.
FPS = 16000 / FRAME_SAMPLES
SPEECH, QUIET = 0.9, 0.05


def frames(seconds: float) -> int:
    return round(seconds * FPS)


def probs(*parts: tuple[float, float]) -> np.ndarray:
    """A probability track from (seconds, probability) parts."""
    return np.concatenate([np.full(frames(s), p, np.float32) for s, p in parts])


def run(options: EndpointingOptions, track: np.ndarray, step: int = 7) -> tuple[list[Cut], Endpointer]:
    """Feed ``track`` in pieces of ``step`` frames (as chunks would), then end the stream."""
    endpointer = Endpointer(options)
    cuts = []
    for first in range(0, track.size, step):
        cuts += endpointer.push(track[first : first + step])
    last = endpointer.finish(track.size * FRAME_SAMPLES)
    return cuts + ([last] if last else []), endpointer


def test_two_utterances_are_cut_at_the_silence_with_padding():
    options = EndpointingOptions(vad_threshold=0.5, vad_min_silence_ms=500, vad_speech_pad_ms=300)
    track = probs((1.0, QUIET), (2.0, SPEECH), (1.5, QUIET), (1.0, SPEECH), (2.0, QUIET))
    cuts, _ = run(options, track)
    pad = 4800
    edges = np.cumsum([frames(s) for s in (1.0, 2.0, 1.5, 1.0)]) * FRAME_SAMPLES  # where each part ends
    first_speech, first_end, second_speech, second_end = edges.tolist()
    assert cuts == [
        Cut(first_speech - pad, first_end + pad),
        Cut(second_speech - pad, second_end + pad),
    ]


@pytest.mark.parametrize("step", [1, 5, 31, 10_000])
def test_the_cuts_do_not_depend_on_how_the_frames_arrive(step):
    rng = np.random.default_rng(3)
    track = probs((0.5, QUIET), (3, SPEECH), (0.8, QUIET), (2, SPEECH), (1, QUIET))
    track = np.clip(track + rng.normal(0, 0.1, track.size), 0, 1)
    track = np.where(rng.random(track.size) < 0.1, 0.3, track).astype(np.float32)  # hysteresis band
    reference, _ = run(EndpointingOptions(), track, step=1)
    assert run(EndpointingOptions(), track, step=step)[0] == reference
    assert len(reference) == 2


def test_a_short_pause_does_not_end_the_utterance_and_the_hysteresis_holds():
    options = EndpointingOptions(vad_min_silence_ms=500)
    # 0.3 s of silence is shorter than the minimum; 1 s of 0.4 sits between 0.35 and 0.5 and is not silence.
    track = probs((1.0, SPEECH), (0.3, QUIET), (1.0, SPEECH), (1.0, 0.4), (1.0, SPEECH), (1.0, QUIET))
    cuts, _ = run(options, track)
    assert len(cuts) == 1
    speech_end = sum(frames(s) for s in (1.0, 0.3, 1.0, 1.0, 1.0)) * FRAME_SAMPLES
    assert cuts[0].start == 0 and cuts[0].end == speech_end + 4800


def test_speech_shorter_than_the_minimum_is_no_utterance_and_never_opens():
    options = EndpointingOptions(min_speech_ms=250)
    endpointer = Endpointer(options)
    endpointer.push(probs((1.0, QUIET), (0.16, SPEECH)))
    assert not endpointer.open  # 5 frames = 160 ms: not yet an utterance
    assert endpointer.push(probs((1.0, QUIET))) == []
    assert endpointer.push(probs((0.3, SPEECH))) == [] and endpointer.open
    assert len(endpointer.push(probs((1.0, QUIET)))) == 1


def test_an_utterance_never_reaches_into_the_one_before():
    options = EndpointingOptions(vad_min_silence_ms=100, vad_speech_pad_ms=1000)
    cuts, _ = run(options, probs((1.0, SPEECH), (0.2, QUIET), (1.0, SPEECH), (1.0, QUIET)))
    assert len(cuts) == 2
    assert cuts[1].start == cuts[0].end  # padding would overlap: the second starts where the first ended
    assert cuts[0].start == 0


def test_long_speech_is_cut_at_its_quietest_frame_and_goes_on():
    options = EndpointingOptions(max_utterance_seconds=10.0, vad_speech_pad_ms=0)
    track = probs((12.0, SPEECH), (1.0, QUIET))
    dip = frames(7.0)
    track[dip] = 0.55  # the quietest frame of the second half (still speech)
    track[frames(2.0)] = 0.51  # quieter, but in the first half: not a cut point
    cuts, _endpointer = run(options, track)
    assert cuts[0] == Cut(0, dip * FRAME_SAMPLES, forced=True)
    assert cuts[1].start == dip * FRAME_SAMPLES and not cuts[1].forced
    assert cuts[1].end == frames(12.0) * FRAME_SAMPLES
    assert all(c.end - c.start <= 10 * 16000 for c in cuts)


def test_endless_speech_stays_bounded():
    options = EndpointingOptions(max_utterance_seconds=5.0)
    endpointer = Endpointer(options)
    cuts = []
    for _ in range(600):  # 10 minutes of speech with no pause, a second at a time
        cuts += endpointer.push(np.full(frames(1.0), SPEECH, np.float32))
        assert endpointer.frames * FRAME_SAMPLES - endpointer.keep_from(endpointer.frames * FRAME_SAMPLES) <= 5 * 16000
    assert len(cuts) >= 600 // 5 - 1  # each cut at most 5 s long: the last one still open
    assert all(a.end == b.start for a, b in itertools.pairwise(cuts))


def test_keep_from_holds_only_the_padding_in_silence():
    options = EndpointingOptions(vad_speech_pad_ms=300)
    endpointer = Endpointer(options)
    endpointer.push(probs((60.0, QUIET)))
    received = endpointer.frames * FRAME_SAMPLES
    assert endpointer.keep_from(received) == received - 4800
    endpointer.push(probs((1.0, SPEECH)))
    assert endpointer.open and endpointer.keep_from(received) == endpointer.start == received - 4800


def test_the_stream_end_closes_the_open_utterance():
    cuts, _ = run(EndpointingOptions(), probs((0.5, QUIET), (1.0, SPEECH)))
    assert cuts == [Cut(frames(0.5) * FRAME_SAMPLES - 4800, (frames(0.5) + frames(1.0)) * FRAME_SAMPLES)]
    assert run(EndpointingOptions(), probs((2.0, QUIET)))[0] == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"vad_threshold": 0.0},
        {"vad_threshold": 1.0},
        {"vad_threshold": float("nan")},
        {"vad_min_silence_ms": -1},
        {"vad_speech_pad_ms": 10_001},
        {"vad_speech_pad_ms": 1.5},
        {"max_utterance_seconds": 1.0},
        {"max_utterance_seconds": float("inf")},
    ],
)
def test_options_are_validated(kwargs):
    with pytest.raises(ValueError):
        EndpointingOptions(**kwargs)


def test_overrides_keep_the_defaults_they_do_not_name():
    base = EndpointingOptions(max_utterance_seconds=20.0)
    changed = base.with_overrides(0.7, None, 100)
    assert (changed.vad_threshold, changed.vad_min_silence_ms, changed.vad_speech_pad_ms) == (0.7, 500, 100)
    assert changed.max_utterance_seconds == 20.0
    assert base.with_overrides(None, None, None) is base
    with pytest.raises(ValueError):
        base.with_overrides(2.0, None, None)
