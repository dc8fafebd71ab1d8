"""Benchmarks of the Qwen3-ASR Triton deployment against its CPU peers (see perf/benchmark.py)."""
