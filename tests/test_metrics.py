"""Custom Triton metrics: values, kinds, and their release in finalize() (the 2.51 stub crashes otherwise)."""

from __future__ import annotations

import gc

import pytest

from qwen3_asr_triton.metrics import ModelMetrics
from tests import fake_pb_utils as pb

COUNTERS = {"done": ("test_metrics_done_total", "things done")}
GAUGES = {"running": ("test_metrics_running", "things running")}


def _alive(name: str) -> bool:
    gc.collect()
    return name in pb.MetricFamily.registry


def test_counters_and_gauges_have_their_kind_labels_and_values():
    metrics = ModelMetrics(pb, {"model": "m"}, COUNTERS, GAUGES)
    done = pb.MetricFamily.registry["test_metrics_done_total"]
    running = pb.MetricFamily.registry["test_metrics_running"]
    assert (done.kind, running.kind) == (pb.MetricFamily.COUNTER, pb.MetricFamily.GAUGE)
    assert done.labels == [{"model": "m"}] and running.labels == [{"model": "m"}]
    metrics.increment("done")
    metrics.increment("done", 4)
    metrics.increment("done", 0)
    metrics.set("running", 3)
    metrics.set("running", 2)
    assert done.metrics[0].value == 5
    assert running.metrics[0].value == 2
    metrics.close()


def test_a_key_cannot_be_both_counter_and_gauge():
    with pytest.raises(ValueError, match="running"):
        ModelMetrics(pb, {}, {"running": ("a_total", "a")}, GAUGES)


def test_close_releases_every_family_and_later_updates_are_ignored():
    metrics = ModelMetrics(pb, {"model": "m"}, COUNTERS, GAUGES)
    assert _alive("test_metrics_done_total") and _alive("test_metrics_running")
    metrics.close()
    assert metrics.closed
    assert not _alive("test_metrics_done_total")
    assert not _alive("test_metrics_running")
    metrics.increment("done")  # a thread still winding down must not fail
    metrics.set("running", 1)


def test_decoder_finalize_releases_its_metric_families(model_repository):
    from tests.test_models_unit import load

    model = load(model_repository, "decoder")
    assert _alive("qwen3_asr_decoder_steps_total")
    assert _alive("qwen3_asr_decoder_max_running_sequences")
    model.finalize()
    assert not _alive("qwen3_asr_decoder_steps_total")
    assert not _alive("qwen3_asr_decoder_max_running_sequences")
