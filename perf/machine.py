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
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
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
