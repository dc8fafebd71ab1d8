"""perf/stream_latency.py: its report (the decoder's batching line under the latency table) and its options."""

from __future__ import annotations

import pytest

from perf.stream_latency import core_seconds_per_generation, decoder_line, parse_args, table


def _level(streams: int, decoder: dict | None = None) -> dict:
    empty = {"count": 0, "p50": None, "p95": None, "max": None}
    level = {
        "streams": streams,
        "chunks": 10,
        "partials_per_chunk": 1.0,
        "partial_latency": {"count": 9, "p50": 0.1, "p95": 0.2, "max": 0.3},
        "visible_latency": empty,
        "final_latency": empty,
        "errors": 0,
        "error_messages": [],
    }
    if decoder is not None:
        level["decoder"] = decoder
    return level


def test_table_reports_the_decoder_batching_of_each_level() -> None:
    batching = {
        "steps_per_s": 19.04,
        "rows_per_step": 13.2,
        "prefill_calls_per_s": 10.7,
        "prompts_per_prefill_call": 1.6,
        "generations_per_s": 17.3,
        "rows_per_generation": None,
        "max_running": 16.0,
    }
    text = table([_level(1), _level(32, batching)])
    lines = [line for line in text.splitlines() if "decoder:" in line]
    assert lines == [f"  N=32 decoder: {decoder_line(batching)}"]  # the level without counters has no line
    busy = {**_level(32, batching), "server_cores": 1.86, "client_cores": 0.05}
    busy["server_core_seconds_per_generation"] = 0.1074
    assert table([busy]).splitlines()[-1].endswith("; server CPU 0.107 core-s per generation")
    assert "19.0 steps/s of 13.2 rows (largest batch so far 16)" in lines[0]
    assert "10.7 prefill calls/s of 1.6 prompts" in lines[0]
    assert "17.3 generations/s of - decode rows" in lines[0]  # no ratio: a dash


def test_core_seconds_per_generation_needs_both_counts() -> None:
    level = _level(32, {"generations_per_s": 18.0})
    assert core_seconds_per_generation(level) is None  # no server CPU sampled (no --server-pid)
    level["server_cores"] = 1.86
    assert core_seconds_per_generation(level) == 0.1033
    assert core_seconds_per_generation({**level, "decoder": {"generations_per_s": 0.0}}) is None
    assert core_seconds_per_generation({"server_cores": 1.0}) is None  # no decoder counters (no --metrics-url)


def test_build_knobs_reach_the_build_as_a_dict() -> None:
    args = parse_args(["--size", "tiny", "--triton-knob", "ort-spin-wait=false", "--triton-knob=--intra-op-threads=1"])
    assert args.triton_knob == {"ort-spin-wait": "false", "intra-op-threads": "1"}
    assert parse_args(["--size", "tiny"]).triton_knob == {}


def test_build_knobs_need_a_server_the_benchmark_builds(capsys) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--url", "127.0.0.1:8001", "--triton-knob", "ort-spin-wait=false"])
    assert "--triton-knob needs --size" in capsys.readouterr().err
