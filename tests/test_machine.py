"""perf/machine.py: which CPU a benchmark ran on, beyond its flags (family, model, AMD generation)."""

from __future__ import annotations

import pytest

from perf.machine import cpu_generation, cpu_identity, describe_cpu, describe_machine


@pytest.mark.parametrize(
    ("family", "model", "generation"),
    [
        (0x17, 0x01, "Zen / Zen+"),  # EPYC 7001 (Naples): the development machine of 2026-12-06
        (0x17, 0x31, "Zen 2"),  # EPYC 7002 (Rome)
        (0x19, 0x01, "Zen 3"),  # EPYC 7003 (Milan)
        (0x19, 0x11, "Zen 4"),  # EPYC 9004 (Genoa)
        (0x19, 0xA0, "Zen 4"),  # EPYC 97x4 (Bergamo)
        (0x1A, 0x02, "Zen 5"),
        (0x15, 0x01, None),  # older than Zen: not named
    ],
)
def test_amd_generations(family: int, model: int, generation: str | None) -> None:
    assert cpu_generation("AuthenticAMD", family, model) == generation


def test_intel_and_unknown_cpus_get_no_generation() -> None:
    assert cpu_generation("GenuineIntel", 6, 143) is None
    assert cpu_generation(None, None, None) is None
    assert cpu_generation("AuthenticAMD", 0x17, None) is None


def test_identity_from_cpuinfo_fields() -> None:
    fields = {"vendor_id": "AuthenticAMD", "cpu family": "23", "model": "1", "stepping": "2", "model name": "AMD EPYC"}
    identity = cpu_identity(fields)
    assert identity == {
        "cpu_vendor": "AuthenticAMD",
        "cpu_family": 23,
        "cpu_model_number": 1,
        "cpu_stepping": 2,
        "cpu_generation": "Zen / Zen+",
    }
    described = describe_cpu({"cpu_model": "AMD EPYC", **identity})
    assert described == "AMD EPYC (family 23, model 1, stepping 2: Zen / Zen+)"
    # A missing or odd field is None, not an error (containers and other architectures vary).
    assert cpu_identity({"cpu family": "n/a"})["cpu_family"] is None


def test_describe_cpu_reads_older_results_without_the_fields() -> None:
    assert describe_cpu({"cpu_model": "AMD EPYC"}) == "AMD EPYC"
    intel = {"cpu_model": "Xeon", "cpu_family": 6, "cpu_model_number": 143, "cpu_stepping": None}
    assert describe_cpu(intel) == "Xeon (family 6, model 143)"


def test_this_machine_is_described_with_its_identity() -> None:
    machine = describe_machine()
    for key in ("cpu_vendor", "cpu_family", "cpu_model_number", "cpu_stepping", "cpu_generation"):
        assert key in machine
    if machine["cpu_family"] is not None:  # x86 Linux: /proc/cpuinfo names the family
        assert f"family {machine['cpu_family']}" in describe_cpu(machine)
