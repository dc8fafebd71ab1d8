"""The cpu models' precision, chosen where they load from the CPU flags (qwen3_asr_triton/cpu_precision.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen3_asr_triton.cpu_precision import (
    BF16,
    FAST,
    FP32,
    INT8,
    choose_fast_precision,
    has_native_bf16,
    parse_cpu_flags,
    read_cpu_flags,
    resolve_precision,
)

# Flag sets of the CPU kinds the project meets (trimmed /proc/cpuinfo flags).
AVX2 = frozenset(["fpu", "sse4_2", "avx", "avx2", "fma", "f16c"])
AVX512 = AVX2 | frozenset(["avx512f", "avx512bw", "avx512vl", "avx512_vnni"])
AVX512_BF16 = AVX512 | {"avx512_bf16"}
AMX = AVX512_BF16 | frozenset(["amx_tile", "amx_bf16", "amx_int8"])

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu avx2 avx512f avx512_bf16
bugs\t\t: sysret_ss_attrs

processor\t: 1
flags\t\t: fpu
"""


def test_the_first_processors_flags_are_read() -> None:
    assert parse_cpu_flags(CPUINFO) == {"fpu", "avx2", "avx512f", "avx512_bf16"}
    assert parse_cpu_flags("processor : 0\n") == frozenset()


def test_an_unreadable_cpuinfo_gives_no_flags(tmp_path: Path) -> None:
    assert read_cpu_flags(tmp_path / "missing") == frozenset()
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    assert "avx512_bf16" in read_cpu_flags(tmp_path / "cpuinfo")


def test_this_machine_has_a_flags_line() -> None:
    flags = read_cpu_flags()
    assert "sse2" in flags or not Path("/proc/cpuinfo").is_file()


@pytest.mark.parametrize(
    ("flags", "native"), [(AVX2, False), (AVX512, False), (AVX512_BF16, True), (AVX2 | {"amx_bf16"}, True)]
)
def test_native_bf16_needs_avx512_bf16_or_amx(flags, native) -> None:
    assert has_native_bf16(flags) is native


@pytest.mark.parametrize(
    ("flags", "torch", "expected"),
    [
        (AVX2, True, INT8),
        (AVX512, True, INT8),  # AVX-512 with VNNI but no bf16: int8 (VNNI speeds it), bf16 emulated
        (AVX512_BF16, True, BF16),
        (AMX, True, BF16),
        (AMX, False, INT8),  # torch missing: the ONNX graphs are all there is
        (frozenset(), True, INT8),  # flags unknown: the safe default
    ],
)
def test_fast_is_bf16_only_where_the_cpu_has_it(flags, torch, expected) -> None:
    precision, reason = choose_fast_precision(flags, torch)
    assert precision == expected
    assert reason
    if flags == AMX and not torch:
        assert "torch" in reason


def test_configured_precisions_are_kept() -> None:
    for precision in (FP32, INT8):
        assert resolve_precision(precision, AMX, True)[0] == precision
        assert resolve_precision(precision, AVX2, False)[0] == precision
    assert resolve_precision(BF16, AMX, True) == (BF16, "as configured")
    # bf16 where it is emulated is still served (the user asked), and the log says it is slow.
    precision, reason = resolve_precision(BF16, AVX2, True)
    assert precision == BF16 and "emulated" in reason
    assert resolve_precision(FAST, AVX512_BF16, True)[0] == BF16


def test_bf16_without_torch_and_unknown_precisions_are_refused() -> None:
    with pytest.raises(ValueError, match="torch"):
        resolve_precision(BF16, AMX, False)
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", AMX, True)
