"""The DER scorer against pyannote.metrics on random annotations, and its conventions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from qwen3_asr_triton.diarization.der import DiarizationErrors, diarization_error_rate, pooled_error_rate

# Random cases per collar: enough to hit overlaps, empty hypotheses, missing and extra speakers.
CASES = 150
# Both scorers add float durations in different orders.
TOLERANCE = 1e-9


def random_annotation(rng: np.random.Generator, names: list[str], turns: int) -> list[tuple[float, float, str]]:
    """Random turns of the given speakers over 30 s; one speaker's own turns never overlap (as in any
    real annotation: pyannote.metrics would count such a speaker twice at once), different speakers' may."""
    segments: list[tuple[float, float, str]] = []
    for _ in range(turns):
        start = round(float(rng.uniform(0, 30)), 2)
        end = round(start + float(rng.uniform(0.1, 5.0)), 2)
        name = str(rng.choice(names))
        if all(e <= start or s >= end for s, e, n in segments if n == name):
            segments.append((start, end, name))
    return segments


def pyannote_rate(reference, hypothesis, collar: float) -> dict[str, float]:
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    def annotation(segments):
        result = Annotation()
        for track, (start, end, name) in enumerate(segments):
            result[Segment(start, end), track] = name
        return result

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "uem was approximated": the same default as ours
        # pyannote's collar is the whole width around a boundary; ours is each side.
        return DiarizationErrorRate(collar=2 * collar)(annotation(reference), annotation(hypothesis), detailed=True)


@pytest.mark.parametrize("collar", [0.0, 0.25])
def test_der_equals_pyannote_metrics(collar):
    rng = np.random.default_rng(int(collar * 100) + 1)
    compared = 0
    for _ in range(CASES):
        reference = random_annotation(rng, ["A", "B", "C", "D"][: int(rng.integers(2, 5))], int(rng.integers(1, 12)))
        hypothesis = random_annotation(rng, ["x", "y", "z", "w"][: int(rng.integers(2, 5))], int(rng.integers(0, 12)))
        theirs = pyannote_rate(reference, hypothesis, collar)
        ours = diarization_error_rate(reference, hypothesis, collar=collar)
        assert ours.total == pytest.approx(theirs["total"], abs=TOLERANCE)
        assert ours.missed == pytest.approx(theirs["missed detection"], abs=TOLERANCE)
        assert ours.false_alarm == pytest.approx(theirs["false alarm"], abs=TOLERANCE)
        assert ours.confusion == pytest.approx(theirs["confusion"], abs=TOLERANCE)
        if theirs["total"] > 0:
            assert ours.der == pytest.approx(theirs["diarization error rate"], abs=TOLERANCE)
            compared += 1
    assert compared > CASES // 2


def test_pooled_der_sums_the_parts_over_files():
    rng = np.random.default_rng(7)
    files = [(random_annotation(rng, ["A", "B", "C"], 8), random_annotation(rng, ["x", "y"], 8)) for _ in range(5)]
    results = [diarization_error_rate(ref, hyp, collar=0.25) for ref, hyp in files]
    pooled = pooled_error_rate(results)
    errors = sum(r.missed + r.false_alarm + r.confusion for r in results)
    assert pooled.der == pytest.approx(errors / sum(r.total for r in results))
    assert pooled.der != pytest.approx(np.mean([r.der for r in results]))  # pooled, not averaged


def test_mapping_is_one_to_one_and_optimal():
    reference = [(0.0, 10.0, "A"), (10.0, 14.0, "B")]
    # One hypothesis speaker over everything: A maps to it, B's 4 s are confusion.
    result = diarization_error_rate(reference, [(0.0, 14.0, "s")], collar=0.0)
    assert (result.missed, result.false_alarm, result.confusion, result.total) == (0.0, 0.0, 4.0, 14.0)
    # Swapped names score perfectly.
    assert diarization_error_rate(reference, [(0.0, 10.0, "B"), (10.0, 14.0, "A")], collar=0.0).der == 0.0


def test_collar_forgives_each_side_of_a_reference_boundary():
    reference = [(1.0, 5.0, "A")]
    late = [(1.2, 5.0, "a")]  # starts 0.2 s late
    assert diarization_error_rate(reference, late, collar=0.0).missed == pytest.approx(0.2)
    forgiven = diarization_error_rate(reference, late, collar=0.25)
    assert forgiven.missed == 0.0 and forgiven.total == pytest.approx(4.0 - 0.5)
    assert diarization_error_rate(reference, [(1.4, 5.0, "a")], collar=0.25).missed == pytest.approx(0.15)


def test_empty_annotations():
    assert diarization_error_rate([], []).der == 0.0
    assert diarization_error_rate([], [(0.0, 1.0, "x")]) == DiarizationErrors(0.0, 1.0, 0.0, 0.0)
    assert diarization_error_rate([(0.0, 1.0, "A")], [], collar=0.0).der == 1.0
