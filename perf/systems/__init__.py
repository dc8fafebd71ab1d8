"""The systems the benchmark compares: our Triton CPU deployment, vLLM's CPU build, transformers."""

from __future__ import annotations

from perf.systems.base import BenchSystem, SystemConfig, SystemUnavailableError

SYSTEMS = ("triton", "vllm", "transformers")


def make_system(name: str, config: SystemConfig) -> BenchSystem:
    """The system called ``name`` (one of :data:`SYSTEMS`)."""
    if name == "triton":
        from perf.systems.triton import TritonSystem

        return TritonSystem(config)
    if name == "vllm":
        from perf.systems.vllm import VllmSystem

        return VllmSystem(config)
    if name == "transformers":
        from perf.systems.transformers_ref import TransformersSystem

        return TransformersSystem(config)
    raise ValueError(f"unknown system {name!r}; choose from {SYSTEMS}")


__all__ = ["SYSTEMS", "BenchSystem", "SystemConfig", "SystemUnavailableError", "make_system"]
