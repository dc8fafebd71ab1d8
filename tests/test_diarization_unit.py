"""The diarization pipeline's pure parts, on synthetic probabilities and embeddings (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from qwen3_asr_triton.diarization import clustering
from qwen3_asr_triton.diarization.clustering import cluster_embeddings, kmeans, normalise_rows
from qwen3_asr_triton.diarization.der import diarization_error_rate
from qwen3_asr_triton.diarization.diarizer import Diarizer
from qwen3_asr_triton.diarization.online import OnlineSpeakers
from qwen3_asr_triton.diarization.options import MAX_SPEAKERS, DiarizationOptions, DiarizerConfig
from qwen3_asr_triton.diarization.turns import SpeakerTurn, assemble_turns
from qwen3_asr_triton.diarization.windows import region_windows, speech_regions
from qwen3_asr_triton.errors import InputError
from qwen3_asr_triton.vad import FRAME_SAMPLES

RATE = 16000
DIM = 192
CONFIG = DiarizerConfig()
# Spread of a synthetic speaker's window embeddings: per-dimension noise of 0.06 on a unit centre gives
# a cosine of about 0.75 to the centre, and random centres in 192 dimensions are about orthogonal.
NOISE = 0.06


def speakers(count: int, windows: int, seed: int, noise: float = NOISE) -> tuple[np.ndarray, np.ndarray]:
    """``[windows, DIM]`` noisy unit-norm embeddings around ``count`` random centres, and their true labels."""
    rng = np.random.default_rng(seed)
    centres = normalise_rows(rng.normal(size=(count, DIM)))
    truth = np.repeat(np.arange(count), -(-windows // count))[:windows]
    rng.shuffle(truth)
    return normalise_rows(centres[truth] + rng.normal(scale=noise, size=(windows, DIM))), truth


def same_partition(labels: np.ndarray, truth: np.ndarray) -> bool:
    """Whether two labellings group the items identically (up to renaming)."""
    pairs = set(zip(labels.tolist(), truth.tolist()))
    return len(pairs) == len(set(labels.tolist())) == len(set(truth.tolist()))


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_speakers": 0}, "min_speakers must be an integer from 1 to 16, got 0"),
        ({"max_speakers": MAX_SPEAKERS + 1}, "max_speakers must be an integer from 1 to 16, got 17"),
        ({"max_speakers": True}, "max_speakers must be an integer from 1 to 16, got True"),
        ({"num_speakers": 2.0}, "num_speakers must be an integer from 1 to 16, got 2.0"),
        ({"num_speakers": "3"}, "num_speakers must be an integer from 1 to 16, got '3'"),
        ({"min_speakers": 5, "max_speakers": 3}, "min_speakers (5) must not be greater than max_speakers (3)"),
        (
            {"num_speakers": 6, "max_speakers": 4},
            "num_speakers (6) must lie between min_speakers (1) and max_speakers (4)",
        ),
        (
            {"num_speakers": 1, "min_speakers": 2},
            "num_speakers (1) must lie between min_speakers (2) and max_speakers (16)",
        ),
    ],
)
def test_options_refuse_bad_values_with_a_client_message(kwargs, message):
    with pytest.raises(InputError) as caught:
        DiarizationOptions.from_request(**kwargs)
    assert str(caught.value) == message


def test_options_defaults_and_speaker_range():
    assert DiarizationOptions.from_request().speaker_range == (1, MAX_SPEAKERS)
    assert DiarizationOptions.from_request(min_speakers=2, max_speakers=5).speaker_range == (2, 5)
    assert DiarizationOptions.from_request(num_speakers=3).speaker_range == (3, 3)


# ----------------------------------------------------------------------------- windows
def probabilities(spans: list[tuple[int, int]], frames: int) -> np.ndarray:
    """``[frames]`` VAD probabilities: 0.9 on the ``[first, last)`` frame spans, 0.05 elsewhere."""
    probs = np.full(frames, 0.05, np.float32)
    for first, last in spans:
        probs[first:last] = 0.9
    return probs


def test_speech_regions_follow_the_probabilities_with_padding():
    # 20 frames of speech, a 2-frame dip (64 ms < 100 ms: the same region), 30 more; a 4-frame blip
    # (128 ms < 250 ms: dropped); then 40 frames of speech.
    probs = probabilities([(10, 30), (32, 62), (100, 104), (150, 190)], 250)
    regions = speech_regions(probs, 250 * FRAME_SAMPLES, CONFIG)
    pad = CONFIG.vad_speech_pad_ms * RATE // 1000
    expected = [
        (10 * FRAME_SAMPLES - pad, 62 * FRAME_SAMPLES + pad),
        (150 * FRAME_SAMPLES - pad, 190 * FRAME_SAMPLES + pad),
    ]
    assert regions.tolist() == [list(bound) for bound in expected]


def test_speech_regions_end_with_the_audio():
    probs = probabilities([(5, 50)], 50)
    total = 50 * FRAME_SAMPLES - 100  # the last frame was zero-padded
    regions = speech_regions(probs, total, CONFIG)
    assert regions[-1, 1] == total


def test_windows_cover_long_regions_at_the_hop_and_short_ones_once():
    length, hop = round(CONFIG.window_seconds * RATE), round(CONFIG.hop_seconds * RATE)
    long_region = (RATE, RATE + 4 * RATE + 123)
    short_region = (10 * RATE, 10 * RATE + RATE // 2)
    windows = region_windows(np.asarray([long_region, short_region]), 12 * RATE, CONFIG)
    assert (windows[:, 1] - windows[:, 0] == length).all()
    inner = windows[:-1]
    assert inner[0, 0] == long_region[0] and inner[-1, 1] == long_region[1]
    assert (np.diff(inner[:-1, 0]) == hop).all() and (inner[:, 1] <= long_region[1]).all()
    centre = (short_region[0] + short_region[1]) // 2
    assert abs((windows[-1, 0] + windows[-1, 1]) // 2 - centre) <= 1


def test_windows_of_a_short_region_stay_inside_the_audio():
    windows = region_windows(np.asarray([(100, 2000)]), 10 * RATE, CONFIG)
    assert windows.tolist() == [[0, round(CONFIG.window_seconds * RATE)]]
    tiny_audio = region_windows(np.asarray([(100, 2000)]), 5000, CONFIG)
    assert tiny_audio.tolist() == [[0, 5000]]


# ----------------------------------------------------------------------------- clustering
@pytest.mark.parametrize("count", [2, 3, 4, 5, 6])
def test_clustering_estimates_the_count_and_recovers_the_clusters(count):
    embeddings, truth = speakers(count, 40 * count, seed=count)
    labels = cluster_embeddings(embeddings, 1, 8, CONFIG)
    assert labels.max() + 1 == count
    assert same_partition(labels, truth)


@pytest.mark.parametrize("count", [1, 2, 4, 6])
def test_clustering_with_a_given_count(count):
    embeddings, truth = speakers(count, 30 * count, seed=10 + count)
    labels = cluster_embeddings(embeddings, count, count, CONFIG)
    assert labels.max() + 1 == count
    assert same_partition(labels, truth)


def test_one_speaker_is_found_alone():
    embeddings, _ = speakers(1, 80, seed=3)
    assert (cluster_embeddings(embeddings, 1, 8, CONFIG) == 0).all()


def test_the_minimum_count_holds_for_few_windows_and_tiny_clusters():
    embeddings, _ = speakers(1, 8, seed=9)  # fewer windows than min_windows, one voice
    assert (cluster_embeddings(embeddings, 1, 8, CONFIG) == 0).all()
    assert cluster_embeddings(embeddings, 2, 8, CONFIG).max() + 1 >= 2
    voices, _ = speakers(2, 60, seed=9)
    lone = np.concatenate([voices, speakers(1, 2, seed=99)[0]])  # a third voice in two windows only
    assert cluster_embeddings(lone, 1, 8, CONFIG).max() + 1 == 2  # absorbed when estimating freely
    assert cluster_embeddings(lone, 3, 8, CONFIG).max() + 1 >= 3  # kept when 3 are the minimum


def test_labels_are_numbered_in_order_of_first_appearance():
    embeddings, _ = speakers(4, 120, seed=4)
    labels = cluster_embeddings(embeddings, 1, 8, CONFIG)
    first_seen = [int(np.flatnonzero(labels == label)[0]) for label in range(labels.max() + 1)]
    assert first_seen == sorted(first_seen)


def test_kmeans_is_deterministic_and_separates_blobs():
    rng = np.random.default_rng(5)
    points = np.concatenate([rng.normal(loc, 0.1, size=(30, 3)) for loc in (-3.0, 0.0, 3.0)])
    labels = kmeans(points, 3, restarts=3)
    assert np.array_equal(labels, kmeans(points, 3, restarts=3))
    assert same_partition(labels, np.repeat(np.arange(3), 30))


def test_more_windows_than_the_cap_are_clustered_on_a_bounded_subset(monkeypatch):
    cap = 120
    config = DiarizerConfig(max_cluster_windows=cap)
    embeddings, truth = speakers(3, 1000, seed=6)
    shapes = []
    real = clustering.pruned_affinity

    def recording(values, keep):
        shapes.append(values.shape[0])
        return real(values, keep)

    monkeypatch.setattr(clustering, "pruned_affinity", recording)
    labels = cluster_embeddings(embeddings, 1, 8, config)
    assert shapes == [cap]
    assert same_partition(labels, truth)
    # Every window, in the subset or not, is labelled by the nearest centroid: the same window anywhere
    # in a longer recording gets the same label.
    doubled = cluster_embeddings(np.concatenate([embeddings, embeddings]), 1, 8, config)
    assert same_partition(doubled[:1000], doubled[1000:])


def test_the_subset_is_spread_over_the_whole_recording(monkeypatch):
    # The third speaker talks only in the last fifth: an evenly spaced subset still sees them.
    first, _ = speakers(2, 800, seed=7)
    late, _ = speakers(1, 200, seed=8)
    embeddings = np.concatenate([first, late])
    labels = cluster_embeddings(embeddings, 1, 8, DiarizerConfig(max_cluster_windows=100))
    assert labels.max() + 1 == 3
    assert len(set(labels[800:].tolist())) == 1 and labels[800] not in set(labels[:800].tolist())


# ----------------------------------------------------------------------------- turns
def test_turns_follow_the_window_labels_and_renumber_speakers():
    hop, length = RATE // 2, RATE
    starts = np.arange(0, 20 * RATE - length + 1, hop)
    windows = np.stack([starts, starts + length], axis=1)
    centres = (starts + length // 2) / RATE
    labels = np.where(centres < 8, 5, np.where(centres < 14, 2, 5))  # speaker 5, then 2, then 5 again
    regions = np.asarray([[0, 20 * RATE]])
    turns = assemble_turns(windows, labels, regions, 20 * RATE, CONFIG)
    assert [turn.speaker for turn in turns] == [0, 1, 0]
    assert turns[0].start == 0.0 and turns[-1].end == 20.0
    assert abs(turns[1].start - 8.0) <= 0.26 and abs(turns[1].end - 14.0) <= 0.26


def test_a_short_flicker_is_absorbed_and_silence_is_not_labelled():
    hop, length = RATE // 4, RATE // 2
    starts = np.arange(0, 10 * RATE - length + 1, hop)
    windows = np.stack([starts, starts + length], axis=1)
    labels = np.zeros(len(starts), np.int64)
    labels[8] = 1  # the window over 2.0-2.5 s: its centre weight alone wins about 0.25 s
    regions = np.asarray([[0, 4 * RATE], [6 * RATE, 10 * RATE]])
    turns = assemble_turns(windows, labels, regions, 10 * RATE, DiarizerConfig(min_turn_seconds=0.3))
    assert turns == [SpeakerTurn(0.0, 4.0, 0), SpeakerTurn(6.0, 10.0, 0)]
    kept = assemble_turns(windows, labels, regions, 10 * RATE, DiarizerConfig(min_turn_seconds=0.0))
    assert {turn.speaker for turn in kept} == {0, 1}


def test_a_short_pause_of_one_speaker_is_bridged():
    windows = np.asarray([[0, 2 * RATE], [RATE, 3 * RATE], [3 * RATE + RATE // 5, 5 * RATE]])
    regions = np.asarray([[0, 3 * RATE], [3 * RATE + RATE // 5, 5 * RATE]])
    labels = np.zeros(3, np.int64)
    bridged = assemble_turns(windows, labels, regions, 5 * RATE, DiarizerConfig(bridge_seconds=0.5))
    assert bridged == [SpeakerTurn(0.0, 5.0, 0)]
    apart = assemble_turns(windows, labels, regions, 5 * RATE, DiarizerConfig(bridge_seconds=0.1))
    assert len(apart) == 2


# ----------------------------------------------------------------------------- the whole pipeline
def fake_conversation(seed: int) -> tuple[np.ndarray, list[tuple[float, float, int]]]:
    """A waveform whose "voice" is its constant level (speaker s speaks at 0.1 * (s + 1)) with silences."""
    rng = np.random.default_rng(seed)
    pieces, reference, cursor, previous = [], [], 0.5, -1
    pieces.append(np.zeros(RATE // 2, np.float32))
    for _ in range(12):
        speaker = int(rng.choice([s for s in range(3) if s != previous]))
        seconds = float(rng.uniform(2.0, 6.0))
        pieces.append(np.full(round(seconds * RATE), 0.1 * (speaker + 1), np.float32))
        reference.append((cursor, cursor + seconds, speaker))
        gap = float(rng.uniform(0.3, 0.8))
        pieces.append(np.zeros(round(gap * RATE), np.float32))
        cursor += seconds + gap
        previous = speaker
    return np.concatenate(pieces), reference


class FakeModels:
    """A VAD that hears any non-zero sample and an embedder whose voice is a window's most common level."""

    def __init__(self, seed: int) -> None:
        self.centres = normalise_rows(np.random.default_rng(seed).normal(size=(3, DIM)))
        self.rng = np.random.default_rng(seed + 1)
        self.batches: list[int] = []

    def speech_probs(self, waveform: np.ndarray) -> np.ndarray:
        frames = np.pad(waveform, (0, -waveform.size % FRAME_SAMPLES)).reshape(-1, FRAME_SAMPLES)
        return np.where(np.abs(frames).max(axis=1) > 0, 0.95, 0.02).astype(np.float32)

    def embed(self, windows: np.ndarray) -> np.ndarray:
        self.batches.append(windows.shape[0])
        levels = np.round(windows * 10).astype(np.int64)
        speaker = np.asarray([np.bincount(row[row > 0], minlength=4)[1:].argmax() for row in levels])
        noisy = self.centres[speaker] + self.rng.normal(scale=NOISE, size=(len(speaker), DIM))
        return normalise_rows(noisy).astype(np.float32)


@pytest.mark.parametrize("options", [DiarizationOptions(), DiarizationOptions(num_speakers=3)])
def test_diarizer_finds_who_spoke_when(options):
    waveform, reference = fake_conversation(seed=11)
    models = FakeModels(seed=12)
    config = DiarizerConfig(batch_windows=7)
    turns = Diarizer(models.embed, models.speech_probs, config).diarize(waveform, options)
    hypothesis = [(turn.start, turn.end, turn.speaker) for turn in turns]
    assert diarization_error_rate(reference, hypothesis, collar=0.25).der < 0.02
    assert len({turn.speaker for turn in turns}) == 3
    assert max(models.batches) <= 7 and sum(models.batches) > 7


def test_diarizer_refuses_non_mono_or_non_finite_audio():
    models = FakeModels(seed=1)
    diarizer = Diarizer(models.embed, models.speech_probs)
    with pytest.raises(InputError, match="mono"):
        diarizer.diarize(np.zeros((2, RATE), np.float32), DiarizationOptions())
    with pytest.raises(InputError, match="non-finite"):
        diarizer.diarize(np.full(RATE, np.nan, np.float32), DiarizationOptions())


def test_silence_has_no_turns():
    models = FakeModels(seed=2)
    assert (
        Diarizer(models.embed, models.speech_probs).diarize(np.zeros(5 * RATE, np.float32), DiarizationOptions()) == []
    )
    assert models.batches == []


# ----------------------------------------------------------------------------- online
def test_online_speakers_keep_labels_consistent_across_a_stream():
    embeddings, truth = speakers(3, 60, seed=20)
    online = OnlineSpeakers(threshold=0.5)
    labels = np.asarray([online.assign(vector) for vector in embeddings])
    assert online.count == 3
    assert same_partition(labels, truth)
    assert labels[0] == 0 and set(labels.tolist()) == {0, 1, 2}


def test_online_speakers_stop_opening_at_the_maximum():
    embeddings, _ = speakers(4, 40, seed=21)
    online = OnlineSpeakers(threshold=0.5, max_speakers=2)
    labels = [online.assign(vector) for vector in embeddings]
    assert online.count == 2 and set(labels) == {0, 1}


def test_online_threshold_decides_between_joining_and_opening():
    base = normalise_rows(np.random.default_rng(22).normal(size=(2, DIM)))
    near = normalise_rows((base[0] + 0.5 * base[1])[None])[0]  # cosine about 0.89 to base[0]
    strict, loose = OnlineSpeakers(threshold=0.95), OnlineSpeakers(threshold=0.8)
    assert [strict.assign(base[0]), strict.assign(near)] == [0, 1]
    assert [loose.assign(base[0]), loose.assign(near)] == [0, 0]
