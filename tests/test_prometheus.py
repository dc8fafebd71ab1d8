"""perf/prometheus.py: reading one metric from a Prometheus page, and the decoder's batching between two pages."""

from __future__ import annotations

import pytest

from perf.prometheus import DECODER_COUNTERS, DECODER_MAX_RUNNING, decoder_batching, decoder_counters, prometheus_value


def test_prometheus_value_sums_every_label_set() -> None:
    page = "\n".join(
        [
            "# TYPE vllm:generation_tokens_total counter",
            'vllm:generation_tokens_total{engine="0",model_name="qwen3-asr"} 120.0',
            'vllm:generation_tokens_total{engine="1",model_name="qwen3-asr"} 3.0',
            'vllm:generation_tokens_created{engine="0",model_name="qwen3-asr"} 1.7e9',
        ]
    )
    assert prometheus_value(page, "vllm:generation_tokens_total") == 123.0
    assert prometheus_value(page, "vllm:prompt_tokens_total") is None


def _page(**values: float) -> str:
    names = {**DECODER_COUNTERS, "max_running": DECODER_MAX_RUNNING}
    return "\n".join(f'{names[key]}{{model="decoder"}} {value}' for key, value in values.items())


def test_decoder_batching_between_two_pages() -> None:
    before = decoder_counters(_page(steps=100, step_rows=400, prefill_calls=10, prefill_rows=12, completed=8))
    after = decoder_counters(
        _page(steps=300, step_rows=3600, prefill_calls=60, prefill_rows=112, completed=208, max_running=16)
    )
    batching = decoder_batching(before, after, wall=20.0)
    assert batching == {
        "steps_per_s": 10.0,
        "rows_per_step": 16.0,  # 3200 rows in 200 steps: full batches
        "prefill_calls_per_s": 2.5,
        "prompts_per_prefill_call": 2.0,
        "generations_per_s": 10.0,
        "rows_per_generation": 16.0,
        "max_running": 16.0,
    }


def test_decoder_batching_without_work_has_no_ratios() -> None:
    # A page without the decoder's metrics (another model served) reads as zeros: no division by zero.
    idle = decoder_counters("# nothing here\n")
    assert idle == dict.fromkeys([*DECODER_COUNTERS, "max_running"], 0.0)
    batching = decoder_batching(idle, idle, wall=5.0)
    assert batching["steps_per_s"] == 0.0
    assert batching["rows_per_step"] is None and batching["rows_per_generation"] is None


def test_decoder_counter_names_match_the_decoder_model() -> None:
    # The names are the decoder model's own (model.py cannot be imported without Triton): read its source.
    from pathlib import Path

    source = (Path(__file__).resolve().parents[1] / "model_repository/decoder/1/model.py").read_text()
    for name in [*DECODER_COUNTERS.values(), DECODER_MAX_RUNNING]:
        assert f'"{name}"' in source, name


@pytest.mark.parametrize("wall", [0.0, -1.0])
def test_decoder_batching_needs_a_positive_wall(wall: float) -> None:
    page = decoder_counters(_page(steps=1, step_rows=1, completed=1))
    assert decoder_batching(page, page, wall)["steps_per_s"] is None
