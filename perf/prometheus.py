"""Prometheus text pages read by the benchmarks: one metric's value, and the CPU decoder's batching counters.

The decoder model exports its scheduler's counters (``model_repository/decoder``): decode steps, the
sequences they advanced, prefill calls and the prompts they ran, generations finished. Two snapshots
around a load level give how the decoder batched that load (:func:`decoder_batching`): whether its
steps ran full batches (``max_running_sequences`` rows: requests queue for a row) or small ones.
"""

from __future__ import annotations

import urllib.request

# The decoder's counters (model_repository/decoder/1/model.py, COUNTERS) under short names.
DECODER_COUNTERS = {
    "steps": "qwen3_asr_decoder_steps_total",
    "step_rows": "qwen3_asr_decoder_step_sequences_total",
    "prefill_calls": "qwen3_asr_decoder_prefill_chunks_total",
    "prefill_rows": "qwen3_asr_decoder_prefill_rows_total",
    "completed": "qwen3_asr_decoder_completed_total",
}
# Its gauge of the largest running batch so far.
DECODER_MAX_RUNNING = "qwen3_asr_decoder_max_running_sequences"
# A metrics page is small and local: a slow answer means a stuck server.
READ_TIMEOUT_S = 10.0


def prometheus_value(text: str, name: str) -> float | None:
    """Sum of every sample of metric ``name`` (all label sets) in a Prometheus text page; None if absent."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else None


def read_page(url: str, timeout: float = READ_TIMEOUT_S) -> str:
    """The Prometheus text page at ``url`` (``http://host:port/metrics``)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def decoder_counters(text: str) -> dict[str, float]:
    """The decoder's counters (short names, 0 where absent) and its largest running batch from a page."""
    values = {key: prometheus_value(text, name) or 0.0 for key, name in DECODER_COUNTERS.items()}
    values["max_running"] = prometheus_value(text, DECODER_MAX_RUNNING) or 0.0
    return values


def decoder_batching(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float | None]:
    """How the decoder batched the load between two :func:`decoder_counters` snapshots ``wall`` s apart.

    Returns steps and prefill calls per second, rows per decode step, prompts per prefill call, decode
    rows per finished generation (tokens after the first, summed over partials and finals) and the
    largest running batch so far (a gauge: it never goes down). None where a ratio has no denominator.
    """
    delta = {key: after[key] - before[key] for key in DECODER_COUNTERS}

    def ratio(num: float, den: float) -> float | None:
        return round(num / den, 3) if den > 0 else None

    return {
        "steps_per_s": ratio(delta["steps"], wall),
        "rows_per_step": ratio(delta["step_rows"], delta["steps"]),
        "prefill_calls_per_s": ratio(delta["prefill_calls"], wall),
        "prompts_per_prefill_call": ratio(delta["prefill_rows"], delta["prefill_calls"]),
        "generations_per_s": ratio(delta["completed"], wall),
        "rows_per_generation": ratio(delta["step_rows"], delta["completed"]),
        "max_running": after["max_running"],
    }
