"""The benchmark's command-line values: system knobs and the runs left out with ``--skip``."""

from __future__ import annotations

import pytest

from perf.systems import SYSTEMS
from perf.systems.base import Skips, parse_knobs, parse_skips


def test_knobs_split_on_the_first_equals_sign() -> None:
    assert parse_knobs(["--eager=1", "omp-threads-bind=0-1", "x=a=b"]) == {
        "eager": "1",
        "omp-threads-bind": "0-1",
        "x": "a=b",
    }


def test_a_knob_without_value_is_refused() -> None:
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        parse_knobs(["eager"])


def test_skips_become_system_precision_pairs() -> None:
    skips = parse_skips(["vllm:fast", "transformers:fp32", "vllm:fast"], SYSTEMS)
    assert skips.runs == {("vllm", "fast"), ("transformers", "fp32")}
    assert skips.levels == frozenset()
    assert skips.run_levels("vllm", "fast", [1, 8]) == []
    assert skips.run_levels("vllm", "fp32", [1, 8]) == [1, 8]
    assert parse_skips([], SYSTEMS) == Skips()


def test_a_skip_at_a_concurrency_leaves_out_that_level_only() -> None:
    skips = parse_skips(["vllm:fast@16", "vllm:fast@4", "triton:fp32"], SYSTEMS)
    assert skips.runs == {("triton", "fp32")}
    assert skips.levels == {("vllm", "fast", 16), ("vllm", "fast", 4)}
    assert skips.run_levels("vllm", "fast", [1, 4, 8, 16]) == [1, 8]
    assert skips.run_levels("vllm", "fp32", [1, 4, 8, 16]) == [1, 4, 8, 16]
    assert skips.run_levels("triton", "fp32", [1, 4]) == []
    assert skips.labels() == ["triton:fp32", "vllm:fast@16", "vllm:fast@4"]


def test_a_capped_system_runs_at_its_cap_unless_that_level_is_left_out() -> None:
    # transformers runs one request at a time (cap 1): at 1 only, or at 1 where every level exceeds it.
    none = parse_skips([], SYSTEMS)
    assert none.run_levels("transformers", "fp32", [1, 8], cap=1) == [1]
    assert none.run_levels("transformers", "fp32", [4, 8], cap=1) == [1]
    skip_one = parse_skips(["transformers:fp32@1"], SYSTEMS)
    assert skip_one.run_levels("transformers", "fp32", [1, 8], cap=1) == []
    assert skip_one.run_levels("vllm", "fp32", [1, 8]) == [1, 8]


@pytest.mark.parametrize(
    "value", ["vllm", "vllm:bf16", "sglang:fast", ":fast", "vllm:", "vllm:fast@", "vllm:fast@0", "vllm:fast@x"]
)
def test_a_skip_must_name_a_known_system_and_precision(value: str) -> None:
    with pytest.raises(ValueError, match="SYSTEM:PRECISION") as info:
        parse_skips([value], SYSTEMS)
    assert "triton, vllm, transformers" in str(info.value)


def test_a_skipped_level_must_be_one_the_run_has() -> None:
    skips = parse_skips(["vllm:fast@16"], SYSTEMS)
    skips.check_levels([1, 8, 16])
    with pytest.raises(ValueError, match="concurrency 16, which is not one of --concurrency"):
        skips.check_levels([1, 8])
    parse_skips(["vllm:fast"], SYSTEMS).check_levels([1])  # a whole-run skip names no level


def test_a_long_skip_value_is_quoted_short() -> None:
    with pytest.raises(ValueError) as info:
        parse_skips(["x" * 500], SYSTEMS)
    assert len(str(info.value)) < 200


def test_the_report_measures_the_accuracy_of_the_precision_our_fast_runs_compute_in() -> None:
    from perf.fast_accuracy import precision_to_measure

    both, modes, none = ["triton", "vllm"], ["fp32", "fast"], frozenset()
    assert precision_to_measure(both, modes, none, "fast", "int8") == "int8"
    assert precision_to_measure(both, modes, none, "fast", "bf16") == "bf16"
    assert precision_to_measure(both, modes, none, "bf16", "int8") == "bf16"  # forced by the build knob
    # No fast run of ours: nothing measured.
    assert precision_to_measure(both, ["fp32"], none, "fast", "int8") is None
    assert precision_to_measure(["vllm"], modes, none, "fast", "int8") is None
    assert precision_to_measure(both, modes, frozenset({("triton", "fast")}), "fast", "int8") is None
    assert precision_to_measure(both, modes, none, "fp32", "int8") is None
