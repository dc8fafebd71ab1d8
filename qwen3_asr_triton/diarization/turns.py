"""From window speaker labels to speaker turns on a 10 ms grid.

Each speech frame votes among the windows that cover it, each window weighted by a Hann taper
towards its centre (a window's edges are where it most likely straddles a change of speaker);
runs of frames of one speaker form turns, turns too short to be a speaker's own are absorbed by
their neighbours, and speakers are renumbered in order of first appearance.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..vad import VAD_SAMPLE_RATE
from .options import DiarizerConfig

# Weight of a window's very edge relative to its centre: small, so that a frame covered only by
# edges (the first and last frames of a region) still takes their label.
EDGE_WEIGHT = 0.05


@dataclass(frozen=True)
class SpeakerTurn:
    """One speaker's stretch of speech.

    Attributes
    ----------
    start, end : float
        Seconds from the start of the audio.
    speaker : int
        The speaker, ``0..k-1`` in order of first appearance.
    """

    start: float
    end: float
    speaker: int


def speech_frames(regions: np.ndarray, frame_samples: int, total_frames: int) -> np.ndarray:
    """``[f]`` bool: frames whose centre lies in a speech region (``[r, 2]`` sample bounds)."""
    centres = np.arange(total_frames) * frame_samples + frame_samples // 2
    mask = np.zeros(total_frames, bool)
    for start, end in np.asarray(regions, np.int64).reshape(-1, 2).tolist():
        mask[np.searchsorted(centres, start) : np.searchsorted(centres, end)] = True
    return mask


def frame_votes(windows: np.ndarray, labels: np.ndarray, frame_samples: int, total_frames: int) -> np.ndarray:
    """Per-frame, per-speaker sums of the centre-weighted windows covering each frame.

    Parameters
    ----------
    windows : np.ndarray
        ``[w, 2]`` window sample bounds.
    labels : np.ndarray
        ``[w]`` speaker labels ``0..k-1``.
    frame_samples : int
        Samples per output frame.
    total_frames : int
        Frames of the waveform.

    Returns
    -------
    np.ndarray
        ``[f, k]`` float32 votes (``k * f * 4`` bytes: 23 MB for an hour and 16 speakers).
    """
    count = int(labels.max()) + 1 if labels.size else 1
    votes = np.zeros((total_frames, count), np.float32)
    for (start, end), label in zip(np.asarray(windows, np.int64).tolist(), labels.tolist()):
        first = min(start // frame_samples, total_frames)
        last = min(-(-end // frame_samples), total_frames)
        if last > first:
            votes[first:last, label] += EDGE_WEIGHT + np.hanning(last - first + 2)[1:-1].astype(np.float32)
    return votes


def frame_runs(frame_labels: np.ndarray) -> list[tuple[int, int, int]]:
    """``(first, last + 1, label)`` runs of equal labels; label ``-1`` (no speech) is skipped."""
    if frame_labels.size == 0:
        return []
    change = np.flatnonzero(np.diff(frame_labels)) + 1
    bounds = np.concatenate([[0], change, [frame_labels.size]])
    return [(int(a), int(b), int(frame_labels[a])) for a, b in itertools.pairwise(bounds) if frame_labels[a] >= 0]


def absorb_short_runs(runs: list[tuple[int, int, int]], min_frames: int) -> list[tuple[int, int, int]]:
    """Runs shorter than ``min_frames`` that touch another run take the label of their longer neighbour.

    A short run on its own (silence on both sides) is kept: it is speech, and nothing else can claim it.
    Runs are processed shortest first, so a flicker inside a long turn disappears before its neighbours.
    """
    runs = [list(run) for run in runs]
    for index in sorted(range(len(runs)), key=lambda i: runs[i][1] - runs[i][0]):
        first, last, _ = runs[index]
        if last - first >= min_frames:
            break
        neighbours = [
            runs[j]
            for j in (index - 1, index + 1)
            if 0 <= j < len(runs) and (runs[j][1] == first or runs[j][0] == last)
        ]
        if neighbours:
            runs[index][2] = max(neighbours, key=lambda run: run[1] - run[0])[2]
    return _merge_touching([tuple(run) for run in runs], gap_frames=0)


def _merge_touching(runs: list[tuple[int, int, int]], gap_frames: int) -> list[tuple[int, int, int]]:
    """Consecutive runs of one label at most ``gap_frames`` apart become one run."""
    merged: list[tuple[int, int, int]] = []
    for first, last, label in runs:
        if merged and merged[-1][2] == label and first - merged[-1][1] <= gap_frames:
            merged[-1] = (merged[-1][0], last, label)
        else:
            merged.append((first, last, label))
    return merged


def assemble_turns(
    windows: np.ndarray, labels: np.ndarray, regions: np.ndarray, total_samples: int, config: DiarizerConfig
) -> list[SpeakerTurn]:
    """Speaker turns from labelled windows over speech regions.

    Parameters
    ----------
    windows : np.ndarray
        ``[w, 2]`` window sample bounds.
    labels : np.ndarray
        ``[w]`` speaker labels of the windows.
    regions : np.ndarray
        ``[r, 2]`` speech region sample bounds: only their frames get a speaker.
    total_samples : int
        Length of the waveform.
    config : DiarizerConfig
        Frame length, shortest turn and the bridged pause.

    Returns
    -------
    list[SpeakerTurn]
        Turns in time order, not overlapping, speakers ``0..k-1`` in order of first appearance.
    """
    frame_samples = round(config.frame_seconds * VAD_SAMPLE_RATE)
    total_frames = -(-total_samples // frame_samples)
    if len(windows) == 0 or total_frames == 0:
        return []
    votes = frame_votes(windows, np.asarray(labels, np.int64), frame_samples, total_frames)
    frame_labels = np.where(
        speech_frames(regions, frame_samples, total_frames) & (votes.max(axis=1) > 0), votes.argmax(axis=1), -1
    )
    runs = absorb_short_runs(frame_runs(frame_labels), round(config.min_turn_seconds / config.frame_seconds))
    runs = _merge_touching(runs, round(config.bridge_seconds / config.frame_seconds))
    order: dict[int, int] = {}
    turns = []
    for first, last, label in runs:
        speaker = order.setdefault(label, len(order))
        end = min(last * frame_samples, total_samples)
        turns.append(SpeakerTurn(first * frame_samples / VAD_SAMPLE_RATE, end / VAD_SAMPLE_RATE, speaker))
    return turns
