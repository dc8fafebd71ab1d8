"""The in-flight batching scheduler on the tiny decoder graph (no server)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from qwen3_asr_triton.decoding.decoder import DecoderRunner, greedy_decode
from qwen3_asr_triton.decoding.scheduler import (
    GenerationRequest,
    InflightScheduler,
    SchedulerConfig,
)
from qwen3_asr_triton.errors import CapacityError, RequestCancelledError


@pytest.fixture(scope="module")
def runner(asr_export):
    return DecoderRunner(asr_export)


def _prompt(runner, n_audio: int, seed: int):
    spec = runner.spec
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((n_audio, spec.text.hidden_size)).astype(np.float32)
    ids = np.array([151644, 8948, 198, *range(spec.text.vocab_size, spec.text.vocab_size + n_audio), 151645, 198])
    return ids, table


class Collector:
    def __init__(self) -> None:
        self.done: dict = {}
        self.event = threading.Event()
        self.expected = 0

    def on_done(self, req, seq, error):
        self.done[req.key] = (seq, error)
        if len(self.done) >= self.expected:
            self.event.set()


def _request(key, ids, table, max_new, collector, **kw):
    return GenerationRequest(
        key=key, prompt_ids=ids, prompt_table=table, max_new_tokens=max_new, on_done=collector.on_done, **kw
    )


def test_requests_join_and_leave_and_match_greedy(runner):
    sched = InflightScheduler(runner, SchedulerConfig(max_batch=8, max_kv_tokens=100_000, prefill_chunk=64))
    sched.start()
    try:
        collector = Collector()
        jobs = {i: (_prompt(runner, 10 + 37 * i, i), 5 + 9 * i) for i in range(6)}
        collector.expected = len(jobs)
        for i, ((ids, table), max_new) in jobs.items():
            sched.submit(_request(i, ids, table, max_new, collector, eos_ids=frozenset()))
            time.sleep(0.05 * (i % 3))  # staggered arrivals
        assert collector.event.wait(120)
    finally:
        sched.stop()
    for i, ((ids, table), max_new) in jobs.items():
        seq, error = collector.done[i]
        assert error is None
        alone = greedy_decode(runner, ids, table, max_new)
        # eos disabled above: every sequence runs to its own length
        assert len(seq.tokens) == max_new
        n = min(len(alone.tokens), max_new)
        assert seq.tokens[:n] == alone.tokens[:n], i
    stats = sched.stats
    assert stats.step_sequences / stats.steps > 1.5
    assert stats.inflight_joins >= 1 and stats.inflight_leaves >= 1
    assert stats.max_running >= 3


@pytest.mark.parametrize(("budget_prompts", "steps"), [(3, 5), (1, 7)])
def test_prompts_within_the_prefill_budget_start_decoding_together(runner, budget_prompts, steps):
    """Three prompts waiting at once: a budget of three prompts prefills them all before the first
    step, so they decode in lockstep (5 steps for 6 tokens, the first comes from prefill); a budget of
    one prompt interleaves a step after each prefill (two more steps)."""
    prompts = [_prompt(runner, 20, seed) for seed in range(3)]
    length = prompts[0][0].size
    config = SchedulerConfig(max_batch=8, max_kv_tokens=100_000, prefill_chunk=budget_prompts * length)
    sched = InflightScheduler(runner, config)
    collector = Collector()
    collector.expected = len(prompts)
    for i, (ids, table) in enumerate(prompts):  # queued before the loop starts: all wait at once
        sched.submit(_request(i, ids, table, 6, collector, eos_ids=frozenset()))
    sched.start()
    try:
        assert collector.event.wait(120)
    finally:
        sched.stop()
    assert all(error is None and len(seq.tokens) == 6 for seq, error in collector.done.values())
    assert sched.stats.steps == steps
    assert sched.stats.max_running == 3


def test_capacity_is_checked_up_front(runner):
    sched = InflightScheduler(runner, SchedulerConfig(max_kv_tokens=200, max_queue=1))
    ids, table = _prompt(runner, 150, 0)
    collector = Collector()
    with pytest.raises(CapacityError, match="KV-cache positions"):
        sched.submit(_request("big", ids, table, 100, collector))
    small, small_table = _prompt(runner, 5, 1)
    sched.submit(_request("a", small, small_table, 4, collector))  # not started: stays queued
    with pytest.raises(CapacityError, match="queue is full"):
        sched.submit(_request("b", small, small_table, 4, collector))


def test_cancelled_request_frees_its_rows(runner):
    sched = InflightScheduler(runner, SchedulerConfig(max_batch=4, prefill_chunk=512))
    flag = threading.Event()
    collector = Collector()
    collector.expected = 2
    ids, table = _prompt(runner, 30, 2)
    long_req = _request("long", ids, table, 400, collector, eos_ids=frozenset(), is_cancelled=flag.is_set)
    short_req = _request("short", ids, table, 3, collector, eos_ids=frozenset())
    sched.start()
    try:
        sched.submit(long_req)
        sched.submit(short_req)
        deadline = time.monotonic() + 30
        while len(sched.batch) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        flag.set()
        assert collector.event.wait(60)
        deadline = time.monotonic() + 10
        while sched.active and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sched.stop()
    seq, error = collector.done["long"]
    assert isinstance(error, RequestCancelledError) and seq is None
    assert collector.done["short"][1] is None
    assert len(sched.batch) == 0 and sched.batch.kv is None and sched.active == 0


def test_an_engine_failure_fails_in_flight_requests_but_not_the_scheduler(runner, monkeypatch):
    sched = InflightScheduler(runner, SchedulerConfig())
    ids, table = _prompt(runner, 8, 3)
    original = runner.run
    calls = {"n": 0}

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated ONNX Runtime failure")
        return original(*args)

    monkeypatch.setattr(runner, "run", flaky)
    sched.start()
    try:
        first = Collector()
        first.expected = 1
        sched.submit(_request("x", ids, table, 20, first, eos_ids=frozenset()))
        assert first.event.wait(30)
        assert "simulated" in str(first.done["x"][1])
        second = Collector()
        second.expected = 1
        sched.submit(_request("y", ids, table, 5, second, eos_ids=frozenset()))
        assert second.event.wait(30)
        assert second.done["y"][1] is None and len(second.done["y"][0].tokens) == 5
    finally:
        sched.stop()
