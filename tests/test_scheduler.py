"""In-flight batching: the policy with fake runner outputs, then the executor on the tiny decoder graph.

The policy tests need no model, no thread and no sleep: they plan, make up what a runner would
return, and apply it. The executor tests run the real graph and compare every token stream with
the unbatched greedy reference.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from qwen3_asr_triton.decoding import policy as policy_module
from qwen3_asr_triton.decoding.decoder import Choice, DecoderRunner, Sequence, greedy_choice, greedy_decode
from qwen3_asr_triton.decoding.policy import SchedulerPolicy, StepOutputs, StepPlan
from qwen3_asr_triton.decoding.prefix_cache import PrefixCache
from qwen3_asr_triton.decoding.scheduler import GenerationRequest, InflightScheduler, SchedulerConfig
from qwen3_asr_triton.errors import CapacityError, InputError, RequestCancelledError
from qwen3_asr_triton.prompt import PromptBuilder, to_prompt_table_ids
from qwen3_asr_triton.tokenizer import TextTokenizer

VOCAB = 1000
EOS = 7
HEAD = (1, 2, 3)  # a text prefix, shareable through the prefix cache


# ------------------------------------------------------------------------------------------ helpers
class Client:
    """Makes requests and records, in order, what their callbacks receive."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.tokens: dict = defaultdict(list)
        self.done: dict = {}
        self.cancelled: set = set()

    def request(self, key, prompt_tokens: int, max_new: int, head: tuple = (), table_rows=None, **kw):
        audio = prompt_tokens - len(head) - 1
        ids = np.array([*head, *range(VOCAB, VOCAB + audio), 9])
        table = np.zeros((audio if table_rows is None else table_rows, 4), np.float32)
        return GenerationRequest(
            key=key,
            prompt_ids=ids,
            prompt_table=table,
            max_new_tokens=max_new,
            on_done=self.on_done,
            on_token=self.on_token,
            is_cancelled=lambda: key in self.cancelled,
            **kw,
        )

    def on_token(self, req, token, logprob):
        self.tokens[req.key].append(token)
        self.events.append(("token", req.key, token))

    def on_done(self, req, seq, error):
        assert req.key not in self.done, "on_done runs once"
        self.done[req.key] = (seq, error)
        self.events.append(("done", req.key))


def make_policy(prefix_cache: PrefixCache | None = None, **config) -> SchedulerPolicy:
    return SchedulerPolicy(
        SchedulerConfig(**config),
        eos_ids={EOS},
        vocab_size=VOCAB,
        max_positions=4096,
        prefix_cache=prefix_cache,
    )


def never_eos(seq: Sequence) -> int:
    return 100 + len(seq.tokens)


def scripted(streams: dict):
    """Token choices by request key, in order (a fake runner's greedy picks)."""
    return lambda seq: streams[seq.key][len(seq.tokens)]


def completes(chunk) -> bool:
    return chunk.sequence.length + chunk.tokens == chunk.sequence.request.prompt_ids.size


def fake_outputs(plan: StepPlan, choose=never_eos) -> StepOutputs:
    """What a runner returns for ``plan``: a token per decode row and per completed prompt, and prefix KV."""
    rows = list(plan.decode) + [c.sequence for c in plan.prefill if completes(c)]
    prefix_kv = {
        c.sequence: [np.full((1, 1, c.sequence.length + c.tokens, 1), 0.5, np.float32)]
        for c in plan.prefill
        if c.ends_prefix
    }
    return StepOutputs(tokens={s: Choice(choose(s), -0.25 * len(s.tokens)) for s in rows}, prefix_kv=prefix_kv)


def step(policy: SchedulerPolicy, choose=never_eos) -> StepPlan:
    plan = policy.plan()
    assert summary(plan) == summary(policy.plan()), "planning changes nothing"
    policy.apply(plan, fake_outputs(plan, choose))
    return plan


def run(policy: SchedulerPolicy, choose=never_eos) -> list[StepPlan]:
    """Plan and apply with the fake runner until there is nothing to do; the plans in order."""
    plans = []
    while not policy.plan().empty:
        plans.append(step(policy, choose))
        assert len(plans) < 1000
    return plans


def summary(plan: StepPlan) -> tuple:
    """A plan by request keys: its drops and admissions, or its one graph call, or what it frees."""
    if plan.drop or plan.admit:
        return ("admit", tuple(a.sequence.key for a in plan.admit), "drop", tuple(d.request.key for d in plan.drop))
    if plan.prefill:
        return ("prefill", tuple((c.sequence.key, c.tokens) for c in plan.prefill))
    if plan.decode:
        return ("decode", tuple(s.key for s in plan.decode))
    return ("free", tuple(s.key for s in plan.free))


def keys(sequences) -> tuple:
    return tuple(s.key for s in sequences)


# ------------------------------------------------------------------------------------------ policy
def test_the_policy_imports_no_runtime_no_threads_and_never_sleeps():
    tree = ast.parse(Path(policy_module.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {m for m in imported if m.split(".")[0] in ("threading", "onnxruntime", "asyncio")}
    assert "sleep" not in {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    probe = "import sys, qwen3_asr_triton.decoding.policy; print('onnxruntime' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "False\n"


@pytest.mark.parametrize(("budget_prompts", "steps"), [(3, 5), (1, 7)])
def test_prompts_within_the_prefill_budget_start_decoding_together(budget_prompts, steps):
    """Three prompts waiting at once: a budget of three prompts prefills them all in one call before
    the first step, so they decode in lockstep (5 steps for 6 tokens, the first comes from prefill);
    a budget of one prompt interleaves a step after each prefill (two more steps)."""
    client = Client()
    policy = make_policy(max_running_sequences=8, max_kv_tokens=100_000, prefill_chunk=budget_prompts * 24)
    policy.enqueue(client.request(i, 24, 6) for i in range(3))
    plans = run(policy)
    assert [summary(p) for p in plans[:3]] == [
        ("admit", (0, 1, 2), "drop", ()),
        ("prefill", ((0, 24), (1, 24), (2, 24)) if budget_prompts == 3 else ((0, 24),)),
        ("decode", (0, 1, 2) if budget_prompts == 3 else (0,)),
    ]
    assert keys(plans[2].join) == keys(plans[2].decode)
    assert summary(plans[-1]) == ("free", (0, 1, 2) if budget_prompts == 3 else (2,))  # they finish in turn
    assert policy.stats.steps == steps and policy.stats.max_running == 3
    assert policy.stats.prefill_chunks == (1 if budget_prompts == 3 else 3)
    assert policy.stats.inflight_joins == (0 if budget_prompts == 3 else 2)
    assert all(error is None and len(seq.tokens) == 6 for seq, error in client.done.values())
    assert all(client.tokens[i] == [100, 101, 102, 103, 104, 105] for i in range(3))
    assert policy.active == 0 and policy.plan().empty


def test_a_long_prompt_is_prefilled_in_chunks_between_decode_steps():
    client = Client()
    policy = make_policy(max_running_sequences=8, max_kv_tokens=100_000, prefill_chunk=16)
    policy.enqueue([client.request("short", 10, 8), client.request("long", 50, 3)])
    plans = run(policy)
    assert [summary(p) for p in plans] == [
        ("admit", ("short", "long"), "drop", ()),
        ("prefill", (("short", 10),)),  # "long" would make the call 2 x 16 > 16 positions
        ("prefill", (("long", 6),)),  # the rest of this iteration's budget
        ("decode", ("short",)),
        ("prefill", (("long", 16),)),
        ("decode", ("short",)),
        ("prefill", (("long", 16),)),
        ("decode", ("short",)),
        ("prefill", (("long", 12),)),  # 6 + 16 + 16 + 12 = 50: its first token
        ("decode", ("short", "long")),
        ("decode", ("short", "long")),  # "long" has its 3 tokens
        ("decode", ("short",)),
        ("decode", ("short",)),  # "short" has its 8
        ("free", ("short",)),
    ]
    assert keys(plans[9].join) == ("long",) and keys(plans[11].free) == ("long",)
    assert policy.stats.inflight_joins == 1 and policy.stats.inflight_leaves == 1
    assert policy.stats.prefill_chunks == 5 and policy.stats.prefill_rows == 5
    assert client.tokens["short"] == [100 + i for i in range(8)] and client.tokens["long"] == [100, 101, 102]


def test_admission_waits_for_the_kv_budget_in_order():
    """Budget 100 positions (rows x longest worst case, in blocks of 64): "big" (50 -> 64 columns)
    cannot run next to "first" (2 x 64 > 100), and "small", queued behind it, waits its turn though
    it would fit (first come, first served)."""
    client = Client()
    policy = make_policy(max_kv_tokens=100)
    policy.enqueue([client.request("first", 20, 10), client.request("big", 40, 10), client.request("small", 5, 2)])
    plans = run(policy)
    admitted = [keys(a.sequence for a in p.admit) for p in plans if p.admit]
    assert admitted == [("first",), ("big",), ("small",)]
    assert policy.stats.max_running == 1
    big = next(p for p in plans if p.admit and p.admit[0].sequence.key == "big")
    assert keys(big.free) == ("first",)  # admitted in the plan that frees "first"
    assert [len(client.tokens[k]) for k in ("first", "big", "small")] == [10, 10, 2]
    assert [e for e in client.events if e[0] == "done"] == [("done", "first"), ("done", "big"), ("done", "small")]


def test_admission_stops_at_max_running_sequences():
    client = Client()
    policy = make_policy(max_running_sequences=2)
    policy.enqueue(client.request(i, 8, 3) for i in range(3))
    first = step(policy)
    assert keys(a.sequence for a in first.admit) == (0, 1) and keys(policy.waiting) == (2,)
    plans = run(policy)
    assert policy.stats.max_running == 2 and all(len(client.tokens[i]) == 3 for i in range(3))
    assert [keys(a.sequence for a in p.admit) for p in plans if p.admit] == [(2,)]


def test_an_over_budget_request_is_refused_at_submission():
    client = Client()
    policy = make_policy(max_kv_tokens=200, max_queue=1)
    with pytest.raises(CapacityError, match="needs 250 KV-cache positions"):
        policy.check(client.request("big", 150, 100))
    with pytest.raises(InputError, match="request_output_len must be >= 1"):
        policy.check(client.request("none", 10, 0))
    empty = client.request("empty", 1, 4)
    empty.prompt_ids = empty.prompt_ids[:0]
    with pytest.raises(InputError, match="empty prompt"):
        policy.check(empty)
    with pytest.raises(InputError, match="exceed the model's 4096 positions"):
        policy.check(client.request("long", 4000, 100))
    small = client.request("a", 5, 4)
    policy.check(small)
    with pytest.raises(CapacityError, match="queue is full"):
        policy.check(client.request("b", 5, 4), queued=1)  # one submitted, not handed over yet
    policy.enqueue([small])
    with pytest.raises(CapacityError, match="queue is full"):
        policy.check(client.request("b", 5, 4))
    assert policy.stats.rejected == 3 and policy.waiting == (small,)
    assert not client.done


def test_a_prompt_without_its_table_rows_is_refused_alone_and_its_slot_goes_on():
    client = Client()
    policy = make_policy(max_running_sequences=2)
    bad = client.request("bad", 8, 3, table_rows=2)  # references rows 0..6
    policy.enqueue([client.request("x", 8, 3), bad, client.request("z", 8, 3)])
    plan = step(policy)
    assert summary(plan) == ("admit", ("x", "z"), "drop", ("bad",)) and not plan.prefill
    seq, error = client.done["bad"]
    assert seq is None and isinstance(error, InputError) and "references audio row 6" in str(error)
    run(policy)
    assert client.tokens["x"] == client.tokens["z"] == [100, 101, 102]
    assert policy.stats.cancelled == 0 and policy.stats.rejected == 0 and policy.stats.completed == 2


def test_end_tokens_and_lengths_finish_sequences_and_free_their_kv():
    """ "a" ends at its end token, "b" (no end tokens of its own) at its length, "c" on the token its
    prefill chose: it never joins the running batch."""
    client = Client()
    policy = make_policy()
    policy.enqueue(
        [
            client.request("a", 6, 10),
            client.request("b", 6, 4, eos_ids=frozenset()),
            client.request("c", 6, 5),
        ]
    )
    choose = scripted({"a": [100, 101, EOS], "b": [100, EOS, 102, 103], "c": [EOS]})
    plans = run(policy, choose)
    assert [summary(p) for p in plans] == [
        ("admit", ("a", "b", "c"), "drop", ()),
        ("prefill", (("a", 6), ("b", 6), ("c", 6))),
        ("decode", ("a", "b")),
        ("decode", ("a", "b")),  # "a" chose its end token
        ("decode", ("b",)),  # "b" has its 4 tokens
        ("free", ("b",)),
    ]
    assert keys(plans[2].join) == ("a", "b") and keys(plans[2].free) == ("c",)
    assert keys(plans[4].free) == ("a",)
    sequences = {k: seq for k, (seq, error) in client.done.items() if error is None}
    assert {k: (s.tokens, s.finish_reason) for k, s in sequences.items()} == {
        "a": ([100, 101, EOS], "eos"),
        "b": ([100, EOS, 102, 103], "length"),
        "c": ([EOS], "eos"),
    }
    assert sequences["a"].logprobs == [0.0, -0.25, -0.5]
    assert client.tokens == {"a": [100, 101, EOS], "b": [100, EOS, 102, 103], "c": [EOS]}
    # a step emits the sequences that go on first, then each finished one with its on_done
    assert client.events[-5:] == [
        ("token", "b", 102),
        ("token", "a", EOS),
        ("done", "a"),
        ("token", "b", 103),
        ("done", "b"),
    ]
    assert policy.stats.completed == 3 and policy.stats.inflight_leaves == 1 and policy.stats.inflight_joins == 0


def test_min_length_and_end_tokens_go_with_the_sequence():
    client = Client()
    policy = make_policy()
    policy.enqueue([client.request("min", 6, 8, min_new_tokens=3), client.request("own", 6, 8, eos_ids={5})])
    admitted = {a.sequence.key: a.sequence for a in step(policy).admit}
    assert admitted["min"].min_new_tokens == 3 and admitted["min"].eos_ids == {EOS}
    assert admitted["own"].eos_ids == {5} and admitted["min"].request.key == "min"
    # the greedy choice masks end tokens until min_new_tokens were generated
    seq = Sequence(key=0, max_new_tokens=8, eos_ids=frozenset({EOS}), min_new_tokens=2)
    logits = np.zeros(10, np.float32)
    logits[EOS], logits[3] = 5.0, 4.0
    for expected in (3, 3, EOS):
        seq.record(greedy_choice(seq, logits))
        assert seq.tokens[-1] == expected
    assert seq.tokens == [3, 3, EOS] and seq.finish_reason == "eos"


def test_cancellation_is_found_between_iterations_and_frees_the_kv():
    client = Client()
    policy = make_policy(max_running_sequences=2, prefill_chunk=8)
    policy.enqueue([client.request("run", 4, 50), client.request("pre", 30, 5), client.request("wait", 4, 5)])
    assert [summary(step(policy)) for _ in range(3)] == [
        ("admit", ("run", "pre"), "drop", ()),
        ("prefill", (("run", 4),)),
        ("prefill", (("pre", 4),)),
    ]
    client.cancelled |= {"run", "pre", "wait"}
    decode = step(policy)  # mid-iteration: the decode step still runs "run"
    assert summary(decode) == ("decode", ("run",)) and not client.done
    drops = step(policy)
    assert [(d.request.key, type(d.error)) for d in drops.drop] == [
        ("wait", RequestCancelledError),
        ("pre", RequestCancelledError),
        ("run", RequestCancelledError),
    ]
    assert keys(drops.free) == ("pre", "run") and not (drops.prefill or drops.decode or drops.admit)
    assert all(seq is None and isinstance(error, RequestCancelledError) for seq, error in client.done.values())
    assert client.tokens["run"] == [100, 101] and policy.stats.cancelled == 3
    assert policy.active == 0 and policy.plan().empty


def test_prefix_cache_a_miss_is_stored_and_a_hit_starts_after_the_prefix():
    client = Client()
    cache = PrefixCache()
    policy = make_policy(prefix_cache=cache)
    policy.enqueue([client.request("one", 12, 2, head=HEAD)])
    plans = run(policy)
    assert plans[0].admit[0].prefix == HEAD and plans[0].admit[0].past is None
    assert [(c.tokens, c.ends_prefix) for p in plans for c in p.prefill] == [(3, True), (9, False)]
    assert len(cache) == 1 and (cache.hits, cache.misses) == (0, 1)
    policy.enqueue([client.request("two", 20, 2, head=HEAD)])
    admission = step(policy).admit[0]
    assert admission.cached == 3 and admission.past is cache.peek(HEAD)
    assert admission.sequence.length == 3
    assert [(c.tokens, c.ends_prefix) for c in step(policy).prefill] == [(17, False)]
    run(policy)
    assert (cache.hits, cache.misses) == (1, 1)
    assert client.tokens["one"] == client.tokens["two"] == [100, 101]


def test_an_engine_error_fails_every_request_in_flight_and_the_policy_goes_on():
    client = Client()
    policy = make_policy(max_running_sequences=2, prefill_chunk=8)
    policy.enqueue([client.request("run", 4, 50), client.request("pre", 30, 5), client.request("wait", 4, 5)])
    for _ in range(3):
        step(policy)
    plan = policy.plan()
    assert summary(plan) == ("decode", ("run",))
    failure = RuntimeError("simulated ONNX Runtime failure")
    policy.apply(plan, StepOutputs(error=failure))
    assert {k: error for k, (seq, error) in client.done.items()} == {"wait": failure, "pre": failure, "run": failure}
    assert policy.stats.steps == 1 and policy.active == 0 and policy.plan().empty
    policy.enqueue([client.request("next", 4, 3)])
    run(policy)
    assert client.done["next"][1] is None and client.tokens["next"] == [100, 101, 102]


def test_a_failing_callback_reaches_no_other_request():
    client = Client()
    policy = make_policy()
    broken = client.request("broken", 6, 3)

    def on_token(req, token, logprob):
        raise ValueError("client bug")

    broken.on_token = on_token
    policy.enqueue([broken, client.request("fine", 6, 3)])
    run(policy)
    assert client.tokens["fine"] == [100, 101, 102]
    assert client.done["broken"][1] is None and client.done["broken"][0].tokens == [100, 101, 102]


# ---------------------------------------------------------------------------------------- executor
@pytest.fixture(scope="module")
def runner(asr_export):
    return DecoderRunner(asr_export)


@pytest.fixture(scope="module")
def builder(asr_export, runner):
    return PromptBuilder(TextTokenizer.from_file(asr_export), runner.spec.audio_token_id)


def _prompt(runner, builder: PromptBuilder, n_audio: int, seed: int):
    """The recogniser's prompt in prompt-table form, with a random audio table."""
    spec = runner.spec
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((n_audio, spec.text.hidden_size)).astype(np.float32)
    ids = to_prompt_table_ids(builder.asr_prompt(n_audio), spec.audio_token_id, spec.text.vocab_size)
    return ids, table


def _request(key, prompt, max_new, on_done, **kw):
    ids, table = prompt
    return GenerationRequest(key=key, prompt_ids=ids, prompt_table=table, max_new_tokens=max_new, on_done=on_done, **kw)


def _assert_greedy(runner, seq, prompt, max_new, **kw):
    alone = greedy_decode(runner, *prompt, max_new, **kw)
    assert seq.tokens == alone.tokens, seq.key
    np.testing.assert_allclose(seq.logprobs, alone.logprobs, rtol=0, atol=1e-4)


def test_requests_join_and_leave_on_the_loop_thread_and_match_greedy(runner, builder):
    """Each request arrives when the one before has two tokens; every stream equals greedy decoding."""
    sched = InflightScheduler(runner, SchedulerConfig(max_running_sequences=8, max_kv_tokens=100_000, prefill_chunk=64))
    jobs = {i: (_prompt(runner, builder, 10 + 37 * i, i), 5 + 9 * i) for i in range(6)}
    done: dict = {}
    all_done = threading.Event()

    def on_done(req, seq, error):
        done[req.key] = (seq, error)
        if len(done) == len(jobs):
            all_done.set()

    def submit(i):
        prompt, max_new = jobs[i]
        sched.submit(_request(i, prompt, max_new, on_done, eos_ids=frozenset(), on_token=arrivals))

    def arrivals(req, token, logprob):
        tokens[req.key] += 1
        if tokens[req.key] == 2 and req.key + 1 in jobs:
            submit(req.key + 1)

    tokens: dict = defaultdict(int)
    sched.start()
    try:
        submit(0)
        assert all_done.wait(120)
    finally:
        sched.stop()
    for i, (prompt, max_new) in jobs.items():
        seq, error = done[i]
        assert error is None and len(seq.tokens) == max_new  # no end tokens: every sequence runs to its length
        _assert_greedy(runner, seq, prompt, max_new, eos_ids=frozenset())
    stats = sched.stats
    assert stats.step_sequences / stats.steps > 1.5
    assert stats.inflight_joins >= 1 and stats.inflight_leaves >= 1
    assert stats.max_running >= 3
    assert sched.policy.prefix_cache.hits == len(jobs) - 1  # the chat template's head, shared


def test_a_cancelled_generation_frees_its_rows_and_the_others_match_greedy(runner, builder):
    sched = InflightScheduler(runner, SchedulerConfig(max_running_sequences=4, prefill_chunk=512))
    done: dict = {}
    prompt = _prompt(runner, builder, 30, 2)
    streamed: list[int] = []

    def on_done(req, seq, error):
        done[req.key] = (seq, error)

    long_req = _request(
        "long",
        prompt,
        400,
        on_done,
        eos_ids=frozenset(),
        on_token=lambda req, token, logprob: streamed.append(token),
        is_cancelled=lambda: len(streamed) >= 3,  # its client goes away after three tokens
    )
    sched.submit(long_req)
    sched.submit(_request("short", prompt, 6, on_done))
    while sched.step():  # the executor's steps, run here rather than on its thread
        pass
    seq, error = done["long"]
    assert isinstance(error, RequestCancelledError) and seq is None
    assert sched.stats.cancelled == 1 and sched.stats.steps < 10 and len(streamed) == 3
    _assert_greedy(runner, done["short"][0], prompt, 6)
    assert len(sched.batch) == 0 and sched.batch.kv is None and sched.active == 0


def test_an_engine_failure_fails_in_flight_requests_but_not_the_scheduler(runner, builder, monkeypatch):
    sched = InflightScheduler(runner, SchedulerConfig())
    prompt = _prompt(runner, builder, 8, 3)
    original = runner.run
    calls = {"n": 0}

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated ONNX Runtime failure")
        return original(*args)

    monkeypatch.setattr(runner, "run", flaky)
    done: dict = {}
    answered = {"x": threading.Event(), "y": threading.Event()}

    def on_done(req, seq, error):
        done[req.key] = (seq, error)
        answered[req.key].set()

    sched.start()  # on the loop thread: it must survive the failure
    try:
        sched.submit(_request("x", prompt, 20, on_done, eos_ids=frozenset()))
        assert answered["x"].wait(60)
        assert "simulated" in str(done["x"][1])
        sched.submit(_request("y", prompt, 5, on_done, eos_ids=frozenset()))
        assert answered["y"].wait(60)
    finally:
        sched.stop()
    assert done["y"][1] is None
    _assert_greedy(runner, done["y"][0], prompt, 5, eos_ids=frozenset())
