"""perf/report.py: the memory-bandwidth probes of each system's run, in the ratios and in the systems' details;
the machine section's note on CPUs without bf16 instructions."""

from __future__ import annotations

import pytest

from perf.report import bandwidth_note, machine_section, system_details


def _run(system: str, precision: str, probes: dict | None, status: str = "ok") -> dict:
    run = {"system": system, "size": "0.6b", "precision": precision, "label": f"{system} {precision}"}
    run["status"] = status
    if probes is not None:
        run["bandwidth_gbps"] = probes
    return run


def test_probes_far_apart_are_called_out_with_their_spread() -> None:
    results = {
        "runs": [_run("triton", "fp32", {"before": 30.0, "after": 30.5}), _run("vllm", "fp32", {"before": 36.0})]
    }
    (line, blank) = bandwidth_note(results, "0.6b", "fp32")
    assert "ours 30.0 / 30.5; vllm fp32 36.0" in line
    assert "20% apart" in line and blank == ""


def test_probes_close_together_say_the_host_was_alike() -> None:
    results = {
        "runs": [
            _run("triton", "fast", {"before": 33.0, "after": 33.4}),
            _run("vllm", "fast", {"before": 34.0, "after": 33.9}),
        ]
    }
    line = bandwidth_note(results, "0.6b", "fast")[0]
    assert "within 3%" in line and "apart" not in line


def test_no_note_without_a_peer_or_for_runs_before_the_probe() -> None:
    alone = {"runs": [_run("triton", "fp32", {"before": 30.0, "after": 31.0}), _run("vllm", "fp32", None)]}
    assert bandwidth_note(alone, "0.6b", "fp32") == []
    failed_peer = {"runs": [_run("triton", "fp32", {"before": 30.0}), _run("vllm", "fp32", {"before": 9.0}, "failed")]}
    assert bandwidth_note(failed_peer, "0.6b", "fp32") == []
    older = {"runs": [_run("triton", "fp32", None), _run("vllm", "fp32", None)]}
    assert bandwidth_note(older, "0.6b", "fp32") == []


def test_each_systems_details_list_its_probes() -> None:
    results = {"runs": [_run("triton", "fp32", {"before": 30.04, "after": 29.96}), _run("vllm", "fp32", None)]}
    text = "\n".join(system_details(results))
    assert "memory read bandwidth, idle, before / after the levels: 30.0 / 30.0 GB/s" in text
    assert text.count("memory read bandwidth") == 1


def _flags(*present: str) -> dict[str, bool]:
    from perf.machine import INTERESTING_FLAGS

    return {flag: flag in present for flag in INTERESTING_FLAGS}


def test_a_machine_without_bf16_instructions_says_what_its_bf16_rows_mean() -> None:
    text = "\n".join(machine_section({"flags": _flags("avx2", "fma")}))
    assert "No bf16-capable CPU in this run" in text
    assert "vLLM's bf16 runs emulated here" in text


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_a_machine_with_bf16_instructions_has_no_such_note(flag: str) -> None:
    assert "No bf16-capable CPU" not in "\n".join(machine_section({"flags": _flags("avx2", "avx512f", flag)}))
    # A results file without flags (older runs) claims nothing either way.
    assert "No bf16-capable CPU" not in "\n".join(machine_section({}))
