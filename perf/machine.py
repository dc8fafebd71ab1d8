"""A description of the machine a benchmark ran on (CPU, vector extensions, memory, software)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path

from qwen3_asr_triton.cpu_precision import choose_fast_precision

# CPU flags that decide which kernels the engines can use (bf16 / int8 matrix units and vector widths).
INTERESTING_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
PACKAGES = ("onnxruntime", "torch", "transformers", "tritonclient", "nvidia-pytriton", "numpy")
# AMD's core generations by (family, first model, last model), from AMD's family/model numbering: a
# virtual machine often names its CPU only "AMD EPYC", and two such CPUs with the same flags can differ
# a lot (Zen 1 splits every 256-bit AVX2 operation in two 128-bit halves; Zen 2 on do not). Intel's
# models are not named here: their family-6 numbers do not map onto generations by ranges.
AMD_GENERATIONS = (
    (0x17, 0x00, 0x2F, "Zen / Zen+"),
    (0x17, 0x30, 0xFF, "Zen 2"),
    (0x19, 0x00, 0x0F, "Zen 3"),
    (0x19, 0x10, 0x1F, "Zen 4"),
    (0x19, 0x20, 0x5F, "Zen 3"),
    (0x19, 0x60, 0xAF, "Zen 4"),
    (0x1A, 0x00, 0xFF, "Zen 5"),
)
KIB_PER_GIB = 1024 * 1024


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        if ":" in line:
            key, value = (part.strip() for part in line.split(":", 1))
            info.setdefault(key, value)
    return info


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def cpu_generation(vendor: str | None, family: int | None, model: int | None) -> str | None:
    """The core generation of an AMD CPU from its family and model numbers (None when not known)."""
    if vendor != "AuthenticAMD" or family is None or model is None:
        return None
    for fam, first, last, name in AMD_GENERATIONS:
        if family == fam and first <= model <= last:
            return name
    return None


def cpu_identity(cpu: dict[str, str]) -> dict[str, object]:
    """Vendor, family, model and stepping from ``/proc/cpuinfo`` fields, and the generation where known."""
    vendor = cpu.get("vendor_id")
    family, model = _int(cpu.get("cpu family")), _int(cpu.get("model"))
    return {
        "cpu_vendor": vendor,
        "cpu_family": family,
        "cpu_model_number": model,
        "cpu_stepping": _int(cpu.get("stepping")),
        "cpu_generation": cpu_generation(vendor, family, model),
    }


def describe_cpu(machine: dict) -> str:
    """``AMD EPYC (family 23, model 1, stepping 2: Zen / Zen+)`` from :func:`describe_machine`'s fields."""
    name = str(machine.get("cpu_model"))
    if machine.get("cpu_family") is None:
        return name
    ident = f"family {machine['cpu_family']}, model {machine.get('cpu_model_number')}"
    if machine.get("cpu_stepping") is not None:
        ident += f", stepping {machine['cpu_stepping']}"
    if machine.get("cpu_generation"):
        ident += f": {machine['cpu_generation']}"
    return f"{name} ({ident})"


def usable_cpus() -> list[int]:
    """The CPUs this process may run on, sorted (its affinity mask; every CPU where the OS keeps none)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _meminfo_gib(field: str) -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / KIB_PER_GIB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_machine() -> dict[str, object]:
    """CPU model, logical cores usable by this process, flags present/absent, memory, load, versions."""
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    return {
        "cpu_model": cpu.get("model name", platform.processor() or "unknown"),
        **cpu_identity(cpu),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(usable_cpus()),
        "flags": {flag: flag in flags for flag in INTERESTING_FLAGS},
        # What a repository built with --precision fast serves on this CPU (chosen where the models load).
        "fast_precision": choose_fast_precision(frozenset(flags), _version("torch") is not None)[0],
        "memory_total_gib": _meminfo_gib("MemTotal"),
        "memory_available_gib": _meminfo_gib("MemAvailable"),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
    }
