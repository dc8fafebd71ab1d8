"""Several prompts prefilled in one graph call equal one call each (tiny decoder graph, no server)."""

from __future__ import annotations

import numpy as np
import pytest

from qwen3_asr_triton.decoding.decoder import DecodeBatch, DecoderRunner, Sequence, greedy_decode
from qwen3_asr_triton.decoding.prefix_cache import PrefixCache
from qwen3_asr_triton.decoding.scheduler import GenerationRequest, InflightScheduler, SchedulerConfig

# Fixed id sequences (a chat template's system and user turns, then the assistant turn), not the
# builder's prompt: the KV comparison below holds at 1e-5 for these, while the builder's full template
# (with the audio markers) rounds one element of 16,384 to 1.34e-5 at chunk 512. The test is about
# batched against unbatched prefill on any ids, and its tolerance is not loosened to use the builder.
HEAD = [151644, 8948, 198, 151645, 198, 151644, 872, 198]
TAIL = [151645, 198, 151644, 77091, 198]


def _prompt(spec, n_audio: int, seed: int, head: list[int] = HEAD) -> tuple[np.ndarray, np.ndarray]:
    table = np.random.default_rng(seed).standard_normal((n_audio, spec.text.hidden_size)).astype(np.float32)
    audio = range(spec.text.vocab_size, spec.text.vocab_size + n_audio)
    return np.array([*head, *audio, *TAIL]), table


def _sequence(key: int) -> Sequence:
    return Sequence(key=key, max_new_tokens=8, eos_ids=frozenset())


def _run(runner: DecoderRunner, prompts, together: bool, chunk: int, cache: PrefixCache):
    """Prefill every prompt (batched or one by one), then decode 6 steps (every sequence still running).

    Returns the batch and its sequences."""
    batch = DecodeBatch(runner, prefix_cache=cache)
    jobs = [
        batch.start_prefill(_sequence(i), runner.embed_prompt(ids, table), ids)
        for i, (ids, table) in enumerate(prompts)
    ]
    pending = list(jobs)
    while pending:
        if together:
            done = batch.advance_prefills(pending, chunk)
            pending = [job for job, finished in zip(pending, done, strict=True) if not finished]
        else:
            pending = [job for job in pending if not batch.advance_prefill(job, chunk)]
    for _ in range(6):
        batch.step()
    return batch, [job.sequence for job in jobs]


@pytest.fixture(scope="module")
def spec(asr_export):
    return DecoderRunner(asr_export).spec


@pytest.mark.parametrize("chunk", [512, 16])
def test_a_batched_prefill_of_unequal_prompts_decodes_as_one_call_each(asr_export, spec, chunk):
    """Lengths 13 to 53 tokens; one prompt has another prefix (its own cache state); a chunk of 16
    runs every prompt over several calls, some padded, with pasts of unequal lengths."""
    prompts = [_prompt(spec, n, seed) for seed, n in enumerate((40, 7, 22))]
    prompts.append(_prompt(spec, 15, 9, head=[151644, 8948, 198, 151645, 198]))
    results = {}
    for together in (False, True):
        runner = DecoderRunner(asr_export)
        cache = PrefixCache()
        warm = DecodeBatch(runner, prefix_cache=cache)  # the first prompt's prefix is cached, the other is not
        warm.prefill(_sequence(-1), runner.embed_prompt(*prompts[0]), prompt_ids=prompts[0][0])
        results[together] = _run(runner, prompts, together, chunk, cache)
    (alone_batch, alone), (batched_batch, batched) = results[False], results[True]
    for one, other in zip(alone, batched, strict=True):
        assert other.tokens == one.tokens
        np.testing.assert_allclose(other.logprobs, one.logprobs, rtol=0, atol=1e-5)
        assert other.length == one.length
    for one, other in zip(alone_batch.kv, batched_batch.kv, strict=True):
        np.testing.assert_allclose(other, one, rtol=1e-5, atol=1e-5)  # fp32 rounding of padded rows


def test_a_burst_within_the_budget_is_prefilled_in_one_call(asr_export, spec):
    runner = DecoderRunner(asr_export)
    prompts = [_prompt(spec, 20, seed) for seed in range(4)]
    config = SchedulerConfig(max_running_sequences=8, prefill_chunk=4 * prompts[0][0].size)
    # No prefix cache, so no prefix chunk: each whole prompt in the one call.
    sched = InflightScheduler(runner, config, prefix_cache=PrefixCache(entries=0))
    done: dict = {}

    def on_done(req, seq, error):
        done[req.key] = (seq, error)

    for i, (ids, table) in enumerate(prompts):  # all wait at once
        request = GenerationRequest(
            key=i, prompt_ids=ids, prompt_table=table, max_new_tokens=3, eos_ids=frozenset(), on_done=on_done
        )
        sched.submit(request)
    while sched.step():  # the executor's steps, run here rather than on its thread
        pass
    assert sched.stats.prefill_chunks == 1 and sched.stats.prefill_rows == 4
    assert sched.stats.steps == 2 and sched.stats.max_running == 4
    for i, (ids, table) in enumerate(prompts):
        alone = greedy_decode(runner, ids, table, 3, eos_ids=frozenset())
        assert done[i][1] is None and done[i][0].tokens == alone.tokens
