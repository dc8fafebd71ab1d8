"""Diarization error rate (DER), NIST style, with the optimal one-to-one speaker mapping.

For a reference and a hypothesis (each a list of ``(start, end, speaker)`` segments, in seconds):

- The evaluated time is the UEM (by default the union of both annotations' extents) less a collar
  of ``collar`` seconds on **each side** of every reference segment boundary. ``collar=0.25`` here
  is the usual NIST forgiveness of +-0.25 s, which ``pyannote.metrics`` spells
  ``DiarizationErrorRate(collar=0.5)`` (its collar is the total width).
- On every stretch of evaluated time with ``r`` reference and ``h`` hypothesis speakers active:
  missed speech ``max(0, r - h)``, false alarm ``max(0, h - r)``, and confusion
  ``min(r, h) - correct``, where ``correct`` counts active reference speakers whose mapped
  hypothesis speaker is active; all weighted by the stretch's duration. The total is ``r``'s.
- The mapping (reference speaker -> hypothesis speaker, one-to-one) maximises the total time both
  are active together, within the evaluated time (the Hungarian algorithm).
- ``DER = (missed + false alarm + confusion) / total``; over several files the parts are summed
  before dividing (pooled), so long files weigh more.

A test checks the figures against ``pyannote.metrics``. This is a scoring tool (tests, benchmarks),
not a serving path: scipy's Hungarian solver is imported inside :func:`optimal_mapping`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

Segment = tuple[float, float, Hashable]


@dataclass(frozen=True)
class DiarizationErrors:
    """The parts of the DER, in seconds.

    Attributes
    ----------
    missed, false_alarm, confusion : float
        Reference speech nobody is said to speak; hypothesis speech beyond the reference's; speech
        attributed to the wrong (mapped) speaker.
    total : float
        Reference speech evaluated (the denominator).
    """

    missed: float = 0.0
    false_alarm: float = 0.0
    confusion: float = 0.0
    total: float = 0.0

    @property
    def der(self) -> float:
        """``(missed + false_alarm + confusion) / total``; 0 when nothing was spoken and nothing found,
        infinity when something was found in silence."""
        errors = self.missed + self.false_alarm + self.confusion
        if self.total > 0:
            return errors / self.total
        return 0.0 if errors == 0 else float("inf")

    def __add__(self, other: DiarizationErrors) -> DiarizationErrors:
        return DiarizationErrors(
            self.missed + other.missed,
            self.false_alarm + other.false_alarm,
            self.confusion + other.confusion,
            self.total + other.total,
        )


def _union(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted disjoint union of ``(start, end)`` intervals (empty ones dropped)."""
    merged: list[list[float]] = []
    for start, end in sorted((float(a), float(b)) for a, b in intervals if b > a):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def _by_speaker(segments: Sequence[Segment]) -> dict[Hashable, list[tuple[float, float]]]:
    """Each speaker's speech as disjoint intervals."""
    spans: dict[Hashable, list[tuple[float, float]]] = {}
    for start, end, speaker in segments:
        spans.setdefault(speaker, []).append((start, end))
    return {speaker: _union(intervals) for speaker, intervals in spans.items()}


def evaluated_time(
    reference: Sequence[Segment],
    hypothesis: Sequence[Segment],
    collar: float,
    uem: Sequence[tuple[float, float]] | None,
) -> list[tuple[float, float]]:
    """The scored intervals: the UEM less ``+-collar`` around every reference boundary.

    Parameters
    ----------
    reference, hypothesis : Sequence[Segment]
        ``(start, end, speaker)`` segments.
    collar : float
        Seconds forgiven on each side of each reference segment's start and end.
    uem : Sequence[tuple[float, float]] | None
        Scored intervals; ``None`` is the union of both annotations' extents (``pyannote.metrics``' default).

    Returns
    -------
    list[tuple[float, float]]
        Sorted disjoint intervals.
    """
    if uem is None:
        edges = [t for start, end, _ in [*reference, *hypothesis] for t in (start, end)]
        uem = [(min(edges), max(edges))] if edges else []
    scored = _union(uem)
    if collar <= 0:
        return scored
    holes = _union((t - collar, t + collar) for start, end, _ in reference for t in (start, end))
    result = []
    for start, end in scored:
        cursor = start
        for hole_start, hole_end in holes:
            if hole_end <= cursor or hole_start >= end:
                continue
            if hole_start > cursor:
                result.append((cursor, hole_start))
            cursor = max(cursor, hole_end)
        if cursor < end:
            result.append((cursor, end))
    return result


def _activity(spans: dict[Hashable, list[tuple[float, float]]], edges: np.ndarray) -> tuple[list[Hashable], np.ndarray]:
    """``[speakers, len(edges) - 1]`` bool: who is active on each elementary stretch between ``edges``."""
    names = list(spans)
    mids = 0.5 * (edges[:-1] + edges[1:])
    active = np.zeros((len(names), mids.size), bool)
    for row, name in enumerate(names):
        for start, end in spans[name]:
            active[row] |= (mids > start) & (mids < end)
    return names, active


def optimal_mapping(overlap: np.ndarray) -> list[tuple[int, int]]:
    """Row-column pairs of a one-to-one assignment maximising the summed ``[r, h]`` co-occurrence."""
    from scipy.optimize import linear_sum_assignment  # scoring only; scipy is not a serving dependency

    rows, cols = linear_sum_assignment(-overlap)
    return list(zip(rows.tolist(), cols.tolist()))


def diarization_error_rate(
    reference: Sequence[Segment],
    hypothesis: Sequence[Segment],
    collar: float = 0.25,
    uem: Sequence[tuple[float, float]] | None = None,
) -> DiarizationErrors:
    """The DER's parts of one file (see the module docstring for the definitions).

    Parameters
    ----------
    reference, hypothesis : Sequence[Segment]
        ``(start, end, speaker)`` segments in seconds; speaker names are compared only within an annotation.
    collar : float
        Seconds forgiven on **each side** of every reference boundary (NIST's 0.25 s; pyannote's
        ``collar=2 * collar``).
    uem : Sequence[tuple[float, float]] | None
        Scored intervals; ``None``: the union of both annotations' extents.

    Returns
    -------
    DiarizationErrors
        Missed, false alarm, confusion and total, in seconds; ``.der`` is the rate.
    """
    scored = evaluated_time(reference, hypothesis, collar, uem)
    ref_spans, hyp_spans = _by_speaker(reference), _by_speaker(hypothesis)
    points = {t for interval in scored for t in interval}
    for spans in (ref_spans, hyp_spans):
        points.update(t for intervals in spans.values() for interval in intervals for t in interval)
    edges = np.asarray(sorted(points), np.float64)
    if edges.size < 2:
        return DiarizationErrors()
    mids, durations = 0.5 * (edges[:-1] + edges[1:]), np.diff(edges)
    weight = np.zeros_like(durations)
    for start, end in scored:
        weight[(mids > start) & (mids < end)] = 1.0
    durations = durations * weight
    _, ref_active = _activity(ref_spans, edges)
    _, hyp_active = _activity(hyp_spans, edges)
    overlap = (ref_active[:, None, :] & hyp_active[None, :, :]) @ durations if ref_spans and hyp_spans else None
    correct = np.zeros_like(durations)
    if overlap is not None:
        for row, col in optimal_mapping(overlap):
            correct += ref_active[row] & hyp_active[col]
    n_ref, n_hyp = ref_active.sum(axis=0), hyp_active.sum(axis=0)
    return DiarizationErrors(
        missed=float((np.maximum(n_ref - n_hyp, 0) * durations).sum()),
        false_alarm=float((np.maximum(n_hyp - n_ref, 0) * durations).sum()),
        confusion=float(((np.minimum(n_ref, n_hyp) - correct) * durations).sum()),
        total=float((n_ref * durations).sum()),
    )


def pooled_error_rate(results: Iterable[DiarizationErrors]) -> DiarizationErrors:
    """The parts summed over several files (``.der`` is the pooled DER)."""
    total = DiarizationErrors()
    for result in results:
        total = total + result
    return total
